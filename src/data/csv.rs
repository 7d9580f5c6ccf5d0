//! The Kaggle CSV layout the tutorial reads: `label,pixel1,...,pixel784`, one image per line,
//! header optional (a first line most of whose fields are not numbers), plain or gzip.

use std::path::Path;

use super::{Dataset, open, read_error};
use crate::error::{Error, Result};
use crate::model::IMAGE_PIXELS;

const FIELDS: usize = 1 + IMAGE_PIXELS;

/// The first `limit` images of the file at `path`.
pub fn load(path: &Path, limit: usize) -> Result<Dataset> {
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(open(path)?);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut record = ::csv::ByteRecord::new();
    let mut line = 0u64;
    let mut first = true;
    while labels.len() < limit {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, line + 1, e)),
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() != FIELDS {
            if line == 1 && record.len() == 1 && record[0].is_empty() {
                continue;
            }
            return Err(Error::input(
                path,
                format!("line {line}"),
                format!("{} fields, expected {FIELDS} (label, pixel1..pixel784)", record.len()),
            ));
        }
        if std::mem::take(&mut first) {
            strip_bom(&mut record);
            // A header is a first line most of whose fields are not numbers (the tutorial's file
            // starts with `label,pixel1,...`); any later line, and a first line of numbers with
            // a bad field (a typo, a float label), is data, whose error names the line.
            if record.iter().filter(|f| !is_number(f)).count() * 2 > record.len() {
                continue;
            }
        }
        let label = parse(&record[0])
            .filter(|&v| v <= 9)
            .ok_or_else(|| field_error(path, line, 0, &record[0], "a label 0–9"))?;
        labels.push(label);
        let start = images.len();
        images.resize(start + IMAGE_PIXELS, 0);
        for (k, (field, pixel)) in record.iter().skip(1).zip(&mut images[start..]).enumerate() {
            *pixel = parse(field).ok_or_else(|| field_error(path, line, k + 1, field, "an integer pixel 0–255"))?;
        }
    }
    Ok(Dataset { images, labels, source: path.to_path_buf() })
}

/// Whether a field reads as a number (of any form: a float label is data, not a header).
fn is_number(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_ok_and(|s| s.trim().parse::<f64>().is_ok())
}

/// Drops a UTF-8 byte-order mark from the first field, which some editors put before the text.
fn strip_bom(record: &mut ::csv::ByteRecord) {
    if let Some(rest) = record.get(0).and_then(|f| f.strip_prefix(b"\xef\xbb\xbf")) {
        let fields: Vec<Vec<u8>> =
            std::iter::once(rest.to_vec()).chain(record.iter().skip(1).map(<[u8]>::to_vec)).collect();
        *record = ::csv::ByteRecord::from(fields);
    }
}

/// A non-negative integer that fits a byte, allowing surrounding spaces.
fn parse(field: &[u8]) -> Option<u8> {
    // 47 million fields in the training file: plain 1–3 digit fields skip the general path.
    let d = |b: u8| b.wrapping_sub(b'0');
    match *field {
        [a] if d(a) < 10 => return Some(d(a)),
        [a, b] if d(a) < 10 && d(b) < 10 => return Some(d(a) * 10 + d(b)),
        [a, b, c] if d(a) < 10 && d(b) < 10 && d(c) < 10 => {
            return u8::try_from(u16::from(d(a)) * 100 + u16::from(d(b) * 10 + d(c))).ok();
        }
        _ => {}
    }
    let s = std::str::from_utf8(field).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&v| v <= 255).map(|v| v as u8)
}

fn field_error(path: &Path, line: u64, field: usize, value: &[u8], want: &str) -> Error {
    let name = if field == 0 { "label".to_string() } else { format!("pixel{field}") };
    let shown: String = String::from_utf8_lossy(value).chars().take(20).collect();
    Error::input(path, format!("line {line}, field {} ({name})", field + 1), format!("{shown:?} is not {want}"))
}

fn csv_error(path: &Path, line: u64, e: ::csv::Error) -> Error {
    let line = e.position().map_or(line, |p| p.line());
    match e.into_kind() {
        ::csv::ErrorKind::Io(io) => read_error(path, format!("line {line}"), &io),
        ::csv::ErrorKind::Utf8 { .. } => Error::input(path, format!("line {line}"), "not text (invalid UTF-8)"),
        other => Error::input(path, format!("line {line}"), format!("{other:?}")),
    }
}
