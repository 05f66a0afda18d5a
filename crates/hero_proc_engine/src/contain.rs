//! Containment: every process a service starts, however it forks, belongs to the service
//! and ends with it.
//!
//! A process group is not enough: `setsid` leaves it, and a double fork reparents the
//! grandchild to init. Where the kernel offers a writable cgroup v2 tree, each service
//! gets its own cgroup (as systemd does): the child joins it before `exec`, nothing it
//! forks can leave it without root, and a stop kills the whole cgroup (`cgroup.kill`) and
//! waits for `cgroup.events` to say `populated 0`. Elsewhere the daemon becomes a child
//! subreaper (orphans of its services reparent to it, not to init) and a stop sweeps every
//! process that carries the service's marker in its environment.
//!
//! cgroups live under the daemon's own cgroup, in `hero_proc-<hash of root>/<ctx>.<name>`,
//! so daemons with different roots never collide. No controller is enabled, so the
//! no-internal-processes rule does not apply; under systemd give the unit `Delegate=yes`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The environment variable that marks every process of a service (the fallback finds
/// them by it).
pub const MARKER_ENV: &str = "HERO_PROC_UNIT";
/// Set to `subreaper` to force the fallback even where cgroups are writable (tests, or a
/// host where another manager owns the cgroup tree).
pub const FORCE_ENV: &str = "HERO_PROC_CONTAINMENT";

/// Which containment is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The folder holding this daemon's service cgroups.
    Cgroup(PathBuf),
    Subreaper,
}

#[derive(Clone, Debug)]
pub struct Containment {
    pub mode: Mode,
    /// Short hash of the root: names this daemon's cgroup folder and markers.
    tag: String,
    /// Why cgroups are not used, when they are not.
    pub fallback_reason: Option<String>,
}

impl Containment {
    /// Pick cgroup v2 if this daemon can create and join cgroups, else the subreaper.
    pub fn detect(root: &Path) -> Containment {
        let tag = tag_of(root);
        let forced = std::env::var(FORCE_ENV).is_ok_and(|v| v == "subreaper");
        let cgroup = if forced { Err(format!("{FORCE_ENV}=subreaper")) } else { create_base(root) };
        match cgroup {
            Ok(base) => Containment { mode: Mode::Cgroup(base), tag, fallback_reason: None },
            Err(why) => {
                // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
                let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
                let why = if r == 0 {
                    why
                } else {
                    format!("{why}; and PR_SET_CHILD_SUBREAPER failed: {}", io::Error::last_os_error())
                };
                Containment { mode: Mode::Subreaper, tag, fallback_reason: Some(why) }
            }
        }
    }

    /// `cgroup v2 at PATH` or `subreaper`, for `system info`.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::Cgroup(p) => format!("cgroup v2 at {}", p.display()),
            Mode::Subreaper => "subreaper".into(),
        }
    }

    /// The unit of service `context/name`.
    pub fn unit(&self, context: &str, name: &str) -> Unit {
        let leaf = format!("{context}.{name}");
        Unit {
            cgroup: match &self.mode {
                Mode::Cgroup(base) => Some(base.join(&leaf)),
                Mode::Subreaper => None,
            },
            marker: format!("{}:{leaf}", self.tag),
        }
    }

    /// Service cgroups that exist now, by leaf name (`context.name`).
    pub fn existing(&self) -> Vec<(String, Unit)> {
        let Mode::Cgroup(base) = &self.mode else { return Vec::new() };
        let Ok(rd) = std::fs::read_dir(base) else { return Vec::new() };
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let leaf = e.file_name().to_str()?.to_owned();
                let (c, n) = leaf.split_once('.')?;
                Some((leaf.clone(), self.unit(c, n)))
            })
            .collect()
    }
}

fn tag_of(root: &Path) -> String {
    hex::encode(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..4])
}

/// Where a daemon with `root`, started in this process's cgroup, keeps its service
/// cgroups: `<cgroup2 mount>/<own cgroup>/hero_proc-<hash of root>`. No side effects.
pub fn cgroup_base_for(root: &Path) -> Result<PathBuf, String> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    // Field 5 is the mount point; the file system type follows " - ".
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("this process has no cgroup v2 path")?;
    Ok(mount.join(own.trim_start_matches('/')).join(format!("hero_proc-{}", tag_of(root))))
}

/// Create the base cgroup and prove it is usable.
fn create_base(root: &Path) -> Result<PathBuf, String> {
    let base = cgroup_base_for(root)?;
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create cgroup {}: {e}", base.display())),
    }
    for f in ["cgroup.procs", "cgroup.kill", "cgroup.events"] {
        if !base.join(f).exists() {
            return Err(format!("{} has no {f} (kernel older than 5.14?)", base.display()));
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(base.join("cgroup.procs"))
        .map_err(|e| format!("cannot write {}: {e}", base.join("cgroup.procs").display()))?;
    Ok(base)
}

/// Where one service's processes live, and how to find and end them.
#[derive(Clone, Debug)]
pub struct Unit {
    /// The service's cgroup (cgroup mode).
    pub cgroup: Option<PathBuf>,
    /// `MARKER_ENV`'s value for its processes.
    pub marker: String,
}

impl Unit {
    /// Create the cgroup if needed and open its directory: the child is born in it
    /// (`clone3` into the cgroup) or, where that is refused, joins it through its
    /// `cgroup.procs` before exec.
    pub fn prepare(&self) -> io::Result<Option<std::fs::File>> {
        let Some(cg) = &self.cgroup else { return Ok(None) };
        match std::fs::create_dir(cg) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create cgroup {}: {e}", cg.display()))),
        }
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(cg)
            .map(Some)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open cgroup {}: {e}", cg.display())))
    }

    /// Every live process of the unit.
    pub fn pids(&self) -> Vec<u32> {
        match &self.cgroup {
            Some(cg) => std::fs::read_to_string(cg.join("cgroup.procs"))
                .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default(),
            None => marked_pids(&self.marker),
        }
    }

    /// Send `sig` to every process of the unit (a graceful stop reaches escaped ones too).
    pub fn signal_all(&self, sig: i32) {
        for pid in self.pids() {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// Wait until the unit has no process left, or `timeout`. Event-driven in cgroup mode
    /// (inotify on `cgroup.events`); the fallback re-scans `/proc` with a short backoff.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        match &self.cgroup {
            Some(cg) => wait_unpopulated(cg, deadline),
            None => {
                let mut pause = Duration::from_millis(2);
                loop {
                    reap_orphans();
                    if marked_pids(&self.marker).is_empty() {
                        return true;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Kill every process of the unit and wait until none is left (at most `timeout`).
    /// cgroup mode: `cgroup.kill` (atomic against forks). Fallback: SIGKILL every marked
    /// process until none is found (a fork racing the sweep is caught by the next pass).
    pub fn kill_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        match &self.cgroup {
            Some(cg) => {
                if !populated(cg) {
                    return true;
                }
                if let Err(e) = std::fs::write(cg.join("cgroup.kill"), "1") {
                    if e.kind() == io::ErrorKind::NotFound {
                        return true;
                    }
                    // No cgroup.kill: freeze, SIGKILL each, thaw.
                    let _ = std::fs::write(cg.join("cgroup.freeze"), "1");
                    self.signal_all(libc::SIGKILL);
                    let _ = std::fs::write(cg.join("cgroup.freeze"), "0");
                }
                wait_unpopulated(cg, deadline)
            }
            None => loop {
                let pids = marked_pids(&self.marker);
                if pids.is_empty() {
                    reap_orphans();
                    return true;
                }
                for pid in pids {
                    // SAFETY: kill only sends a signal.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                if self.wait_empty(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200))) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
            },
        }
    }

    /// Remove the cgroup if it is empty (a populated one stays: rmdir refuses it).
    pub fn remove_if_empty(&self) {
        if let Some(cg) = &self.cgroup
            && !populated(cg)
        {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

fn populated(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Block until `cgroup.events` says `populated 0` or the deadline passes: inotify tells
/// when the file changes, so there is no polling.
fn wait_unpopulated(cg: &Path, deadline: Instant) -> bool {
    let events = cg.join("cgroup.events");
    let watch = inotify::Inotify::init().and_then(|ino| {
        ino.watches().add(&events, inotify::WatchMask::MODIFY)?;
        Ok(ino)
    });
    let mut ino = match watch {
        Ok(i) => i,
        // Gone (removed) or unreadable: nothing to wait for that we could see.
        Err(_) => return !populated(cg),
    };
    let mut buf = [0u8; 1024];
    loop {
        if !populated(cg) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd { fd: ino.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the length of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
        if r > 0 {
            // Drain (non-blocking read: inotify was opened with IN_NONBLOCK by the crate).
            let _ = ino.read_events(&mut buf);
        }
    }
}

/// Kill every process in the service cgroups of the daemon of `root` and remove them (a
/// test harness's cleanup after `kill -9` of a daemon). Returns the leaves it removed.
pub fn remove_tree(root: &Path) -> Vec<PathBuf> {
    let Ok(base) = cgroup_base_for(root) else { return Vec::new() };
    let mut removed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&base) {
        for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let unit = Unit { cgroup: Some(e.path()), marker: String::new() };
            unit.kill_all(Duration::from_secs(10));
            if std::fs::remove_dir(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(&base);
    removed
}

/// Processes whose environment holds `HERO_PROC_UNIT=<marker>` (the fallback's record of
/// who belongs to a service; a process could scrub it, a cgroup it cannot leave).
fn marked_pids(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={marker}");
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Reap zombies that reparented to the daemon (it is a subreaper in fallback mode). Only
/// processes that are not the daemon's own spawned children: those are waited for by
/// their watcher (see [`crate::process::is_own_child`]).
pub fn reap_orphans() {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{me}/task")) else { return };
    let mut children = Vec::new();
    for t in rd.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            children.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    for pid in children {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
            .unwrap_or(false);
        if zombie && !crate::process::is_own_child(pid) {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child that no watcher waits for.
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        }
    }
}

/// Open `cgroup.procs` of the cgroup directory `dir`, for [`join_self`].
pub(crate) fn procs_of(dir: &std::fs::File) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: openat on a directory we hold, with a static relative path.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c"cgroup.procs".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Write "0" to an open `cgroup.procs`: moves the calling process. Used in the child
/// between fork and exec (async-signal-safe: one write).
pub(crate) fn join_self(fd: i32) -> io::Result<()> {
    // SAFETY: writes 1 byte from a static buffer to a descriptor the parent opened.
    let r = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if r == 1 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(root: &str) -> Containment {
        let root = Path::new(root);
        let base = cgroup_base_for(root).unwrap_or_else(|_| PathBuf::from("/nonexistent"));
        Containment { mode: Mode::Cgroup(base), tag: tag_of(root), fallback_reason: None }
    }

    #[test]
    fn units_of_different_roots_never_share_a_cgroup_or_marker() {
        let (a, b) = (at("/srv/a"), at("/srv/b"));
        let (x, y) = (a.unit("core", "web"), b.unit("core", "web"));
        assert_ne!(x.marker, y.marker);
        assert_ne!(x.cgroup, y.cgroup);
        assert!(x.cgroup.unwrap().ends_with(format!("hero_proc-{}/core.web", tag_of(Path::new("/srv/a")))));
        assert_eq!(
            a.describe(),
            format!(
                "cgroup v2 at {}",
                cgroup_base_for(Path::new("/srv/a")).unwrap_or_else(|_| PathBuf::from("/nonexistent")).display()
            )
        );
        let sub = Containment { mode: Mode::Subreaper, tag: tag_of(Path::new("/srv/a")), fallback_reason: None };
        assert_eq!(sub.describe(), "subreaper");
        assert!(sub.unit("core", "web").cgroup.is_none());
    }
}
