//! The process basics for `/metrics` (resident memory, CPU time, open file
//! descriptors, start time), read from `/proc/self` on each scrape. Linux
//! only: elsewhere [`ProcessStats::read`] returns `None` and the metrics
//! are left out rather than reported as zero.

use std::time::{Duration, SystemTime};

/// One reading of the process's resource use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// File descriptors open now.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads the current process's figures; `None` where `/proc` is absent
    /// or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time_secs = boot_time_secs(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // SAFETY: sysconf has no memory effects; it only reads a constant.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| max_open_files(&limits));
        parse_stat(
            &stat,
            u64::try_from(ticks_per_sec).ok().filter(|&t| t > 0)?,
            u64::try_from(page_size).ok().filter(|&p| p > 0)?,
            boot_time_secs,
        )
        .map(|stats| ProcessStats {
            // The directory listing held one descriptor of its own.
            open_fds: open_fds.saturating_sub(1),
            max_fds,
            ..stats
        })
    }

    /// How long the process has been running, by the wall clock.
    pub fn uptime(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(Duration::from_secs_f64(self.start_time_seconds))
    }
}

/// Parses `/proc/self/stat` (see proc(5)). The command name, field 2, is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(
    stat: &str,
    ticks_per_sec: u64,
    page_size: u64,
    boot_time_secs: u64,
) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first word after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    Some(ProcessStats {
        resident_memory_bytes: field(24)? * page_size,
        virtual_memory_bytes: field(23)?,
        cpu_seconds: (utime + stime) as f64 / ticks_per_sec as f64,
        open_fds: 0,
        max_fds: None,
        start_time_seconds: boot_time_secs as f64 + start_ticks as f64 / ticks_per_sec as f64,
    })
}

/// The `btime` line of `/proc/stat`: boot time, in Unix seconds.
fn boot_time_secs(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of the `Max open files` line of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_command_name() {
        // Fields from a real /proc/self/stat, with ") (" in the name.
        let stat = "4242 (we) (ird name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 150 0 0 20 0 4 0 123400 104857600 2560 18446744073709551615 \
                    0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(stat, 100, 4096, 1_700_000_000).expect("parses");
        assert_eq!(stats.cpu_seconds, 4.0);
        assert_eq!(stats.resident_memory_bytes, 2560 * 4096);
        assert_eq!(stats.virtual_memory_bytes, 104_857_600);
        assert_eq!(stats.start_time_seconds, 1_700_000_000.0 + 1234.0);
        assert_eq!(parse_stat("garbage", 100, 4096, 0), None);
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read().expect("Linux has /proc");
        assert!(stats.resident_memory_bytes > 1 << 20, "{stats:?}");
        assert!(stats.open_fds >= 3, "stdin/out/err at least: {stats:?}");
        assert!(stats.max_fds.is_some_and(|m| m >= stats.open_fds));
        assert!(stats.uptime() < Duration::from_secs(24 * 3600), "{stats:?}");
    }

    #[test]
    fn reads_boot_time_and_fd_limit() {
        assert_eq!(
            boot_time_secs("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }
}
