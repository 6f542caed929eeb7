//! `--sweep`: the table of one run per value and a hand-written SVG plot
//! (throughput and p99 latency against the swept value, points evenly
//! spaced since sweeps are usually geometric).

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::options::SweepParameter;
use super::report::RunReport;

/// One swept value and what its run measured.
#[derive(Debug)]
pub struct Point {
    pub value: usize,
    pub report: RunReport,
}

pub fn print_table(parameter: SweepParameter, points: &[Point]) {
    println!(
        "{:>10} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9}",
        parameter.name(),
        "ops/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "fsyncs/s",
        "CPU %",
        "RSS MiB"
    );
    for point in points {
        let report = &point.report;
        println!(
            "{:>10} {:>12.0} {:>10.1} {:>10} {:>10} {:>10} {:>10.0} {:>8.0} {:>9.1}",
            point.value,
            report.ops_per_s(),
            report.payload_mb_per_s(),
            report.micros(0.5),
            report.micros(0.99),
            report.micros(0.999),
            report.fsyncs_per_s(),
            report.cpu_percent(),
            report.peak_rss_bytes as f64 / (1 << 20) as f64
        );
    }
}

pub fn to_json(parameter: SweepParameter, points: &[Point], plot: &str) -> Value {
    let points: Vec<Value> = points
        .iter()
        .map(|point| {
            let mut report = point.report.to_json();
            if let Some(object) = report.as_object_mut() {
                object.insert("value".to_owned(), json!(point.value));
            }
            report
        })
        .collect();
    json!({ "sweep": parameter.name(), "plot": plot, "points": points })
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 80.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const THROUGHPUT_COLOUR: &str = "#1f6fb4";
const LATENCY_COLOUR: &str = "#c0392b";

/// A round axis maximum at or above `value` (1, 2 or 5 times a power of
/// ten), so tick labels stay short.
fn axis_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn label(value: f64) -> String {
    // Three decimals at most, trailing zeros dropped: 0.15, not
    // 0.15000000000000002.
    let short = |value: f64| {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if value >= 1e6 {
        format!("{}M", short(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", short(value / 1e3))
    } else {
        short(value)
    }
}

/// The plot as an SVG document.
pub fn svg(parameter: SweepParameter, points: &[Point], title: &str) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let throughput_max = axis_max(
        points
            .iter()
            .map(|point| point.report.ops_per_s())
            .fold(0.0, f64::max),
    );
    let latency_max = axis_max(
        points
            .iter()
            .map(|point| point.report.micros(0.99) as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
    let x = |index: usize| {
        if points.len() <= 1 {
            LEFT + plot_width / 2.0
        } else {
            LEFT + plot_width * index as f64 / (points.len() - 1) as f64
        }
    };
    let y = |value: f64, max: f64| TOP + plot_height * (1.0 - value / max);
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for tick in 0..=4 {
        let fraction = f64::from(tick) / 4.0;
        let level = TOP + plot_height * (1.0 - fraction);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{level}" x2="{}" y2="{level}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" fill="{THROUGHPUT_COLOUR}">{}</text><text x="{}" y="{}" fill="{LATENCY_COLOUR}">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            level + 4.0,
            label(throughput_max * fraction),
            WIDTH - RIGHT + 6.0,
            level + 4.0,
            label(latency_max * fraction),
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle" fill="{THROUGHPUT_COLOUR}">committed ops/s</text><text transform="translate({} {}) rotate(90)" text-anchor="middle" fill="{LATENCY_COLOUR}">p99 latency (ms)</text><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        TOP + plot_height / 2.0,
        WIDTH - 18.0,
        TOP + plot_height / 2.0,
        LEFT + plot_width / 2.0,
        HEIGHT - 14.0,
        match parameter {
            SweepParameter::Clients => "concurrent proposers",
            SweepParameter::Payload => "payload bytes",
        }
    );
    let mut throughput_line = String::new();
    let mut latency_line = String::new();
    for (index, point) in points.iter().enumerate() {
        let (px, ops) = (x(index), point.report.ops_per_s());
        let latency = point.report.micros(0.99) as f64 / 1000.0;
        let _ = write!(throughput_line, "{px:.1},{:.1} ", y(ops, throughput_max));
        let _ = write!(latency_line, "{px:.1},{:.1} ", y(latency, latency_max));
        let _ = writeln!(
            out,
            r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text><circle cx="{px:.1}" cy="{:.1}" r="3.5" fill="{THROUGHPUT_COLOUR}"/><circle cx="{px:.1}" cy="{:.1}" r="3.5" fill="{LATENCY_COLOUR}"/>"#,
            TOP + plot_height + 18.0,
            point.value,
            y(ops, throughput_max),
            y(latency, latency_max),
        );
    }
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{THROUGHPUT_COLOUR}" stroke-width="2"/>"#,
        throughput_line.trim_end()
    );
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{LATENCY_COLOUR}" stroke-width="2" stroke-dasharray="6 3"/>"#,
        latency_line.trim_end()
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn point(value: usize, committed: u64, p99_micros: u64) -> Point {
        let mut latency = super::super::drive::histogram();
        latency.record(p99_micros).expect("in range");
        Point {
            value,
            report: RunReport {
                nodes: 3,
                mode: "closed",
                clients: value,
                rate_per_s: None,
                payload_bytes: 64,
                window: Duration::from_secs(1),
                committed,
                latency,
                errors: Vec::new(),
                abandoned: 0,
                per_node: Vec::new(),
                cpu_seconds: 0.5,
                cpu_by_thread: Vec::new(),
                peak_rss_bytes: 1 << 20,
                processes: Vec::new(),
                one_process: true,
                fsync: true,
                leader_at_end: Some(1),
                baseline: None,
            },
        }
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(axis_max(0.0), 1.0);
        assert_eq!(axis_max(0.7), 1.0);
        assert_eq!(axis_max(1.5), 2.0);
        assert_eq!(axis_max(420_000.0), 500_000.0);
        assert_eq!(axis_max(600.0), 1000.0);
        assert_eq!(label(500_000.0), "500k");
        assert_eq!(label(2_000_000.0), "2M");
        assert_eq!(label(0.2 * 0.75), "0.15");
        assert_eq!(label(0.0), "0");
        assert_eq!(label(125_000.0), "125k");
    }

    #[test]
    fn svg_draws_one_vertex_per_point_on_both_lines() {
        let points = vec![
            point(1, 1_000, 800),
            point(16, 20_000, 1_200),
            point(256, 200_000, 4_000),
        ];
        let svg = svg(SweepParameter::Clients, &points, "a <sweep>");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;sweep&gt;"));
        let polylines: Vec<&str> = svg
            .lines()
            .filter(|line| line.starts_with("<polyline"))
            .collect();
        assert_eq!(polylines.len(), 2);
        for line in polylines {
            let vertices = line
                .split("points=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("points attribute");
            assert_eq!(vertices.split_whitespace().count(), 3, "{line}");
        }
        // 200k ops/s is already round: it is the top tick of the axis.
        assert!(svg.contains(">200k<"), "{svg}");
        assert!(!svg.contains(">500k<"), "{svg}");
        let json = to_json(SweepParameter::Clients, &points, "plot.svg");
        assert_eq!(json["points"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["points"][2]["value"], 256);
        assert_eq!(json["points"][2]["ops_per_s"], 200_000.0);
    }
}
