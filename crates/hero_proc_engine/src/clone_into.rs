//! Start a process directly inside a cgroup: `clone3(CLONE_INTO_CGROUP)`.
//!
//! The portable way (fork, the child writes itself into `cgroup.procs`, exec) makes the
//! kernel take its cgroup-migration lock for writing, which waits for an RCU grace
//! period: measured here, the first write after a quiet spell took 28 ms, in a child the
//! daemon waits for. A process born in its cgroup is never migrated, so that wait is
//! gone. Kernels before 5.7, and sandboxes whose seccomp policy refuses `clone3`
//! (Docker's default), answer `ENOSYS`/`EINVAL`/`EPERM`: the caller then falls back to the
//! portable way ([`Outcome::Unsupported`]).
//!
//! Like `vfork`, the parent is suspended until the child has exec'd or failed, so a
//! program that cannot start is reported at once, as with `std::process::Command`. The
//! child is a copy of this multi-threaded process that has only the calling thread:
//! between the clone and `execve` it makes only raw system calls on data prepared before
//! the clone (no allocation, no lock, no glibc function that assumes its thread list is
//! right: the account switch uses the raw `setgroups`/`setgid`/`setuid` system calls,
//! which act on the calling thread, here the only one).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of `linux/sched.h` (version 2, with `cgroup`): the same layout on
/// every architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `waitid`'s idtype for a pidfd (Linux 5.4).
const P_PIDFD: libc::idtype_t = 3;

/// Everything the child needs, prepared before the clone.
pub(crate) struct ChildPlan<'a> {
    /// An absolute or cwd-relative path: no PATH search happens in the child.
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub cwd: &'a CStr,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// (uid, gid, supplementary groups) to become before exec.
    pub ids: Option<&'a (u32, u32, Vec<u32>)>,
}

pub(crate) enum Outcome {
    /// Running: its PID and a pidfd for it (the caller reaps it with [`wait_pidfd`]).
    Started { pid: u32, pidfd: OwnedFd },
    /// This kernel or sandbox does not offer `clone3` into a cgroup.
    Unsupported(io::Error),
    /// The child could not start (the error is the child's), or the clone failed.
    Failed(io::Error),
}

/// Where in the child a step failed (written with errno on the error pipe).
const STEPS: [&str; 7] =
    ["setpgid", "redirect stdio", "chdir to the working directory", "reset signals", "switch account", "exec", "?"];

/// Start `plan` as the leader of its own process group, born inside the cgroup whose
/// directory is `cgroup`.
pub(crate) fn spawn(cgroup: &std::fs::File, plan: &ChildPlan<'_>) -> Outcome {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Outcome::Failed(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    let (err_read, err_write) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // No signal handler may run in the child before exec: block them all across the
    // clone (the child resets dispositions, then unblocks).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset/pthread_sigmask on local sets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: clone3 with a fork-like copy (no CLONE_VM, no new stack): the child returns
    // here on its own copy of this stack and runs `child` only.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r == 0 {
        // SAFETY: in the child; see `child`.
        unsafe { child(plan, &argv, &envp, err_write.as_raw_fd()) }
    }
    let clone_err = (r < 0).then(io::Error::last_os_error);
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(err_write);
    if let Some(e) = clone_err {
        return match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG) => Outcome::Unsupported(e),
            _ => Outcome::Failed(e),
        };
    }
    // SAFETY: CLONE_PIDFD stored a fresh descriptor for the child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = r as u32;
    // The child has exec'd (EOF) or written (step, errno) and exited: vfork semantics.
    let mut report = [0u8; 8];
    // SAFETY: reads at most 8 bytes into the buffer.
    let n = unsafe { libc::read(err_read.as_raw_fd(), report.as_mut_ptr().cast(), report.len()) };
    if n == 8 {
        let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes")) as usize;
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        let _ = wait_pidfd(&pidfd);
        let e = io::Error::from_raw_os_error(errno);
        return Outcome::Failed(if step == 5 {
            e
        } else {
            io::Error::new(e.kind(), format!("{} failed: {e}", STEPS[step.min(STEPS.len() - 1)]))
        });
    }
    Outcome::Started { pid, pidfd }
}

/// The child between clone and exec: raw system calls only.
///
/// # Safety
/// Call only in the child of [`spawn`]'s clone, with the pointers built there.
unsafe fn child(
    plan: &ChildPlan<'_>,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    err: RawFd,
) -> ! {
    // SAFETY: plain system calls on memory prepared before the clone.
    unsafe {
        let fail = |step: u32| -> ! {
            let errno = *libc::__errno_location();
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&step.to_ne_bytes());
            buf[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(err, buf.as_ptr().cast(), buf.len());
            libc::_exit(127)
        };
        if libc::setpgid(0, 0) != 0 {
            fail(0);
        }
        for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(1);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail(2);
        }
        // Handlers of the daemon (tokio's) would run daemon code in the child; exec resets
        // them anyway, this covers the moment before. SIGPIPE is ignored by the Rust
        // runtime and an ignored signal survives exec: give the child the default.
        // (Other ignored signals stay ignored, as with std's spawn.)
        for sig in 1..32 {
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut cur) != 0 {
                continue;
            }
            let handled = cur.sa_sigaction != libc::SIG_IGN && cur.sa_sigaction != libc::SIG_DFL;
            if handled || (sig == libc::SIGPIPE && cur.sa_sigaction == libc::SIG_IGN) {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &dfl, std::ptr::null_mut()) != 0 {
                    fail(3);
                }
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(3);
        }
        if let Some((uid, gid, groups)) = plan.ids
            && (libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, *gid) != 0
                || libc::syscall(libc::SYS_setuid, *uid) != 0)
        {
            fail(4);
        }
        libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(5)
    }
}

/// Reap the child behind `pidfd` (it must have exited, or this blocks): how it ended,
/// as `(code, signal)`.
pub(crate) fn wait_pidfd(pidfd: &OwnedFd) -> io::Result<(Option<i32>, Option<i32>)> {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid fills `info` for the process behind the pidfd.
        let r = unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: waitid succeeded with WEXITED: the status is set.
    let status = unsafe { info.si_status() };
    Ok(match info.si_code {
        libc::CLD_EXITED => (Some(status), None),
        _ => (None, Some(status)),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hero_proc_spec::{Action, EnvValue, Interpreter};

    use crate::contain::{Containment, Mode};
    use crate::paths::Expand;
    use crate::process::{self, Exit, Placement, SpawnError};

    fn action(interpreter: Interpreter, script: &str) -> Action {
        let mut env = BTreeMap::new();
        env.insert("FROM_ACTION".to_owned(), EnvValue::Plain("spec".into()));
        Action {
            name: "probe".into(),
            context: "core".into(),
            description: None,
            interpreter,
            script: script.into(),
            env,
            cwd: None,
            process: false,
            restart: Default::default(),
            stop: Default::default(),
            timeout: None,
            health: vec![],
            depends_on: vec![],
            schedule: None,
            tags: vec![],
            user: None,
            group: None,
            pos: Default::default(),
        }
    }

    /// A process born in its cgroup starts as `Command` would start it: in its own
    /// group, in the cgroup, with the signal state of a fresh process (nothing blocked,
    /// SIGPIPE not ignored although the Rust runtime ignores it here), the daemon's
    /// environment plus the marker and the action's, its exit status reported; and a
    /// program that does not exist is refused at once, by name.
    #[tokio::test]
    async fn a_process_born_in_its_cgroup_starts_like_any_other() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("HERO_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
                return;
            }
            panic!("this test creates cgroups: run it as root, or set HERO_TEST_ALLOW_SKIP=1 to skip");
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let expand = Expand::new(dir.path().to_path_buf(), root.clone());
        let c = Containment::detect(&root);
        let Mode::Cgroup(base) = c.mode.clone() else {
            panic!("no writable cgroup v2 here ({:?}): the daemon would fall back to the subreaper", c.fallback_reason)
        };
        let unit = c.unit("core", "probe");
        let place = |unit: &crate::contain::Unit| Placement {
            account: None,
            cgroup: unit.prepare().unwrap(),
            marker: Some(unit.marker.clone()),
        };
        let out_path = dir.path().join("out.log");
        let out = std::fs::File::create(&out_path).unwrap();
        let script = "grep -E '^(SigBlk|SigIgn)' /proc/self/status; cat /proc/self/cgroup; \
                      echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$; env; exit 7";
        let a = action(Interpreter::Sh, script);
        let env = vec![("FROM_ACTION".to_owned(), "spec".to_owned())];
        let mut running = process::spawn_in(&a, &env, &expand, &out, &place(&unit)).expect("spawned");
        assert_eq!(running.wait().await.unwrap(), Exit::Code(7));
        assert!(
            !process::clone_into_refused(),
            "clone3 into the cgroup was refused on this kernel: the fallback ran instead"
        );
        let text = std::fs::read_to_string(&out_path).unwrap();
        assert!(text.contains("SigBlk:\t0000000000000000"), "nothing blocked: {text}");
        let ignored = text.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).expect("SigIgn line");
        let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored: {text}");
        assert!(
            text.lines().any(|l| l.starts_with("0::/") && l.ends_with("/core.probe")),
            "born in the unit's cgroup: {text}"
        );
        let pid = running.pid;
        assert!(text.contains(&format!("pgid={pid} pid={pid}")), "leads its own process group: {text}");
        assert!(text.contains(&format!("HERO_PROC_UNIT={}\n", unit.marker)), "carries the marker: {text}");
        assert!(text.contains(&format!("HERO_ROOTDIR={}\n", root.display())), "HERO_ROOTDIR: {text}");
        assert!(text.contains("FROM_ACTION=spec\n"), "the action's env: {text}");
        assert_eq!(text.matches("\nFROM_ACTION=").count() + usize::from(text.starts_with("FROM_ACTION=")), 1);

        let missing = action(Interpreter::Exec, "no-such-program-7f3a --flag");
        let e = process::spawn_in(&missing, &[], &expand, &out, &place(&unit)).expect_err("refused");
        assert!(
            matches!(&e, SpawnError::Spawn { program, source } if program == "no-such-program-7f3a"
                && source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        assert_eq!(e.to_string(), "cannot start `no-such-program-7f3a`: No such file or directory (os error 2)");
        unit.kill_all(std::time::Duration::from_secs(5));
        unit.remove_if_empty();
        let _ = std::fs::remove_dir(base);
    }
}
