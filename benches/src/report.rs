//! What every run prints: the machine, the build, the command, latency figures, and the
//! one-line machine-readable summary (`load: key=value ...`) that scripts parse.

use std::fmt::Write as _;
use std::time::Duration;

/// Prints the lines that come before any figure: tool version, machine, OS, build profile
/// and the command line that repeats the run.
pub(crate) fn print_header(command: &str) {
    println!("gridlake-load {}", env!("CARGO_PKG_VERSION"));
    println!("machine:     {}", machine());
    println!("os:          {}", os());
    println!("build:       {}", profile());
    println!("command:     {command}");
}

/// `N cores, <model>, <memory> GiB RAM`.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| crate::process::parse_status_kib(&m, "MemTotal"))
        .map_or_else(
            || "unknown RAM".to_owned(),
            |kib| format!("{:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0),
        );
    format!("{cores} cores, {cpu}, {memory}")
}

/// Distribution, kernel and architecture.
fn os() -> String {
    let release = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!(", kernel {}", k.trim()))
        .unwrap_or_default();
    format!("{release}{kernel}, {}", std::env::consts::ARCH)
}

/// `release` or `debug`, the latter with a warning.
pub(crate) fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug (figures are not meaningful: build with --release)"
    } else {
        "release"
    }
}

/// The short profile name for the summary line.
pub(crate) fn profile_name() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The `q` quantile of sorted durations (nearest rank).
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with one decimal, `-` for none.
pub(crate) fn millis(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e3),
    )
}

/// p50, p99 and max of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Latency {
    pub(crate) p50: Option<Duration>,
    pub(crate) p99: Option<Duration>,
    pub(crate) max: Option<Duration>,
}

impl Latency {
    /// Sorts `samples` and takes the figures.
    pub(crate) fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
            max: samples.last().copied(),
        }
    }

    /// `p50 X ms, p99 Y ms, max Z ms`.
    pub(crate) fn human(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms",
            millis(self.p50),
            millis(self.p99),
            millis(self.max)
        )
    }
}

/// The closing `load: key=value ...` line: keys in the order they were added, values
/// without spaces.
#[derive(Debug)]
pub(crate) struct Summary(String);

impl Summary {
    /// A summary of a run of `mode`.
    pub(crate) fn new(mode: &str) -> Self {
        let mut line = String::from("load:");
        let _ = write!(line, " mode={mode} build={}", profile_name());
        Self(line)
    }

    /// Adds `key=value`; spaces in the value become `_`.
    pub(crate) fn add(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let value = value.to_string().replace(char::is_whitespace, "_");
        let _ = write!(self.0, " {key}={value}");
        self
    }

    /// Adds `key=` a float with `decimals` places.
    pub(crate) fn float(&mut self, key: &str, value: f64, decimals: usize) -> &mut Self {
        let _ = write!(self.0, " {key}={value:.decimals$}");
        self
    }

    /// Adds `key_p50_ms`, `key_p99_ms` and `key_max_ms`.
    pub(crate) fn latency(&mut self, key: &str, latency: &Latency) -> &mut Self {
        self.add(&format!("{key}p50_ms"), millis(latency.p50))
            .add(&format!("{key}p99_ms"), millis(latency.p99))
            .add(&format!("{key}max_ms"), millis(latency.max))
    }

    /// Prints the line.
    pub(crate) fn print(&self) {
        println!("{}", self.0);
    }

    /// The line, for tests.
    #[cfg(test)]
    pub(crate) fn line(&self) -> &str {
        &self.0
    }
}

/// Quotes a word for a POSIX shell when it needs it, so printed commands paste as is.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(ms(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(ms(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 0.99), Some(ms(7)));
        assert_eq!(percentile(&[], 0.5), None);
        let mut shuffled: Vec<Duration> = (1..=10).rev().map(ms).collect();
        let latency = Latency::of(&mut shuffled);
        assert_eq!(latency.p50, Some(ms(5)));
        assert_eq!(latency.p99, Some(ms(10)));
        assert_eq!(latency.max, Some(ms(10)));
        assert_eq!(latency.human(), "p50 5.0 ms, p99 10.0 ms, max 10.0 ms");
    }

    #[test]
    fn summary_is_one_line_of_key_value_pairs() {
        let mut summary = Summary::new("write");
        summary
            .add("target", "influx db")
            .float("rows_per_s", 1234.567, 0)
            .latency("ack_", &Latency::default());
        let line = summary.line();
        assert!(line.starts_with("load: mode=write build="), "{line}");
        assert!(
            line.ends_with(
                " target=influx_db rows_per_s=1235 ack_p50_ms=- ack_p99_ms=- ack_max_ms=-"
            ),
            "{line}"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("http://127.0.0.1:7181"), "http://127.0.0.1:7181");
        assert_eq!(shell_word("meter=8,inverter=1"), "meter=8,inverter=1");
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
