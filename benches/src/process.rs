//! Watching the server under test from outside: CPU time and memory from `/proc`, a
//! graceful stop, and the size of its data directory.
//!
//! Everything here reads what the kernel says about another process, so it works the
//! same for gridlake, InfluxDB and VictoriaMetrics.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};

/// How often the resident set size is sampled during a run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The fields of `/proc/PID/stat` the tool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Process state: `R`, `S`, `D`, `Z` (exited, not yet reaped), ...
    pub(crate) state: char,
    /// User plus system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
}

/// Parses `/proc/PID/stat` (proc(5)). The command name (field 2) is in parentheses and
/// may itself contain spaces and parentheses, so the fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field n is index n - 3.
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(ProcStat {
        state,
        cpu_ticks: utime + stime,
    })
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub(crate) fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn read_status_kib(pid: i32, key: &str) -> Option<u64> {
    parse_status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// Clock ticks per second for `/proc` CPU times, and whether the kernel said so (`false`:
/// assumed 100, the value on every mainstream Linux).
pub(crate) fn clock_ticks() -> (u64, bool) {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => (ticks as u64, true),
        _ => (100, false),
    }
}

/// CPU seconds (user + system) `pid` has used so far.
pub(crate) fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = read_stat(pid)?;
    Some(stat.cpu_ticks as f64 / clock_ticks().0 as f64)
}

/// What a server used during a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// CPU seconds (user + system) between the start and the end of the run.
    pub(crate) cpu_s: f64,
    /// `cpu_s` over the wall time: how many cores it kept busy on average.
    pub(crate) cores: f64,
    /// Largest VmRSS seen in samples every 100 ms during the run, KiB.
    pub(crate) rss_max_kib: u64,
    /// VmHWM at the end: the peak since the process started (includes anything before
    /// the run), KiB.
    pub(crate) hwm_kib: Option<u64>,
    /// Whether the clock tick rate was read from the kernel (else assumed 100 Hz).
    pub(crate) ticks_known: bool,
}

/// Watches one process from the start of a run to its end.
#[derive(Debug)]
pub(crate) struct Watch {
    pid: i32,
    started: Instant,
    start_ticks: u64,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<u64>,
}

impl Watch {
    /// Starts watching `pid`; fails when there is no such process.
    pub(crate) fn start(pid: i32) -> anyhow::Result<Self> {
        let stat = read_stat(pid)
            .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}/stat"))?;
        if matches!(stat.state, 'Z' | 'X') {
            bail!("--server-pid {pid} has already exited");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("rss-sampler".to_owned())
                .spawn(move || {
                    let mut max = 0;
                    while !stop.load(Ordering::Relaxed) {
                        max = max.max(read_status_kib(pid, "VmRSS").unwrap_or(0));
                        std::thread::sleep(RSS_SAMPLE_EVERY);
                    }
                    max.max(read_status_kib(pid, "VmRSS").unwrap_or(0))
                })
                .context("cannot start the RSS sampler thread")?
        };
        Ok(Self {
            pid,
            started: Instant::now(),
            start_ticks: stat.cpu_ticks,
            stop,
            sampler,
        })
    }

    /// Ends the watch: CPU used since [`Watch::start`] and the memory peaks.
    pub(crate) fn finish(self) -> anyhow::Result<Usage> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let end = read_stat(self.pid)
            .with_context(|| format!("server {} exited during the run", self.pid))?;
        let hwm_kib = read_status_kib(self.pid, "VmHWM");
        self.stop.store(true, Ordering::Relaxed);
        let rss_max_kib = self.sampler.join().unwrap_or(0);
        let (ticks, ticks_known) = clock_ticks();
        let cpu_s = end.cpu_ticks.saturating_sub(self.start_ticks) as f64 / ticks as f64;
        Ok(Usage {
            cpu_s,
            cores: cpu_s / elapsed.max(1e-9),
            rss_max_kib,
            hwm_kib,
            ticks_known,
        })
    }
}

/// Sends SIGTERM to `pid` and waits until it has exited (gone, or a zombie waiting for
/// its parent); returns how long that took.
pub(crate) fn stop(pid: i32, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .with_context(|| format!("cannot send SIGTERM to server {pid}"))?;
    loop {
        match read_stat(pid) {
            None => return Ok(started.elapsed()),
            Some(stat) if matches!(stat.state, 'Z' | 'X') => return Ok(started.elapsed()),
            Some(_) => {}
        }
        if started.elapsed() > timeout {
            bail!("server {pid} still running {timeout:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Total size in bytes of the files under `dir` (apparent sizes, symlinks not followed);
/// 0 when `dir` does not exist.
pub(crate) fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// The size of each entry directly under `dir` (a subdirectory counts everything in
/// it), by name.
pub(crate) fn dir_parts(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let size = if kind.is_dir() {
            dir_size(&entry.path())?
        } else if kind.is_file() {
            entry.metadata()?.len()
        } else {
            continue;
        };
        parts.push((entry.file_name().to_string_lossy().into_owned(), size));
    }
    parts.sort();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from a `gridlake serve`, with a command name made awkward on purpose.
    const STAT: &str = "12345 (grid lake) (x)) S 1 12345 12345 0 -1 4194560 91357 0 0 0 \
                        1520 347 0 0 20 0 18 0 5513770 1780752384 60711 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 17667 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(ProcStat {
                state: 'S',
                cpu_ticks: 1520 + 347
            })
        );
        assert_eq!(parse_stat("12 (x) Z 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tgridlake\nVmPeak:\t 1800000 kB\nVmHWM:\t  250112 kB\n\
                      VmRSS:\t  242844 kB\nThreads:\t18\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(250_112));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(242_844));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn watching_this_process_sees_its_cpu_and_memory() {
        let pid = std::process::id() as i32;
        let watch = Watch::start(pid).unwrap();
        // Spin until the kernel has charged five ticks more (whatever else runs).
        let start = read_stat(pid).unwrap().cpu_ticks;
        let spin = Instant::now();
        let mut x = 0u64;
        while read_stat(pid).unwrap().cpu_ticks < start + 5 && spin.elapsed().as_secs() < 30 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let usage = watch.finish().unwrap();
        let (ticks, _) = clock_ticks();
        assert!(usage.cpu_s >= 5.0 / ticks as f64, "{usage:?}");
        assert!(usage.rss_max_kib > 0, "{usage:?}");
        assert!(usage.hwm_kib.unwrap() >= usage.rss_max_kib / 2, "{usage:?}");
    }

    #[test]
    fn dir_size_adds_up_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(dir_size(dir.path()).unwrap(), 42);
        assert_eq!(
            dir_parts(dir.path()).unwrap(),
            [("a".to_owned(), 32), ("x".to_owned(), 10)]
        );
        assert_eq!(dir_size(&dir.path().join("missing")).unwrap(), 0);
    }
}
