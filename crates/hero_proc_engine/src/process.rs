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
pub const WITHHELD_ENV: [&str; 6] = [
    "SOPS_AGE_KEY",
    "SOPS_AGE_KEY_FILE",
    "SOPS_AGE_KEY_CMD",
    "HERO_PROC_AGE_KEY_FILE",
    "HERO_PROC_WEBHOOK_SECRET",
    "HERO_PROC_REGISTRY_TOKEN",
];

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
    #[error(
        "the action sets `user: {user}`, but hero_proc runs as uid {uid}, not root: only root can run a process as another account; run the daemon as root or remove `user:`"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("`user: {0}`: no such account on this host; create it (useradd) or fix the action's `user:`")]
    NoUser(String),
    #[error("`group: {0}`: no such group on this host; create it (groupadd) or fix the action's `group:`")]
    NoGroup(String),
    #[error("cannot look up account `{name}`: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("cannot place the process in its cgroup: {0}")]
    Contain(io::Error),
}

/// The account an action runs as (`user:`/`group:`), resolved on this host.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from the group database, as `initgroups` would set them).
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// The whole environment of a process run as this account (the daemon's is not
    /// passed): HOME, USER, LOGNAME, SHELL, a default PATH and HERO_ROOTDIR.
    fn env(&self, root: &std::path::Path) -> [(&'static str, std::ffi::OsString); 6] {
        [
            ("HOME", self.home.clone().into()),
            ("USER", self.name.clone().into()),
            ("LOGNAME", self.name.clone().into()),
            ("SHELL", self.shell.clone().into()),
            ("PATH", USER_PATH.into()),
            ("HERO_ROOTDIR", root.into()),
        ]
    }

    /// (uid, gid, supplementary groups), prepared before a fork for [`become_account`].
    fn ids(&self) -> (u32, u32, Vec<u32>) {
        (self.uid, self.gid, self.groups.clone())
    }

    /// Look up `user` (and `group`) now: accounts exist per host, so this happens at start
    /// time, and only root may switch to one.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Account, SpawnError> {
        use nix::unistd::{Group, User};
        let uid = nix::unistd::geteuid().as_raw();
        if uid != 0 {
            return Err(SpawnError::NotRoot { user: user.into(), uid });
        }
        let lookup = |source| SpawnError::Lookup { name: user.into(), source };
        let u = User::from_name(user).map_err(lookup)?.ok_or_else(|| SpawnError::NoUser(user.into()))?;
        let gid = match group {
            Some(g) => {
                Group::from_name(g)
                    .map_err(|source| SpawnError::Lookup { name: g.into(), source })?
                    .ok_or_else(|| SpawnError::NoGroup(g.into()))?
                    .gid
            }
            None => u.gid,
        };
        let cname = std::ffi::CString::new(user).map_err(|_| SpawnError::NoUser(user.into()))?;
        let mut groups: Vec<u32> =
            nix::unistd::getgrouplist(&cname, gid).map_err(lookup)?.into_iter().map(|g| g.as_raw()).collect();
        groups.dedup();
        Ok(Account { name: u.name, uid: u.uid.as_raw(), gid: gid.as_raw(), groups, home: u.dir, shell: u.shell })
    }
}

/// Where and as whom a process runs, beyond its action.
#[derive(Debug, Default)]
pub struct Placement {
    /// Run as this account instead of the daemon's.
    pub account: Option<Account>,
    /// The unit's cgroup directory, opened: the child is born in it (or joins it
    /// before exec where `clone3` into a cgroup is refused).
    pub cgroup: Option<std::fs::File>,
    /// `HERO_PROC_UNIT` for the child (see [`crate::contain`]).
    pub marker: Option<String>,
}

/// PIDs this daemon spawned whose watcher has not yet reaped them: the orphan reaper must
/// leave these to tokio.
static OWN_CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Whether `pid` is a child this daemon spawned and still waits for.
pub fn is_own_child(pid: u32) -> bool {
    OWN_CHILDREN.lock().map(|c| c.contains(&pid)).unwrap_or(true)
}

fn forget_child(pid: u32) {
    if let Ok(mut c) = OWN_CHILDREN.lock() {
        c.retain(|&p| p != pid);
    }
}

/// Make `cmd` run as `a` with a clean environment (HOME, USER, LOGNAME, SHELL, PATH,
/// HERO_ROOTDIR): for commands outside [`spawn_in`], like `exec` health checks.
pub fn run_as(cmd: &mut std::process::Command, a: &Account, root: &std::path::Path) {
    cmd.env_clear().envs(a.env(root));
    let ids = a.ids();
    // SAFETY: only async-signal-safe calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || become_account(&ids));
    }
}

/// Supplementary groups, then gid, then uid: the order that still has the right to set
/// each. Async-signal-safe, for a child between fork (or `clone_into`'s clone) and exec:
/// the raw system calls act on the calling thread only, the child's one, where glibc's
/// wrappers would signal a thread list a `clone_into` child does not have.
pub(crate) fn become_account((uid, gid, groups): &(u32, u32, Vec<u32>)) -> io::Result<()> {
    // SAFETY: plain syscalls on owned data.
    if unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
            || libc::syscall(libc::SYS_setgid, *gid) != 0
            || libc::syscall(libc::SYS_setuid, *uid) != 0
    } {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// PATH for a process run as another account (the daemon's own is not passed).
const USER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub use crate::clone_into::NotStarted;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Re-attached after a daemon restart: it ended, but it was not our child, so its
    /// status cannot be known.
    Unknown,
    /// It ended before its program ran: a step between the clone and `execve` failed
    /// (the parent does not wait for the child's `execve`; its failure comes with its exit).
    NotStarted(NotStarted),
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
            Exit::NotStarted(why) => write!(f, "cannot start: {why}"),
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
            let mut argv: Vec<String> = words.iter().map(|w| expand.word(w)).collect();
            // An artifact (SPEC 3.6) is installed as $HERO_ROOTDIR/bin/NAME@VERSION, also
            // when written `~/hero/bin/...` on a daemon whose root is elsewhere (or for an
            // account whose home is not the daemon's).
            if let Some(Ok(id)) = words.first().and_then(|p| hero_proc_spec::artifact::artifact_in_program(p)) {
                argv[0] = expand.root().join("bin").join(id.to_string()).to_string_lossy().into_owned();
            }
            argv
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
    pub start_ticks: StartTicks,
    waiter: Waiter,
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): what
/// tells it from a later process that got the same PID. For a child this daemon cloned it
/// is known from the boot clock read around the clone (`clone_into::start_ticks_between`);
/// when a tick boundary fell inside the clone, it is read from `/proc` when first needed
/// (by the record of its start), not right after the clone: then the child is still in
/// its `execve`, and reading its `stat` waited on it. Only while the child is unreaped is
/// that read surely its own (an unreaped child's PID cannot be reused): once its watcher
/// reaps it unread, it stays unknown. A job that ended before its start was written needs
/// none: its exit is written with its start, or in the write after it, and a daemon that
/// dies in between records such a job as gone (which it is). Clones share one value.
#[derive(Clone, Debug)]
pub struct StartTicks(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl StartTicks {
    /// Not read yet.
    const UNREAD: u64 = u64::MAX;
    /// Reaped before it was read: unknown for good.
    const REAPED: u64 = u64::MAX - 1;

    /// Already known (0: could not be read).
    pub fn known(ticks: u64) -> StartTicks {
        StartTicks(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(ticks.min(Self::REAPED - 1))))
    }

    pub(crate) fn unread() -> StartTicks {
        StartTicks(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(Self::UNREAD)))
    }

    /// The start time, read from `/proc/<pid>/stat` the first time (0 when it cannot be
    /// read); `None` once the child was reaped before anyone read it. Call only with
    /// this child's `pid`.
    pub fn get_or_read(&self, pid: u32) -> Option<u64> {
        use std::sync::atomic::Ordering;
        match self.0.load(Ordering::Acquire) {
            Self::UNREAD => {
                let t = proc_start_ticks(pid).unwrap_or(0).min(Self::REAPED - 1);
                // The reap is on another task: if it came first, the value read may be
                // another process's, and is not kept.
                match self.0.compare_exchange(Self::UNREAD, t, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => Some(t),
                    Err(now) => (now != Self::REAPED).then_some(now),
                }
            }
            Self::REAPED => None,
            t => Some(t),
        }
    }

    /// The value if it is known, without reading anything.
    pub fn if_known(&self) -> Option<u64> {
        Some(self.0.load(std::sync::atomic::Ordering::Acquire)).filter(|t| *t < Self::REAPED)
    }

    /// The child is about to be reaped: from now on its start time cannot be read.
    fn reaping(&self) {
        use std::sync::atomic::Ordering;
        let _ = self.0.compare_exchange(Self::UNREAD, Self::REAPED, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[derive(Debug)]
enum Waiter {
    Child(tokio::process::Child),
    /// A child born through [`crate::clone_into`]: woken by its pidfd, reaped by it;
    /// and whether it failed before its program ran.
    OwnPidfd(AsyncFd<OwnedFd>, crate::clone_into::StartFailure),
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
    spawn_in(action, env, expand, output, &Placement::default())
}

/// [`spawn`], as `place.account` (a clean environment: only the account's HOME, USER,
/// LOGNAME, SHELL, a default PATH, `HERO_ROOTDIR` and the action's env) and inside
/// `place.cgroup_procs`' cgroup.
pub fn spawn_in(
    action: &Action,
    env: &[(String, String)],
    expand: &Expand,
    output: &std::fs::File,
    place: &Placement,
) -> Result<Running, SpawnError> {
    // `~` is the home of the account the process runs as.
    let user_expand;
    let expand = match &place.account {
        Some(a) => {
            user_expand = Expand::new(a.home.clone(), expand.root().to_path_buf());
            &user_expand
        }
        None => expand,
    };
    let argv = command_line(action, expand)?;
    let cwd = match &action.cwd {
        Some(c) => expand.path(c),
        None => expand.root().to_path_buf(),
    };
    if !cwd.is_dir() {
        return Err(SpawnError::Cwd(cwd));
    }
    let io_err = |source| SpawnError::Spawn { program: argv[0].clone(), source };
    // Every process is started by `clone3` where the kernel allows it (born in its
    // cgroup, the PATH searched here, the child's stack reused: see `clone_into`).
    match spawn_cloned(place.cgroup.as_ref(), &argv, &cwd, env, expand, output, place) {
        Ok(Some(running)) => return Ok(running),
        // This kernel or sandbox refuses clone3: `Command` below (fork and join the cgroup).
        Ok(None) => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone().map_err(io_err)?))
        .stderr(Stdio::from(output.try_clone().map_err(io_err)?))
        // The daemon going away must not take its children with it.
        .kill_on_drop(false);
    if let Some(a) = &place.account {
        // Another account gets none of the daemon's environment.
        cmd.env_clear().envs(a.env(expand.root()));
    } else {
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
    }
    if let Some(m) = &place.marker {
        cmd.env(crate::contain::MARKER_ENV, m);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own process group, so a stop reaches everything it forks. (process_group keeps
    // the fast posix_spawn path that a pre_exec hook would lose.)
    cmd.as_std_mut().process_group(0);
    let procs = place.cgroup.as_ref().map(crate::contain::procs_of).transpose().map_err(SpawnError::Contain)?;
    let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let ids = place.account.as_ref().map(Account::ids);
    if procs_fd.is_some() || ids.is_some() {
        // SAFETY: the hook makes only async-signal-safe calls (write, setgroups, setgid,
        // setuid) on data prepared before the fork. It runs after std's setpgid, so the
        // child is in its own group; joining the cgroup comes before dropping root.
        unsafe {
            cmd.as_std_mut().pre_exec(move || {
                if let Some(fd) = procs_fd {
                    crate::contain::join_self(fd)?;
                }
                match &ids {
                    Some(ids) => become_account(ids),
                    None => Ok(()),
                }
            });
        }
    }
    // Held across the spawn, so the orphan reaper never takes this child's status.
    let mut own = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn().map_err(io_err)?;
    drop(procs);
    let pid = child.id().unwrap_or(0);
    own.push(pid);
    drop(own);
    // tokio reaps this child on its own: read now, while it surely is ours.
    let start_ticks = StartTicks::known(proc_start_ticks(pid).unwrap_or(0));
    Ok(Running { pid, start_ticks, waiter: Waiter::Child(child) })
}

/// Whether clone3 (into a cgroup or not) was refused once (then never tried again).
static CLONE_INTO_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this daemon fell back from clone3 into a cgroup (tests check it did not).
#[cfg(test)]
pub(crate) fn clone_into_refused() -> bool {
    CLONE_INTO_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// [`spawn_in`] by `clone3` (see [`crate::clone_into`]), born in `cgroup` when given:
/// the same argv, working directory, environment, process group, output and account as
/// the `Command` path. `Ok(None)` when clone3 is refused here.
fn spawn_cloned(
    cgroup: Option<&std::fs::File>,
    argv: &[String],
    cwd: &std::path::Path,
    env: &[(String, String)],
    expand: &Expand,
    output: &std::fs::File,
    place: &Placement,
) -> io::Result<Option<Running>> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    if CLONE_INTO_REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(None);
    }
    let nul = |e: std::ffi::NulError| io::Error::new(io::ErrorKind::InvalidInput, e);
    // What the child starts from: the account's clean environment, or the daemon's own
    // (taken once); then what is set for it, a later entry of a name winning: the root,
    // the unit marker, the action's variables.
    let account_env: Option<Vec<EnvEntry>> = match &place.account {
        Some(a) => Some(
            a.env(expand.root())
                .iter()
                .map(|(k, v)| env_entry(k.as_bytes(), v.as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(nul)?,
        ),
        None => None,
    };
    let base: &[EnvEntry] = account_env.as_deref().unwrap_or(inherited_env());
    let mut own: Vec<EnvEntry> = Vec::with_capacity(env.len() + 2);
    let mut set = |k: &[u8], v: &[u8]| -> io::Result<()> {
        let entry = env_entry(k, v).map_err(nul)?;
        own.retain(|(have, _)| have.as_slice() != k);
        own.push(entry);
        Ok(())
    };
    set(b"HERO_ROOTDIR", expand.root().as_os_str().as_bytes())?;
    if let Some(m) = &place.marker {
        set(crate::contain::MARKER_ENV.as_bytes(), m.as_bytes())?;
    }
    for (k, v) in env {
        set(k.as_bytes(), v.as_bytes())?;
    }
    let overridden = |k: &[u8]| own.iter().any(|(o, _)| o.as_slice() == k);
    let path_var = own
        .iter()
        .chain(base.iter().filter(|(k, _)| !overridden(k)))
        .find(|(k, _)| k.as_slice() == b"PATH")
        .map(|(_, c)| std::ffi::OsStr::from_bytes(&c.as_bytes()[b"PATH=".len()..]).to_owned());
    let program = resolve_program(&argv[0], path_var.as_deref(), cwd)?;
    // The child reads what it needs after this returns (see `clone_into`): it owns its
    // environment, or points into the daemon's, which lives as long as the daemon.
    let (env_inherited, mut env_own): (Vec<&'static std::ffi::CStr>, Vec<CString>) = match account_env {
        Some(account_env) => {
            (Vec::new(), account_env.into_iter().filter(|(k, _)| !overridden(k)).map(|(_, c)| c).collect())
        }
        None => {
            (inherited_env().iter().filter(|(k, _)| !overridden(k)).map(|(_, c)| c.as_c_str()).collect(), Vec::new())
        }
    };
    env_own.extend(own.into_iter().map(|(_, c)| c));
    let plan = crate::clone_into::ChildPlan {
        program: CString::new(program.into_os_string().into_vec()).map_err(nul)?,
        argv: argv.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<Vec<_>, _>>().map_err(nul)?,
        env_inherited,
        env_own,
        cwd: CString::new(cwd.as_os_str().as_bytes()).map_err(nul)?,
        stdin: dev_null()?,
        stdout: output.as_raw_fd(),
        stderr: output.as_raw_fd(),
        ids: place.account.as_ref().map(Account::ids),
    };
    // Held across the spawn, so the orphan reaper never takes this child's status.
    let mut own = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let (pid, pidfd, failure, start_ticks) = match crate::clone_into::spawn(cgroup, plan) {
        crate::clone_into::Outcome::Started { pid, pidfd, failure, start_ticks } => (pid, pidfd, failure, start_ticks),
        crate::clone_into::Outcome::Failed(e) => return Err(e),
        crate::clone_into::Outcome::Unsupported(e) => {
            CLONE_INTO_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("clone3 is refused here ({e}): children are forked and join their cgroup after fork");
            return Ok(None);
        }
    };
    own.push(pid);
    drop(own);
    // SAFETY: a valid pidfd, owned by the AsyncFd for its whole life.
    let afd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }?;
    // Known from the clock, or read when first needed (see StartTicks).
    let start_ticks = start_ticks.map_or_else(StartTicks::unread, StartTicks::known);
    Ok(Some(Running { pid, start_ticks, waiter: Waiter::OwnPidfd(afd, failure) }))
}

/// One variable of a child's environment: its name, and `NAME=VALUE` as `execve` takes it.
type EnvEntry = (Vec<u8>, std::ffi::CString);

/// `NAME` and `NAME=VALUE` for one variable of a child's environment.
fn env_entry(k: &[u8], v: &[u8]) -> Result<EnvEntry, std::ffi::NulError> {
    let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
    kv.extend_from_slice(k);
    kv.push(b'=');
    kv.extend_from_slice(v);
    Ok((k.to_vec(), std::ffi::CString::new(kv)?))
}

/// The daemon's own environment as an account-less child inherits it, without
/// `HERO_ROOTDIR` (set per child) and key material ([`WITHHELD_ENV`]); taken once: the
/// daemon settles its environment before it starts anything ([`scrub_daemon_env`]) and
/// never changes it after, and copying it for every spawn was a tenth of the supervisor's
/// time per job.
fn inherited_env() -> &'static [EnvEntry] {
    use std::os::unix::ffi::OsStrExt;
    static ENV: std::sync::OnceLock<Vec<EnvEntry>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        std::env::vars_os()
            .filter(|(k, _)| k != "HERO_ROOTDIR" && !WITHHELD_ENV.iter().any(|w| k == w))
            // A variable holding NUL cannot be passed on (nor can it exist in environ).
            .filter_map(|(k, v)| env_entry(k.as_bytes(), v.as_bytes()).ok())
            .collect()
    })
}

/// `/dev/null`, opened once (close-on-exec; each child gets it as its stdin by `dup2`).
fn dev_null() -> io::Result<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    static NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f.as_raw_fd());
    }
    let f = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| f).as_raw_fd())
}

/// Find `program` as `execvp` would, but in the parent (the child then makes one
/// `execve`): a name with a `/` is taken as it is (relative to `cwd`); otherwise the
/// first executable regular file of that name in `path` (default: the libc default).
fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>, cwd: &std::path::Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        let path = if program.starts_with('/') { PathBuf::from(program) } else { cwd.join(program) };
        // Checked here, as for a name found on the PATH: the child's `execve` would find
        // the same, but its failure is reported only when the child is reaped.
        if !runnable(&std::fs::metadata(&path)?) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        return Ok(path);
    }
    let path = path.unwrap_or(std::ffi::OsStr::new("/bin:/usr/bin"));
    found_on_path(program, path, || search_path(program, path, cwd))
}

/// How long a program found on a PATH is taken from [`FOUND`] without searching again.
const FOUND_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// At most this many names and PATHs are remembered (then all are forgotten).
const FOUND_MAX: usize = 256;

thread_local! {
    /// Where each program name was last found on each PATH, and when: the supervisor
    /// starts the same few programs again and again, and `true` on a PATH of ten folders
    /// is ten `stat`s. Only PATHs of absolute folders (a relative one depends on the
    /// working directory).
    static FOUND: std::cell::RefCell<std::collections::HashMap<Vec<u8>, (PathBuf, std::time::Instant)>> = Default::default();
}

/// `search()` for `program` on `path`, or what it found less than [`FOUND_FOR`] ago if
/// that is still a runnable file (one `stat`): a program removed is seen at once, one
/// installed earlier on the PATH within a second.
fn found_on_path(
    program: &str,
    path: &std::ffi::OsStr,
    search: impl FnOnce() -> io::Result<PathBuf>,
) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if !std::env::split_paths(path).all(|d| d.is_absolute()) {
        return search();
    }
    let mut key = Vec::with_capacity(program.len() + 1 + path.len());
    key.extend_from_slice(program.as_bytes());
    key.push(0);
    key.extend_from_slice(path.as_bytes());
    let now = std::time::Instant::now();
    let cached = FOUND.with_borrow(|f| f.get(&key).filter(|(_, at)| now.duration_since(*at) < FOUND_FOR).cloned());
    if let Some((found, _)) = cached
        && std::fs::metadata(&found).is_ok_and(|m| runnable(&m))
    {
        return Ok(found);
    }
    let found = search()?;
    FOUND.with_borrow_mut(|f| {
        if f.len() >= FOUND_MAX {
            f.clear();
        }
        f.insert(key, (found.clone(), now));
    });
    Ok(found)
}

/// The first executable regular file named `program` in a folder of `path`, as `execvp`
/// looks (an empty entry is the working directory).
fn search_path(program: &str, path: &std::ffi::OsStr, cwd: &std::path::Path) -> io::Result<PathBuf> {
    let mut denied = false;
    for dir in std::env::split_paths(path) {
        // An empty entry means the working directory, as for execvp.
        let dir = if dir.as_os_str().is_empty() { cwd.to_path_buf() } else { cwd.join(dir) };
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if runnable(&m) => return Ok(candidate),
            Ok(_) => denied = true,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

/// A regular file with an execute bit: what `execve` runs (for root, any one bit will do).
fn runnable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.is_file() && m.permissions().mode() & 0o111 != 0
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
    Some(Running { pid, start_ticks: StartTicks::known(start_ticks), waiter: Waiter::Pidfd(afd) })
}

impl Running {
    /// Wait for the process to end. Event-driven in both cases (SIGCHLD/pidfd), no polling.
    pub async fn wait(&mut self) -> io::Result<Exit> {
        let exit = match &mut self.waiter {
            Waiter::Child(child) => {
                use std::os::unix::process::ExitStatusExt;
                let status = child.wait().await;
                forget_child(self.pid);
                let status = status?;
                match (status.code(), status.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(s)) => Exit::Signal(s),
                    (None, None) => Exit::Unknown,
                }
            }
            Waiter::OwnPidfd(fd, failure) => loop {
                let mut guard = fd.readable().await?;
                // Not read by now: not needed (see StartTicks), and never after the reap.
                self.start_ticks.reaping();
                let status = crate::clone_into::wait_pidfd(fd.get_ref(), false);
                match status {
                    // Readable but nothing to reap: wait for the next wake-up.
                    Ok(None) => guard.clear_ready(),
                    Ok(Some(exit)) => {
                        forget_child(self.pid);
                        break failure.get().map_or(exit, Exit::NotStarted);
                    }
                    Err(e) => {
                        forget_child(self.pid);
                        return Err(e);
                    }
                }
            },
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
    use std::io::Read;
    // One read: the fields up to starttime fit in a few hundred bytes (the command name is
    // at most 16), and `read_to_string` would stat the file and read it in growing chunks
    // (eight system calls per spawn instead of three).
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?.read(&mut buf).ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
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

#[cfg(test)]
mod command_line_tests {
    use super::*;
    use hero_proc_spec::Interpreter;

    #[test]
    fn an_artifact_runs_from_the_roots_bin_whatever_the_home() {
        let e = Expand::new("/home/op", "/srv/hero");
        for script in ["~/hero/bin/agent@v1.2 --port 1", "$HERO_ROOTDIR/bin/agent@v1.2 --port 1"] {
            let argv = command_line(&crate::test_action("a", Interpreter::Exec, script), &e).unwrap();
            assert_eq!(argv, ["/srv/hero/bin/agent@v1.2", "--port", "1"], "{script}");
        }
        // A plain binary under ~/hero/bin is the home's, as written.
        let argv = command_line(&crate::test_action("a", Interpreter::Exec, "~/hero/bin/tool -x"), &e).unwrap();
        assert_eq!(argv, ["/home/op/hero/bin/tool", "-x"]);
    }
}

#[cfg(test)]
mod path_search_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &std::path::Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A program found on the PATH is remembered: a removed one is seen at once, one
    /// installed earlier on the PATH within a second; a PATH with a relative folder is
    /// searched every time.
    #[test]
    fn a_program_found_on_the_path_is_remembered_for_a_second_while_it_is_there() {
        let t = tempfile::tempdir().unwrap();
        let (early, late) = (t.path().join("early"), t.path().join("late"));
        std::fs::create_dir_all(&early).unwrap();
        std::fs::create_dir_all(&late).unwrap();
        let path = std::ffi::OsString::from(format!("{}:{}", early.display(), late.display()));
        let cwd = t.path();
        executable(&late.join("tool"));
        assert_eq!(resolve_program("tool", Some(&path), cwd).unwrap(), late.join("tool"));

        // Installed earlier on the PATH: the remembered one is still used, for now.
        executable(&early.join("tool"));
        assert_eq!(resolve_program("tool", Some(&path), cwd).unwrap(), late.join("tool"));
        // Removed: seen at once, and the search finds the other.
        std::fs::remove_file(late.join("tool")).unwrap();
        assert_eq!(resolve_program("tool", Some(&path), cwd).unwrap(), early.join("tool"));
        std::fs::remove_file(early.join("tool")).unwrap();
        let e = resolve_program("tool", Some(&path), cwd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);

        // After a second, a program installed earlier on the PATH is found.
        executable(&late.join("other"));
        assert_eq!(resolve_program("other", Some(&path), cwd).unwrap(), late.join("other"));
        executable(&early.join("other"));
        std::thread::sleep(FOUND_FOR + std::time::Duration::from_millis(50));
        assert_eq!(resolve_program("other", Some(&path), cwd).unwrap(), early.join("other"));

        // A relative folder depends on the working directory: never remembered.
        let relative = std::ffi::OsString::from(format!("late:{}", early.display()));
        executable(&late.join("third"));
        assert_eq!(resolve_program("third", Some(&relative), cwd).unwrap(), cwd.join("late/third"));
        std::fs::create_dir_all(cwd.join("sub/late")).unwrap();
        executable(&cwd.join("sub/late/third"));
        assert_eq!(resolve_program("third", Some(&relative), &cwd.join("sub")).unwrap(), cwd.join("sub/late/third"));
    }
}
