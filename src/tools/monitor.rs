//! `udpkit monitor`: UDP paths watched all the time. Targets come from the command line or
//! a TOML file (reloaded on demand, keeping the counters of targets that stay); one thread
//! runs the watch (`load::watch`) and publishes its counters, which the metrics endpoint
//! (`export`) reads without ever waiting on it; `/probe` runs a short ping on demand, to
//! targets the file allows only.
//!
//! Promise: a file is taken whole or not at all: a bad one is an error naming its line,
//! and a running monitor keeps what it had; targets, names, intervals and in-flight probes
//! are checked against `limits` before anything is opened; a `/probe` target outside the
//! file's `allow` list is refused before any datagram goes.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::load::engine::Requests;
use crate::load::watch::{Board, Leaving, Plan, Snapshot, Watch};
use crate::wire::protocol::Protocol;
use crate::{Error, Stop, limits, ping};

pub use crate::load::watch::{Counts, PUBLISH_EVERY, Target};

/// How often a target is probed, unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for its reply, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// What to watch, and what `/probe` may do.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The targets watched all the time.
    pub targets: Vec<Target>,
    /// `/probe`: off (`None`) unless the file has a `[probe]` section.
    pub probe: Option<ProbeRules>,
}

/// What `/probe?target=...&module=...` may probe, and how.
#[derive(Clone, Debug, Default)]
pub struct ProbeRules {
    /// Prefixes a probe's target must fall in.
    pub allow: Vec<(IpAddr, u8)>,
    /// Ports a probe's target may have (empty: any).
    pub ports: Vec<u16>,
    /// The modules, by name.
    pub modules: BTreeMap<String, Module>,
}

/// How `/probe` probes, by name (`module=NAME`).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// The protocol and marking of each request.
    pub requests: Requests,
    /// Bytes in each request.
    pub size: usize,
    /// Requests in one probe.
    pub count: u64,
    /// Between requests.
    pub interval: Duration,
    /// How long each waits for its reply.
    pub timeout: Duration,
}

impl ProbeRules {
    /// Whether `target` falls in the allowed prefixes and ports.
    pub fn allows(&self, target: SocketAddr) -> bool {
        let ip = target.ip().to_canonical();
        let port_ok = self.ports.is_empty() || self.ports.contains(&target.port());
        port_ok && self.allow.iter().any(|&(net, len)| in_prefix(ip, net, len))
    }
}

/// Whether `ip` is in `net/len` (both canonical: IPv4 as IPv4; `len` within the family's
/// bits, which [`probe_rules`] checks).
fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let len = u32::from(len);
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

// ---- The file ---------------------------------------------------------------------------

/// Settings a target or module may give; what it leaves out comes from `[defaults]`. (A
/// target's table is one of these: `address` and `name` are a target's alone.)
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    address: Option<String>,
    name: Option<String>,
    protocol: Option<String>,
    /// Seconds.
    interval: Option<f64>,
    /// Seconds.
    timeout: Option<f64>,
    size: Option<usize>,
    tos: Option<u8>,
    /// The DSCP alone (0-63, ECN 0): `tos` is four times it.
    dscp: Option<u8>,
    ttl: Option<u8>,
    /// `/probe` modules only: requests in one probe.
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSection {
    allow: Vec<String>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    modules: BTreeMap<String, Settings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    target: Vec<Settings>,
    probe: Option<ProbeSection>,
}

/// A checked duration in seconds from the file.
fn seconds(value: Option<f64>, default: Duration, what: &str) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => limits::seconds(v).ok_or_else(|| {
            format!(
                "{what} = {v} is not a number of seconds within {}..={}",
                limits::SECONDS_MIN,
                limits::SECONDS_MAX
            )
        }),
    }
}

impl Settings {
    /// These settings over `defaults`.
    fn over(&self, defaults: &Settings) -> Settings {
        Settings {
            address: self.address.clone(),
            name: self.name.clone(),
            protocol: self.protocol.clone().or(defaults.protocol.clone()),
            interval: self.interval.or(defaults.interval),
            timeout: self.timeout.or(defaults.timeout),
            size: self.size.or(defaults.size),
            // A target's own marking wins whole over the defaults'.
            tos: self.tos.or(if self.dscp.is_some() {
                None
            } else {
                defaults.tos
            }),
            dscp: self.dscp.or(if self.tos.is_some() {
                None
            } else {
                defaults.dscp
            }),
            ttl: self.ttl.or(defaults.ttl),
            count: self.count.or(defaults.count),
        }
    }

    fn requests(&self) -> Result<(Requests, usize), String> {
        let protocol = match &self.protocol {
            None => Protocol::SEED,
            Some(name) => Protocol::from_str(name)?,
        };
        let tos = match (self.tos, self.dscp) {
            (Some(_), Some(_)) => return Err("give tos or dscp, not both".into()),
            (None, Some(d)) if d > 63 => {
                return Err(format!("dscp = {d} is not within 0..=63"));
            }
            (None, Some(d)) => Some(d << 2),
            (tos, None) => tos,
        };
        if self.ttl == Some(0) {
            return Err("ttl = 0 would never leave this host: give 1 to 255".into());
        }
        let size = self.size.unwrap_or(protocol.default_size());
        if size > limits::DATAGRAM_MAX {
            return Err(format!(
                "size = {size} is over {}, the largest datagram",
                limits::DATAGRAM_MAX
            ));
        }
        Ok((
            Requests {
                protocol,
                tos,
                ttl: self.ttl,
            },
            size,
        ))
    }
}

impl Config {
    /// Reads a monitor's TOML file (at most [`limits::MONITOR_CONFIG_BYTES`], a regular
    /// file); an error names the file, and the line where it can.
    pub fn read(path: &Path) -> Result<Config, Error> {
        let shown = path.display();
        let text = crate::io::files::open_regular(path, limits::MONITOR_CONFIG_BYTES)
            .and_then(|(file, len)| {
                let mut text = String::with_capacity(len as usize);
                file.take(limits::MONITOR_CONFIG_BYTES)
                    .read_to_string(&mut text)?;
                Ok(text)
            })
            .map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
        Config::from_toml(&text).map_err(|why| Error::Invalid(format!("{shown}:{why}")))
    }

    /// Parses a monitor's TOML text; an error starts with the line number (`12: ...`).
    ///
    /// Each `[[target]]` table is parsed alone, the rest of the file with those tables'
    /// lines left blank (so that its line numbers hold): parsed whole, a file of 10,000
    /// targets would be held as TOML's own tables too, some 1.5 KB a target.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let mut rest = String::with_capacity(text.len());
        // (first line, text) of each target's table.
        let mut tables: Vec<(usize, &str)> = Vec::new();
        let headers = table_headers(text);
        let (mut defaults_line, mut probe_line) = (1, 1);
        for (k, h) in headers.iter().enumerate() {
            let end = headers.get(k + 1).map_or(text.len(), |next| next.start);
            let section = &text[h.start..end];
            if k == 0 {
                rest.push_str(&text[..h.start]);
            }
            match h.kind {
                Header::Target => {
                    if tables.len() == limits::MONITOR_TARGETS_MAX {
                        return Err(format!(
                            "{}: more than {} targets: at most {} may be watched",
                            h.line,
                            limits::MONITOR_TARGETS_MAX,
                            limits::MONITOR_TARGETS_MAX
                        ));
                    }
                    tables.push((h.line, section));
                    // Its lines left blank in the rest, so that the rest's lines hold.
                    rest.extend(std::iter::repeat_n('\n', section.matches('\n').count()));
                }
                Header::Defaults | Header::Probe | Header::Other => {
                    if h.kind == Header::Defaults && defaults_line == 1 {
                        defaults_line = h.line;
                    }
                    if h.kind == Header::Probe && probe_line == 1 {
                        probe_line = h.line;
                    }
                    rest.push_str(section);
                }
            }
        }
        if headers.is_empty() {
            rest.push_str(text);
        }
        let located = |first: usize, local: &str, e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                local[..s.start.min(local.len())].matches('\n').count()
            });
            format!("{}: {}", first + line, e.message())
        };
        let file: File = toml::from_str(&rest).map_err(|e| located(1, &rest, e))?;
        drop(rest);
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct One {
            target: Vec<Settings>,
        }
        // Targets given inline in the rest (`target = [...]`), or as tables: not both (TOML
        // forbids adding tables to an inline array).
        if !file.target.is_empty() && !tables.is_empty() {
            return Err(format!(
                "{}: targets are given both as `target = [...]` and as [[target]] tables: \
                 give them one way",
                tables[0].0
            ));
        }
        let mut entries: Vec<(usize, Settings)> =
            file.target.iter().map(|t| (1, t.clone())).collect();
        for (first, table) in &tables {
            let one: One = toml::from_str(table).map_err(|e| located(*first, table, e))?;
            entries.extend(one.target.into_iter().map(|t| (*first, t)));
        }
        if entries.len() > limits::MONITOR_TARGETS_MAX {
            return Err(format!(
                "1: {} targets are too many: at most {} may be watched",
                entries.len(),
                limits::MONITOR_TARGETS_MAX
            ));
        }
        if file.defaults.address.is_some() || file.defaults.name.is_some() {
            let line = defaults_line;
            return Err(format!(
                "{line}: [defaults] gives an address or a name: those are a [[target]]'s own"
            ));
        }
        let mut targets = Vec::with_capacity(entries.len());
        let mut lines = Vec::with_capacity(entries.len());
        for (line, entry) in &entries {
            let line = *line;
            let Some(text_address) = &entry.address else {
                return Err(format!(
                    "{line}: a [[target]] without an address (HOST:PORT)"
                ));
            };
            let at = |why: String| format!("{line}: target {text_address}: {why}");
            let address =
                crate::addr::resolve_host_port(text_address).map_err(|e| at(e.to_string()))?;
            let s = entry.over(&file.defaults);
            if s.count.is_some_and(|c| c == 0 || c > limits::COUNT_MAX) {
                return Err(at(format!("count is not within 1..={}", limits::COUNT_MAX)));
            }
            let target = Target {
                address,
                name: entry.name.clone().unwrap_or_else(|| text_address.clone()),
                requests: s.requests().map_err(at)?.0,
                size: s.requests().map_err(at)?.1,
                interval: seconds(s.interval, DEFAULT_INTERVAL, "interval").map_err(at)?,
                timeout: seconds(s.timeout, DEFAULT_TIMEOUT, "timeout").map_err(at)?,
                count: s.count,
            };
            target.check().map_err(at)?;
            targets.push(target);
            lines.push(line);
        }
        let mut seen = HashSet::new();
        for (t, line) in targets.iter().zip(&lines) {
            // Two targets of one address, name and protocol would be one series twice.
            if !seen.insert((t.address, t.name.as_str(), t.requests.protocol)) {
                return Err(format!(
                    "{line}: target {} is listed twice with the same address, name and \
                     protocol: give each its own name",
                    t.name
                ));
            }
        }
        let probe = match file.probe {
            None => None,
            Some(p) => {
                let line = probe_line;
                Some(probe_rules(&p, &file.defaults).map_err(|why| format!("{line}: {why}"))?)
            }
        };
        Ok(Config { targets, probe })
    }
}

/// What a table header opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// `[[target]]`
    Target,
    /// `[defaults]`
    Defaults,
    /// `[probe]` or one of its sub-tables.
    Probe,
    /// Any other (refused when parsed).
    Other,
}

/// A table header of the file: where its line starts, its line number, what it opens.
#[derive(Debug)]
struct HeaderAt {
    start: usize,
    line: usize,
    kind: Header,
}

/// The table headers of `text`, found by TOML's own lexer (`toml_parser`): a `[` that opens
/// a line outside any value is a header, whatever strings, comments or arrays hold.
fn table_headers(text: &str) -> Vec<HeaderAt> {
    use toml_parser::lexer::TokenKind as T;
    let tokens: Vec<_> = toml_parser::Source::new(text).lex().collect();
    let mut headers = Vec::new();
    let (mut depth, mut line_start, mut line, mut counted) = (0usize, true, 1, 0);
    let mut k = 0;
    while k < tokens.len() {
        let t = tokens[k];
        let at = t.span().start();
        match t.kind() {
            T::LeftSquareBracket if line_start && depth == 0 => {
                line += text[counted..at].matches('\n').count();
                counted = at;
                // The header's tokens, to its closing bracket(s).
                let mut words = String::new();
                let mut j = k;
                while j < tokens.len()
                    && !matches!(tokens[j].kind(), T::Newline | T::Comment | T::Eof)
                {
                    let raw = &text[tokens[j].span().start()..tokens[j].span().end()];
                    if tokens[j].kind() != T::Whitespace {
                        words.push_str(raw.trim_matches(['"', '\'']));
                    }
                    j += 1;
                }
                let kind = if words == "[[target]]" {
                    Header::Target
                } else if words == "[defaults]" {
                    Header::Defaults
                } else if words == "[probe]" || words.starts_with("[probe.") {
                    Header::Probe
                } else {
                    Header::Other
                };
                let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
                headers.push(HeaderAt { start, line, kind });
                line_start = false;
                k = j;
                continue;
            }
            T::LeftSquareBracket | T::LeftCurlyBracket => depth += 1,
            T::RightSquareBracket | T::RightCurlyBracket => depth = depth.saturating_sub(1),
            _ => {}
        }
        match t.kind() {
            T::Newline => line_start = true,
            T::Whitespace | T::Comment => {}
            _ => line_start = false,
        }
        k += 1;
    }
    headers
}

fn probe_rules(p: &ProbeSection, defaults: &Settings) -> Result<ProbeRules, String> {
    let mut allow = Vec::new();
    for entry in &p.allow {
        let (ip, len) = entry.split_once('/').unwrap_or((entry, ""));
        let ip: IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| {
            format!("allow: {entry:?} is not a prefix such as 10.0.0.0/8 or ::1/128")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("allow: {entry:?} has a prefix length over {max}"))?
        };
        // An IPv4-mapped prefix (::ffff:10.0.0.0/104) is the IPv4 one (10.0.0.0/8): targets
        // are compared in their canonical form. Its length must cover the mapping's 96 bits.
        let canonical = ip.to_canonical();
        let len = match (ip, canonical) {
            (IpAddr::V6(_), IpAddr::V4(_)) => len.checked_sub(96).ok_or_else(|| {
                format!(
                    "allow: {entry:?} is an IPv4-mapped prefix shorter than /96: it would \
                     mix IPv4 and IPv6 addresses; give an IPv4 or an IPv6 prefix"
                )
            })?,
            _ => len,
        };
        allow.push((canonical, len));
    }
    if allow.is_empty() {
        return Err("[probe] allows no target: list prefixes in allow = [...]".into());
    }
    let mut modules = BTreeMap::new();
    let mut given = p.modules.clone();
    if given.is_empty() {
        given.insert("default".into(), Settings::default());
    }
    for (name, settings) in &given {
        let at = |why: String| format!("module {name}: {why}");
        if settings.address.is_some() || settings.name.is_some() {
            return Err(at(
                "address and name are a [[target]]'s; a probe's target comes with the request"
                    .into(),
            ));
        }
        let s = settings.over(defaults);
        let (requests, size) = s.requests().map_err(at)?;
        let count = s.count.unwrap_or(3);
        if count == 0 || count > limits::PROBE_COUNT_MAX {
            return Err(at(format!(
                "count = {count} is not within 1..={}",
                limits::PROBE_COUNT_MAX
            )));
        }
        let interval = seconds(s.interval, Duration::from_millis(100), "interval").map_err(at)?;
        let timeout = seconds(s.timeout, DEFAULT_TIMEOUT, "timeout").map_err(at)?;
        let takes = interval.saturating_mul(count as u32) + timeout;
        if takes > limits::PROBE_TIME_MAX {
            return Err(at(format!(
                "{count} requests {interval:?} apart and a timeout of {timeout:?} take longer \
                 than the {:?} a probe may",
                limits::PROBE_TIME_MAX
            )));
        }
        modules.insert(
            name.clone(),
            Module {
                requests,
                size,
                count,
                interval,
                timeout,
            },
        );
    }
    Ok(ProbeRules {
        allow,
        ports: p.ports.clone(),
        modules,
    })
}

// ---- The running monitor ----------------------------------------------------------------

/// A reload's outcome: targets added, removed and kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Targets new to the watch.
    pub added: usize,
    /// Targets no longer watched.
    pub removed: usize,
    /// Targets that stayed, with their counters.
    pub kept: usize,
}

type Reload = (Plan, mpsc::SyncSender<Leaving>);

/// A monitor running on a thread of its own; stops (and joins) when dropped.
pub struct Monitor {
    board: Board,
    stop: Stop,
    reloads: mpsc::SyncSender<Reload>,
    /// What the watch watches (as of the last reload); held through a reload, so that
    /// reloads take turns.
    current: std::sync::Mutex<HashSet<Target>>,
    rules: std::sync::Mutex<Arc<Option<ProbeRules>>>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl Monitor {
    /// Starts watching `config.targets`; `stop` (the caller's) ends it.
    pub fn start(config: &Config, stop: &Stop) -> Result<Monitor, Error> {
        let mut watch = Watch::new(stop)?;
        watch.set_targets(&config.targets)?;
        let board = Board::default();
        let (reloads, requests) = mpsc::sync_channel::<Reload>(1);
        let thread = {
            let board = board.clone();
            std::thread::Builder::new()
                .name("monitor".into())
                .spawn(move || {
                    watch.run(&board, |w| {
                        while let Ok((plan, answer)) = requests.try_recv() {
                            // The sockets of the targets gone are closed by the reload.
                            let _ = answer.send(w.apply(plan));
                        }
                    })
                })
                .map_err(|e| Error::io("cannot start the monitor's thread", e))?
        };
        Ok(Monitor {
            board,
            stop: stop.clone(),
            reloads,
            current: std::sync::Mutex::new(config.targets.iter().cloned().collect()),
            rules: std::sync::Mutex::new(Arc::new(config.probe.clone())),
            thread: Some(thread),
        })
    }

    /// Watches `config`'s targets from now on, keeping the counters of those that stay; on
    /// an error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<Change, Error> {
        self.reload_with(|| Ok(config.clone()))
            .map(|(_, change)| change)
    }

    /// [`Monitor::reload`] of what `load` gives (reading a file, say): `load` and the
    /// slow part of the reload (checks, sockets) run on a thread of low priority, so that
    /// no probe waits on them, even on one core; the watch then only takes the result.
    /// The configuration loaded comes back with what changed.
    pub fn reload_with(
        &self,
        load: impl FnOnce() -> Result<Config, Error> + Send,
    ) -> Result<(Config, Change), Error> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let current_ref = &*current;
        let (config, plan) = std::thread::scope(|s| {
            s.spawn(|| {
                crate::io::process::idle_priority();
                let config = load()?;
                let plan = Watch::plan(current_ref, &config.targets)?;
                Ok::<_, Error>((config, plan))
            })
            .join()
        })
        .map_err(|_| Error::Invalid("the reload's thread panicked".into()))??;
        let change = Change {
            added: plan.added(),
            removed: plan.removed(),
            kept: config.targets.len() - plan.added(),
        };
        let (answer, taken) = mpsc::sync_channel(1);
        let gone = || Error::Invalid("the monitor has stopped".into());
        self.reloads.send((plan, answer)).map_err(|_| gone())?;
        let leaving = taken.recv().map_err(|_| gone())?;
        // Closed here, at low priority, not on the watch's thread.
        std::thread::scope(|s| {
            s.spawn(move || {
                crate::io::process::idle_priority();
                drop(leaving);
            });
        });
        // The reload's parsing and its thread's memory, back to the system.
        crate::io::process::return_free_memory();
        *current = config.targets.iter().cloned().collect();
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(config.probe.clone());
        Ok((config, change))
    }

    /// The counters as last published (at most [`PUBLISH_EVERY`] old).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.board.latest()
    }

    /// What `/probe` may do now (`None`: off).
    pub fn probe_rules(&self) -> Arc<Option<ProbeRules>> {
        Arc::clone(&self.rules.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops the watch and waits for its thread; its error, if it ended on one.
    pub fn stop(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.stop.stop();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Invalid("the monitor's thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Why `/probe` did not probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeRefused {
    /// The file has no `[probe]` section.
    #[error("/probe is off: a [probe] section in the monitor's file turns it on")]
    Off,
    /// No `module` of that name.
    #[error("no module {0:?} in [probe.modules]")]
    NoModule(String),
    /// The target is not an address, or not one the file allows.
    #[error("{0}")]
    Target(String),
    /// The probe itself failed.
    #[error("{0}")]
    Failed(Error),
}

/// Runs one `/probe`: `target` (`IP:PORT`, no names) must fall in `rules`' allowed prefixes
/// and ports; `module` names how (empty: the only module, or the one named `default`).
pub fn probe(
    rules: Option<&ProbeRules>,
    target: &str,
    module: &str,
    stop: &Stop,
) -> Result<ping::Report, ProbeRefused> {
    let rules = rules.ok_or(ProbeRefused::Off)?;
    let module = if module.is_empty() {
        match rules.modules.len() {
            1 => rules.modules.values().next(),
            _ => rules.modules.get("default"),
        }
    } else {
        rules.modules.get(module)
    }
    .ok_or_else(|| ProbeRefused::NoModule(module.to_string()))?;
    let address: SocketAddr = target.parse().map_err(|_| {
        ProbeRefused::Target(format!(
            "target {target:?} is not IP:PORT (names are not resolved for /probe)"
        ))
    })?;
    let ip = address.ip().to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if address.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(ProbeRefused::Target(format!(
            "target {target} is not one host's port (port 0, an unspecified, multicast or \
             broadcast address)"
        )));
    }
    if !rules.allows(address) {
        return Err(ProbeRefused::Target(format!(
            "target {target} is not in the [probe] section's allow list"
        )));
    }
    let config = ping::Config {
        target: address,
        count: Some(module.count),
        interval: module.interval,
        size: module.size,
        timeout: module.timeout,
        requests: module.requests,
    };
    ping::ping(&config, stop, |_| Ok(())).map_err(ProbeRefused::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_with_its_defaults() {
        let config = Config::from_toml(
            r#"
[defaults]
protocol = "stamp"
interval = 0.5

[[target]]
address = "127.0.0.1:862"
name = "here"

[[target]]
address = "[::1]:7"
protocol = "echo"
size = 100
dscp = 46

[probe]
allow = ["127.0.0.0/8", "::1/128"]
ports = [862]
"#,
        )
        .expect("a good file");
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets[0].name, "here");
        assert_eq!(config.targets[0].requests.protocol, Protocol::STAMP);
        assert_eq!(config.targets[0].interval, Duration::from_millis(500));
        assert_eq!(config.targets[1].requests.protocol, Protocol::ECHO);
        assert_eq!(config.targets[1].requests.tos, Some(0xb8));
        let rules = config.probe.expect("probe rules");
        assert!(rules.allows("127.9.9.9:862".parse().expect("an address")));
        assert!(!rules.allows("127.9.9.9:863".parse().expect("an address")));
        assert!(!rules.allows("10.0.0.1:862".parse().expect("an address")));
        assert!(rules.allows("[::ffff:127.0.0.1]:862".parse().expect("an address")));
        assert!(rules.modules.contains_key("default"));
    }

    #[test]
    fn tables_are_read_alone_with_their_lines() {
        let text = "# a comment\n[defaults]\ninterval = 0.5 # half a second\n\n\
                    [[target]] # the first\naddress = \"127.0.0.1:1\"\n\n\
                    [probe]\nallow = [\n  \"127.0.0.0/8\",\n]\n\n\
                    [[ target ]]\naddress = \"127.0.0.1:2\"\nname = \"two\"\n\
                    [probe.modules.\"a b\"]\ncount = 2\n";
        let config = Config::from_toml(text).expect("a good file");
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets[1].name, "two");
        assert_eq!(config.targets[0].interval, Duration::from_millis(500));
        let rules = config.probe.expect("rules");
        assert!(
            rules.modules.contains_key("a b"),
            "{:?}",
            rules.modules.keys()
        );
        let bad = text.replace("name = \"two\"", "name = 2");
        let e = Config::from_toml(&bad).expect_err("a bad name");
        assert!(e.starts_with("15: "), "{e}");
    }

    #[test]
    fn headers_are_found_as_toml_finds_them() {
        // Quoted keys with '#', '=' and ',', and a multi-line string holding a line that
        // looks like a header: a valid file, read whole.
        let text = "[[target]]\naddress = \"127.0.0.1:1\"\nname = \"\"\"\n[x]\n\"\"\"\n\n\
                    [probe]\nallow = [\n  \"127.0.0.0/8\",\n]\n\
                    [probe.modules.\"fast#1\"]\ncount = 2\n[probe.modules.\"a=b,c\"]\ncount = 3\n";
        // (A name with a line break is refused, by udpkit, for a label: the file was read.)
        let e = Config::from_toml(text).expect_err("a name over two lines");
        assert!(
            e.starts_with("1: ") && e.contains("control character"),
            "{e}"
        );
        let text = text.replace("\"\"\"\n[x]\n\"\"\"", "'''[x]'''");
        let config = Config::from_toml(&text).expect("a good file");
        assert_eq!(config.targets.len(), 1);
        assert_eq!(config.targets[0].name, "[x]");
        let rules = config.probe.expect("rules");
        assert!(rules.modules.contains_key("fast#1") && rules.modules.contains_key("a=b,c"));
        // A comment naming a table does not move an error's line.
        let e =
            Config::from_toml("# see [probe] and [defaults]\n\n[defaults]\naddress = \"x:1\"\n")
                .expect_err("an address in the defaults");
        assert!(e.starts_with("3: "), "{e}");
        let e = Config::from_toml("# [probe]\n\n\n[probe]\nallow = [\"10.0.0.0/33\"]\n")
            .expect_err("a bad prefix");
        assert!(e.starts_with("4: "), "{e}");
        // Targets inline and as tables: TOML refuses it, and so does udpkit.
        let e = Config::from_toml(
            "target = [{address = \"127.0.0.1:1\"}]\n[[target]]\naddress = \"127.0.0.1:2\"\n",
        )
        .expect_err("both ways");
        assert!(e.contains("one way"), "{e}");
        // One address, name and protocol twice: one series twice.
        let e = Config::from_toml(
            "[[target]]\naddress = \"127.0.0.1:1\"\ninterval = 0.5\n\
             [[target]]\naddress = \"127.0.0.1:1\"\ninterval = 0.7\n",
        )
        .expect_err("twice");
        assert!(
            e.starts_with("4: ") && e.contains("give each its own name"),
            "{e}"
        );
        let e = Config::from_toml("[[target]]\naddress = \"127.0.0.1:1\"\nname = \"a\\u0000b\"\n")
            .expect_err("a control character");
        assert!(e.contains("control character"), "{e}");
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let bad = |text: &str| Config::from_toml(text).expect_err("a bad file");
        let e = bad("[[target]]\naddress = \"127.0.0.1:1\"\nintervall = 1\n");
        assert!(e.starts_with("3: "), "{e}");
        let e = bad("\n[[target]]\naddress = \"127.0.0.1:1\"\n\n[[target]]\naddress = \"nope\"\n");
        assert!(e.starts_with("5: target nope"), "{e}");
        let e = bad("[[target]]\naddress = \"127.0.0.1:1\"\ninterval = 0.000001\n");
        assert!(e.starts_with("1: "), "{e}");
        let e = bad("[[target]]\naddress = \"127.0.0.1:1\"\ntimeout = 100\ninterval = 0.01\n");
        assert!(e.contains("in flight"), "{e}");
        let e = bad("[probe]\nallow = []\n");
        assert!(e.contains("allows no target"), "{e}");
        let e = bad("[probe]\nallow = [\"10.0.0.0/33\"]\n");
        assert!(e.contains("prefix length"), "{e}");
    }

    #[test]
    fn an_ipv4_mapped_prefix_is_its_ipv4_prefix() {
        let rules = |allow: &str| {
            Config::from_toml(&format!("[probe]\nallow = [\"{allow}\"]\n"))
                .map(|c| c.probe.expect("rules"))
        };
        let a = |s: &str| s.parse::<SocketAddr>().expect("an address");
        let one = rules("::ffff:127.0.0.1/128").expect("a mapped /128");
        assert!(one.allows(a("127.0.0.1:9")));
        assert!(!one.allows(a("127.0.0.2:9")), "only the one address");
        assert!(!one.allows(a("198.51.100.7:9")));
        let ten = rules("::ffff:10.0.0.0/104").expect("a mapped /104");
        assert!(ten.allows(a("10.1.2.3:7")));
        assert!(ten.allows(a("[::ffff:10.1.2.3]:7")));
        assert!(!ten.allows(a("198.51.100.7:7")));
        let e = rules("::ffff:10.0.0.0/64").expect_err("shorter than the mapping");
        assert!(e.contains("IPv4-mapped"), "{e}");
        // And the other way: an IPv4 prefix holds mapped targets, not other IPv6 ones.
        let v4 = rules("127.0.0.1/32").expect("an IPv4 prefix");
        assert!(v4.allows(a("[::ffff:127.0.0.1]:9")));
        assert!(!v4.allows(a("[::1]:9")));
        assert!(!in_prefix(
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.0".parse().expect("ip"),
            120
        ));
    }

    #[test]
    fn probe_refuses_what_the_file_does_not_allow() {
        let stop = Stop::new();
        assert!(matches!(
            probe(None, "127.0.0.1:9", "", &stop),
            Err(ProbeRefused::Off)
        ));
        let rules = Config::from_toml("[probe]\nallow = [\"127.0.0.0/8\"]\n")
            .expect("a file")
            .probe;
        let refused = |target: &str, module: &str| probe(rules.as_ref(), target, module, &stop);
        assert!(matches!(
            refused("10.0.0.1:9", ""),
            Err(ProbeRefused::Target(_))
        ));
        assert!(matches!(
            refused("localhost:9", ""),
            Err(ProbeRefused::Target(_))
        ));
        for nowhere in ["127.0.0.1:0", "0.0.0.0:9", "[::]:9"] {
            assert!(
                matches!(refused(nowhere, ""), Err(ProbeRefused::Target(_))),
                "{nowhere}"
            );
        }
        assert!(matches!(
            refused("127.0.0.1:9", "x"),
            Err(ProbeRefused::NoModule(_))
        ));
    }
}
