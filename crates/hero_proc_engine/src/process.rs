//! Spawning, waiting for, stopping and re-attaching to process groups.
//!
//! Every action runs as the leader of its own process group, so a stop reaches every
//! process it forked. Output goes straight to a file the caller opened (the log store),
//! never through a pipe to the daemon: a daemon restart then neither loses output nor
//! kills the child with SIGPIPE, and the child keeps running while no daemon is there.
//!
//! A new daemon re-attaches to processes that outlived the old one by PID, guarded
//! against PID reuse by the process start time recorded at spawn. It cannot `wait()` for
//! them (they are no longer its children), so it watches a pidfd: still event-driven,
//! but the exit status is unknown.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hero_proc_spec::{Action, Interpreter, Signal};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::paths::Expand;

/// Environment variables that carry key material: never passed on to children.
pub const WITHHELD_ENV: [&str; 5] =
    ["SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "HERO_PROC_AGE_KEY_FILE", "HERO_PROC_WEBHOOK_SECRET"];

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("the command line is empty")]
    EmptyCommand,
    #[error("the command line cannot be split into arguments (unclosed quote?)")]
    BadCommand,
    #[error("working directory `{}` does not exist or is not a directory", .0.display())]
    Cwd(PathBuf),
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Re-attached after a daemon restart: it ended, but it was not our child, so its
    /// status cannot be known.
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => f.write_str("status unknown (re-attached process)"),
        }
    }
}

/// The argv an action runs: `exec` splits the script like a shell would but runs no
/// shell; the others hand the script to their interpreter.
pub fn command_line(action: &Action, expand: &Expand) -> Result<Vec<String>, SpawnError> {
    let label = format!("hero_proc:{}/{}", action.context, action.name);
    let argv = match action.interpreter {
        Interpreter::Exec => {
            let words = shell_words::split(&action.script).map_err(|_| SpawnError::BadCommand)?;
            words.iter().map(|w| expand.word(w)).collect()
        }
        Interpreter::Bash => vec!["bash".into(), "-c".into(), action.script.clone(), label],
        Interpreter::Sh => vec!["sh".into(), "-c".into(), action.script.clone(), label],
        Interpreter::Python3 => vec!["python3".into(), "-c".into(), action.script.clone()],
    };
    if argv.first().is_none_or(|a: &String| a.is_empty()) {
        return Err(SpawnError::EmptyCommand);
    }
    Ok(argv)
}

/// A running process group we can wait for and signal.
#[derive(Debug)]
pub struct Running {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    waiter: Waiter,
}

#[derive(Debug)]
enum Waiter {
    Child(tokio::process::Child),
    Pidfd(AsyncFd<OwnedFd>),
    Gone,
}

/// Start `action` with `env` (already resolved, secrets included) appended to the
/// daemon's environment, output into `output`.
pub fn spawn(
    action: &Action,
    env: &[(String, String)],
    expand: &Expand,
    output: &std::fs::File,
) -> Result<Running, SpawnError> {
    let argv = command_line(action, expand)?;
    let cwd = match &action.cwd {
        Some(c) => expand.path(c),
        None => expand.root().to_path_buf(),
    };
    if !cwd.is_dir() {
        return Err(SpawnError::Cwd(cwd));
    }
    let io_err = |source| SpawnError::Spawn { program: argv[0].clone(), source };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone().map_err(io_err)?))
        .stderr(Stdio::from(output.try_clone().map_err(io_err)?))
        // The daemon going away must not take its children with it.
        .kill_on_drop(false);
    // Touching the environment makes std copy all of it into a map for every spawn, so
    // only do it when needed: the daemon scrubs its own environment at start
    // ([`scrub_daemon_env`]), and children then inherit it as it is.
    if std::env::var_os("HERO_ROOTDIR").as_deref() != Some(expand.root().as_os_str()) {
        cmd.env("HERO_ROOTDIR", expand.root());
    }
    for k in WITHHELD_ENV {
        if std::env::var_os(k).is_some() {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own process group, so a stop reaches everything it forks. (process_group keeps
    // the fast posix_spawn path that a pre_exec hook would lose.)
    cmd.as_std_mut().process_group(0);
    let child = cmd.spawn().map_err(io_err)?;
    let pid = child.id().unwrap_or(0);
    let start_ticks = proc_start_ticks(pid).unwrap_or(0);
    Ok(Running { pid, start_ticks, waiter: Waiter::Child(child) })
}

/// Make the daemon's own environment the one its children should inherit: set
/// `HERO_ROOTDIR`, remove key material. Call once at start, before any thread exists,
/// after reading whatever key material the daemon itself needs.
///
/// # Safety
/// Mutates the process environment: no other thread may be running.
pub unsafe fn scrub_daemon_env(root: &std::path::Path) {
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe {
        std::env::set_var("HERO_ROOTDIR", root);
        for k in WITHHELD_ENV {
            std::env::remove_var(k);
        }
    }
}

/// Re-attach to a process a previous daemon started. `None` if it is gone or the PID now
/// belongs to another process (its start time differs).
pub fn reattach(pid: u32, start_ticks: u64) -> Option<Running> {
    if pid == 0 || proc_start_ticks(pid)? != start_ticks {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // Check again now that the pidfd pins the process: the PID cannot be reused under it.
    if proc_start_ticks(pid)? != start_ticks {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `owned` is a valid pidfd, and the AsyncFd owns it for its whole life.
    let afd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.ok()?;
    Some(Running { pid, start_ticks, waiter: Waiter::Pidfd(afd) })
}

impl Running {
    /// Wait for the process to end. Event-driven in both cases (SIGCHLD/pidfd), no polling.
    pub async fn wait(&mut self) -> io::Result<Exit> {
        let exit = match &mut self.waiter {
            Waiter::Child(child) => {
                use std::os::unix::process::ExitStatusExt;
                let status = child.wait().await?;
                match (status.code(), status.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(s)) => Exit::Signal(s),
                    (None, None) => Exit::Unknown,
                }
            }
            Waiter::Pidfd(fd) => {
                let mut guard = fd.readable().await?;
                guard.retain_ready();
                Exit::Unknown
            }
            Waiter::Gone => Exit::Unknown,
        };
        self.waiter = Waiter::Gone;
        Ok(exit)
    }

    /// Send `sig` to the whole process group.
    pub fn signal_group(&self, sig: i32) -> io::Result<()> {
        signal_group(self.pid, sig)
    }

    /// Stop: the stop signal to the group, then SIGKILL to the group after `timeout`.
    /// Returns how the main process ended. Anything left in the group is killed too.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> io::Result<Exit> {
        let _ = self.signal_group(signal.number());
        let exit = match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r?,
            Err(_) => {
                let _ = self.signal_group(libc::SIGKILL);
                self.wait().await?
            }
        };
        let _ = signal_group(self.pid, libc::SIGKILL);
        Ok(exit)
    }
}

/// Signal a process group by its leader's PID. A group that no longer exists is fine.
pub fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    if pgid == 0 {
        return Ok(());
    }
    // SAFETY: killpg with a positive pgid only sends a signal.
    let r = unsafe { libc::killpg(pgid as libc::pid_t, sig) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(e) }
}

/// Whether any process of the group is still alive.
pub fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pgid != 0 && unsafe { libc::killpg(pgid as libc::pid_t, 0) } == 0
}

/// The start time of `pid` in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Process-group leaders whose stdout or stderr is one of `paths`, by path: how a new
/// daemon finds a job process the previous one started but died before recording (each
/// job writes to its own output file, and each job leads its own process group).
pub fn find_by_output(paths: &[std::path::PathBuf]) -> std::collections::HashMap<std::path::PathBuf, u32> {
    let mut found = std::collections::HashMap::new();
    if paths.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        for fd in [1, 2] {
            let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { continue };
            if paths.contains(&target) && process_group_of(pid) == Some(pid) {
                found.insert(target, pid);
                break;
            }
        }
    }
    found
}

/// Field 5 of `/proc/<pid>/stat`: the process group.
fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}
