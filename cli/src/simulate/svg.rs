//! Plots as SVG, written by hand (no fonts or libraries: the viewer draws the text), and
//! the charts of a report, which [`super::png`] draws again as PNG with `plotters`.

use serde_json::Value;

/// One line of a chart.
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The axis ranges of a chart: x over the points, y from 0 (or below) to 5 % above.
pub(super) fn bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
    {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    (x0, x1, y0, y1 * 1.05)
}

/// A line chart with axes, ticks, labels and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (840.0, 440.0);
    let (l, r, t, b) = (80.0, 260.0, 40.0, 60.0);
    let (x0, x1, y0, y1) = bounds(series);
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        (w - r + l) / 2.0,
        esc(title)
    );
    s.push_str(&format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b, w - r, h - b, h - b
    ));
    for i in 0..=5 {
        let fx = x0 + (x1 - x0) * f64::from(i) / 5.0;
        let fy = y0 + (y1 - y0) * f64::from(i) / 5.0;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <line x1=\"{l}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            sx(fx), h - b + 18.0, tick(fx), l - 6.0, sy(fy) + 4.0, tick(fy), sy(fy), w - r, sy(fy)
        ));
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
        (w - r + l) / 2.0, h - 18.0, esc(x_label), (h - b + t) / 2.0, (h - b + t) / 2.0, esc(y_label)
    ));
    for (i, se) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            s.push_str(&format!(
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{c}\"/>\n"
            ));
        }
        let ly = t + 20.0 + 20.0 * i as f64;
        s.push_str(&format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            w - r + 10.0, w - r + 30.0, w - r + 36.0, ly + 4.0, esc(&se.name)
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// An axis tick label: `1.2M`, `45k`, `12`, `0.85`.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One chart of a report: its file stem, title, axis labels and lines.
pub struct Chart {
    /// File name without extension (`sweep`, `precision-recall`, `download-per-day`).
    pub stem: &'static str,
    /// Title.
    pub title: &'static str,
    /// X axis label.
    pub x_label: &'static str,
    /// Y axis label.
    pub y_label: &'static str,
    /// Lines.
    pub series: Vec<Series>,
}

/// The plots of a simulation report: `(file name, SVG)`.
pub fn plots(r: &Value) -> Vec<(String, String)> {
    charts(r)
        .iter()
        .map(|c| {
            (
                format!("{}.svg", c.stem),
                line_chart(c.title, c.x_label, c.y_label, &c.series),
            )
        })
        .collect()
}

/// The charts of a simulation report.
pub fn charts(r: &Value) -> Vec<Chart> {
    let mut out = Vec::new();
    let points = r["sweep"]["points"].as_array().cloned().unwrap_or_default();
    let get = |p: &Value, who: &str, k: &str| p[who][k].as_f64().unwrap_or(f64::NAN);
    let thr = |p: &Value| p["attenuation_low"].as_f64().unwrap_or(0.0);
    let mut series = Vec::new();
    for (who, label) in [
        ("population", "population (model)"),
        ("engine_phones", "engine phones"),
    ] {
        series.push(Series {
            name: format!("{label}: precision"),
            points: points
                .iter()
                .map(|p| (thr(p), get(p, who, "precision")))
                .collect(),
        });
        series.push(Series {
            name: format!("{label}: recall"),
            points: points
                .iter()
                .map(|p| (thr(p), get(p, who, "recall")))
                .collect(),
        });
    }
    out.push(Chart {
        stem: "sweep",
        title: "Precision and recall vs attenuation threshold (medium = low + 8 dB)",
        x_label: "attenuation_low, dB",
        y_label: "share",
        series,
    });
    let pr: Vec<Series> = [
        ("population", "population (model)"),
        ("engine_phones", "engine phones"),
    ]
    .iter()
    .map(|(who, label)| Series {
        name: (*label).into(),
        points: points
            .iter()
            .map(|p| (get(p, who, "recall"), get(p, who, "precision")))
            .collect(),
    })
    .collect();
    out.push(Chart {
        stem: "precision-recall",
        title: "Precision/recall curve (attenuation sweep)",
        x_label: "recall",
        y_label: "precision",
        series: pr,
    });
    if let Some(schemes) = r["schemes"].as_object() {
        let dl: Vec<Series> = schemes
            .iter()
            .map(|(name, s)| Series {
                name: name.clone(),
                points: s["download"]["bytes_per_day"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .enumerate()
                            .map(|(d, b)| (d as f64, b.as_f64().unwrap_or(0.0)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        out.push(Chart {
            stem: "download-per-day",
            title: "Download per phone per day (HTTP head + body)",
            x_label: "day",
            y_label: "bytes",
            series: dl,
        });
    }
    out
}
