//! What a test binary leaves behind when it is interrupted: the processes its tests started
//! lead process groups of their own (so that their children go with them), which a Ctrl-C
//! at the terminal does not reach, and network namespaces outlive their processes. Every
//! group and namespace is registered here while it lives; on SIGINT, SIGTERM or SIGHUP a
//! thread kills every group, empties and deletes every namespace, and exits.

use std::process::{Command, Stdio};
use std::sync::Mutex;

static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A process group led by `pid` was started.
pub fn group_started(pid: u32) {
    GROUPS.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// It was killed and reaped.
pub fn group_ended(pid: u32) {
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

/// A network namespace was made.
pub fn namespace_made(name: &str) {
    NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(name.to_string());
}

/// It was deleted.
pub fn namespace_gone(name: &str) {
    NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|n| n != name);
}

/// Kills every process of namespace `name` and deletes the namespace.
pub fn remove_namespace(name: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) with a pid the kernel listed in that namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// From now on, an interrupting signal cleans up and ends the test binary (exit 130).
pub fn on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            for pid in GROUPS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                // SAFETY: kill(2) on a group we started and have not reaped.
                unsafe {
                    libc::kill(-(*pid as i32), libc::SIGKILL);
                }
            }
            for name in NAMESPACES.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                remove_namespace(name);
            }
            std::process::exit(130);
        }
    });
}
