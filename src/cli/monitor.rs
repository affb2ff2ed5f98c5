//! How `udpkit monitor` runs: the command line's targets and the file's, one monitor, one
//! metrics endpoint (`/metrics`, and `/probe` where the file allows it), SIGHUP to reload.
//!
//! Promise: SIGHUP re-reads the file; a file that fails to load is reported in one line
//! (file and line) and the monitor keeps what it had; SIGINT and SIGTERM stop it. Nothing
//! here waits on a terminal: lines are few (started, reloaded, stopped).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use udpkit::addr as net;
use udpkit::export::http::{Endpoint, Handler, Request, Response};
use udpkit::export::metrics;
use udpkit::monitor::{self, Config, Monitor, ProbeRefused, Target};
use udpkit::{Error, Requests, Stop, limits};

use super::args::MonitorArgs;
use super::run::{output, stop_on, write_ready};

/// The command line's targets, with its settings.
fn command_line_targets(args: &MonitorArgs) -> Result<Vec<Target>, Error> {
    let protocol = args.protocol;
    let size = args.size.map_or(protocol.default_size(), usize::from);
    args.targets
        .iter()
        .map(|text| {
            let target = Target {
                address: net::resolve_host_port(text)?,
                name: text.clone(),
                requests: Requests {
                    protocol,
                    tos: args.marking.tos(),
                    ttl: args.marking.ttl,
                },
                size,
                interval: args.interval,
                timeout: args.timeout,
                count: args.count,
            };
            target
                .check()
                .map_err(|why| Error::Invalid(format!("{text}: {why}")))?;
            Ok(target)
        })
        .collect()
}

/// The whole configuration: the command line's targets, then the file's.
fn load(args: &MonitorArgs, given: &[Target]) -> Result<Config, Error> {
    let mut config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let mut targets = given.to_vec();
    targets.append(&mut config.targets);
    if targets.len() > limits::MONITOR_TARGETS_MAX {
        return Err(Error::Invalid(format!(
            "{} targets are too many: at most {} may be watched",
            targets.len(),
            limits::MONITOR_TARGETS_MAX
        )));
    }
    config.targets = targets;
    Ok(config)
}

/// What the endpoint answers.
fn handler(monitor: Arc<Monitor>, stop: Stop) -> Handler {
    // At most METRICS_PAGES_AT_ONCE pages are written at once (each holds the snapshot it
    // writes: the monitor's memory is counted with that many); more are answered 503 at
    // once, never kept waiting.
    let pages = Arc::new(AtomicUsize::new(0));
    Arc::new(move |request: &Request| match request.path.as_str() {
        "/metrics" => {
            let Some(page) = Page::take(&pages) else {
                return Response::text(
                    503,
                    format!(
                        "busy: {} pages are being written",
                        limits::METRICS_PAGES_AT_ONCE
                    ),
                );
            };
            let snapshot = monitor.snapshot();
            Response::stream(metrics::CONTENT_TYPE, move |out| {
                let _page = page;
                metrics::write_monitor(&snapshot, out)
            })
        }
        "/probe" => {
            let rules = monitor.probe_rules();
            let started = Instant::now();
            let target = request.param("target").unwrap_or("");
            let module = request.param("module").unwrap_or("");
            match monitor::probe(rules.as_ref().as_ref(), target, module, &stop) {
                Ok(report) => Response::ok(
                    metrics::CONTENT_TYPE,
                    metrics::probe(&report, started.elapsed()),
                ),
                Err(ProbeRefused::Off) => Response::text(404, ProbeRefused::Off.to_string()),
                Err(e @ ProbeRefused::Target(_)) => Response::text(403, e.to_string()),
                Err(e @ ProbeRefused::NoModule(_)) => Response::text(400, e.to_string()),
                Err(e @ ProbeRefused::Failed(_)) => Response::text(500, e.to_string()),
            }
        }
        "/" => Response::text(
            200,
            "udpkit monitor: metrics at /metrics; /probe?target=IP:PORT&module=NAME where \
             the configuration allows it",
        ),
        _ => Response::text(404, "not found: metrics are at /metrics"),
    })
}

/// One of the pages being written, given back when dropped.
struct Page(Arc<AtomicUsize>);

impl Page {
    fn take(pages: &Arc<AtomicUsize>) -> Option<Page> {
        pages
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits::METRICS_PAGES_AT_ONCE).then_some(n + 1)
            })
            .ok()
            .map(|_| Page(Arc::clone(pages)))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// "1 target", "2 targets".
fn targets(n: usize) -> String {
    format!("{n} target{}", if n == 1 { "" } else { "s" })
}

/// How often the SIGHUP flag is looked at.
const RELOAD_LOOK: Duration = Duration::from_millis(200);

/// Runs the monitor until SIGINT or SIGTERM.
pub fn monitor(args: &MonitorArgs) -> Result<(), Error> {
    if args.targets.is_empty() && args.config.is_none() {
        return Err(Error::Invalid(
            "nothing to watch: give targets (HOST:PORT) or --config FILE".into(),
        ));
    }
    let given = command_line_targets(args)?;
    let config = load(args, &given)?;
    // SIGHUP reloads; SIGINT and SIGTERM stop.
    let stop = stop_on(&[SIGINT, SIGTERM]);
    let reload = Arc::new(AtomicBool::new(false));
    // (Not through the stop's pipe, which would wake every loop for good: the flag is
    // looked at five times a second.)
    let _ = signal_hook::flag::register(SIGHUP, Arc::clone(&reload));
    let monitor = Arc::new(Monitor::start(&config, &stop)?);
    let endpoint = Endpoint::bind(
        args.metrics,
        handler(Arc::clone(&monitor), stop.clone()),
        &["/probe"],
        &stop,
    )?;
    let metrics_at = endpoint.local_addr().to_string();
    write_ready(
        args.ready_file.as_deref(),
        serde_json::json!({
            "event": "ready",
            "tool": "monitor",
            "metrics": metrics_at,
            "targets": config.targets.len(),
        }),
    )?;
    let say = |line: String| -> Result<(), Error> {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(output)
    };
    say(if args.json {
        serde_json::json!({"event": "watching", "targets": config.targets.len(),
                           "metrics": metrics_at, "probe": config.probe.is_some()})
        .to_string()
    } else {
        format!(
            "Watching {}; metrics at http://{metrics_at}/metrics{}",
            targets(config.targets.len()),
            if config.probe.is_some() {
                " (and /probe)"
            } else {
                ""
            }
        )
    })?;
    let mut watched = config.targets.len();
    while !stop.wait(RELOAD_LOOK) {
        if !reload.swap(false, Ordering::Relaxed) {
            continue;
        }
        let file = args
            .config
            .as_ref()
            .map_or("the command line".into(), |p| p.display().to_string());
        match monitor.reload_with(|| load(args, &given)) {
            Ok((c, change)) => {
                watched = c.targets.len();
                say(if args.json {
                    serde_json::json!({"event": "reloaded", "targets": watched,
                        "added": change.added, "removed": change.removed, "kept": change.kept})
                    .to_string()
                } else {
                    format!(
                        "Reloaded {file}: {} ({} new, {} gone, {} kept with their counters)",
                        targets(watched),
                        change.added,
                        change.removed,
                        change.kept
                    )
                })?;
            }
            Err(e) => {
                let line = if args.json {
                    serde_json::json!({"event": "reload_failed", "error": e.to_string(),
                                       "targets": watched})
                    .to_string()
                } else {
                    format!(
                        "udpkit: cannot reload: {e}; still watching {}",
                        targets(watched)
                    )
                };
                let _ = writeln!(io::stderr(), "{line}");
            }
        }
    }
    // Stopped: the endpoint's threads and the monitor's end.
    endpoint.join();
    let monitor = Arc::try_unwrap(monitor)
        .map_err(|_| Error::Invalid("the monitor is still in use".into()))?;
    monitor.stop()?;
    say(if args.json {
        serde_json::json!({"event": "stopped", "targets": watched}).to_string()
    } else {
        format!("Stopped watching {}", targets(watched))
    })
}
