//! What both benchmarks need: run a child process and read its own wall time and peak RSS.

use std::process::Command;
use std::time::{Duration, Instant};

/// Wall time and peak resident memory of one child process.
pub struct ChildRun {
    /// Time from spawn to exit.
    pub wall: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: i64,
    /// CPU time, user and system, of the child itself.
    #[allow(dead_code)]
    pub cpu: Duration,
}

/// Runs `cmd` to completion and reads its own rusage (not the sum over all children).
pub fn measure(mut cmd: Command) -> ChildRun {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which `child` never waits for (it is forgotten below).
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    std::mem::forget(child);
    assert_eq!(waited, pid, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed with status {status}");
    let seconds =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    ChildRun { wall, max_rss_kib: usage.ru_maxrss, cpu }
}

/// Peak RSS of this process so far, MiB (used by one of the two benches).
#[allow(dead_code)]
pub fn own_peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut own: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut own) };
    own.ru_maxrss as f64 / 1024.0
}
