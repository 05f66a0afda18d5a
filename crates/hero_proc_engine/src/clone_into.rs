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
//! its own: no copy of the address space (a fork of the daemon and the faults after it
//! cost about 0.5 ms per process here). Unlike `posix_spawn`, the calling thread does not
//! wait for the child's `execve` (no `CLONE_VFORK`): on a busy machine the child first
//! waits for a CPU, and the supervisor waited with it (a mean of 0.2-0.36 ms per job, a
//! quarter of its time in one `run.submit` per job). So what the child reads (its stack,
//! program, arguments, environment) lives in a [`Slot`] the child owns until it has left
//! the daemon's memory, which the kernel reports by clearing the slot's `tid` word
//! (`CLONE_CHILD_CLEARTID`: done at the child's `execve` and at its exit). The file
//! descriptors need no such care: the child has its own copy of the table from the clone.
//!
//! Between the clone and `execve` the child makes only raw system calls (inline `syscall`
//! instructions: not even `errno` is written, since the child runs with the parent
//! thread's TLS while that thread goes on), on data prepared before the clone, and writes
//! only its own failure. A step that fails there (the `execve` of a script whose
//! interpreter is missing, an account switch) ends the child with status 127 and the
//! failure in the [`StartFailure`] of [`Outcome::Started`]; the caller reports it when it reaps the child, as
//! systemd reports an `execve` failure as the unit's exit (`203/EXEC`). What the parent
//! can see before the clone (a program that does not exist or is not executable, a
//! working directory that is missing) is still refused at once. The child's side of the
//! clone needs a few instructions of assembly (it starts on the new stack); they exist for
//! x86_64 only, so elsewhere this answers [`Outcome::Unsupported`] and the portable way
//! runs.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `waitid`'s idtype for a pidfd (Linux 5.4).
const P_PIDFD: libc::idtype_t = 3;
/// The child's stack: it runs `child_entry` only (well under a page), then exec replaces
/// it. A guard page below it.
const STACK: usize = 16 * 1024;
/// Free slots kept by [`release_started`]; a burst of starts makes more, and they are
/// unmapped once the burst is over (not at each spawn, which would map and unmap stacks
/// while children of a long run start).
const SPARE_SLOTS: usize = 4;
/// Children allowed between clone and exec at once; a spawn beyond waits for the oldest.
const MAX_IN_FLIGHT: usize = 256;

/// Everything the child needs, owned: it reads this after [`spawn`] returned, until it has
/// exec'd. (The file descriptors are numbers in the child's own copy of the table.)
pub(crate) struct ChildPlan {
    /// An absolute or cwd-relative path: no PATH search happens in the child.
    pub program: CString,
    pub argv: Vec<CString>,
    /// `NAME=VALUE` entries of the daemon's environment the child inherits (taken once).
    pub env_inherited: Vec<&'static CStr>,
    /// `NAME=VALUE` entries made for this child (after the inherited ones).
    pub env_own: Vec<CString>,
    pub cwd: CString,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// (uid, gid, supplementary groups) to become before exec.
    pub ids: Option<(u32, u32, Vec<u32>)>,
}

pub(crate) enum Outcome {
    /// Running (or still on its way to `execve`): reap it with [`wait_pidfd`], then ask
    /// [`StartFailure::get`] whether it failed before its program ran.
    /// `start_ticks`: its start time as `/proc/<pid>/stat` shows it, when the clock
    /// told it without reading that file (see [`start_ticks_between`]).
    Started { pid: u32, pidfd: OwnedFd, failure: StartFailure, start_ticks: Option<u64> },
    /// This kernel, sandbox or architecture does not offer `clone3` into a cgroup.
    Unsupported(io::Error),
    /// The clone failed.
    Failed(io::Error),
}

/// Where in the child a step failed.
const STEPS: [&str; 6] =
    ["setpgid", "redirect stdio", "chdir to the working directory", "reset signals", "switch account", "exec"];
const STEP_EXEC: u64 = 5;

/// What a child that ended before its program ran wrote: `(step + 1) << 32 | errno`, or 0.
/// Read it once the child is reaped (it wrote before it exited).
#[derive(Clone, Debug, Default)]
pub(crate) struct StartFailure(Arc<AtomicU64>);

impl StartFailure {
    /// Why the child never ran its program, if it did not.
    pub(crate) fn get(&self) -> Option<NotStarted> {
        let v = self.0.load(Ordering::Acquire);
        (v != 0).then(|| NotStarted { step: ((v >> 32) - 1).min(STEP_EXEC) as u8, errno: v as u32 as i32 })
    }
}

/// A child that ended before its program ran: the step that failed and its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotStarted {
    step: u8,
    errno: i32,
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = io::Error::from_raw_os_error(self.errno);
        write!(f, "{} failed: {e}", STEPS[usize::from(self.step)])?;
        if u64::from(self.step) == STEP_EXEC && self.errno == libc::ENOENT {
            // The parent found the program before the clone: what is missing is what the
            // kernel loads to run it.
            f.write_str(" (the program exists: its `#!` interpreter or ELF loader does not)")?;
        }
        Ok(())
    }
}

/// What the child reads: pointers into its [`Slot`]'s owned data (heap buffers, which
/// do not move while the slot holds them).
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    /// uid, gid, and the supplementary groups (pointer, count).
    ids: Option<(u32, u32, *const u32, usize)>,
    failure: *const AtomicU64,
}

/// A child's stack and everything it reads, kept until the kernel clears `tid`.
struct Slot {
    /// 1 while a child may still run on this slot; the kernel writes 0 (and wakes a
    /// futex waiter) when the child leaves the daemon's memory: at its exec or exit.
    tid: AtomicU32,
    stack: ChildStack,
    plan: Option<ChildPlan>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    failure: StartFailure,
    args: ChildArgs,
}

impl Slot {
    fn new() -> io::Result<Box<Slot>> {
        Ok(Box::new(Slot {
            tid: AtomicU32::new(0),
            stack: ChildStack::new()?,
            plan: None,
            argv: Vec::new(),
            envp: Vec::new(),
            failure: StartFailure::default(),
            args: ChildArgs {
                program: std::ptr::null(),
                argv: std::ptr::null(),
                envp: std::ptr::null(),
                cwd: std::ptr::null(),
                stdio: [-1; 3],
                ids: None,
                failure: std::ptr::null(),
            },
        }))
    }

    fn free(&self) -> bool {
        self.tid.load(Ordering::Acquire) == 0
    }

    /// Take `plan` for the next child (the slot is free: no child reads it).
    fn load(&mut self, plan: ChildPlan) -> StartFailure {
        self.argv.clear();
        self.argv.extend(plan.argv.iter().map(|a| a.as_ptr()));
        self.argv.push(std::ptr::null());
        self.envp.clear();
        self.envp.extend(plan.env_inherited.iter().map(|e| e.as_ptr()));
        self.envp.extend(plan.env_own.iter().map(|e| e.as_ptr()));
        self.envp.push(std::ptr::null());
        self.failure = StartFailure::default();
        self.args = ChildArgs {
            program: plan.program.as_ptr(),
            argv: self.argv.as_ptr(),
            envp: self.envp.as_ptr(),
            cwd: plan.cwd.as_ptr(),
            stdio: [plan.stdin, plan.stdout, plan.stderr],
            ids: plan.ids.as_ref().map(|(u, g, groups)| (*u, *g, groups.as_ptr(), groups.len())),
            failure: Arc::as_ptr(&self.failure.0),
        };
        self.plan = Some(plan);
        self.failure.clone()
    }

    /// Wait until the child on this slot has left the daemon's memory.
    fn wait_free(&self) {
        while !self.free() {
            let timeout = libc::timespec { tv_sec: 1, tv_nsec: 0 };
            // SAFETY: a futex wait on our own word, while it still holds 1.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.tid.as_ptr(),
                    libc::FUTEX_WAIT,
                    1u32,
                    &timeout as *const libc::timespec,
                );
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.free() {
            // A child may still read it (its thread is ending): leave the stack mapped and
            // the data allocated. Never happens on the supervisor's thread, which lives as
            // long as the daemon.
            std::mem::forget(std::mem::replace(&mut self.stack, ChildStack(std::ptr::null_mut())));
            std::mem::forget(self.plan.take());
            std::mem::forget(std::mem::take(&mut self.argv));
            std::mem::forget(std::mem::take(&mut self.envp));
            std::mem::forget(self.failure.clone());
        }
    }
}

/// A child's stack: a new mapping per spawn cost an `mmap`, an `mprotect`, the child's
/// page faults and an `munmap`, whose TLB flush interrupts every CPU running one of the
/// daemon's threads; so stacks are kept in [`Slot`]s and reused once their child is gone.
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
        if !self.0.is_null() {
            // SAFETY: the mapping made in `new`; no child runs on it (see `Slot`).
            unsafe { libc::munmap(self.0, STACK) };
        }
    }
}

/// A thread's slots: free ones (at most [`SPARE_SLOTS`] kept) and those whose child has
/// not exec'd yet. Boxed, so a slot stays where its child and the kernel look for it while
/// the vector moves its elements.
#[allow(clippy::vec_box)]
type Slots = Vec<Box<Slot>>;

thread_local! {
    /// This thread's [`Slots`].
    static SLOTS: RefCell<Slots> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Children this thread started by `clone3` (tests check which path a spawn took).
    pub(crate) static CLONED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A free slot of this thread (made when none is): the last one of `slots` on return.
fn free_slot(slots: &mut Slots) -> io::Result<()> {
    if let Some(i) = slots.iter().rposition(|s| s.free()) {
        let slot = slots.swap_remove(i);
        slots.push(slot);
        return Ok(());
    }
    if slots.len() >= MAX_IN_FLIGHT {
        // Hundreds of children between clone and exec: wait for the oldest.
        let oldest = slots.remove(0);
        oldest.wait_free();
        slots.push(oldest);
        return Ok(());
    }
    slots.push(Slot::new()?);
    Ok(())
}

/// Unmap the stacks of free slots beyond [`SPARE_SLOTS`] (after a burst of starts), and
/// drop what the free ones held.
fn trim(slots: &mut Slots) {
    let mut spare = 0;
    slots.retain_mut(|s| {
        if !s.free() {
            return true;
        }
        s.plan = None;
        spare += 1;
        spare <= SPARE_SLOTS
    });
}

/// Release what children that have exec'd (or exited) no longer need (see [`trim`]).
/// Returns whether this thread has children that have not exec'd yet (call again later).
pub(crate) fn release_started() -> bool {
    SLOTS.with(|s| match s.try_borrow_mut() {
        Ok(mut slots) => {
            trim(&mut slots);
            slots.iter().any(|s| !s.free())
        }
        Err(_) => false,
    })
}

/// Start `plan` as the leader of its own process group, born inside the cgroup whose
/// directory is `cgroup` (or in the daemon's own cgroup with `None`: a job of a run).
/// Returns as soon as the child exists (see the module comment).
pub(crate) fn spawn(cgroup: Option<&std::fs::File>, plan: ChildPlan) -> Outcome {
    if !cfg!(target_arch = "x86_64") {
        return Outcome::Unsupported(io::Error::new(
            io::ErrorKind::Unsupported,
            "clone3 into a cgroup is implemented for x86_64 only",
        ));
    }
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        if let Err(e) = free_slot(&mut slots) {
            return Outcome::Failed(e);
        }
        let slot = slots.last_mut().expect("free_slot leaves a free slot last");
        let failure = slot.load(plan);
        let mut pidfd: RawFd = -1;
        let into_cgroup = if cgroup.is_some() { CLONE_INTO_CGROUP } else { 0 };
        slot.tid.store(1, Ordering::Release);
        let args = CloneArgs {
            flags: CLONE_VM | CLONE_PIDFD | CLONE_CHILD_CLEARTID | into_cgroup,
            pidfd: &mut pidfd as *mut RawFd as u64,
            child_tid: slot.tid.as_ptr() as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: slot.stack.0 as u64,
            stack_size: STACK as u64,
            cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
            ..CloneArgs::default()
        };
        // No signal handler of the daemon may run in the child (it shares our memory):
        // block them all across the clone; the child resets dispositions, then unblocks.
        // SAFETY: sigfillset/pthread_sigmask on local sets.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            old
        };
        // SAFETY: `args` describes a CLONE_VM child on the slot's stack, which runs
        // `child_entry(&slot.args)` only; the slot (boxed: it does not move) is neither
        // changed nor freed until the kernel has cleared its `tid`, i.e. until the child
        // no longer uses the daemon's memory.
        let before = boot_clock_ns();
        let r = unsafe { clone3_on_stack(&args, child_entry, &slot.args as *const ChildArgs as *mut libc::c_void) };
        let after = boot_clock_ns();
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if r < 0 {
            // No child: the slot is free again.
            slot.tid.store(0, Ordering::Release);
            let e = io::Error::from_raw_os_error(-r as i32);
            return match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG) => Outcome::Unsupported(e),
                _ => Outcome::Failed(e),
            };
        }
        // SAFETY: CLONE_PIDFD stored a fresh descriptor for the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // Its group exists when this returns, as the child may not have made it yet: a
        // stop sent to the group at once must reach the child (it keeps the signal
        // pending until its handlers are reset). Fails harmlessly (EACCES) once it exec'd.
        // SAFETY: setpgid on our own child.
        unsafe { libc::setpgid(r as libc::pid_t, r as libc::pid_t) };
        #[cfg(test)]
        CLONED.set(CLONED.get() + 1);
        Outcome::Started { pid: r as u32, pidfd, failure, start_ticks: start_ticks_between(before, after) }
    })
}

/// `CLOCK_BOOTTIME` in nanoseconds (a vDSO read, no system call), or 0 if it fails.
fn boot_clock_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// The start time `/proc/<pid>/stat` shows (field 22) for a child cloned between the
/// boot-clock readings `before` and `after`: the kernel stamps the child with the boot
/// clock inside `clone3` and shows it in whole clock ticks (`USER_HZ`), so when both
/// readings fall in one tick, that tick is the child's. Otherwise (a tick boundary inside
/// the call: about one clone in a few hundred) `None`, and the file is read when needed.
/// Reading it right away would wait for the child's `execve`.
pub(crate) fn start_ticks_between(before: u64, after: u64) -> Option<u64> {
    static NS_PER_TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let per_tick = (*NS_PER_TICK.get_or_init(|| {
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // The kernel divides exactly only when a tick is a whole number of nanoseconds.
        u64::try_from(hz).ok().filter(|&hz| hz > 0 && 1_000_000_000 % hz == 0).map(|hz| 1_000_000_000 / hz)
    }))?;
    (before != 0 && before / per_tick == after / per_tick).then_some(before / per_tick)
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

/// A system call without libc: returns the result or `-errno`, and writes no `errno`
/// (the child runs with its parent thread's TLS, and that thread goes on).
///
/// # Safety
/// As the system call `n` with these arguments.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sys(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract; the kernel clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The kernel's `struct sigaction` on x86_64 (not libc's).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The child between clone and exec: raw system calls only, on memory it shares with
/// the parent (it writes only its failure).
///
/// # Safety
/// Call only as the child of [`spawn`]'s clone, with its slot's `ChildArgs`.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the slot's `ChildArgs`, kept until this child execs or exits.
    let c = unsafe { &*(arg as *const ChildArgs) };
    let fail = |step: u64, ret: isize| -> ! {
        let errno = (-ret) as u32 as u64;
        // SAFETY: the slot's failure word, alive while the slot is in use.
        unsafe { (*c.failure).store(((step + 1) << 32) | errno, Ordering::Release) };
        loop {
            // SAFETY: ends the child without running any of the daemon's exit code.
            unsafe { sys(libc::SYS_exit_group, 127, 0, 0, 0) };
        }
    };
    // SAFETY: plain system calls on memory prepared before the clone.
    unsafe {
        let r = sys(libc::SYS_setpgid, 0, 0, 0, 0);
        if r < 0 {
            fail(0, r);
        }
        for (to, from) in c.stdio.iter().enumerate() {
            let r = sys(libc::SYS_dup2, *from as usize, to, 0, 0);
            if r < 0 {
                fail(1, r);
            }
        }
        let r = sys(libc::SYS_chdir, c.cwd as usize, 0, 0, 0);
        if r < 0 {
            fail(2, r);
        }
        // The daemon's handlers (tokio's) must not run in the child: this copy of the
        // handler table is the child's own (no CLONE_SIGHAND). SIGPIPE is ignored by the
        // Rust runtime and an ignored signal survives exec: give the child the default.
        // (Other ignored signals stay ignored, as with std's spawn.)
        const SIGSET: usize = 8;
        for sig in 1..32usize {
            let mut cur = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            if sys(libc::SYS_rt_sigaction, sig, 0, &mut cur as *mut KernelSigaction as usize, SIGSET) != 0 {
                continue;
            }
            let handled = cur.handler != libc::SIG_IGN && cur.handler != libc::SIG_DFL;
            if handled || (sig == libc::SIGPIPE as usize && cur.handler == libc::SIG_IGN) {
                let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
                let r = sys(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction as usize, 0, SIGSET);
                if r != 0 {
                    fail(3, r);
                }
            }
        }
        let empty: u64 = 0;
        let r = sys(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK as usize, &empty as *const u64 as usize, 0, SIGSET);
        if r != 0 {
            fail(3, r);
        }
        if let Some((uid, gid, groups, n)) = c.ids {
            for (call, a, b) in [
                (libc::SYS_setgroups, n, groups as usize),
                (libc::SYS_setgid, gid as usize, 0),
                (libc::SYS_setuid, uid as usize, 0),
            ] {
                let r = sys(call, a, b, 0, 0);
                if r != 0 {
                    fail(4, r);
                }
            }
        }
        let r = sys(libc::SYS_execve, c.program as usize, c.argv as usize, c.envp as usize, 0);
        fail(STEP_EXEC, r)
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe extern "C" fn child_entry(_: *mut libc::c_void) -> ! {
    // Never called: `spawn` answers Unsupported before any clone on this architecture.
    std::process::abort()
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
        // The parent does not wait for the child's exec: the failure comes with its exit.
        let broken = action(Interpreter::Exec, bad.to_str().unwrap());
        let mut running = process::spawn_in(&broken, &[], &expand, &out, &place(&unit)).expect("cloned");
        let exit = running.wait().await.unwrap();
        assert!(matches!(exit, Exit::NotStarted(_)), "{exit:?}");
        assert_eq!(
            exit.to_string(),
            "cannot start: exec failed: No such file or directory (os error 2) \
             (the program exists: its `#!` interpreter or ELF loader does not)"
        );
        assert!(unit.pids().is_empty(), "the failed child is gone: {:?}", unit.pids());
        unit.kill_all(std::time::Duration::from_secs(5));
        unit.remove_if_empty();
        let _ = std::fs::remove_dir(base);
    }

    /// A job of a run (no cgroup) is started by `clone3` too, in the daemon's own cgroup,
    /// and starts as `Command` would start it (three in a row, each child whole).
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

    /// A scratch folder with a root in it, its expansion, and a placement with no account
    /// and no cgroup (a job of a run).
    fn scratch() -> (tempfile::TempDir, Expand, Placement) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let expand = Expand::new(dir.path().to_path_buf(), root);
        (dir, expand, Placement { account: None, cgroup: None, marker: None })
    }

    /// Children started one after the other without waiting for their exec each run
    /// their own program, arguments and environment: a slot is reused only once its
    /// child has left the daemon's memory. Then the burst's slots are given back but
    /// for [`super::SPARE_SLOTS`]; and a program the parent can see is not executable
    /// is refused at once.
    #[tokio::test]
    async fn a_burst_of_children_each_runs_what_it_was_given() {
        const N: usize = 150;
        let (dir, expand, place) = scratch();
        let mut children = Vec::new();
        let mut most_slots = 0;
        for i in 0..N {
            let out_path = dir.path().join(format!("out{i}.log"));
            let out = std::fs::File::create(&out_path).unwrap();
            // The argument and the variable differ per child: a child reading another's
            // slot would print a mismatch.
            let a = action(Interpreter::Exec, &format!("/bin/sh -c 'echo \"$0 $ID\"' {i}"));
            let env = vec![("ID".to_owned(), i.to_string())];
            children.push((i, out_path, process::spawn_in(&a, &env, &expand, &out, &place).expect("spawned")));
            most_slots = most_slots.max(super::SLOTS.with(|s| s.borrow().len()));
        }
        for (i, path, mut running) in children {
            assert_eq!(running.wait().await.unwrap(), Exit::Code(0), "child {i}");
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text, format!("{i} {i}\n"), "child {i} ran what it was given");
        }
        assert!(most_slots <= N, "{most_slots} slots");
        super::release_started();
        let left = super::SLOTS.with(|s| s.borrow().len());
        assert!(left <= super::SPARE_SLOTS, "{left} slots kept after the burst");

        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\ntrue\n").unwrap();
        let out = std::fs::File::create(dir.path().join("refused.log")).unwrap();
        let e = process::spawn_in(&action(Interpreter::Exec, plain.to_str().unwrap()), &[], &expand, &out, &place)
            .expect_err("refused before any clone");
        assert_eq!(e.to_string(), format!("cannot start `{}`: Permission denied (os error 13)", plain.display()));
    }

    /// A child's start time (what re-attach tells it from a later process with its PID
    /// by) comes from the boot clock read around the clone, and is the one `/proc` shows;
    /// it is unknown only when a clock tick fell inside the clone.
    #[tokio::test]
    async fn a_childs_start_time_from_the_clock_is_the_one_proc_shows() {
        const N: usize = 60;
        let (dir, expand, place) = scratch();
        let out = std::fs::File::create(dir.path().join("out.log")).unwrap();
        let children: Vec<_> = (0..N)
            .map(|_| process::spawn_in(&action(Interpreter::Exec, "sleep 30"), &[], &expand, &out, &place).unwrap())
            .collect();
        let mut known = 0;
        for c in &children {
            // Alive: /proc shows this child's own start time.
            let shown = process::proc_start_ticks(c.pid).expect("alive");
            if let Some(t) = c.start_ticks.if_known() {
                assert_eq!(t, shown, "pid {}", c.pid);
                known += 1;
            }
        }
        assert!(known * 10 >= N * 9, "only {known} of {N} start times came from the clock");
        for mut c in children {
            process::signal_group(c.pid, libc::SIGKILL).unwrap();
            c.wait().await.unwrap();
        }
        // The rule itself: one tick between the readings, or none.
        assert_eq!(super::start_ticks_between(1_234_567_890, 1_234_567_899), Some(123));
        assert_eq!(super::start_ticks_between(1_239_999_999, 1_240_000_001), None);
        assert_eq!(super::start_ticks_between(0, 5), None, "a clock that could not be read");
    }

    /// When the clock could not tell, the start time is read when first asked while the
    /// child is unreaped, and never after its reap (then the PID may be another
    /// process's): a child reaped before anyone asked has none.
    #[tokio::test]
    async fn a_start_time_not_known_at_the_clone_is_read_before_the_reap_or_never() {
        let (dir, expand, place) = scratch();
        let out = std::fs::File::create(dir.path().join("out.log")).unwrap();
        let spawn = |script: &str| {
            let mut r = process::spawn_in(&action(Interpreter::Exec, script), &[], &expand, &out, &place).unwrap();
            r.start_ticks = process::StartTicks::unread();
            r
        };
        let mut quick = spawn("true");
        assert_eq!(quick.wait().await.unwrap(), Exit::Code(0));
        assert_eq!(
            quick.start_ticks.get_or_read(quick.pid),
            None,
            "reaped unread: unknown, not read from a reused PID"
        );

        let mut slow = spawn("sleep 0.3");
        let seen = process::proc_start_ticks(slow.pid).expect("alive");
        assert_eq!(slow.start_ticks.get_or_read(slow.pid), Some(seen), "read while alive");
        assert_eq!(slow.wait().await.unwrap(), Exit::Code(0));
        assert_eq!(slow.start_ticks.get_or_read(slow.pid), Some(seen), "kept after the reap");
    }
}
