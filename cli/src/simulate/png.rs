//! The report's charts as PNG, drawn with `plotters` on its bitmap backend. Text is
//! rendered with `ab_glyph` from a font embedded in the binary (a DejaVu Sans subset,
//! `font/`), so no system font, fontconfig or freetype is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::svg::{bounds, tick, Chart};

/// DejaVu Sans, printable ASCII and a few symbols (licence: `font/LICENSE`).
static FONT: &[u8] = include_bytes!("font/DejaVuSans-subset.ttf");

/// The same colours as the SVG plots.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font is not a valid TrueType font".to_string());
    });
    res
}

fn e(x: impl std::fmt::Debug) -> String {
    format!("PNG plot: {x:?}")
}

/// Draw `chart` to `path` (840 × 440 pixels, RGB PNG).
pub fn write(chart: &Chart, path: &Path) -> Result<(), String> {
    font()?;
    let (x0, x1, y0, y1) = bounds(&chart.series);
    let root = BitMapBackend::new(path, (840, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .draw()
        .map_err(e)?;
    for (i, s) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(e)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
    }
    c.configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0x99, 0x99, 0x99))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draw every chart of a report into `dir` as `<stem>.png`; returns the file names.
pub fn write_all(charts: &[Chart], dir: &Path) -> Result<Vec<String>, String> {
    charts
        .iter()
        .map(|c| {
            let name = format!("{}.png", c.stem);
            write(c, &dir.join(&name)).map(|()| name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::svg::Series;
    use super::*;

    #[test]
    fn draws_a_png_with_the_embedded_font() {
        let dir = std::env::temp_dir().join(format!("dp3t-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = Chart {
            stem: "t",
            title: "Precision ≥ recall → 0.5 dB",
            x_label: "x",
            y_label: "y",
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)],
            }],
        };
        let names = write_all(&[chart], &dir).unwrap();
        let bytes = std::fs::read(dir.join(&names[0])).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
