//! The pictures: sample pairs as the tutorial draws them, the loss curves, and the t-SNE map of
//! embeddings. Plain data in, PNG out; nothing here sees the model or the tape.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::model::{IMAGE_PIXELS, IMAGE_SIDE};

/// The bundled font (DejaVu Sans, assets/DejaVuSans-LICENSE.txt): plotting needs no system fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            assert!(plotters::style::register_font("sans-serif", style, FONT).is_ok(), "the bundled font parses");
        }
    });
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
}

/// Ten colours that stay apart on white (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Renders in memory, encodes the PNG and writes it as every output is (src/output.rs): no
/// half-drawn picture and no temporary file of the picture's own is ever left.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        size.0,
        size.1,
        image::ColorType::Rgb8,
    )
    .map_err(|e| plot_error(path, e))?;
    crate::output::write(path, &png)
}

/// A grid of pairs: the top row shows image A, the bottom row its partner titled "same" or
/// "different" (targets 0 and 1), as in the tutorial; with `verdicts`, each pair's distance
/// under a model and its verdict at a threshold below it, the partner framed green where the
/// verdict is right and red where wrong.
pub fn pairs_png(
    path: &Path,
    data: &str,
    pairs: &[(&[u8], &[u8], f32)],
    verdicts: Option<(&[f32], f32)>,
) -> Result<()> {
    let scale = 5u32;
    let cell = IMAGE_SIDE as u32 * scale;
    let (pad, title) = (12u32, 26u32);
    let width = pairs.len() as u32 * (cell + pad) + pad;
    let extra = if verdicts.is_some() { 50 } else { 0 };
    let height = 2 * (cell + title + pad) + pad + 30 + extra;
    let heading = match verdicts {
        Some((_, threshold)) => format!("Sample pairs of {data}: the model's distance, \"same\" below {threshold:.3}"),
        None => format!("Sample pairs of {data}"),
    };
    render(path, (width.max(560), height), |root| {
        root.draw(&Text::new(heading.as_str(), (pad as i32, 6), ("sans-serif", 22).into_font().style(FontStyle::Bold)))
            .map_err(|e| plot_error(path, e))?;
        if let Some((distances, threshold)) = verdicts {
            for (k, (d, (_, _, target))) in distances.iter().zip(pairs).enumerate() {
                let x0 = (pad + k as u32 * (cell + pad)) as i32;
                let y = (36 + 2 * (cell + title + pad)) as i32;
                let says_same = *d < threshold;
                let right = says_same == (*target == 0.0);
                let verdict = if says_same { "same" } else { "different" };
                let color = if right { SAME } else { DIFFERENT };
                root.draw(&Text::new(format!("d = {d:.3}"), (x0, y), ("sans-serif", 17)))
                    .map_err(|e| plot_error(path, e))?;
                root.draw(&Text::new(
                    format!("says {verdict}"),
                    (x0, y + 22),
                    ("sans-serif", 17).into_font().color(&color),
                ))
                .map_err(|e| plot_error(path, e))?;
            }
        }
        for (k, (a, b, target)) in pairs.iter().enumerate() {
            let x0 = (pad + k as u32 * (cell + pad)) as i32;
            let label = if *target == 0.0 { "same" } else { "different" };
            for (row, (img, caption)) in [(a, "image A"), (b, label)].into_iter().enumerate() {
                let y0 = (36 + row as u32 * (cell + title + pad)) as i32;
                root.draw(&Text::new(caption, (x0, y0), ("sans-serif", 18).into_font()))
                    .map_err(|e| plot_error(path, e))?;
                image(root, path, img, (x0, y0 + title as i32), scale as i32, None)?;
            }
        }
        Ok(())
    })
}

/// Train and validation loss per epoch, titled with what was trained (`what`).
pub fn loss_png(path: &Path, what: &str, train: &[f64], val: &[f64]) -> Result<()> {
    render(path, (900, 560), |root| {
        let all = train.iter().chain(val).copied().filter(|v| v.is_finite());
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let margin = ((hi - lo) * 0.1).max(1e-3);
        let epochs = train.len().max(val.len()).max(1);
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Contrastive loss per epoch: {what}"), ("sans-serif", 22))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5f64..epochs as f64 + 0.5, (lo - margin)..(hi + margin))
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("mean batch loss")
            .x_labels(epochs.min(20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (name, values, color) in [("train", train, PALETTE[0]), ("validation", val, PALETTE[1])] {
            let points: Vec<(f64, f64)> = values.iter().enumerate().map(|(i, &v)| ((i + 1) as f64, v)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                .map_err(|e| plot_error(path, e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| plot_error(path, e))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))
    })
}

/// Bounds of the finite points with 5% to spare on each side, so the data fills the axes.
fn bounds(points: &[(f32, f32)]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, f32::NEG_INFINITY);
    for &(x, y) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (-1.0, 1.0, -1.0, 1.0);
    }
    let (mx, my) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
    ((x0 - mx) as f64..(x1 + mx) as f64, (y0 - my) as f64..(y1 + my) as f64)
}

/// Points coloured by class in `area`, titled, with axis names `axes`.
fn scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    path: &Path,
    (title, title_size): (&str, u32),
    axes: (&str, &str),
    points: &[(f32, f32)],
    labels: &[u8],
) -> Result<()> {
    let (xs, ys) = bounds(points);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", title_size))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (class, &color) in PALETTE.iter().enumerate() {
        let mine =
            points.iter().zip(labels).filter(|(_, l)| **l as usize == class).map(|(p, _)| (p.0 as f64, p.1 as f64));
        chart
            .draw_series(mine.map(|p| Circle::new(p, 3, color.mix(0.75).filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    Ok(())
}

/// The classes' colours and names, one per line, in `area`.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    path: &Path,
    names: &[String],
) -> Result<()> {
    for (class, name) in names.iter().enumerate().take(PALETTE.len()) {
        let y = 60 + 30 * class as i32;
        area.draw(&Circle::new((16, y), 7, PALETTE[class].filled())).map_err(|e| plot_error(path, e))?;
        area.draw(&Text::new(name.as_str(), (32, y - 9), ("sans-serif", 18))).map_err(|e| plot_error(path, e))?;
    }
    Ok(())
}

/// A 2-D map of points coloured by class (t-SNE's, or a 2-D embedding as it is: `axes` names
/// the coordinates), the legend beside it so that it hides no point.
pub fn embedding_png(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    (points, labels): (&[(f32, f32)], &[u8]),
    names: &[String],
) -> Result<()> {
    render(path, (1200, 900), |root| {
        let (chart, side) = root.split_horizontally(960);
        scatter(&chart, path, (title, 22), axes, points, labels)?;
        legend(&side, path, names)
    })
}

/// One panel of a sweep's picture: a setting's validation embeddings.
pub struct Panel {
    pub title: String,
    pub axes: (String, String),
    pub points: Vec<(f32, f32)>,
    pub labels: Vec<u8>,
}

/// Panels in a grid of `columns`, the legend on the right.
pub fn panels_png(path: &Path, title: &str, panels: &[Panel], columns: usize, names: &[String]) -> Result<()> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let (cell_w, cell_h) = (560u32, 500u32);
    let size = (columns as u32 * cell_w + 240, rows as u32 * cell_h + 70);
    render(path, size, |root| {
        // The title in lines that fit the width, split at "; ".
        for (i, line) in title.split("; ").enumerate() {
            let font = ("sans-serif", 18).into_font().style(if i == 0 { FontStyle::Bold } else { FontStyle::Normal });
            root.draw(&Text::new(line, (16, 8 + 24 * i as i32), font)).map_err(|e| plot_error(path, e))?;
        }
        let body = root.margin(70, 0, 0, 0);
        let (grid, side) = body.split_horizontally(columns as u32 * cell_w);
        let cells = grid.split_evenly((rows, columns));
        for (panel, cell) in panels.iter().zip(&cells) {
            let axes = (panel.axes.0.as_str(), panel.axes.1.as_str());
            scatter(cell, path, (&panel.title, 17), axes, &panel.points, &panel.labels)?;
        }
        legend(&side, path, names)
    })
}

/// A confusion matrix: row = true class, column = predicted, each cell's count shaded by its
/// share of the row.
pub fn confusion_png(path: &Path, title: &str, matrix: &[Vec<u64>], names: &[String]) -> Result<()> {
    let n = matrix.len();
    let (cell, left, top) = (64i32, 150i32, 110i32);
    let size = ((left + cell * n as i32 + 30) as u32, (top + cell * n as i32 + 40) as u32);
    render(path, size, |root| {
        root.draw(&Text::new(title, (16, 10), ("sans-serif", 20).into_font().style(FontStyle::Bold)))
            .map_err(|e| plot_error(path, e))?;
        root.draw(&Text::new("predicted (kNN, k=1) →", (left, 45), ("sans-serif", 16)))
            .map_err(|e| plot_error(path, e))?;
        root.draw(&Text::new("true ↓", (10, top - 24), ("sans-serif", 16))).map_err(|e| plot_error(path, e))?;
        let short = |name: &str| name.chars().take(9).collect::<String>();
        for (k, name) in names.iter().enumerate().take(n) {
            let x = left + cell * k as i32 + 4;
            root.draw(&Text::new(short(name), (x, top - 24), ("sans-serif", 13))).map_err(|e| plot_error(path, e))?;
            root.draw(&Text::new(name.as_str(), (10, top + cell * k as i32 + cell / 2 - 8), ("sans-serif", 15)))
                .map_err(|e| plot_error(path, e))?;
        }
        for (r, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            for (c, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let shade = (255.0 * (1.0 - share)) as u8;
                let color = if r == c { RGBColor(shade, 255, shade) } else { RGBColor(255, shade, shade) };
                let (x, y) = (left + cell * c as i32, top + cell * r as i32);
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], color.filled()))
                    .map_err(|e| plot_error(path, e))?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK.mix(0.3)))
                    .map_err(|e| plot_error(path, e))?;
                root.draw(&Text::new(count.to_string(), (x + 8, y + cell / 2 - 8), ("sans-serif", 15)))
                    .map_err(|e| plot_error(path, e))?;
            }
        }
        Ok(())
    })
}

/// A grey image at `scale` pixels a pixel, its top-left at `at`, framed in `frame` if given.
fn image<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    path: &Path,
    img: &[u8],
    at: (i32, i32),
    scale: i32,
    frame: Option<RGBColor>,
) -> Result<()> {
    for (i, &p) in img.iter().take(IMAGE_PIXELS).enumerate() {
        let (r, c) = ((i / IMAGE_SIDE) as i32, (i % IMAGE_SIDE) as i32);
        // Dark garments on white, as matplotlib's grey colormap inverted.
        let v = 255 - p;
        let px = (at.0 + c * scale, at.1 + r * scale);
        area.draw(&Rectangle::new([px, (px.0 + scale, px.1 + scale)], RGBColor(v, v, v).filled()))
            .map_err(|e| plot_error(path, e))?;
    }
    if let Some(color) = frame {
        let side = IMAGE_SIDE as i32 * scale;
        for k in 1..=3 {
            let rect = [(at.0 - k, at.1 - k), (at.0 + side + k, at.1 + side + k)];
            area.draw(&Rectangle::new(rect, color.stroke_width(1))).map_err(|e| plot_error(path, e))?;
        }
    }
    Ok(())
}

/// The frame of a match: green where the classes agree, red where not.
pub const SAME: RGBColor = RGBColor(44, 160, 44);
pub const DIFFERENT: RGBColor = RGBColor(214, 39, 40);

/// One row of the neighbours picture: a query and its nearest gallery images.
pub struct NeighbourRow<'a> {
    pub query: &'a [u8],
    pub caption: String,
    /// Image, caption (class, distance), whether of the query's class.
    pub neighbours: Vec<(&'a [u8], String, bool)>,
}

/// Each query (left, framed black) beside its nearest gallery images, nearest first, each
/// framed by whether it is of the query's class and captioned with its distance.
pub fn neighbours_png(path: &Path, title: &str, rows: &[NeighbourRow]) -> Result<()> {
    let scale = 3i32;
    let side = IMAGE_SIDE as i32 * scale;
    let (col, row_h, gap) = (side + 40, side + 48, 40);
    let k = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0) as i32;
    let size = ((20 + col + gap + k * col) as u32, (50 + rows.len() as i32 * row_h + 10) as u32);
    render(path, size, |root| {
        root.draw(&Text::new(title, (16, 10), ("sans-serif", 20).into_font().style(FontStyle::Bold)))
            .map_err(|e| plot_error(path, e))?;
        for (r, row) in rows.iter().enumerate() {
            let y = 50 + r as i32 * row_h;
            image(root, path, row.query, (20, y + 18), scale, Some(BLACK))?;
            root.draw(&Text::new(row.caption.as_str(), (16, y), ("sans-serif", 13)))
                .map_err(|e| plot_error(path, e))?;
            for (j, (img, caption, same)) in row.neighbours.iter().enumerate() {
                let x = 20 + col + gap + j as i32 * col;
                image(root, path, img, (x, y + 18), scale, Some(if *same { SAME } else { DIFFERENT }))?;
                root.draw(&Text::new(caption.as_str(), (x - 2, y), ("sans-serif", 13)))
                    .map_err(|e| plot_error(path, e))?;
            }
        }
        Ok(())
    })
}
