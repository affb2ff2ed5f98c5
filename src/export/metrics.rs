//! The Prometheus text exposition of what udpkit counts: a monitor's targets, a `/probe`,
//! a server's counters and a relay's, encoded by the Prometheus project's own
//! `prometheus-client` (text format 0.0.4) from plain copies of the counters, so that
//! encoding never holds anything the probing or the serving needs.
//!
//! Promise: names, units and labels as Prometheus's naming guide says (`udpkit_` prefix,
//! base units: seconds and bytes, counters ending `_total`); a series is shown only when
//! what it says is known (one-way delays only with agreeing clocks, loss by direction only
//! where the reflector's count splits it, hops and DSCP only where a reflector said); label
//! values are escaped by the encoder. `promtool check metrics` finds nothing to say of any
//! exposition (tests/monitor.rs).

use prometheus_client::collector::Collector;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::addr;
use crate::load::watch::Snapshot;
use crate::measure::buckets::{BOUNDS_NANOS, Buckets};
use crate::monitor::Counts;
use crate::relay;
use crate::tools::monitor::Target;
use crate::{IcmpCounts, InUse, Stats, ping};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// One sample's value.
#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Float(f64),
    Histogram(Buckets),
}

/// One metric family: its samples, by label set.
#[derive(Clone, Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Metric families gathered for one exposition.
#[derive(Debug, Default)]
struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// The family `name` (a counter's without `_total`: the encoder adds it), made on
    /// first use.
    fn family(&mut self, name: &'static str, kind: MetricType, help: &'static str) -> &mut Family {
        match self.families.iter().position(|f| f.name == name) {
            Some(i) => &mut self.families[i],
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        }
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: u64) {
        self.family(name, MetricType::Counter, help)
            .samples
            .push((labels, Value::Int(v)));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.family(name, MetricType::Gauge, help)
            .samples
            .push((labels, Value::Float(v)));
    }

    fn histogram(&mut self, name: &'static str, help: &'static str, labels: Labels, b: &Buckets) {
        self.family(name, MetricType::Histogram, help)
            .samples
            .push((labels, Value::Histogram(*b)));
    }

    fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One sample of a family of `kind`.
fn encode_sample(
    metric: &mut MetricEncoder,
    kind: MetricType,
    labels: &Labels,
    value: &Value,
) -> Result<(), std::fmt::Error> {
    let mut m = metric.encode_family(labels)?;
    match value {
        Value::Int(v) if kind == MetricType::Counter => {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)
        }
        Value::Int(v) => m.encode_gauge(v),
        Value::Float(v) if kind == MetricType::Counter => {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)
        }
        Value::Float(v) => m.encode_gauge(v),
        Value::Histogram(b) => {
            let mut buckets = [(0.0, 0); BOUNDS_NANOS.len() + 1];
            for (slot, bucket) in buckets.iter_mut().zip(b.buckets()) {
                *slot = bucket;
            }
            m.encode_histogram::<NoLabelSet>(b.sum_seconds(), b.count(), &buckets, None)
        }
    }
}

impl Exposition {
    /// Encodes every family gathered.
    fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                encode_sample(&mut metric, f.kind, labels, value)?;
            }
        }
        Ok(())
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(&mut encoder)
    }
}

fn icmp_kinds(c: &IcmpCounts) -> [(&'static str, u64); 6] {
    [
        ("port_unreachable", c.port_unreachable),
        ("host_unreachable", c.host_unreachable),
        ("network_unreachable", c.network_unreachable),
        ("protocol_unreachable", c.protocol_unreachable),
        ("too_big", c.too_big),
        ("other", c.other),
    ]
}

fn target_labels(t: &Target) -> Labels {
    vec![
        ("target", addr::shown(t.address).to_string()),
        ("name", t.name.clone()),
        ("protocol", t.requests.protocol.as_str().to_string()),
    ]
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_string()));
    labels
}

/// A monitor's targets, as its `/metrics` shows them (for a caller that wants a string;
/// the endpoint streams [`write_monitor`]).
pub fn monitor(snapshot: &Arc<Snapshot>) -> String {
    let mut text = String::new();
    write_monitor(snapshot, &mut text).expect("writing to a String cannot fail");
    text
}

/// Writes a monitor's exposition to `out` as it goes, family by family over the snapshot:
/// memory stays that of one target's samples, whatever the number of targets.
pub fn write_monitor(snapshot: &Arc<Snapshot>, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MonitorCollector(Arc::clone(snapshot))));
    let mut out = out;
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
}

#[derive(Debug)]
struct MonitorCollector(Arc<Snapshot>);

/// One of a target's metric families: the samples it gives for a target (none: the
/// family shows nothing for it).
struct Def {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    emit: Emit,
}

/// What gives a family's samples for one target.
type Emit = fn(&Target, &Counts, &mut Vec<(Labels, Value)>);

const fn def(kind: MetricType, name: &'static str, help: &'static str, emit: Emit) -> Def {
    Def {
        name,
        help,
        kind,
        emit,
    }
}

/// Every family of a target's metrics, in the order shown.
const TARGET_METRICS: &[Def] = &[
    def(
        MetricType::Gauge,
        "udpkit_up",
        "1 when one of the target's last three settled probes was answered in time.",
        |t, c, out| out.push((target_labels(t), Value::Float(f64::from(u8::from(c.up))))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_requests",
        "Probes sent.",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.sent))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_replies",
        "First replies to probes (late ones too; see udpkit_probe_unverified_replies_total).",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.received))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_lost",
        "Probes not answered within their timeout, or refused by the kernel.",
        |t, c, out| out.push((target_labels(t), Value::Int(c.lost))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_late_replies",
        "Replies that came after their probe's timeout (the probe is counted lost too).",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.late))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_duplicate_replies",
        "Replies beyond the first to a probe.",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.duplicates))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_forged_replies",
        "Replies the target did not send: a wrong ID or nonce, a sequence number never sent.",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.forged))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_unverified_replies",
        "Replies matched by length alone (the server sends no IDs): anyone could send them.",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.unverified))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_bad_replies",
        "Datagrams from the target that answer no probe (cut short, unmatched, malformed).",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.bad))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_not_sent",
        "Probes the kernel refused to send (counted lost).",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.not_sent))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_skipped",
        "Probes the pacer skipped after the monitor stalled (never sent).",
        |t, c, out| out.push((target_labels(t), Value::Int(c.tally.skipped))),
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_icmp_errors",
        "ICMP errors that came back for the target's probes (any of which may be forged).",
        |t, c, out| {
            for (kind, n) in icmp_kinds(&c.tally.icmp) {
                out.push((with(target_labels(t), "kind", kind), Value::Int(n)));
            }
        },
    ),
    def(
        MetricType::Histogram,
        "udpkit_probe_rtt_seconds",
        "Round-trip times; matched=\"id\": replies proven by their probe's ID, \
         matched=\"length\": by length alone.",
        |t, c, out| {
            out.push((
                with(target_labels(t), "matched", "id"),
                Value::Histogram(c.rtt),
            ));
            if let Some(b) = &c.rtt_unverified {
                out.push((
                    with(target_labels(t), "matched", "length"),
                    Value::Histogram(**b),
                ));
            }
        },
    ),
    def(
        MetricType::Histogram,
        "udpkit_probe_one_way_delay_seconds",
        "One-way delays from STAMP timestamps, only where both clocks are known to agree (the \
         reflector is this host, or both say they are synchronised).",
        |t, c, out| {
            for (direction, b) in [("forward", &c.forward), ("backward", &c.backward)] {
                if let Some(b) = b {
                    out.push((
                        with(target_labels(t), "direction", direction),
                        Value::Histogram(**b),
                    ));
                }
            }
        },
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_one_way_unknown",
        "STAMP replies whose one-way delays were not recorded (clocks not both synchronised).",
        |t, c, out| {
            if t.requests.protocol.test_packets() {
                out.push((target_labels(t), Value::Int(c.one_way_unknown)));
            }
        },
    ),
    def(
        MetricType::Gauge,
        "udpkit_probe_lost_by_direction",
        "Settled probes lost, split by the reflector's own count (stateful reflectors only; \
         absent when the count cannot split them).",
        |t, c, out| {
            if let Some((forward, backward, unknown)) = c.lost_split {
                for (direction, n) in [
                    ("forward", forward),
                    ("backward", backward),
                    ("unknown", unknown),
                ] {
                    out.push((
                        with(target_labels(t), "direction", direction),
                        Value::Float(n as f64),
                    ));
                }
            }
        },
    ),
    def(
        MetricType::Gauge,
        "udpkit_probe_hops",
        "Hops on the way there: the TTL sent less the TTL the reflector saw.",
        |t, c, out| {
            if let Some(hops) = c.hops {
                out.push((target_labels(t), Value::Float(f64::from(hops))));
            }
        },
    ),
    def(
        MetricType::Gauge,
        "udpkit_probe_dscp_received",
        "The DSCP the last probe arrived with, as the reflector's CoS TLV says.",
        |t, c, out| {
            if let Some(dscp) = c.dscp_seen {
                out.push((target_labels(t), Value::Float(f64::from(dscp))));
            }
        },
    ),
    def(
        MetricType::Counter,
        "udpkit_probe_dscp_remarked",
        "Probes that arrived with another DSCP than they were sent with.",
        |t, c, out| {
            if c.dscp_seen.is_some() {
                out.push((target_labels(t), Value::Int(c.remarked)));
            }
        },
    ),
];

impl Collector for MonitorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let mut own = Exposition::default();
        own.gauge(
            "udpkit_monitor_targets",
            "Targets the monitor watches.",
            vec![],
            s.targets.len() as f64,
        );
        own.histogram(
            "udpkit_monitor_send_lag_seconds",
            "How late probes were handed to the kernel against their schedule.",
            vec![],
            &s.send_lag,
        );
        own.gauge(
            "udpkit_monitor_send_lag_max_seconds",
            "The latest any probe was handed to the kernel against its schedule.",
            vec![],
            s.send_lag_max.as_secs_f64(),
        );
        own.encode_into(&mut encoder)?;
        let mut samples = Vec::new();
        for def in TARGET_METRICS {
            // A family with no sample at all is left out (no STAMP target: no one-way delays).
            let any = s.targets.iter().any(|(t, c)| {
                samples.clear();
                (def.emit)(t, c, &mut samples);
                !samples.is_empty()
            });
            if !any {
                continue;
            }
            let mut metric = encoder.encode_descriptor(def.name, def.help, None, def.kind)?;
            for (t, c) in &s.targets {
                samples.clear();
                (def.emit)(t, c, &mut samples);
                for (labels, value) in &samples {
                    encode_sample(&mut metric, def.kind, labels, value)?;
                }
            }
        }
        Ok(())
    }
}

/// One `/probe`'s outcome, as blackbox_exporter's probes answer (`probe_success`,
/// `probe_duration_seconds`) with udpkit's own figures beside.
pub fn probe(report: &ping::Report, took: std::time::Duration) -> String {
    let mut e = Exposition::default();
    let tally = &report.tally;
    let verified = report.latency.count() > 0;
    e.gauge(
        "probe_success",
        "1 when a reply proven by its request's ID (or STAMP's sequence and timestamp) came.",
        vec![],
        f64::from(u8::from(verified)),
    );
    e.gauge(
        "probe_duration_seconds",
        "How long the probe took.",
        vec![],
        took.as_secs_f64(),
    );
    e.gauge(
        "udpkit_probe_sent",
        "Requests sent.",
        vec![],
        tally.sent as f64,
    );
    e.gauge(
        "udpkit_probe_received",
        "First replies received.",
        vec![],
        tally.received as f64,
    );
    e.gauge(
        "udpkit_probe_loss_ratio",
        "Requests not answered, over those sent.",
        vec![],
        if tally.sent == 0 {
            0.0
        } else {
            tally.lost() as f64 / tally.sent as f64
        },
    );
    e.gauge(
        "udpkit_probe_forged",
        "Replies the target did not send.",
        vec![],
        tally.forged as f64,
    );
    e.gauge(
        "udpkit_probe_unverified",
        "Replies matched by length alone.",
        vec![],
        tally.unverified as f64,
    );
    if verified {
        let s = report.latency.summary(1e9);
        for (stat, v) in [("min", s.min), ("avg", s.avg), ("max", s.max)] {
            e.gauge(
                "udpkit_probe_rtt_seconds",
                "Round trips of the verified replies: min, avg, max.",
                vec![("stat", stat.to_string())],
                v,
            );
        }
    }
    e.render()
}

/// A server's counters, as `udpkit server --metrics` shows them.
pub fn server(s: &Stats, in_use: &InUse) -> String {
    let mut e = Exposition::default();
    e.counter(
        "udpkit_server_received_datagrams",
        "Datagrams received.",
        vec![],
        s.received,
    );
    e.counter("udpkit_server_replies", "Replies sent.", vec![], s.replied);
    e.counter(
        "udpkit_server_received_bytes",
        "Bytes received (UDP payload).",
        vec![],
        s.bytes_in,
    );
    e.counter(
        "udpkit_server_sent_bytes",
        "Bytes sent (UDP payload).",
        vec![],
        s.bytes_out,
    );
    for (reason, n) in [
        ("simulated", s.dropped_simulated),
        ("rate_limited", s.dropped_rate_limited),
        ("send_failed", s.send_failed),
        ("kernel", s.kernel_drops),
        ("malformed", s.malformed),
    ] {
        e.counter(
            "udpkit_server_dropped",
            "Datagrams not answered, by reason: simulated (--drop-rate), rate_limited, \
             send_failed (the kernel refused the reply), kernel (a full receive buffer), \
             malformed (not a request of the server's protocol).",
            vec![("reason", reason.to_string())],
            n,
        );
    }
    e.counter(
        "udpkit_server_slipped",
        "Requests over the rate limit answered anyway (shorter replies only).",
        vec![],
        s.slipped,
    );
    e.counter(
        "udpkit_server_sessions_refused",
        "STAMP packets answered statelessly because the session table was full.",
        vec![],
        s.sessions_refused,
    );
    e.gauge(
        "udpkit_server_sessions",
        "STAMP sessions a stateful reflector keeps now.",
        vec![],
        in_use.sessions as f64,
    );
    e.gauge(
        "udpkit_server_streams",
        "udpkit stream's streams the server keeps now.",
        vec![],
        in_use.streams as f64,
    );
    e.render()
}

/// A relay's counters, as `udpkit relay --metrics` shows them.
pub fn relay(c: &relay::Counters) -> String {
    let mut e = Exposition::default();
    for (direction, leg) in [("up", &c.up), ("down", &c.down)] {
        let l = vec![("direction", direction.to_string())];
        let rows: [(&'static str, &'static str, u64); 10] = [
            (
                "udpkit_relay_received_datagrams",
                "Datagrams received, by direction (up: from clients).",
                leg.received,
            ),
            (
                "udpkit_relay_forwarded_datagrams",
                "Datagrams sent on.",
                leg.forwarded,
            ),
            (
                "udpkit_relay_dropped_datagrams",
                "Datagrams dropped on purpose (--drop).",
                leg.dropped,
            ),
            (
                "udpkit_relay_duplicated_datagrams",
                "Datagrams sent twice on purpose.",
                leg.duplicated,
            ),
            (
                "udpkit_relay_reordered_datagrams",
                "Datagrams held back past later ones on purpose.",
                leg.reordered,
            ),
            (
                "udpkit_relay_send_failed",
                "Datagrams the kernel refused to send.",
                leg.failed,
            ),
            (
                "udpkit_relay_queue_full",
                "Datagrams dropped because the delay queue was full.",
                leg.queue_full,
            ),
            (
                "udpkit_relay_rate_limited",
                "Datagrams dropped by the per-prefix rate limit.",
                leg.rate_limited,
            ),
            (
                "udpkit_relay_kernel_drops",
                "Datagrams the kernel dropped for a full receive buffer.",
                leg.kernel_drops,
            ),
            (
                "udpkit_relay_icmp_errors",
                "ICMP errors received.",
                leg.icmp_errors,
            ),
        ];
        for (name, help, n) in rows {
            e.counter(name, help, l.clone(), n);
        }
    }
    for (what, n) in [
        ("opened", c.sessions_opened),
        ("expired", c.sessions_expired),
        ("refused", c.sessions_refused),
        ("evicted", c.sessions_evicted),
    ] {
        e.counter(
            "udpkit_relay_sessions",
            "Sessions (one a client address) opened, expired when idle, refused (no room), \
             evicted (for a newer one).",
            vec![("event", what.to_string())],
            n,
        );
    }
    e.gauge(
        "udpkit_relay_sessions_open",
        "Sessions open now.",
        vec![],
        c.sessions_opened
            .saturating_sub(c.sessions_expired + c.sessions_evicted) as f64,
    );
    e.gauge(
        "udpkit_relay_sessions_max",
        "The most sessions the relay holds at once.",
        vec![],
        c.max_sessions as f64,
    );
    e.render()
}
