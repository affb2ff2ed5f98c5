//! Text output, in one place: every summary and report a person reads, rendered from the
//! library's data (ping's and bench's reports, the server's counters, the relay's, mtu's,
//! discover's).
//!
//! Promise: each function renders its data and nothing else; wording lives here alone.

use udpkit::addr;
use udpkit::wire::Protocol;

use udpkit::measure::stamp::{Clocks, StampReport};
use udpkit::{IcmpCounts, IcmpError, Stats, bench, discover, mtu, ping, relay};
use udpkit::{Matching, Tally};

/// ping's summary: three or four lines, as ping's.
pub fn ping_summary(r: &ping::Report, protocol: Protocol) -> String {
    let mut extra = String::new();
    for (n, what) in [
        (r.tally.not_sent, "not sent"),
        (r.tally.forged, "forged"),
        (r.tally.bad, "bad"),
        (r.tally.foreign, "foreign"),
    ] {
        if n > 0 {
            extra.push_str(&format!(", {n} {what}"));
        }
    }
    if r.tally.unreachable > 0 {
        extra.push_str(&format!(
            ", {} ICMP error{} ({})",
            r.tally.unreachable,
            if r.tally.unreachable == 1 { "" } else { "s" },
            icmp_kinds(&r.tally.icmp)
        ));
    }
    let mut text = format!(
        "--- {} udpkit ping statistics ---\n\
             {} request{} sent, {} received, {} duplicates, {} late{extra}, {} loss, time {} ms\n",
        addr::shown(r.target),
        r.tally.sent,
        if r.tally.sent == 1 { "" } else { "s" },
        r.tally.received,
        r.tally.duplicates,
        r.tally.late,
        percent(r.tally.loss_percent()),
        r.elapsed.as_millis(),
    );
    if r.latency.count() > 0 {
        let s = r.latency.summary(1e6);
        text.push_str(&format!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms\n\
                 rtt p50/p90/p99 = {:.3}/{:.3}/{:.3} ms\n",
            s.min, s.avg, s.max, s.mdev, s.p50, s.p90, s.p99
        ));
    }
    if r.tally.unverified > 0 {
        text.push_str(&unverified_note(r.tally.unverified, r.matching));
    }
    if let Some(stamp) = &r.stamp {
        text.push_str(&stamp_summary(stamp, 1e6, "ms", 3));
    }
    if let Some(note) = silence_note(&r.tally, protocol, r.target.port()) {
        text.push_str(&note);
    }
    text
}

/// A run that heard no reply: datagrams came back but none in the protocol's form (the
/// server speaks another), or nothing at all: what to try, as one note line.
fn silence_note(t: &Tally, protocol: Protocol, port: u16) -> Option<String> {
    if t.sent == 0 || t.received > 0 {
        return None;
    }
    let others: Vec<&str> = Protocol::ALL
        .iter()
        .filter(|p| **p != protocol)
        .map(|p| p.as_str())
        .collect();
    // A port that is another protocol's own (862 is STAMP's) says which.
    let stamp = Protocol::ALL
        .iter()
        .find(|p| **p != protocol && p.default_port() == port && port != protocol.default_port())
        .map(|p| format!(" (port {port} is {}'s)", p.as_str().to_uppercase()))
        .unwrap_or_default();
    if t.cut > 0 {
        return Some(format!(
            "Note: {} replies came back with their request's ID but cut short: the server \
             or the path cuts datagrams this large (try a smaller -s, or udpkit mtu)\n",
            t.cut
        ));
    }
    if t.bad > 0 {
        return Some(format!(
            "Note: {} datagrams came back, none of them a reply in {protocol}'s form: the \
             server speaks another protocol (--protocol {}){stamp}\n",
            t.bad,
            others.join(" or --protocol ")
        ));
    }
    if t.forged > 0 && t.unreachable + t.not_sent == 0 && protocol.keyed() {
        return Some(format!(
            "Note: {} replies failed their HMAC: the reflector signs with another key, or \
             does not run in authenticated mode (then leave out --key-file)\n",
            t.forged
        ));
    }
    if t.forged > 0 && t.unreachable + t.not_sent == 0 && protocol.test_packets() {
        // Bytes from another protocol's server read as test packets that copy no request.
        return Some(format!(
            "Note: {} datagrams came back copying no request's sequence number and \
             timestamp: someone else's packets, or a server of another protocol \
             (--protocol {}){stamp}\n",
            t.forged,
            others.join(" or --protocol ")
        ));
    }
    if t.unreachable + t.forged + t.not_sent > 0 {
        return None;
    }
    // A reflector in authenticated mode answers only requests signed with its key.
    let keyed = if protocol == Protocol::STAMP {
        " (or wants requests signed with its key: --key-file)"
    } else {
        ""
    };
    Some(format!(
        "Note: nothing came back at all: the server may speak another protocol than \
         {protocol}{keyed} (--protocol {}){stamp}, be down, or the path may drop UDP\n",
        others.join(" or --protocol ")
    ))
}

/// Why some replies cannot be authenticated.
fn unverified_note(n: u64, matching: Matching) -> String {
    if matching == Matching::Sequence {
        format!(
            "{n} replies were matched by the sequence number and timestamp they echo, \
             without udpkit's nonce (TWAMP-light, STAMP requests under 64 bytes, or a \
             reflector that does not echo TLVs): none can be authenticated\n"
        )
    } else {
        format!(
            "{n} replies carried no request ID: each was matched by the length it names, \
             and none can be authenticated\n"
        )
    }
}

/// What a STAMP reflector's replies said, in `unit` (`unit_ns` nanoseconds) with
/// `digits` decimals: a few lines.
pub fn stamp_summary(s: &StampReport, unit_ns: f64, unit: &str, digits: usize) -> String {
    let mut text = String::new();
    if s.net.count() == 0 {
        return text;
    }
    let f = |v: f64| format!("{v:.digits$}");
    let n = s.net.summary(unit_ns);
    let refl = s.reflector.summary(unit_ns);
    text.push_str(&format!(
        "rtt less the reflector's time min/p50/max = {}/{}/{} {unit} (the reflector held each \
         request {} {unit} at the median)\n",
        f(n.min),
        f(n.p50),
        f(n.max),
        f(refl.p50)
    ));
    let way = |l: &udpkit::measure::latency::Latency| {
        let x = l.summary(unit_ns);
        format!("{}/{}/{}", f(x.min), f(x.p50), f(x.max))
    };
    match s.clocks {
        Clocks::Exact => text.push_str(&format!(
            "one way min/p50/max: there {}, back {} {unit} (exact: the reflector is this host, one clock)\n",
            way(&s.forward),
            way(&s.backward)
        )),
        Clocks::Synchronized { error_us } => text.push_str(&format!(
            "one way min/p50/max: there {}, back {} {unit} (both clocks say they are synchronized: \
             right within {error_us:.1} µs)\n",
            way(&s.forward),
            way(&s.backward)
        )),
        Clocks::Unsynchronized => text.push_str(
            "one-way delays: not given: the clocks are not both known to be synchronized (see \
             each side's Error Estimate)\n",
        ),
    }
    if s.negative_one_way > 0 && s.clocks != Clocks::Unsynchronized {
        text.push_str(&format!(
            "{} replies showed a negative one-way delay: the clocks disagree more than they say\n",
            s.negative_one_way
        ));
    }
    let l = s.loss;
    match (l.forward, l.backward, l.unknown) {
        (Some(0), Some(0), Some(0)) => {}
        (Some(fwd), Some(back), Some(unknown)) => text.push_str(&format!(
            "loss by direction: {fwd} on the way there, {back} on the way back, {unknown} after \
             the last reply the reflector counted (direction unknown)\n"
        )),
        _ => text.push_str(&format!(
            "loss by direction: unknown: {}\n",
            l.why_not.unwrap_or("the reflector did not say")
        )),
    }
    let mut seen = Vec::new();
    if let Some((lo, hi)) = s.ttl {
        let range = if lo == hi {
            format!("TTL {lo}")
        } else {
            format!("TTL {lo} to {hi}")
        };
        match s.sent_ttl {
            Some(sent) if sent >= hi => {
                let hops = |t: u8| sent - t;
                let h = if lo == hi {
                    format!("{}", hops(lo))
                } else {
                    format!("{} to {}", hops(hi), hops(lo))
                };
                seen.push(format!(
                    "{range} (sent with {sent}: {h} router{} on the way)",
                    if h == "1" { "" } else { "s" }
                ));
            }
            _ => seen.push(range),
        }
    }
    if let Some(cos) = s.cos {
        let (dscp, ecn) = (s.sent_tos >> 2, s.sent_tos & 3);
        let mut line = format!("DSCP {} ECN {}", cos.dscp, cos.ecn);
        if cos.dscp != dscp || cos.ecn != ecn {
            line.push_str(&format!(
                " (sent DSCP {dscp} ECN {ecn}: re-marked on the way there)"
            ));
        } else {
            line.push_str(" (as sent)");
        }
        if s.cos_varied {
            line.push_str(", not the same for every request");
        }
        seen.push(line);
    }
    if !seen.is_empty() {
        text.push_str(&format!("requests arrived with {}\n", seen.join("; ")));
    }
    text
}

/// `12.5%`, `0%`, `33.3%`.
fn percent(p: f64) -> String {
    let text = format!("{p:.1}");
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// `LABEL: min …, p50 …, p90 …, p99 …, p99.9 …, max …` in microseconds, a line.
fn latency_line(label: &str, latency: &udpkit::measure::latency::Latency) -> String {
    let s = latency.summary(1e3);
    format!(
        "{label}: min {:.1}, p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}\n",
        s.min, s.p50, s.p90, s.p99, s.p999, s.max
    )
}

/// bench's summary: two or three lines.
pub fn bench_summary(r: &bench::Report) -> String {
    let c = &r.config;
    let mut mode = match c.rate {
        Some(rate) => format!("open loop at {rate} requests/s"),
        None => format!("window {}", c.window),
    };
    if c.threads > 1 {
        mode.push_str(&format!(", {} threads", c.threads));
    }
    match (r.offload.gso, r.offload.gro) {
        (true, true) => mode.push_str(", GSO+GRO"),
        (true, false) => mode.push_str(", GSO"),
        (false, true) => mode.push_str(", GRO"),
        (false, false) => {}
    }
    let t = &r.tally;
    let loss = t.loss_percent();
    let mut text = format!(
        "--- {} udpkit bench: {} flow{}, {mode}, {}-byte requests, {:.1} s ---\n\
             {:.0} requests/s: {} sent, {} received, {} lost ({loss:.2}%), {} duplicates, {} late, {} bad, {} forged, {} foreign, {} unreachable\n",
        addr::shown(c.target),
        c.flows,
        if c.flows == 1 { "" } else { "s" },
        c.size,
        r.elapsed.as_secs_f64(),
        r.requests_per_second(),
        t.sent,
        t.received,
        t.lost(),
        t.duplicates,
        t.late,
        t.bad,
        t.forged,
        t.foreign,
        t.unreachable,
    );
    if r.latency.count() > 0 {
        text.push_str(&latency_line("latency (µs)", &r.latency));
    }
    if let (Some(lag), Some(sent)) = (&r.send_lag, r.sent_per_second)
        && lag.count() > 0
    {
        let l = lag.summary(1e3);
        text.push_str(&format!(
            "send lag (µs): p50 {:.1}, p99 {:.1}, max {:.1}; sent {sent:.0} requests/s of {} asked\n",
            l.p50,
            l.p99,
            l.max,
            c.rate.unwrap_or(0.0)
        ));
    }
    if t.skipped > 0 {
        text.push_str(&format!(
            "{} request slots were skipped: the generator stalled and, rather than rush them \
             at the server after the stall, sent at most a short burst and went on at the rate \
             (a run by duration sent fewer, one by count took longer; none counts as lost)\n",
            t.skipped
        ));
    }
    if r.generator_fell_behind() {
        text.push_str(
            "Note: the load generator fell behind its schedule (it sent under 99% of the rate, \
             or its send lag's p99 passed 100 µs and the median round trip): the latencies above include \
             its own delay, and the server may not be the bottleneck; try more --flows or a \
             lower --rate\n",
        );
    }
    if t.not_sent > 0 {
        text.push_str(&format!(
            "{} of the requests sent were refused by this host (a local firewall, a full \
             send buffer) and count as lost\n",
            t.not_sent
        ));
    }
    // A server listening beyond loopback limits replies per prefix (100 a second and a
    // burst of 100 by default): said only when the replies came at about that rate, not
    // for any loss (a lossy path, a relay dropping on purpose).
    // And only when the requests went well above that rate (a run at 100 a second that
    // loses is not being limited).
    let limited = (100.0 + 100.0 * r.elapsed.as_secs_f64()) * 1.5;
    let asked = t.sent as f64 / r.elapsed.as_secs_f64().max(1e-3);
    if loss >= 5.0
        && t.received > 0
        && t.lost() > t.not_sent
        && (t.received as f64) <= limited
        && asked > 150.0
    {
        text.push_str(
            "Note: a server listening beyond loopback limits replies per source prefix \
                 (100 a second by default) and says so on its stderr; for a benchmark start it \
                 with --rate-limit off\n",
        );
    }
    if t.unmatched > 0 && r.matching != Matching::Ids {
        text.push_str(&format!(
            "{} replies could not be told apart: they name a length that more than one \
             request still waiting had (the server does not repeat request IDs, and more \
             requests were in flight per flow than distinct lengths); they count as bad and \
             their requests as lost, rather than be credited to a guess: use more --flows, a \
             smaller --window or a lower --rate\n",
            t.unmatched
        ));
    }
    if t.unverified > 0 {
        text.push_str(&unverified_note(t.unverified, r.matching));
    }
    if let Some(stamp) = &r.stamp {
        text.push_str(&stamp_summary(stamp, 1e3, "µs", 1));
    }
    if let Some(note) = silence_note(t, c.requests.protocol, c.target.port()) {
        text.push_str(&note);
    }
    text
}

/// The server's counters as one sentence (requests not of the server's protocol, only
/// when there were some).
pub fn server_stats(r: &Stats) -> String {
    let mut text = format!(
        "{} received ({} bytes), {} replied ({} bytes), {} dropped on purpose \
             ({} simulated, {} rate-limited), {} slipped past the limit, {} failed sends, \
             {} dropped by the kernel",
        r.received,
        r.bytes_in,
        r.replied,
        r.bytes_out,
        r.dropped(),
        r.dropped_simulated,
        r.dropped_rate_limited,
        r.slipped,
        r.send_failed,
        r.kernel_drops,
    );
    if r.sessions_refused > 0 {
        text.push_str(&format!(
            ", {} answered without a session (the session table was full)",
            r.sessions_refused
        ));
    }
    if r.malformed > 0 {
        text.push_str(&format!(", {} malformed (not answered)", r.malformed));
    }
    text
}

/// The relay's counters as one line.
pub fn relay_summary(r: &relay::Counters) -> String {
    let f = |name: &str, c: &relay::Leg| {
        format!(
            "{name}: {} received, {} forwarded, {} dropped, {} duplicated, {} reordered, \
                 {} failed, {} queue full, {} rate-limited, {} dropped by the kernel, {} ICMP errors",
            c.received,
            c.forwarded,
            c.dropped,
            c.duplicated,
            c.reordered,
            c.failed,
            c.queue_full,
            c.rate_limited,
            c.kernel_drops,
            c.icmp_errors
        )
    };
    format!(
        "{}; {}; sessions: {} opened, {} expired, {} refused, {} evicted (at most {}); {} still queued",
        f("up", &r.up),
        f("down", &r.down),
        r.sessions_opened,
        r.sessions_expired,
        r.sessions_refused,
        r.sessions_evicted,
        r.max_sessions,
        r.queued_at_exit
    )
}

/// `3 port unreachable, 1 host unreachable`, leaving out kinds that did not occur.
pub fn icmp_kinds(r: &IcmpCounts) -> String {
    [
        (r.port_unreachable, IcmpError::PortUnreachable),
        (r.host_unreachable, IcmpError::HostUnreachable),
        (r.network_unreachable, IcmpError::NetworkUnreachable),
        (r.protocol_unreachable, IcmpError::ProtocolUnreachable),
        (r.too_big, IcmpError::TooBig),
        (r.other, IcmpError::Other),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, k)| format!("{n} {}", k.as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// discover's answers, one a line, and a closing count.
pub fn discover(
    broadcast: std::net::SocketAddr,
    found: &[discover::Found],
    wait: std::time::Duration,
) -> String {
    let unverified = found.iter().filter(|f| !f.verified).count();
    let mut text = String::new();
    for f in found {
        text.push_str(&format!(
            "{}  time={:.3} ms{}\n",
            f.address,
            f.rtt.as_secs_f64() * 1e3,
            if f.verified {
                ""
            } else {
                "  (unverified: no request ID)"
            }
        ));
    }
    let n = found.len();
    text.push_str(&format!(
        "{n} server{} answered {broadcast} within {} s",
        if n == 1 { "" } else { "s" },
        wait.as_secs_f64()
    ));
    if unverified > 0 {
        text.push_str(&format!(
            "; {unverified} unverified (the seed's sentence without the request's ID: \
                 anyone could have sent it)"
        ));
    }
    text.push('\n');
    text
}

/// mtu's finding, and what to make of it.
pub fn mtu(target: std::net::SocketAddr, report: &mtu::Report) -> String {
    let kernel = report
        .kernel_mtu
        .map_or("unknown".to_string(), |m| m.to_string());
    // Replies cut short: the server, not the path, may bound what was found.
    let at_least = if report.cut_to.is_some() {
        "at least "
    } else {
        ""
    };
    let mut text = format!(
        "{}: largest answered payload {} bytes, path MTU {at_least}{} bytes (kernel's MTU for the route: {kernel}; {} probes, {:.0}% of tries answered)\n",
        addr::shown(target),
        report.payload,
        report.path_mtu,
        report.probes,
        report.answered_share * 100.0,
    );
    if let Some(cut) = report.cut_to {
        text.push_str(&format!(
            "Note: replies came back shorter than their probes ({cut} bytes at most): the \
             server cuts what it answers (an echo server's buffer) or the way back is narrower, \
             so the path MTU is at least {} bytes and this server cannot show more\n",
            report.path_mtu
        ));
    }
    if report.cut_to.is_none() && report.kernel_mtu.is_some_and(|k| k != report.path_mtu) {
        text.push_str(
            "Note: the kernel's figure differs from what the probes found; the probes' is \
                 what came back answered (the kernel's comes from ICMP, which anyone can forge)\n",
        );
    }
    if !report.authenticated {
        text.push_str(
            "Note: the server does not repeat request IDs: its answers cannot be \
                 authenticated, and a forger who guesses the port could have made a size pass\n",
        );
    }
    if report.forged > 0 || report.icmp_errors > 0 {
        text.push_str(&format!(
            "Ignored {} forged replies and {} ICMP errors\n",
            report.forged, report.icmp_errors
        ));
    }
    text
}

/// Why a request did not go, as a ping line says it.
pub fn not_sent(why: ping::NotSent) -> String {
    match why {
        ping::NotSent::TooBig => "larger than this host sends (message too long)".to_string(),
        ping::NotSent::BufferFull => "the send buffer is full".to_string(),
        ping::NotSent::Icmp(kind) => format!("{} (an ICMP error came back)", kind.as_str()),
        why @ ping::NotSent::Other { .. } => format!("refused by this host ({why})"),
    }
}

/// `1.16 GBytes`, as iperf3 writes bytes (powers of 1024).
fn bytes_iperf(n: u64) -> String {
    let n = n as f64;
    for (unit, scale) in [
        ("GBytes", 1u64 << 30),
        ("MBytes", 1 << 20),
        ("KBytes", 1 << 10),
    ] {
        if n >= scale as f64 * 0.99995 {
            return format!("{} {unit}", three_figures(n / scale as f64));
        }
    }
    format!("{n:.0} Bytes")
}

/// `9.99`, `10.0`, `123`: three figures, decided after rounding, as iperf3 writes them.
fn three_figures(v: f64) -> String {
    if v < 9.995 {
        format!("{v:.2}")
    } else if v < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `1.00 Gbits/sec`, as iperf3 writes rates (powers of 1000).
fn bits_iperf(bps: f64) -> String {
    for (unit, scale) in [("Gbits/sec", 1e9), ("Mbits/sec", 1e6), ("Kbits/sec", 1e3)] {
        // 999.96 of a unit is written 1.00 of the next, not 1000.0.
        if bps >= scale * 0.99995 {
            return format!("{} {unit}", three_figures(bps / scale));
        }
    }
    format!("{bps:.0} bits/sec")
}

/// The lines before a stream's intervals, as iperf3 starts.
pub fn stream_header(c: &udpkit::stream::Config) -> String {
    format!(
        "Connecting to host {}, port {}{}\n\
         [ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams\n",
        c.target.ip(),
        c.target.port(),
        if c.reverse {
            " (reverse: the server sends)"
        } else {
            ""
        }
    )
}

/// One interval's line, as iperf3's receiver writes it; `who` is `sender`, `receiver` or
/// empty.
pub fn stream_line(f: &udpkit::stream::Figures, who: &str) -> String {
    let total = f.received + f.lost;
    let lost = if total == 0 {
        "0%".to_string()
    } else {
        percent(100.0 * f.lost as f64 / total as f64)
    };
    format!(
        "[  1] {:6.2}-{:<6.2} sec  {:>11}  {:>15}  {:.3} ms  {}/{} ({lost})  {who}",
        f.start,
        f.end,
        bytes_iperf(f.bytes),
        bits_iperf(f.bits_per_second),
        f.jitter_ms,
        f.lost,
        total,
    )
    .trim_end()
    .to_string()
}

/// The end of a stream: the whole run's line, then what iperf3 does not say.
pub fn stream_summary(r: &udpkit::stream::Report) -> String {
    let t = &r.total;
    let c = &r.receiver;
    let mut text = String::from(
        "- - - - - - - - - - - - - - - - - - - - - - - - -\n\
         [ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams\n",
    );
    let sent = udpkit::stream::Figures {
        received: t.sent,
        lost: 0,
        bytes: t.sent * r.config.size as u64,
        bits_per_second: (t.sent * r.config.size as u64) as f64 * 8.0 / t.end.max(1e-9),
        jitter_ms: 0.0,
        ..*t
    };
    text.push_str(&stream_line(&sent, "sender"));
    text.push('\n');
    // Lost/Total: total is what was sent, but for those of unknown fate.
    let received = *t;
    let total_line = stream_line(&received, "receiver");
    text.push_str(&total_line);
    text.push('\n');
    text.push_str(&format!(
        "{} duplicates, {} reordered (at most {} places late), {} too late to tell; delay \
         variation (PDV) p50/p90/p99/max = {:.3}/{:.3}/{:.3}/{:.3} ms\n",
        c.duplicates,
        c.reordered,
        c.reorder_max,
        c.too_late,
        c.pdv_p50_ns as f64 / 1e6,
        c.pdv_p90_ns as f64 / 1e6,
        c.pdv_p99_ns as f64 / 1e6,
        c.pdv_max_ns as f64 / 1e6,
    ));
    for (n, what) in [
        (c.malformed, "malformed stream datagrams were ignored"),
        (
            c.forged,
            "datagrams with this stream's ID came from another address and were ignored",
        ),
        (
            r.foreign,
            "datagrams that were not this stream's were ignored",
        ),
        (
            r.skipped,
            "datagram slots were skipped: the sender stalled and, rather than rush to catch \
             up, went on at the rate (a run by duration sent fewer, one by count took longer; \
             none of them counts as lost)",
        ),
    ] {
        if n > 0 {
            text.push_str(&format!("{n} {what}\n"));
        }
    }
    if r.refused_here > 0 {
        text.push_str(&format!(
            "{} datagrams were refused by this host and count as lost: {}\n",
            r.refused_here,
            r.refused_why.as_deref().unwrap_or("a firewall, a route")
        ));
    }
    // A path that drops what is larger than its MTU without saying so (no ICMP: an MTU
    // black hole) lets the small reports through and loses the data.
    let overhead = if r.config.target.is_ipv4() { 28 } else { 48 };
    if t.lost_percent >= 90.0
        && r.config.size + overhead > 1280
        && (r.complete || !r.intervals.is_empty())
    {
        text.push_str(&format!(
            "Note: {} of the datagrams were lost while the small reports got through: a path \
             whose MTU is under {} bytes that drops larger datagrams without saying so would do \
             this; `udpkit mtu {}` finds the largest that gets through, or try -s 1200\n",
            percent(t.lost_percent),
            r.config.size + overhead,
            r.config.target.ip()
        ));
    }
    if r.unknown > 0 {
        text.push_str(&format!(
            "{} datagrams were sent after the server's last report: whether they arrived is not \
             known (counted neither received nor lost)\n",
            r.unknown
        ));
    }
    if r.stopped {
        text.push_str(&format!(
            "Stopped at {:.2} s: the figures are those of what was sent until then\n",
            t.end
        ));
    }
    if let Some(why) = &r.incomplete {
        text.push_str(&format!("Incomplete: {why}\n"));
    }
    text
}

/// The merged report of many agents: the totals, the latency, a line per agent, a line
/// per second, and the notes.
pub fn merge(r: &udpkit::merge::Report) -> String {
    let t = &r.totals;
    let target = r.agents.first().map_or("?", |a| a.header.target.as_str());
    let loss = if t.sent == 0 {
        0.0
    } else {
        100.0 * t.lost as f64 / t.sent as f64
    };
    let n = r.agents.len();
    let mut text = format!(
        "--- udpkit merge: {n} agent{}, {target}, {:.1} s ---\n\
         {:.0} requests/s: {} sent, {} received, {} lost ({loss:.2}%), {} duplicates, {} late, {} bad, {} forged\n",
        if n == 1 { "" } else { "s" },
        r.seconds,
        r.requests_per_second(),
        t.sent,
        t.received,
        t.lost,
        t.duplicates,
        t.late,
        t.bad,
        t.forged,
    );
    if r.latency.count() > 0 {
        text.push_str(&latency_line(
            "latency (µs, every agent's latencies in one histogram)",
            &r.latency,
        ));
    }
    for a in &r.agents {
        let s = &a.latency_us;
        text.push_str(&format!(
            "  agent {}/{} ({}): {} sent, {} received, {} lost, p50 {:.1} µs, p99 {:.1} µs\n",
            a.header.segment.0,
            a.header.segment.1,
            a.file,
            a.totals.sent,
            a.totals.received,
            a.totals.lost,
            s.p50,
            s.p99
        ));
    }
    for s in &r.per_second {
        let p99 = s
            .p99_us
            .map_or("no replies".to_string(), |p| format!("p99 {p:.1} µs"));
        if s.covered >= 1.0 {
            text.push_str(&format!(
                "  second {}: {} requests/s, {p99}\n",
                s.second, s.replies
            ));
        } else {
            // A second the run covered only in part: its replies, not a rate.
            text.push_str(&format!(
                "  second {} (the run's last {:.2} s): {} replies, {p99}\n",
                s.second, s.covered, s.replies
            ));
        }
    }
    for note in &r.notes {
        text.push_str(&format!("Note: {note}\n"));
    }
    text
}

/// What a bench's plot says of its run: the target; protocol, size, pace, length, date.
pub fn bench_plot_labels(r: &bench::Report) -> udpkit::measure::plot::Labels {
    let c = &r.config;
    let pace = match c.rate {
        Some(rate) => format!("open loop at {rate} requests/s"),
        None => format!(
            "window {} x {} flow{}",
            c.window,
            c.flows,
            if c.flows == 1 { "" } else { "s" }
        ),
    };
    udpkit::measure::plot::Labels {
        title: format!(
            "udpkit bench {}: latency by percentile",
            addr::shown(c.target)
        ),
        subtitle: format!(
            "{} protocol, {}-byte requests, {pace}, {}, {} received, {}",
            c.requests.protocol,
            c.size,
            seconds(r.elapsed.as_secs_f64()),
            r.tally.received,
            jiff::Timestamp::try_from(r.started).map_or(String::new(), |t| t
                .strftime("%Y-%m-%d %H:%M:%S UTC")
                .to_string())
        ),
    }
}

/// What a merge's plot says: the target, the agents, the run.
pub fn merge_plot_labels(r: &udpkit::merge::Report) -> udpkit::measure::plot::Labels {
    let n = r.agents.len();
    let first = r.agents.first();
    let target = first.map_or("?", |a| a.header.target.as_str());
    let run = first.map_or("", |a| a.header.run.as_str());
    udpkit::measure::plot::Labels {
        title: format!("udpkit merge, {target}: latency by percentile"),
        subtitle: format!(
            "{n} agent{} of {}{}, {}, {} received",
            if n == 1 { "" } else { "s" },
            first.map_or(0, |a| a.header.segment.1),
            if run.is_empty() {
                String::new()
            } else {
                format!(", run {run}")
            },
            seconds(r.seconds),
            r.totals.received
        ),
    }
}

/// Seconds with the digits they need: `2.0 s`, `0.042 s`.
/// A duration in three figures, in s, ms or µs as it needs: `3.00 s`, `12.4 ms`, `380 µs`.
fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{} s", three_figures(s))
    } else if s >= 1e-3 {
        format!("{} ms", three_figures(s * 1e3))
    } else {
        format!("{} µs", three_figures(s * 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::{bits_iperf, bytes_iperf, percent};

    #[test]
    fn rates_and_sizes_have_three_figures_decided_after_rounding() {
        assert_eq!(bits_iperf(9.999e6), "10.0 Mbits/sec");
        assert_eq!(bits_iperf(10.0e6), "10.0 Mbits/sec");
        assert_eq!(bits_iperf(123.3e3), "123 Kbits/sec");
        assert_eq!(bits_iperf(999.96e6), "1.00 Gbits/sec");
        assert_eq!(bits_iperf(1.234e6), "1.23 Mbits/sec");
        assert_eq!(bytes_iperf(1400), "1.37 KBytes");
        assert_eq!(bytes_iperf(125_000_000), "119 MBytes");
    }

    #[test]
    fn loss_prints_like_ping() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(100.0), "100%");
        assert_eq!(percent(100.0 / 3.0), "33.3%");
    }
}
