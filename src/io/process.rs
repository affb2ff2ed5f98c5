//! What this process may use and how precisely its thread sleeps: the open-file limit and
//! the files open now (the relay sizes its session table by them), and the timer slack of
//! the calling thread (a paced sender asks for wake-ups on time).
//!
//! Promise: read-only but for the calling thread's own timer slack and priority; where the system cannot
//! say, the answer is `None` and the caller keeps its own bound.

/// How many more files this process may open now: the soft `RLIMIT_NOFILE` less the files
/// open (`/proc/self/fd`, 16 assumed where it cannot be read). `None` where the limit
/// cannot be read.
pub fn files_left() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit writes into the struct we pass; all-zero is a valid rlimit.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to that struct, for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        let open = std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count());
        Some(
            usize::try_from(limit.rlim_cur)
                .unwrap_or(usize::MAX)
                .saturating_sub(open),
        )
    }
    #[cfg(not(unix))]
    None
}

/// Asks that the calling thread's timed waits end on time, not up to 50 µs late (the
/// kernel's default timer slack; Linux `PR_SET_TIMERSLACK` to 1 ns). Best effort: a paced
/// sender or a load loop calls it once, on its own thread.
pub fn precise_timers() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain prctl on the calling thread, with a value and no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Lowers the calling thread's priority (nice 10; Linux, where a thread has its own): what
/// a thread that serves others (a metrics endpoint rendering a large page) calls, so that
/// the process's timed loop is never kept waiting by it. Best effort.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority on the calling thread, plain values, no pointers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Gives memory freed but kept by the allocator back to the system (glibc's `malloc_trim`):
/// after a one-off peak (a reload's parsing), so that the resident size falls back.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a plain value and touches only the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes the calling thread run only when nothing else wants the processor (Linux
/// `SCHED_IDLE`; elsewhere, [`lower_priority`]): for one-off work (a reload's parsing and
/// sockets) that must never delay a timed loop. Best effort.
pub fn idle_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler on the calling thread (pid 0), with a param struct that
    // lives for the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return;
        }
    }
    lower_priority();
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn files_left_falls_as_files_open() {
        let before = super::files_left().unwrap();
        // Other tests in this process open and close files meanwhile: hold many more than
        // they do, and ask for most of them to show.
        let held: Vec<_> = (0..256)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let after = super::files_left().unwrap();
        assert!(after + 192 <= before, "{before} then {after}");
        drop(held);
    }
}
