//! Process metrics read from Linux `/proc/self` at scrape time: CPU seconds, resident memory,
//! open file descriptors and threads. Elsewhere (or if `/proc` is not mounted) they are left
//! out of the scrape rather than reported as zero.

use std::sync::OnceLock;

/// What one scrape read about the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
}

/// Reads the current figures (a few small files and one directory listing).
pub fn read() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    ProcessStats {
        cpu_seconds: stat
            .as_deref()
            .and_then(cpu_ticks)
            .zip(clock_ticks_per_second())
            .map(|(ticks, hz)| ticks as f64 / hz as f64),
        resident_bytes: status
            .as_deref()
            .and_then(|s| status_field(s, "VmRSS:"))
            .map(|kib| kib * 1024),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        threads: status.as_deref().and_then(|s| status_field(s, "Threads:")),
    }
}

/// A numeric field of `/proc/self/status` (`VmRSS:   1234 kB` gives 1234).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` from `/proc/self/stat`, in clock ticks. The fields are counted after the
/// command name's closing parenthesis, since the name itself may hold spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After ")": state is field 3; utime and stime are fields 14 and 15.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's `USER_HZ` (the unit of `/proc` CPU times), from the auxiliary vector's
/// `AT_CLKTCK` entry, read once.
fn clock_ticks_per_second() -> Option<u64> {
    static HZ: OnceLock<Option<u64>> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::fs::read("/proc/self/auxv")
            .ok()
            .and_then(|auxv| auxv_entry(&auxv, AT_CLKTCK))
            .filter(|&hz| hz > 0)
    })
}

/// `AT_CLKTCK` in `<elf.h>`.
const AT_CLKTCK: u64 = 17;

/// The value of entry `key` in an auxiliary vector of native-endian machine words.
fn auxv_entry(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = chunk.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let (k, v) = pair.split_at(WORD);
        (word(k)? == key).then(|| word(v)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        let status = "Name:\tportcullis\nVmRSS:\t   2048 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(2048));
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let mut auxv = Vec::new();
        for (k, v) in [(6usize, 4096usize), (17, 100), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_entry(&auxv, AT_CLKTCK), Some(100));
        assert_eq!(auxv_entry(&auxv, 99), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0));
        assert!(s.threads.is_some_and(|t| t >= 1));
        assert!(s.open_fds.is_some_and(|n| n >= 3));
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0));
    }
}
