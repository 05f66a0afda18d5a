//! Output files made ahead of need, so starting a job does not allocate an inode.
//!
//! Creating a file is the costliest step of starting a job on some file systems: ext4
//! without a journal scans past every inode freed in the last minutes before it reuses
//! one (`recently_deleted`), which made file creation a third of a cold start on a
//! machine that had just deleted many files. A helper thread creates empty files in
//! `spare/` ahead of need; a job's file is then a rename of one into `jobs/`, which
//! allocates nothing. A spare is never open in any process before it is renamed, so no
//! job can see another's output. The helper runs only when the pool runs low: an idle
//! store makes no wake-ups.
//!
//! A job that printed nothing gives its file back when it has ended (`give_back`), so a
//! stream of quiet jobs allocates nothing at all. Only a file no process has open goes
//! back (proved by a write lease, see `move_if_empty_and_unused`), so nothing a job left
//! behind can write into the next job's file. The one opener that can race the move is a
//! reader that opened the path in its microseconds (the directories are the daemon's,
//! 0700): the daemon's own reads check afterwards that they read the job's file.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{create_private_dir, lock, open_append};

/// The pool is refilled to `high` when it falls to `high / 4`. Files given back by jobs
/// that printed nothing are kept up to [`GIVEN_BACK_MAX`] times `high`: a burst of
/// quiet jobs (a run of a thousand) leaves behind the files the next such burst needs,
/// made once, instead of a helper creating them again (empty files cost an inode each,
/// no data).
const GIVEN_BACK_MAX: usize = 16;

#[derive(Debug)]
pub(crate) struct Spares {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The spares' names (`spare/<n>`): numbers, so a pool of a thousand costs 8 KB.
    free: Vec<u64>,
    high: usize,
    next: u64,
    refilling: bool,
}

impl Spares {
    pub(crate) fn new(root: &Path) -> Spares {
        Spares { dir: root.join("spare"), state: Arc::default() }
    }

    /// Keep about `high` spares from now on (0: none); files left by an earlier daemon
    /// are taken into the pool (they were never handed out).
    pub(crate) fn keep(&self, high: usize) -> std::io::Result<()> {
        if high > 0 {
            create_private_dir(&self.dir).map_err(std::io::Error::other)?;
        }
        let mut s = lock(&self.state);
        s.high = high;
        if s.free.is_empty()
            && let Ok(rd) = fs::read_dir(&self.dir)
        {
            s.free.extend(rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok()));
            s.next = s.free.iter().max().map_or(0, |m| m + 1);
        }
        self.refill_if_low(&mut s);
        Ok(())
    }

    /// A spare moved to `to`, or `None` when the pool is empty or `to` exists (a
    /// restarted job appends to its file: the caller opens it as it is).
    pub(crate) fn take_as(&self, to: &Path) -> Option<PathBuf> {
        let spare = {
            let mut s = lock(&self.state);
            let spare = s.free.pop()?;
            self.refill_if_low(&mut s);
            spare
        };
        match rename_noreplace(&spare_path(&self.dir, spare), to) {
            Ok(()) => Some(to.to_path_buf()),
            Err(e) => {
                // The target exists, or the spare went away (deleted by hand): the caller
                // falls back to opening `to`; a spare still there returns to the pool.
                if e.kind() != std::io::ErrorKind::NotFound {
                    lock(&self.state).free.push(spare);
                }
                None
            }
        }
    }

    /// Whether [`Spares::give_back`] may take a file (cheap: checked first).
    pub(crate) fn has_room(&self) -> bool {
        lock(&self.state).has_room()
    }

    /// `from` (the output file of a job that has ended) moved into the pool, if the pool
    /// is not full, the file is empty and no process has it open; see
    /// [`crate::LogStore::recycle_job_output`].
    pub(crate) fn give_back(&self, from: &Path) -> bool {
        let to = {
            let mut s = lock(&self.state);
            if !s.has_room() {
                return false;
            }
            s.next += 1;
            s.next
        };
        if !move_if_empty_and_unused(from, &spare_path(&self.dir, to)) {
            return false;
        }
        lock(&self.state).free.push(to);
        true
    }

    fn refill_if_low(&self, s: &mut State) {
        if s.refilling || s.high == 0 || s.free.len() > s.high / 4 {
            return;
        }
        s.refilling = true;
        let (dir, state) = (self.dir.clone(), self.state.clone());
        let spawned = std::thread::Builder::new().name("hero_proc-spares".into()).spawn(move || {
            loop {
                let name = {
                    let mut s = lock(&state);
                    // Stop when full, or when the store is gone (only this thread holds it).
                    if s.free.len() >= s.high || Arc::strong_count(&state) == 1 {
                        s.refilling = false;
                        return;
                    }
                    s.next += 1;
                    s.next
                };
                let path = spare_path(&dir, name);
                match open_append(&path) {
                    Ok(_) => lock(&state).free.push(name),
                    Err(e) => {
                        tracing::debug!("cannot make a spare output file {}: {e}", path.display());
                        lock(&state).refilling = false;
                        return;
                    }
                }
            }
        });
        if spawned.is_err() {
            s.refilling = false;
        }
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        lock(&self.state).free.len()
    }
}

impl State {
    fn has_room(&self) -> bool {
        self.high > 0 && self.free.len() < self.high * GIVEN_BACK_MAX
    }
}

/// The spare numbered `n` in `dir`.
fn spare_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(n.to_string())
}

/// Moves `from` to `to` if it is an empty regular file of this process's user that no
/// process has open. The proof is a write lease: the kernel grants one only while no
/// other open file (a descriptor in any process, or a mapping) refers to the inode, so a
/// child the job left running in the background, still holding its stdout, keeps the
/// file where it is. Nothing else can open it meanwhile: its directory is the daemon's,
/// 0700.
fn move_if_empty_and_unused(from: &Path, to: &Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(f) = fs::File::open(from) else { return false };
    let fd = f.as_raw_fd();
    // A process that opens the file while the lease is held (the microseconds below)
    // breaks it, waits for its release, and the kernel tells the holder: with SIGIO by
    // default, whose default action would end the daemon. Nobody needs telling: the
    // notice is set to SIGURG (ignored unless handled) before the lease is taken, and
    // to no process at all once it is.
    // SAFETY: fcntl on a descriptor this function owns, with valid arguments.
    unsafe {
        if libc::fcntl(fd, F_SETSIG, libc::SIGURG) != 0 || libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) != 0 {
            return false;
        }
        libc::fcntl(fd, libc::F_SETOWN, 0);
    }
    // Checked under the lease: no writer can exist until it is released. Nothing a job
    // could have changed through its descriptor goes on to the next job: no blocks
    // (space preallocated past the end with `fallocate` KEEP_SIZE) and the mode the
    // store gave it.
    let fit = f.metadata().is_ok_and(|m| {
        m.is_file()
            && m.len() == 0
            && m.blocks() == 0
            && m.nlink() == 1
            && m.mode() & 0o7777 == crate::FILE_MODE
            // SAFETY: geteuid has no failure mode.
            && m.uid() == unsafe { libc::geteuid() }
    });
    let moved = fit && rename_noreplace(from, to).is_ok();
    // SAFETY: as above; closing the descriptor would release the lease as well.
    unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
    moved
}

/// `fcntl` command: the signal that reports events on a descriptor (Linux <fcntl.h>; the
/// `libc` crate does not export it).
const F_SETSIG: libc::c_int = 10;

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_free(s: &Spares, n: usize) {
        let t = Instant::now();
        while s.free() < n {
            assert!(t.elapsed() < Duration::from_secs(10), "the pool did not refill");
            std::thread::yield_now();
        }
    }

    #[test]
    fn files_given_back_are_kept_past_the_refill_level_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::new(dir.path());
        s.keep(1).unwrap();
        wait_free(&s, 1);
        let jobs = dir.path().join("jobs");
        fs::create_dir(&jobs).unwrap();
        let ended: Vec<PathBuf> = (0..40).map(|i| jobs.join(format!("{i}.log"))).collect();
        for p in &ended {
            open_append(p).unwrap();
        }
        let back = ended.iter().filter(|p| s.give_back(p)).count();
        assert_eq!(back, GIVEN_BACK_MAX - 1, "the pool held one spare and takes files up to the bound");
        assert_eq!(s.free(), GIVEN_BACK_MAX);
        assert!(!s.has_room());
        assert_eq!(fs::read_dir(&jobs).unwrap().count(), ended.len() - back, "the rest stay where they are");
        assert_eq!(fs::read_dir(dir.path().join("spare")).unwrap().count(), GIVEN_BACK_MAX);
    }

    #[test]
    fn spares_become_job_files_and_never_replace_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::new(dir.path());
        s.keep(8).unwrap();
        wait_free(&s, 8);
        let jobs = dir.path().join("jobs");
        fs::create_dir(&jobs).unwrap();
        let to = jobs.join("1.log");
        assert_eq!(s.take_as(&to).as_deref(), Some(to.as_path()));
        assert_eq!(fs::metadata(&to).unwrap().len(), 0);
        // An existing file (a restarted job's) is never replaced.
        fs::write(&to, "kept").unwrap();
        assert_eq!(s.take_as(&to), None);
        assert_eq!(fs::read_to_string(&to).unwrap(), "kept");
        // Taking down to a quarter refills the pool.
        for i in 2..8 {
            assert!(s.take_as(&jobs.join(format!("{i}.log"))).is_some());
        }
        wait_free(&s, 8);
        // A new store adopts what the last one left, and makes no more than it needs.
        drop(s);
        let again = Spares::new(dir.path());
        again.keep(8).unwrap();
        assert!(again.free() >= 8);
        let on_disk = fs::read_dir(dir.path().join("spare")).unwrap().count();
        assert_eq!(on_disk, again.free());
    }
}
