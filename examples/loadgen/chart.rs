//! The loadgen chart: CPU per call, loss and p99 latency against N, one line
//! per (mode, codec).

use std::path::Path;

use plotters::prelude::*;

use crate::run::Summary;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn draw(runs: &[Summary], path: &Path) -> Result<(), String> {
    let font = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "cannot load the chart font".to_string())?;
    let root = BitMapBackend::new(path, (1500, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, 3));
    let max_n = runs.iter().map(|r| r.calls).max().unwrap_or(1) as f64;
    let mut series: Vec<(String, Vec<&Summary>)> = Vec::new();
    for r in runs {
        let key = format!("{} {}", r.mode, r.codec);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => series.push((key, vec![r])),
        }
    }
    type Metric = fn(&Summary) -> f64;
    let metrics: [(&str, Metric); 3] = [
        ("CPU per call (% of one core)", |s| s.cpu_pct_per_call),
        ("loss (%)", |s| {
            s.wa_to_pbx.loss_pct.max(s.pbx_to_wa.loss_pct)
        }),
        ("p99 one-way latency (ms, passthrough)", |s| {
            s.latency_wa_to_pbx.p99_ms.max(s.latency_pbx_to_wa.p99_ms)
        }),
    ];
    for (i, (panel, (title, f))) in panels.iter().zip(metrics).enumerate() {
        // Latency exists for passthrough runs only.
        let has = |s: &Summary| i != 2 || s.latency_wa_to_pbx.samples > 0;
        let max_y = runs.iter().map(f).fold(0.0f64, f64::max).max(1e-3) * 1.2;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("concurrent calls")
            .draw()
            .map_err(|e| e.to_string())?;
        for (k, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let mut pts: Vec<(f64, f64)> = pts
                .iter()
                .filter(|s| has(s))
                .map(|s| (s.calls as f64, f(s)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
