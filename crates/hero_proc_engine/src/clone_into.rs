//! Start a process directly inside a cgroup: `clone3(CLONE_INTO_CGROUP)`; and without
//! one (a job of a run), the same way, for the same reasons below.
//!
//! The portable way (fork, the child writes itself into `cgroup.procs`, exec) makes the
//! kernel take its cgroup-migration lock for writing, which waits for an RCU grace
//! period: measured here, the first write after a quiet spell took 28 ms, in a child the
//! daemon waits for. A process born in its cgroup is never migrated, so that wait is
//! gone. Kernels before 5.7, and sandboxes whose seccomp policy refuses `clone3`
//! (Docker's default), answer `ENOSYS`/`EINVAL`/`EPERM`: the caller then falls back to the
//! portable way ([`Outcome::Unsupported`]).
//!
//! As `posix_spawn` does, the child shares the daemon's memory (`CLONE_VM`) on a stack of
//! its own, and the calling thread is suspended until the child has exec'd or failed
//! (`CLONE_VFORK`): no copy of the address space (a fork of the daemon and the faults
//! after it cost about 0.5 ms per process here), and a program that cannot start is
//! reported at once, as with `std::process::Command`. Between the clone and `execve` the
//! child makes only raw system calls on data prepared before the clone: no allocation,
//! no lock, no glibc function that assumes its thread list is right (the account switch,
//! `process::become_account`, uses the raw `setgroups`/`setgid`/`setuid` system calls,
//! which act on the calling thread, the child's only one). The child's side of the clone needs a few instructions
//! of assembly (it starts on the new stack); they exist for x86_64 only, so elsewhere
//! this answers [`Outcome::Unsupported`] and the portable way runs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

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

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `waitid`'s idtype for a pidfd (Linux 5.4).
const P_PIDFD: libc::idtype_t = 3;
/// The child's stack: it runs `child` only (a few hundred bytes), then exec replaces it.
const STACK: usize = 64 * 1024;

/// Everything the child needs, prepared before the clone.
pub(crate) struct ChildPlan<'a> {
    /// An absolute or cwd-relative path: no PATH search happens in the child.
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [&'a CStr],
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
    /// This kernel, sandbox or architecture does not offer `clone3` into a cgroup.
    Unsupported(io::Error),
    /// The child could not start (the error is the child's), or the clone failed.
    Failed(io::Error),
}

/// Where in the child a step failed.
const STEPS: [&str; 6] =
    ["setpgid", "redirect stdio", "chdir to the working directory", "reset signals", "switch account", "exec"];
const STEP_EXEC: u64 = 5;

/// What the child reads (prepared by the parent) and writes (its failure, if any). Shared
/// memory: the parent reads `failure` once the clone returns (the child has exec'd or
/// exited by then).
struct Shared<'a> {
    plan: &'a ChildPlan<'a>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `(step + 1) << 32 | errno`, or 0 while nothing failed.
    failure: AtomicU64,
}

/// The child's stack, kept by each spawning thread between its spawns: a new mapping per
/// spawn cost an `mmap`, an `mprotect`, the child's page faults and an `munmap`, whose TLB
/// flush interrupts every CPU running one of the daemon's threads. Reusing it is safe
/// because the thread that lends it is suspended until the child is done with it
/// (`CLONE_VFORK`), and a thread spawns one child at a time.
struct ChildStack(*mut libc::c_void);

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: an anonymous private mapping, unmapped by Drop.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A guard page: an overflow faults instead of writing into the daemon's memory.
        // SAFETY: the lowest page of the mapping made above.
        unsafe { libc::mprotect(stack, 4096, libc::PROT_NONE) };
        Ok(ChildStack(stack))
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no child runs on it (see the type).
        unsafe { libc::munmap(self.0, STACK) };
    }
}

thread_local! {
    /// This thread's [`ChildStack`], taken out while a child runs on it.
    static CHILD_STACK: std::cell::Cell<Option<ChildStack>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Children this thread started by `clone3` (tests check which path a spawn took).
    pub(crate) static CLONED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Start `plan` as the leader of its own process group, born inside the cgroup whose
/// directory is `cgroup` (or in the daemon's own cgroup with `None`: a job of a run).
pub(crate) fn spawn(cgroup: Option<&std::fs::File>, plan: &ChildPlan<'_>) -> Outcome {
    if !cfg!(target_arch = "x86_64") {
        return Outcome::Unsupported(io::Error::new(
            io::ErrorKind::Unsupported,
            "clone3 into a cgroup is implemented for x86_64 only",
        ));
    }
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let shared = Shared { plan, argv, envp, failure: AtomicU64::new(0) };
    let stack = match CHILD_STACK.take().map_or_else(ChildStack::new, Ok) {
        Ok(stack) => stack,
        Err(e) => return Outcome::Failed(e),
    };
    let mut pidfd: RawFd = -1;
    let into_cgroup = if cgroup.is_some() { CLONE_INTO_CGROUP } else { 0 };
    let args = CloneArgs {
        flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD | into_cgroup,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.0 as u64,
        stack_size: STACK as u64,
        cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
        ..CloneArgs::default()
    };
    // No signal handler of the daemon may run in the child (it shares our memory): block
    // them all across the clone; the child resets dispositions, then unblocks.
    // SAFETY: sigfillset/pthread_sigmask on local sets.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: `args` describes a CLONE_VM|CLONE_VFORK child on `stack`, which runs
    // `child_entry(&shared)` only; this thread is suspended until it has exec'd or exited,
    // so `shared` and `stack` outlive its use of them.
    let r = unsafe { clone3_on_stack(&args, child_entry, &shared as *const Shared<'_> as *mut libc::c_void) };
    let clone_err = (r < 0).then(|| io::Error::from_raw_os_error(-r as i32));
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    // The child has exec'd or exited (CLONE_VFORK): its stack is free for the next one.
    CHILD_STACK.set(Some(stack));
    if let Some(e) = clone_err {
        return match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG) => Outcome::Unsupported(e),
            _ => Outcome::Failed(e),
        };
    }
    // SAFETY: CLONE_PIDFD stored a fresh descriptor for the child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = r as u32;
    let failure = shared.failure.load(Ordering::Acquire);
    if failure != 0 {
        let step = (failure >> 32) - 1;
        let e = io::Error::from_raw_os_error(failure as u32 as i32);
        let _ = wait_pidfd(&pidfd, true);
        return Outcome::Failed(if step == STEP_EXEC {
            e
        } else {
            io::Error::new(e.kind(), format!("{} failed: {e}", STEPS[step as usize]))
        });
    }
    #[cfg(test)]
    CLONED.set(CLONED.get() + 1);
    Outcome::Started { pid, pidfd }
}

/// `clone3(args)`; the child starts on `args.stack` and calls `child(arg)`, which never
/// returns. Returns the child's PID, or `-errno`.
///
/// # Safety
/// `args` must ask for a new stack (`stack`, `stack_size`, 16-byte aligned end), and
/// `child` must not return.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &CloneArgs,
    child: unsafe extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: the caller's contract. In the child the kernel has switched to the new
    // stack: clear the frame pointer, call `child(arg)` (r12, r13 survive the syscall),
    // and trap should it ever return.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_on_stack(_: &CloneArgs, _: unsafe extern "C" fn(*mut libc::c_void) -> !, _: *mut libc::c_void) -> i64 {
    -(libc::ENOSYS as i64)
}

/// The child between clone and exec: raw system calls only, on memory it shares with
/// the suspended parent thread (it writes only `failure`).
///
/// # Safety
/// Call only as the child of [`spawn`]'s clone, with its `Shared`.
unsafe extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the parent's `Shared`, alive until this child execs or exits.
    let shared = unsafe { &*(arg as *const Shared<'_>) };
    let plan = shared.plan;
    let fail = |step: u64| -> ! {
        // SAFETY: reads this thread's errno.
        let errno = unsafe { *libc::__errno_location() } as u32 as u64;
        shared.failure.store(((step + 1) << 32) | errno, Ordering::Release);
        // SAFETY: ends the child without running any of the daemon's exit code.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: plain system calls on memory prepared before the clone.
    unsafe {
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
        // The daemon's handlers (tokio's) must not run in the child: this copy of the
        // handler table is the child's own (no CLONE_SIGHAND). SIGPIPE is ignored by the
        // Rust runtime and an ignored signal survives exec: give the child the default.
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
        if let Some(ids) = plan.ids
            && crate::process::become_account(ids).is_err()
        {
            fail(4);
        }
        libc::execve(plan.program.as_ptr(), shared.argv.as_ptr(), shared.envp.as_ptr());
        fail(STEP_EXEC)
    }
}

/// Reap the child behind `pidfd`: how it ended. With `block` false, `None` while it
/// has not ended (a wake-up that was not its exit).
pub(crate) fn wait_pidfd(pidfd: &OwnedFd, block: bool) -> io::Result<Option<crate::process::Exit>> {
    let flags = if block { libc::WEXITED } else { libc::WEXITED | libc::WNOHANG };
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on the process behind the pidfd.
        let r = unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid succeeded; si_pid is 0 when WNOHANG found nothing to reap.
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        // SAFETY: a child was reaped: the status is set.
        let status = unsafe { info.si_status() };
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => crate::process::Exit::Code(status),
            _ => crate::process::Exit::Signal(status),
        }));
    }
}

#[cfg(test)]
mod tests {
    use hero_proc_spec::{Action, EnvValue, Interpreter};

    use crate::contain::{Containment, Mode};
    use crate::paths::Expand;
    use crate::process::{self, Exit, Placement, SpawnError};

    fn action(interpreter: Interpreter, script: &str) -> Action {
        let mut a = crate::test_action("probe", interpreter, script);
        a.env.insert("FROM_ACTION".to_owned(), EnvValue::Plain("spec".into()));
        a
    }

    /// What a child prints about itself: its signal state, cgroup, group and environment.
    const PROBE: &str = "grep -E '^(SigBlk|SigIgn)' /proc/self/status; cat /proc/self/cgroup; \
                         echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$; env";

    /// A child that printed [`PROBE`] started as `Command` would start it: nothing
    /// blocked, SIGPIPE not ignored, leading its own group, HERO_ROOTDIR and the action's
    /// variable set.
    fn assert_started_fresh(text: &str, pid: u32, root: &std::path::Path) {
        assert!(text.contains("SigBlk:\t0000000000000000"), "nothing blocked: {text}");
        let ignored = text.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).expect("SigIgn line");
        let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored: {text}");
        assert!(text.contains(&format!("pgid={pid} pid={pid}")), "leads its own process group: {text}");
        assert!(text.contains(&format!("HERO_ROOTDIR={}\n", root.display())), "HERO_ROOTDIR: {text}");
        assert!(text.contains("FROM_ACTION=spec\n"), "the action's env: {text}");
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
        let a = action(Interpreter::Sh, &format!("{PROBE}; exit 7"));
        let env = vec![("FROM_ACTION".to_owned(), "spec".to_owned())];
        let mut running = process::spawn_in(&a, &env, &expand, &out, &place(&unit)).expect("spawned");
        assert_eq!(running.wait().await.unwrap(), Exit::Code(7));
        assert!(
            !process::clone_into_refused(),
            "clone3 into the cgroup was refused on this kernel: the fallback ran instead"
        );
        let text = std::fs::read_to_string(&out_path).unwrap();
        assert_started_fresh(&text, running.pid, &root);
        assert!(
            text.lines().any(|l| l.starts_with("0::/") && l.ends_with("/core.probe")),
            "born in the unit's cgroup: {text}"
        );
        assert!(text.contains(&format!("HERO_PROC_UNIT={}\n", unit.marker)), "carries the marker: {text}");
        assert_eq!(text.matches("\nFROM_ACTION=").count() + usize::from(text.starts_with("FROM_ACTION=")), 1);

        let missing = action(Interpreter::Exec, "no-such-program-7f3a --flag");
        let e = process::spawn_in(&missing, &[], &expand, &out, &place(&unit)).expect_err("refused");
        assert!(
            matches!(&e, SpawnError::Spawn { program, source } if program == "no-such-program-7f3a"
                && source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        assert_eq!(e.to_string(), "cannot start `no-such-program-7f3a`: No such file or directory (os error 2)");

        // Found, but its exec fails in the child (an interpreter that does not exist):
        // the child's error reaches the caller, and the child is reaped.
        use std::os::unix::fs::PermissionsExt;
        let bad = dir.path().join("bad-interpreter");
        std::fs::write(&bad, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let broken = action(Interpreter::Exec, bad.to_str().unwrap());
        let e = process::spawn_in(&broken, &[], &expand, &out, &place(&unit)).expect_err("exec fails");
        assert_eq!(e.to_string(), format!("cannot start `{}`: No such file or directory (os error 2)", bad.display()));
        assert!(unit.pids().is_empty(), "the failed child is gone: {:?}", unit.pids());
        unit.kill_all(std::time::Duration::from_secs(5));
        unit.remove_if_empty();
        let _ = std::fs::remove_dir(base);
    }

    /// A job of a run (no cgroup) is started by `clone3` too, in the daemon's own cgroup,
    /// and starts as `Command` would start it; one thread's spawns reuse one child stack
    /// (three in a row, each child whole).
    #[tokio::test]
    async fn a_job_without_a_cgroup_is_cloned_like_a_service() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let expand = Expand::new(dir.path().to_path_buf(), root.clone());
        let place = Placement { account: None, cgroup: None, marker: None };
        let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        for i in 0..3 {
            let out_path = dir.path().join(format!("out{i}.log"));
            let out = std::fs::File::create(&out_path).unwrap();
            let a = action(Interpreter::Sh, &format!("{PROBE}; exit {i}"));
            let env = vec![("FROM_ACTION".to_owned(), "spec".to_owned())];
            let before = super::CLONED.get();
            let mut running = process::spawn_in(&a, &env, &expand, &out, &place).expect("spawned");
            assert_eq!(super::CLONED.get(), before + 1, "started by clone3, not by Command");
            assert_eq!(running.wait().await.unwrap(), Exit::Code(i));
            let text = std::fs::read_to_string(&out_path).unwrap();
            assert_started_fresh(&text, running.pid, &root);
            assert!(text.contains(own_cgroup.trim()), "in the daemon's own cgroup ({own_cgroup}): {text}");
            assert!(!text.contains("HERO_PROC_UNIT="), "no unit marker without a unit: {text}");
        }
    }
}
