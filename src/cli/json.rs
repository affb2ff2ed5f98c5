//! JSON output, in one place: one object per report, with the keys the README documents,
//! rendered from the library's data.
//!
//! Promise: every object is one line of valid JSON; figures are the library's, unchanged.

use serde::Serialize;
use udpkit::addr;
use udpkit::measure::latency::Summary;
use udpkit::measure::stamp::{Clocks, StampReport};
use udpkit::{Matching, Tally};
use udpkit::{Stats, bench, ping};

/// ping's report: `target`, `sent`, `received`, `unverified`, `duplicates`, `late`,
/// `forged`, `bad`, `foreign`, `unreachable`, `icmp` (by kind), `loss_percent`, `time_ms`,
/// `matching`, `authenticated` (true only once the server proved it repeats IDs) and
/// `rtt_ms` (`min`, `avg`, `max`, `mdev`, `p50`, `p90`, `p99`, `p999`).
pub fn ping(r: &ping::Report) -> String {
    #[derive(Serialize)]
    struct Json {
        target: String,
        size: usize,
        #[serde(flatten)]
        tally: Tally,
        loss_percent: f64,
        time_ms: f64,
        matching: &'static str,
        authenticated: bool,
        rtt_ms: Summary,
        #[serde(skip_serializing_if = "Option::is_none")]
        stamp: Option<serde_json::Value>,
    }
    serde_json::to_string(&Json {
        target: addr::shown(r.target).to_string(),
        size: r.size,
        tally: r.tally,
        loss_percent: r.tally.loss_percent(),
        time_ms: r.elapsed.as_secs_f64() * 1e3,
        matching: r.matching.as_str(),
        authenticated: r.matching == Matching::Ids,
        rtt_ms: r.latency.summary(1e6),
        stamp: r.stamp.as_ref().map(|s| stamp(s, 1e6, "ms")),
    })
    .expect("plain values serialize")
}

/// bench's report: `requests_per_second`, the tally, `lost`, `seconds`, the settings,
/// `matching`, `authenticated` and `latency_us`.
pub fn bench(r: &bench::Report) -> String {
    #[derive(Serialize)]
    struct Json {
        target: String,
        flows: usize,
        window: usize,
        rate: Option<f64>,
        size: usize,
        requests_per_second: f64,
        #[serde(flatten)]
        tally: Tally,
        lost: u64,
        seconds: f64,
        matching: &'static str,
        authenticated: bool,
        latency_us: Summary,
        /// Segmented sends (UDP_SEGMENT) and coalesced receives (UDP_GRO) in effect.
        gso: bool,
        gro: bool,
        /// Open loop: how late requests left against their intended times; null otherwise.
        send_lag_us: Option<Summary>,
        /// Open loop: what the generator sent a second; null otherwise.
        sent_per_second: Option<f64>,
        /// Open loop: the generator, not the server, set the pace.
        generator_fell_behind: bool,
        /// This agent's share of a split run (`I/N`), and how late it started.
        #[serde(skip_serializing_if = "Option::is_none")]
        segment: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        late_start_s: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stamp: Option<serde_json::Value>,
    }
    let c = &r.config;
    serde_json::to_string(&Json {
        target: addr::shown(c.target).to_string(),
        flows: c.flows,
        window: c.window,
        rate: c.rate,
        size: c.size,
        requests_per_second: r.requests_per_second().round(),
        tally: r.tally,
        lost: r.tally.lost(),
        seconds: r.elapsed.as_secs_f64(),
        matching: r.matching.as_str(),
        authenticated: r.matching == Matching::Ids,
        latency_us: r.latency.summary(1e3),
        gso: r.offload.gso,
        gro: r.offload.gro,
        send_lag_us: r.send_lag.as_ref().map(|l| l.summary(1e3)),
        sent_per_second: r.sent_per_second.map(f64::round),
        generator_fell_behind: r.generator_fell_behind(),
        segment: c.segment.map(|(i, n)| format!("{i}/{n}")),
        late_start_s: r.late_start.map(|d| d.as_secs_f64()),
        stamp: r.stamp.as_ref().map(|s| stamp(s, 1e3, "us")),
    })
    .expect("plain values serialize")
}

/// What a STAMP reflector's replies said, in the tool's unit (`ms` for ping, `us` for
/// bench): `rtt_less_reflector_<unit>`, `reflector_<unit>`, `forward_<unit>` and
/// `backward_<unit>` (null unless `one_way` is `exact` or `synchronized`),
/// `one_way_error_us`, `negative_one_way`, `loss_forward`, `loss_backward`,
/// `loss_unknown_direction` (null with `loss_direction_unknown_why` when the reflector
/// cannot tell), `ttl_sent`, `ttl_seen` (`min`, `max`), `tos_sent`, `cos_seen` (`dscp`,
/// `ecn`, `rp`: null unless the reflector filled RFC 8972's CoS TLV), `remarked`.
pub fn stamp(s: &StampReport, unit_ns: f64, unit: &str) -> serde_json::Value {
    let one_way = s.clocks != Clocks::Unsynchronized;
    let (name, error) = match s.clocks {
        Clocks::Exact => ("exact", Some(0.0)),
        Clocks::Synchronized { error_us } => ("synchronized", Some(error_us)),
        Clocks::Unsynchronized => ("unsynchronized", None),
    };
    let mut v = serde_json::json!({
        format!("rtt_less_reflector_{unit}"): s.net.summary(unit_ns),
        format!("reflector_{unit}"): s.reflector.summary(unit_ns),
        format!("forward_{unit}"): one_way.then(|| s.forward.summary(unit_ns)),
        format!("backward_{unit}"): one_way.then(|| s.backward.summary(unit_ns)),
        "one_way": name,
        "one_way_error_us": error,
        "negative_one_way": s.negative_one_way,
        "loss_forward": s.loss.forward,
        "loss_backward": s.loss.backward,
        "loss_unknown_direction": s.loss.unknown,
        "ttl_sent": s.sent_ttl,
        "ttl_seen": s.ttl.map(|(min, max)| serde_json::json!({"min": min, "max": max})),
        "tos_sent": s.sent_tos,
        "cos_seen": s.cos,
        "remarked": s.cos.map(|c| c.dscp != s.sent_tos >> 2 || c.ecn != s.sent_tos & 3),
    });
    if let Some(why) = s.loss.why_not {
        v["loss_direction_unknown_why"] = why.into();
    }
    v
}

/// The server's counters: `event` (`stats` or `summary`), `seconds` since it started,
/// `dropped` (on purpose, in all), and every counter.
pub fn server_stats(r: &Stats, event: &str, seconds: f64, lines_not_shown: u64) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        event: &'a str,
        seconds: f64,
        dropped: u64,
        #[serde(flatten)]
        stats: &'a Stats,
        /// Lines the terminal or pipe could not take in time, dropped.
        lines_not_shown: u64,
    }
    let seconds = (seconds * 1000.0).round() / 1000.0;
    serde_json::to_string(&Line {
        event,
        seconds,
        dropped: r.dropped(),
        stats: r,
        lines_not_shown,
    })
    .expect("plain numbers serialize")
}

/// discover's answers: `broadcast`, `servers` (`address`, `rtt_ms`, `verified`), and how
/// many were `unverified`.
pub fn discover(broadcast: std::net::SocketAddr, found: &[udpkit::discover::Found]) -> String {
    let unverified = found.iter().filter(|f| !f.verified).count();
    #[derive(serde::Serialize)]
    struct Server {
        address: String,
        rtt_ms: f64,
        verified: bool,
    }
    #[derive(serde::Serialize)]
    struct Json {
        broadcast: String,
        servers: Vec<Server>,
        unverified: usize,
    }
    let json = Json {
        broadcast: broadcast.to_string(),
        servers: found
            .iter()
            .map(|f| Server {
                address: f.address.to_string(),
                rtt_ms: f.rtt.as_nanos() as f64 / 1e6,
                verified: f.verified,
            })
            .collect(),
        unverified,
    };
    serde_json::to_string(&json).expect("plain values serialize")
}

/// mtu's report: `payload`, `path_mtu`, `kernel_mtu`, `probes`, `authenticated`,
/// `answered_share`, `tries_to_fail`, `forged`, `icmp_errors`, `cut_to` (null, or the
/// longest reply that came back cut short: the server bounds the answer).
pub fn mtu(report: &udpkit::mtu::Report) -> String {
    serde_json::to_string(report).expect("plain values serialize")
}

/// One interval of a stream: `event` (`interval`), and the figures (`start`, `end`,
/// `sent`, `received`, `lost`, `lost_percent`, `duplicates`, `reordered`, `bytes`,
/// `bits_per_second`, `jitter_ms`).
pub fn stream_interval(f: &udpkit::stream::Figures) -> String {
    let mut v = serde_json::to_value(f).expect("plain values serialize");
    v["event"] = "interval".into();
    v.to_string()
}

/// A stream's report: the whole run's figures (`sent`, `received`, `lost`, `lost_percent`,
/// `duplicates`, `reordered`, `reorder_max`, `too_late`, `jitter_ms`, `pdv_ms`,
/// `bits_per_second`, `bytes`, `seconds`), `unknown` (sent after the last report of an
/// incomplete run), `stopped`, `complete` and `incomplete` (why not), the
/// settings, and (without `lines`) every interval; with `lines`, `event: "summary"`.
pub fn stream(r: &udpkit::stream::Report, lines: bool) -> String {
    let t = &r.total;
    let c = &r.receiver;
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut v = serde_json::json!({
        "target": addr::shown(r.config.target).to_string(),
        "reverse": r.config.reverse,
        "size": r.config.size,
        "pps": r.config.pps,
        "seconds": t.end,
        "sent": t.sent,
        "received": t.received,
        "lost": t.lost,
        "lost_percent": t.lost_percent,
        "duplicates": c.duplicates,
        "reordered": c.reordered,
        "reorder_max": c.reorder_max,
        "too_late": c.too_late,
        "malformed": c.malformed,
        "forged": c.forged,
        "foreign": r.foreign,
        "refused_here": r.refused_here,
        "refused_why": r.refused_why,
        "skipped": r.skipped,
        "jitter_ms": t.jitter_ms,
        "pdv_ms": {
            "p50": ms(c.pdv_p50_ns), "p90": ms(c.pdv_p90_ns), "p99": ms(c.pdv_p99_ns),
            "p999": ms(c.pdv_p999_ns), "max": ms(c.pdv_max_ns),
        },
        "bytes": t.bytes,
        "bits_per_second": t.bits_per_second,
        "unknown": r.unknown,
        "stopped": r.stopped,
        "complete": r.complete,
        "incomplete": r.incomplete,
    });
    if lines {
        v["event"] = "summary".into();
    } else {
        v["intervals"] = serde_json::to_value(&r.intervals).expect("plain values serialize");
    }
    v.to_string()
}

/// The merged report of many agents: the keys of `bench --json` (`sent`, `received`,
/// `lost`, `duplicates`, `late`, `forged`, `bad`, `unverified`, `requests_per_second`,
/// `seconds`, `latency_us`), `agents` (one row each), `per_second` (`second`,
/// `requests_per_second`, `p99_us`), `complete` and `notes`.
pub fn merge(r: &udpkit::merge::Report) -> String {
    let t = &r.totals;
    let agents: Vec<serde_json::Value> = r
        .agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "file": a.file,
                "segment": format!("{}/{}", a.header.segment.0, a.header.segment.1),
                "sent": a.totals.sent,
                "received": a.totals.received,
                "lost": a.totals.lost,
                "late_start_s": a.header.late,
                "latency_us": a.latency_us,
            })
        })
        .collect();
    serde_json::json!({
        "target": r.agents.first().map(|a| a.header.target.clone()),
        "agents": agents,
        "sent": t.sent,
        "received": t.received,
        "lost": t.lost,
        "duplicates": t.duplicates,
        "late": t.late,
        "forged": t.forged,
        "bad": t.bad,
        "unverified": t.unverified,
        "requests_per_second": r.requests_per_second().round(),
        "seconds": r.seconds,
        "latency_us": r.latency.summary(1e3),
        "per_second": r.per_second,
        "complete": r.complete,
        "notes": r.notes,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_counter() {
        let v: serde_json::Value =
            serde_json::from_str(&server_stats(&Stats::default(), "summary", 1.23456, 0)).unwrap();
        for key in [
            "event",
            "seconds",
            "received",
            "replied",
            "dropped",
            "dropped_simulated",
            "dropped_rate_limited",
            "slipped",
            "send_failed",
            "bytes_in",
            "bytes_out",
            "kernel_drops",
            "malformed",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["seconds"], 1.235);
    }
}
