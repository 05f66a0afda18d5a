//! What a service's process tree uses, read from `/proc` when asked (a `/metrics`
//! scrape), never on a timer: an idle daemon still makes no wake-ups.
//!
//! The tree is the service's cgroup (`cgroup.procs`, exact) where containment has one,
//! else the main process and its descendants by parent pid (one pass over `/proc`,
//! shared by every service of a scrape). CPU counts each live process's own time and the
//! time of the children it has reaped (`cutime`/`cstime`), so the work of short-lived
//! helpers is counted once and nothing twice.

use std::collections::HashMap;

/// One process, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default)]
struct Stat {
    ppid: u32,
    /// utime + stime + cutime + cstime, clock ticks.
    ticks: u64,
    threads: u64,
    rss_pages: u64,
    start_ticks: u64,
}

/// Every process on the machine at one moment.
#[derive(Debug, Default)]
pub struct ProcTable {
    stats: HashMap<u32, Stat>,
    children: HashMap<u32, Vec<u32>>,
    scanned: bool,
    tick_hz: u64,
    page_size: u64,
    boot_time_s: u64,
}

/// What a tree uses now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
    pub processes: u64,
    /// When the main process started (seconds since the epoch).
    pub start_time_seconds: Option<f64>,
}

impl ProcTable {
    /// A table that reads `/proc` when first asked for a tree by parent pid (a tree given
    /// by its cgroup needs only its members' files).
    pub fn new() -> ProcTable {
        ProcTable {
            // SAFETY: sysconf only reads a configuration value.
            tick_hz: unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64,
            // SAFETY: as above.
            page_size: unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64,
            boot_time_s: boot_time().unwrap_or(0),
            ..ProcTable::default()
        }
    }

    /// [`ProcTable::new`] with the pass over `/proc` done.
    pub fn read() -> ProcTable {
        let mut t = ProcTable::new();
        t.scan();
        t
    }

    /// One pass over `/proc`. Processes that end meanwhile are skipped.
    fn scan(&mut self) {
        self.scanned = true;
        let Ok(rd) = std::fs::read_dir("/proc") else { return };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(s) = read_stat(pid) {
                self.children.entry(s.ppid).or_default().push(pid);
                self.stats.insert(pid, s);
            }
        }
    }

    /// The usage of `pids` (a cgroup's members) or, when `None`, of `main` and its
    /// descendants.
    pub fn usage(&mut self, main: u32, members: Option<&[u32]>) -> Usage {
        if members.is_none() && !self.scanned {
            self.scan();
        }
        let tree: Vec<u32> = match members {
            Some(m) => m.to_vec(),
            None => {
                let mut out = Vec::new();
                let mut stack = vec![main];
                while let Some(p) = stack.pop() {
                    if !self.stats.contains_key(&p) || out.contains(&p) {
                        continue;
                    }
                    out.push(p);
                    if let Some(c) = self.children.get(&p) {
                        stack.extend(c);
                    }
                }
                out
            }
        };
        let mut u = Usage::default();
        let mut ticks = 0;
        let mut main_start = None;
        for pid in &tree {
            let Some(s) = self.stats.get(pid).copied().or_else(|| read_stat(*pid)) else { continue };
            if *pid == main {
                main_start = Some(s.start_ticks);
            }
            u.processes += 1;
            ticks += s.ticks;
            u.threads += s.threads;
            u.memory_bytes += s.rss_pages * self.page_size;
            u.open_fds += open_fds(*pid);
        }
        u.cpu_seconds = ticks as f64 / self.tick_hz as f64;
        let main_start =
            main_start.or_else(|| self.stats.get(&main).copied().or_else(|| read_stat(main)).map(|s| s.start_ticks));
        u.start_time_seconds = main_start
            .filter(|_| self.boot_time_s > 0)
            .map(|t| self.boot_time_s as f64 + t as f64 / self.tick_hz as f64);
        u
    }
}

fn read_stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: n(4)? as u32,
        ticks: n(14)? + n(15)? + n(16)? + n(17)?,
        threads: n(20)?,
        start_ticks: n(22)?,
        rss_pages: n(24)?,
    })
}

/// Linux 6.2+ reports a process's open descriptors as the size of `/proc/<pid>/fd` (one
/// `stat`); older kernels say 0, and the folder is listed instead.
fn open_fds(pid: u32) -> u64 {
    let dir = format!("/proc/{pid}/fd");
    match std::fs::metadata(&dir) {
        Ok(m) if m.len() > 0 => m.len(),
        Ok(_) => std::fs::read_dir(&dir).map(|d| d.count() as u64).unwrap_or(0),
        Err(_) => 0,
    }
}

/// `btime` of `/proc/stat`: when the machine booted, seconds since the epoch.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `exit code N` -> N, `killed by signal S` -> 128 + S (as a shell reports it).
pub fn exit_code_of(last_exit: &str) -> Option<i64> {
    if let Some(rest) = last_exit.strip_prefix("exit code ") {
        return rest.split_whitespace().next()?.parse().ok();
    }
    let rest = last_exit.strip_prefix("killed by signal ")?;
    rest.split_whitespace().next()?.parse::<i64>().ok().map(|s| 128 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_descendants_memory_threads_and_fds() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // `spawn` returns while the child is still in its exec (no memory yet): wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ProcTable::read().usage(child.id(), None).memory_bytes == 0 {
            assert!(std::time::Instant::now() < deadline, "sleep never finished its exec");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut t = ProcTable::read();
        let alone = t.usage(child.id(), None);
        let tree = t.usage(me, None);
        assert_eq!(alone.processes, 1);
        assert!(tree.processes >= 2, "{tree:?}");
        assert!(tree.memory_bytes > alone.memory_bytes && alone.memory_bytes > 0, "{tree:?} {alone:?}");
        assert!(tree.threads >= 2 && tree.open_fds >= 3, "{tree:?}");
        let started = alone.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - started).abs() < 30.0, "started {started}, now {now}");
        // Members given (a cgroup) are taken as they are.
        assert_eq!(t.usage(me, Some(&[child.id()])).processes, 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // A pid that is gone counts nothing.
        assert_eq!(ProcTable::read().usage(child.id(), None).processes, 0);
        // Without a pass over /proc, members are read one by one.
        let mut lazy = ProcTable::new();
        assert_eq!(lazy.usage(me, Some(&[me])).processes, 1);
        assert!(!lazy.scanned);
    }

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        assert_eq!(exit_code_of("exit code 3"), Some(3));
        assert_eq!(exit_code_of("killed by signal 9"), Some(137));
        assert_eq!(exit_code_of("status unknown (re-attached process)"), None);
    }
}
