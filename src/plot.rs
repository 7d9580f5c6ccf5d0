//! The pictures: sample pairs as the tutorial draws them, the loss curves, and the t-SNE map of
//! embeddings. Plain data in, PNG out; nothing here sees the model or the tape.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::data::CLASS_NAMES;
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
/// "different" (targets 0 and 1), as in the tutorial.
pub fn pairs_png(path: &Path, pairs: &[(&[u8], &[u8], f32)]) -> Result<()> {
    let scale = 5u32;
    let cell = IMAGE_SIDE as u32 * scale;
    let (pad, title) = (12u32, 26u32);
    let width = pairs.len() as u32 * (cell + pad) + pad;
    let height = 2 * (cell + title + pad) + pad + 30;
    render(path, (width, height), |root| {
        root.draw(&Text::new("Sample pairs", (pad as i32, 6), ("sans-serif", 22).into_font().style(FontStyle::Bold)))
            .map_err(|e| plot_error(path, e))?;
        for (k, (a, b, target)) in pairs.iter().enumerate() {
            let x0 = (pad + k as u32 * (cell + pad)) as i32;
            let label = if *target == 0.0 { "same" } else { "different" };
            for (row, (img, caption)) in [(a, "image A"), (b, label)].into_iter().enumerate() {
                let y0 = (36 + row as u32 * (cell + title + pad)) as i32;
                root.draw(&Text::new(caption, (x0, y0), ("sans-serif", 18).into_font()))
                    .map_err(|e| plot_error(path, e))?;
                let top = y0 + title as i32;
                for (i, &p) in img.iter().take(IMAGE_PIXELS).enumerate() {
                    let (r, c) = ((i / IMAGE_SIDE) as i32, (i % IMAGE_SIDE) as i32);
                    // Dark garments on white, as matplotlib's grey colormap inverted.
                    let v = 255 - p;
                    let px = (x0 + c * scale as i32, top + r * scale as i32);
                    root.draw(&Rectangle::new(
                        [px, (px.0 + scale as i32, px.1 + scale as i32)],
                        RGBColor(v, v, v).filled(),
                    ))
                    .map_err(|e| plot_error(path, e))?;
                }
            }
        }
        Ok(())
    })
}

/// Train and validation loss per epoch.
pub fn loss_png(path: &Path, train: &[f64], val: &[f64]) -> Result<()> {
    render(path, (900, 560), |root| {
        let all = train.iter().chain(val).copied().filter(|v| v.is_finite());
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let margin = ((hi - lo) * 0.1).max(1e-3);
        let epochs = train.len().max(val.len()).max(1);
        let mut chart = ChartBuilder::on(root)
            .caption("Contrastive loss per epoch", ("sans-serif", 26))
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

/// A 2-D map of points coloured by class, with a legend naming the classes.
pub fn tsne_png(path: &Path, title: &str, points: &[(f32, f32)], labels: &[u8]) -> Result<()> {
    render(path, (1100, 900), |root| {
        let (mut x0, mut x1, mut y0, mut y1) = (f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, f32::NEG_INFINITY);
        for &(x, y) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (-1.0, 1.0, -1.0, 1.0);
        }
        let (mx, my) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 26))
            .margin(18)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (x0 - mx) as f64..(x1 + mx) as f64 + ((x1 - x0) * 0.35) as f64,
                (y0 - my) as f64..(y1 + my) as f64,
            )
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("t-SNE 1")
            .y_desc("t-SNE 2")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 18))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (class, name) in CLASS_NAMES.iter().enumerate() {
            let color = PALETTE[class];
            let mine =
                points.iter().zip(labels).filter(|(_, l)| **l as usize == class).map(|(p, _)| (p.0 as f64, p.1 as f64));
            chart
                .draw_series(mine.map(|p| Circle::new(p, 3, color.mix(0.75).filled())))
                .map_err(|e| plot_error(path, e))?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))
    })
}
