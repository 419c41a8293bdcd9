//! The report's charts, drawn to PNG. Text is drawn with a font file read at
//! run time (DejaVu Sans by default), so no system font libraries are needed.

use crate::jobs::{Job, Mode};
use crate::measure::{total_rss, MIB};
use crate::plan::{IN_FLIGHT, SLOW_MS};
use crate::report::thousands;
use crate::scrape::{Route, ScrapeRun};
use anyhow::{anyhow, Context, Result};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The font, unless `FANOUT_BENCH_FONT` names another TrueType file (Debian: `fonts-dejavu-core`).
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 600);
/// Colours that stay apart on white and for the common kinds of colour blindness (Tableau 10).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Reads the font and makes it the charts' `sans-serif`; call once, before drawing.
pub fn load_font() -> Result<()> {
    let path = std::env::var("FANOUT_BENCH_FONT").unwrap_or_else(|_| DEFAULT_FONT.to_owned());
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the charts' font {path}: install fonts-dejavu-core or set FANOUT_BENCH_FONT to a .ttf file"
        )
    })?;
    // The font table keeps the bytes for the rest of the run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT, FontStyle::Normal, bytes).map_err(|_| anyhow!("{path} is not a TrueType or OpenType font"))
}

/// Rows a second against worker concurrency for the largest job, with the
/// native core and one direct call as flat reference lines.
pub fn throughput(path: &Path, job: &Job, concurrency: &[usize]) -> Result<()> {
    let million = |secs: f64| job.rows_per_sec(secs) / 1e6;
    let series = |mode: Mode| -> Vec<(f64, f64)> {
        concurrency.iter().filter_map(|&c| job.run(mode, c).map(|r| (c as f64, million(r.secs)))).collect()
    };
    let (streamed, source) = (series(Mode::Streamed), series(Mode::Source));
    let (native, direct) = (million(job.native.secs), million(job.direct.secs));
    let top = streamed.iter().chain(&source).map(|p| p.1).fold(native.max(direct), f64::max) * 1.15;
    let (lo, hi) = (concurrency[0] as f64, concurrency[concurrency.len() - 1] as f64);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let caption =
        format!("Transform job throughput, {} rows ({:.0} MB of CSV)", thousands(job.rows), job.csv_bytes as f64 / 1e6);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (lo / 1.3..hi * 1.3).log_scale().with_key_points(concurrency.iter().map(|&c| c as f64).collect()),
            0f64..top,
        )?;
    chart
        .configure_mesh()
        .x_desc("worker concurrency (log scale)")
        .y_desc("million rows/s (higher is better)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    for (i, (points, label)) in
        [(streamed, "coordinator, streamed body"), (source, "coordinator, source URL")].into_iter().enumerate()
    {
        let colour = COLOURS[i];
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 5, colour.filled())))?;
    }
    let flat = [(native, "native core, 1 thread", BLACK), (direct, "one /transform call", COLOURS[2])];
    for (value, label, colour) in flat {
        chart
            .draw_series(DashedLineSeries::new([(lo / 1.3, value), (hi * 1.3, value)], 10, 6, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().with_context(|| format!("cannot write {}", path.display()))
}

/// Peak memory of all runtime processes against job size: the coordinator's
/// lines should stay flat while one direct call and the native core grow.
pub fn memory(path: &Path, jobs: &[Job], concurrency: &[usize]) -> Result<()> {
    let mib = |bytes: u64| bytes as f64 / MIB;
    let x = |job: &Job| job.rows as f64 / 1e6;
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for &c in concurrency {
        let points =
            jobs.iter().filter_map(|j| j.run(Mode::Streamed, c).map(|r| (x(j), mib(total_rss(&r.procs))))).collect();
        lines.push((format!("coordinator, streamed body, concurrency {c}"), points));
    }
    if let Some(&c) = concurrency.last() {
        let points =
            jobs.iter().filter_map(|j| j.run(Mode::Source, c).map(|r| (x(j), mib(total_rss(&r.procs))))).collect();
        lines.push((format!("coordinator, source URL, concurrency {c}"), points));
    }
    lines.push((
        "one /transform call".to_owned(),
        jobs.iter().map(|j| (x(j), mib(total_rss(&j.direct.procs)))).collect(),
    ));
    lines.push((
        "native core (holds the whole input)".to_owned(),
        jobs.iter().map(|j| (x(j), mib(j.native.peak_rss))).collect(),
    ));
    let top = lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).fold(0.0, f64::max) * 1.2;
    let right = jobs.last().map_or(1.0, x) * 1.08;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Peak memory against job size (transform, vat preset)", (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..right, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("job size, million rows")
        .y_desc("peak RSS of all processes, MiB")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    let last = lines.len() - 1;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        // The native core is not a runtime process: black, apart from the others.
        let colour = if i == last { BLACK } else { COLOURS[i % COLOURS.len()] };
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 5, colour.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().with_context(|| format!("cannot write {}", path.display()))
}

/// Pages a second at each latency, one bar per page count and route, with the
/// latency's bound drawn over the slow group.
pub fn scrape(path: &Path, runs: &[ScrapeRun]) -> Result<()> {
    let mut kinds: Vec<(usize, Route)> = Vec::new();
    for r in runs {
        if !kinds.contains(&(r.pages, r.route)) {
            kinds.push((r.pages, r.route));
        }
    }
    let latencies = [0, SLOW_MS];
    let bound = IN_FLIGHT as f64 * 1000.0 / SLOW_MS as f64;
    let top = runs.iter().map(ScrapeRun::pages_per_sec).fold(bound, f64::max) * 1.2;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Scrape throughput, pages of 40 KB, {IN_FLIGHT} in flight"), (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..latencies.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("latency of every page")
        .y_desc("pages/s (higher is better)")
        .y_label_formatter(&|y| thousands(*y as usize))
        .x_labels(5)
        // Labels under the groups' middles only (0.5 and 1.5), none at their edges.
        .x_label_formatter(&|x| match (x * 2.0).round() as i64 {
            1 => "0 ms (served at once: bound by CPU)".to_owned(),
            3 => format!("{SLOW_MS} ms"),
            _ => String::new(),
        })
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()?;
    let width = 0.8 / kinds.len() as f64;
    for (k, &(pages, route)) in kinds.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let bars: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| (r.pages, r.route) == (pages, route))
            .filter_map(|r| {
                latencies
                    .iter()
                    .position(|&l| l == r.latency_ms)
                    .map(|g| (g as f64 + 0.1 + k as f64 * width, r.pages_per_sec()))
            })
            .collect();
        let label =
            runs.iter().find(|r| (r.pages, r.route) == (pages, route)).map(ScrapeRun::label).unwrap_or_default();
        chart
            .draw_series(bars.iter().map(|&(x, y)| Rectangle::new([(x, 0.0), (x + width * 0.9, y)], colour.filled())))?
            .label(format!("{} pages, {label}", thousands(pages)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled()));
        // Inside the top of each bar, clear of the bound's line; above a bar too short to hold it.
        let inside = TextStyle::from((FONT, 15).into_font()).color(&WHITE).pos(Pos::new(HPos::Center, VPos::Center));
        let above = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        let lift = top * 0.03;
        chart.draw_series(bars.iter().map(|&(x, y)| {
            let (at, style) = if y > 3.0 * lift { (y - lift, &inside) } else { (y + lift, &above) };
            Text::new(thousands(y as usize), (x + width * 0.45, at), style.clone())
        }))?;
    }
    chart
        .draw_series(DashedLineSeries::new([(1.05, bound), (1.95, bound)], 10, 6, BLACK.stroke_width(2)))?
        .label(format!(
            "bound at {SLOW_MS} ms: {IN_FLIGHT} in flight / {SLOW_MS} ms = {} pages/s",
            thousands(bound as usize)
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().with_context(|| format!("cannot write {}", path.display()))
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(at)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("cannot draw a legend: {e}"))
}
