//! PNG charts of a run (plotters, DejaVu Sans for text).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::measure::Results;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> bool {
    for f in FONTS {
        if let Ok(bytes) = std::fs::read(f) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Series = (String, Vec<(f64, f64)>);

fn log_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (ymin, ymax) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (xmin.max(0.5)..xmax * 1.5).log_scale(),
            ((ymin.max(1e-3) / 2.0)..ymax * 2.0).log_scale(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("functions (N)")
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Draws the charts into `out`; returns their file names (none without a font).
pub fn draw(r: &Results, out: &Path) -> Result<Vec<String>> {
    if !register_font() {
        eprintln!("charts skipped: no DejaVu Sans font (apt-get install fonts-dejavu-core)");
        return Ok(Vec::new());
    }
    let side = |f: &dyn Fn(&crate::measure::CookieRow) -> f64| -> Vec<(f64, f64)> {
        r.cookies.iter().map(|row| (row.n as f64, f(row))).collect()
    };
    let mut names = Vec::new();
    let charts: Vec<(&str, &str, &str, Vec<Series>)> = vec![
        (
            "load.png",
            "Load time: one program with cookies vs one per function",
            "load ms",
            vec![
                ("one program + N cookies".into(), side(&|x| x.cookies.load_ms)),
                ("N programs".into(), side(&|x| x.per_function.load_ms)),
            ],
        ),
        (
            "memory.png",
            "Kernel memory (memlock): programs + counters map",
            "KiB",
            vec![
                (
                    "one program + N cookies".into(),
                    side(&|x| x.cookies.memlock_bytes as f64 / 1024.0),
                ),
                (
                    "N programs".into(),
                    side(&|x| x.per_function.memlock_bytes as f64 / 1024.0),
                ),
            ],
        ),
        (
            "tiers.png",
            "Attach and detach time per tier",
            "ms",
            ["multi", "perf-link", "emulated", "tracefs"]
                .iter()
                .flat_map(|tier| {
                    let pts = |f: &dyn Fn(&crate::measure::TierRow) -> f64| -> Vec<(f64, f64)> {
                        r.tiers
                            .iter()
                            .filter(|t| t.tier == *tier)
                            .map(|t| (t.n as f64, f(t)))
                            .collect()
                    };
                    [
                        (format!("{tier} attach"), pts(&|t| t.attach_ms)),
                        (format!("{tier} detach"), pts(&|t| t.detach_ms)),
                    ]
                })
                .filter(|s| !s.1.is_empty())
                .collect(),
        ),
    ];
    for (file, title, y, series) in charts {
        if series.iter().all(|s| s.1.len() < 2) {
            continue;
        }
        log_chart(&out.join(file), title, y, &series)?;
        names.push(file.to_string());
    }
    Ok(names)
}
