//! Latency by percentile as an SVG picture (`bench --plot`, `merge --plot`): the tail of a
//! distribution, where the interesting part of a latency is, spread out on a percentile
//! axis of nines (90%, 99%, 99.9%, ...).
//!
//! Promise: ticks at round numbers (1, 2 or 5 times a power of ten) with gridlines, every
//! label inside the picture; the latency axis logarithmic when the tail is far above the
//! median (it says so), so the body of the distribution stays visible; the percentile
//! axis only as far as the samples reach (n samples say nothing past 1 - 1/n), so a small
//! run draws no flat line to 99.9999%; a run without replies says "no data". Text from
//! the caller is escaped.

use std::fmt::Write as _;

use crate::measure::latency::Latency;

/// What the picture says of the run.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// What was measured: the tool and its target.
    pub title: String,
    /// How: protocol, size, pace, duration, date.
    pub subtitle: String,
}

/// The latency axis is logarithmic when the maximum is more than this many times the
/// median.
const LOG_ABOVE: f64 = 20.0;

const W: f64 = 860.0;
const H: f64 = 460.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 46.0;
const TOP: f64 = 62.0;
const BOTTOM: f64 = 52.0;

/// Round steps for a linear axis from 0 to `max`: about five of 1, 2 or 5 times a power
/// of ten.
fn linear_ticks(max: f64) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0];
    }
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    let mut ticks = Vec::new();
    let mut v = 0.0;
    while v <= max * (1.0 + 1e-9) + step {
        ticks.push(v);
        if v >= max {
            break;
        }
        v += step;
    }
    ticks
}

/// Ticks for a logarithmic axis from `lo` to `hi`: each power of ten, with 2 and 5 between
/// where there are few decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let between: &[f64] = if last - first <= 3 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut ticks = Vec::new();
    for e in first..=last {
        for m in between {
            ticks.push(m * 10f64.powi(e));
        }
    }
    ticks.retain(|t| *t >= 10f64.powi(first) && *t <= 10f64.powi(last));
    ticks
}

/// A tick's label: as few digits as it needs.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (-(v.abs().log10().floor()) as i32).max(0) as usize;
    format!("{v:.digits$}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The percentile axis's labels, by nines.
const NINES: [&str; 7] = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];

/// The picture of `latency` in units of `unit_ns` nanoseconds (`unit`: "µs", "ms").
pub fn svg(latency: &Latency, unit_ns: f64, unit: &str, labels: &Labels) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="16">{}</text>
<text x="{LEFT}" y="44" font-size="12" fill="#555">{}</text>
"##,
        escape(&labels.title),
        escape(&labels.subtitle),
    );
    let n = latency.count();
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    if n == 0 {
        let _ = write!(
            svg,
            r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#999"/>
<text x="{}" y="{}" text-anchor="middle" font-size="18" fill="#555">no data: no reply was measured</text>
</svg>
"##,
            x1 - x0,
            y1 - y0,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
        return svg;
    }
    // The percentile axis: as many nines as the samples support.
    let nines_max = (n as f64).log10().ceil().clamp(1.0, 6.0);
    let x_of = |q: f64| {
        let nines = (-(1.0 - q).max(1e-12).log10()).min(nines_max);
        x0 + nines / nines_max * (x1 - x0)
    };
    let summary = latency.summary(unit_ns);
    let (lo, hi) = (
        summary.min.max(f64::MIN_POSITIVE),
        summary.max.max(f64::MIN_POSITIVE),
    );
    let log = summary.p50 > 0.0 && hi / summary.p50 > LOG_ABOVE;
    let (ticks, y_of): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if log {
        let ticks = log_ticks(lo, hi);
        let (a, b) = (
            ticks[0].log10(),
            ticks[ticks.len() - 1].log10().max(ticks[0].log10() + 1e-9),
        );
        (
            ticks,
            Box::new(move |v: f64| y1 - (v.max(10f64.powf(a)).log10() - a) / (b - a) * (y1 - y0)),
        )
    } else {
        let ticks = linear_ticks(hi);
        let top = *ticks.last().unwrap_or(&hi);
        let top = top.max(f64::MIN_POSITIVE);
        (ticks, Box::new(move |v: f64| y1 - v / top * (y1 - y0)))
    };
    // Gridlines and labels, the latency's.
    for t in &ticks {
        let y = y_of(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            label(*t)
        );
    }
    // The percentile's: the last label anchored at its end, inside the picture.
    let shown = nines_max as usize;
    for (k, name) in NINES.iter().enumerate().take(shown + 1) {
        let x = x0 + k as f64 / nines_max * (x1 - x0);
        let anchor = if k == shown { "end" } else { "middle" };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{name}</text>"##,
            y1 + 18.0
        );
    }
    // The curve, to the last quantile the samples support.
    let last_q = 1.0 - 1.0 / n as f64;
    let mut points = String::new();
    let mut count = 0;
    let mut first = (0.0, 0.0);
    for step in latency.histogram().iter_quantiles(5) {
        let q = step.quantile_iterated_to().min(last_q);
        let v = step.value_iterated_to() as f64 / unit_ns;
        let (x, y) = (x_of(q), y_of(v.min(hi)));
        let _ = write!(points, "{x:.1},{y:.1} ");
        if count == 0 {
            first = (x, y);
        }
        count += 1;
        if step.quantile_iterated_to() >= last_q {
            break;
        }
    }
    // One sample is a point, not a line of no length.
    let dot = if count == 1 {
        format!(
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#1f77b4"/>"##,
            first.0, first.1
        )
    } else {
        String::new()
    };
    let samples = if n == 1 { "sample" } else { "samples" };
    let axis = if log {
        format!("latency ({unit}, log scale)")
    } else {
        format!("latency ({unit})")
    };
    let _ = write!(
        svg,
        r##"<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="black"/>
<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile ({n} {samples})</text>
<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">{axis}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>{dot}
</svg>
"##,
        (x0 + x1) / 2.0,
        H - 10.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ticks_are_round() {
        assert_eq!(linear_ticks(9.3), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            linear_ticks(430.0),
            [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]
        );
        assert_eq!(
            log_ticks(30.0, 5000.0),
            [
                10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0
            ]
        );
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(200.0), "200");
    }

    fn latencies(us: &[u64]) -> Latency {
        let mut l = Latency::new();
        for u in us {
            l.record(Duration::from_micros(*u));
        }
        l
    }

    #[test]
    fn a_far_tail_gets_a_log_axis_and_a_few_samples_a_short_one() {
        let mut us = vec![100u64; 999];
        us.push(5000);
        let picture = svg(&latencies(&us), 1e3, "µs", &Labels::default());
        assert!(picture.contains("log scale"));
        assert!(picture.contains(">99.9%<") && !picture.contains(">99.99%<"));
        let ten = svg(
            &latencies(&[10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
            1e3,
            "µs",
            &Labels::default(),
        );
        assert!(!ten.contains("log scale"));
        assert!(
            ten.contains(">90%<") && !ten.contains(">99%<"),
            "ten samples reach 90%"
        );
    }

    #[test]
    fn no_replies_say_no_data_and_labels_are_escaped() {
        let labels = Labels {
            title: "<script>".into(),
            subtitle: "a & b".into(),
        };
        let picture = svg(&Latency::new(), 1e3, "µs", &labels);
        assert!(picture.contains("no data"));
        assert!(picture.contains("&lt;script&gt;") && picture.contains("a &amp; b"));
    }
}
