//! WAL checkpoints on a thread of their own, so that no write waits for one.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000
//! pages: that commit copies the pages into the database file and waits for two `fsync`s
//! (3-4 ms here, mostly the WAL's 4 MB), every 100-odd jobs, on the supervisor's thread.
//! Instead the writer's WAL hook (which replaces the automatic checkpoint) wakes the
//! checkpoint thread, which copies on its own connection while the writer goes on (WAL
//! mode lets one connection append while another copies). The frames committed
//! meanwhile it copies holding the writer's slot, so none is added while it finishes:
//! the writer's next transaction then starts the WAL over, as it did after its own
//! checkpoints. That last step syncs only those few frames.
//!
//! Should the thread fall behind (a slow disk, a writer faster than it) or fail, the WAL
//! stays bounded: at [`WRITER_CHECKPOINT_PAGES`] a write transaction first waits for the
//! thread to copy everything, and a commit checkpoints itself when the thread is idle.
//! One checkpoint at a time: the compactor's `TRUNCATE` waits for the thread's (SQLite
//! would refuse it as busy).

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, ffi};

use crate::store::WriterSlot;

/// WAL pages (of 4 KiB) that wake the checkpoint thread: SQLite's automatic threshold.
pub(crate) const CHECKPOINT_PAGES: u32 = 1000;

/// The bound on the WAL (about 64 MiB, the journal size limit), for when the checkpoint
/// thread cannot keep up: past it a transaction first waits for the thread to copy
/// everything, and a commit checkpoints itself when the thread is not at work.
pub(crate) const WRITER_CHECKPOINT_PAGES: u32 = 16 * CHECKPOINT_PAGES;

/// What the writer's WAL hook and the checkpoint thread share.
#[derive(Default)]
pub(crate) struct Signal {
    /// WAL pages when the thread was last woken; fewer now means the WAL started over.
    woken_at: AtomicU32,
    /// WAL pages after the last commit.
    pages: AtomicU32,
    /// Held for each checkpoint of this store's, the thread's and the compactor's: SQLite
    /// refuses a second checkpoint while one runs (without waiting). Taken before the
    /// writer's slot, never after.
    one_at_a_time: Mutex<()>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    wanted: bool,
    stop: bool,
    /// A checkpoint under way, and how many ran (for tests).
    running: bool,
    done: u64,
}

impl Signal {
    /// Excludes this store's other checkpoints until dropped (see `one_at_a_time`).
    pub(crate) fn checkpointing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.one_at_a_time.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last commit left the WAL at its bound.
    pub(crate) fn at_bound(&self) -> bool {
        self.pages.load(Ordering::Relaxed) >= WRITER_CHECKPOINT_PAGES
    }

    /// A commit left `pages` in the WAL: whether the writer must checkpoint itself.
    fn committed(&self, pages: u32) -> bool {
        self.pages.store(pages, Ordering::Relaxed);
        if pages >= WRITER_CHECKPOINT_PAGES {
            return true;
        }
        let last = self.woken_at.load(Ordering::Relaxed);
        // Once per CHECKPOINT_PAGES of growth, and again after the WAL started over.
        if pages >= CHECKPOINT_PAGES && (pages < last || pages >= last.saturating_add(CHECKPOINT_PAGES)) {
            self.woken_at.store(pages, Ordering::Relaxed);
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.wanted = true;
            self.wake.notify_all();
        }
        false
    }
}

/// The writer's WAL hook: called by SQLite after each commit, with the WAL's size.
///
/// # Safety
/// `data` is the [`Signal`] given to [`install`], alive while the connection is open.
unsafe extern "C" fn on_commit(data: *mut c_void, db: *mut ffi::sqlite3, name: *const c_char, pages: c_int) -> c_int {
    // SAFETY: see the function's contract.
    let signal = unsafe { &*(data as *const Signal) };
    if signal.committed(u32::try_from(pages).unwrap_or(0)) {
        // SAFETY: the database handle and schema name SQLite passed to this hook. What
        // SQLite's automatic checkpoint does; a busy result only leaves frames for later.
        unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                db,
                name,
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
    ffi::SQLITE_OK
}

/// Makes `conn` (the writer) wake `signal`'s thread instead of checkpointing in its
/// commits. The caller keeps `signal` alive until `conn` is closed.
pub(crate) fn install(conn: &Connection, signal: &Arc<Signal>) {
    // SAFETY: a valid handle; the hook's data outlives the connection (caller's contract).
    unsafe { ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), Arc::as_ptr(signal) as *mut c_void) };
}

/// The checkpoint thread: stopped and joined on drop, closing its connection.
pub(crate) struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`, with a connection opened here, right
    /// after the writer's: to the same file, even if the path is later made to lead to
    /// another one (a database that is not ours is never opened to be checkpointed).
    pub(crate) fn start(path: &Path, signal: Arc<Signal>, writer: Arc<WriterSlot>) -> std::io::Result<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(std::io::Error::other)?;
        // Its locks are a few instructions long; PASSIVE itself never waits.
        conn.busy_timeout(std::time::Duration::from_millis(100)).map_err(std::io::Error::other)?;
        // SQLite opens the WAL and its index at a connection's first read: now, so that
        // those too are this database's.
        // (A read of the header, no checkpoint: the open's thread does not wait for an fsync.)
        conn.query_row("PRAGMA schema_version", [], |_| Ok(())).map_err(std::io::Error::other)?;
        let (path, shared) = (path.to_path_buf(), signal.clone());
        let thread = std::thread::Builder::new()
            .name("hero_proc-ckpt".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&conn, &path, &shared, &writer))?;
        Ok(Checkpointer { signal, thread: Some(thread) })
    }

    /// Asks the thread for a checkpoint, as the writer does.
    fn nudge(&self) {
        self.signal.state.lock().unwrap_or_else(PoisonError::into_inner).wanted = true;
        self.signal.wake.notify_all();
    }

    /// Waits, at most `limit`, until the thread has nothing to do: how many checkpoints
    /// it ran, and whether it caught up.
    pub(crate) fn wait_caught_up(&self, limit: std::time::Duration) -> (u64, bool) {
        let s = self.signal.state.lock().unwrap_or_else(PoisonError::into_inner);
        let behind = |s: &mut State| s.wanted || s.running;
        let (mut s, _) = self.signal.wake.wait_timeout_while(s, limit, behind).unwrap_or_else(PoisonError::into_inner);
        (s.done, !behind(&mut s))
    }

    /// Before a write transaction, holding neither the writer's slot nor a checkpoint:
    /// with the WAL at its bound, has the thread copy everything first (so that this
    /// transaction starts the WAL over), waiting at most a few seconds.
    pub(crate) fn hold_back_at_bound(&self) {
        if self.signal.at_bound() {
            self.nudge();
            self.wait_caught_up(std::time::Duration::from_secs(5));
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.signal.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, path: &Path, signal: &Signal, writer: &WriterSlot) {
    loop {
        {
            let mut s = signal.state.lock().unwrap_or_else(PoisonError::into_inner);
            while !s.wanted && !s.stop {
                s = signal.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            if s.stop {
                return;
            }
            s.wanted = false;
            s.running = true;
        }
        {
            let _one = signal.checkpointing();
            let outcome = passive(conn).and_then(|left| {
                if left {
                    // Frames committed while it copied: the rest, with no writer at work.
                    let _held = writer.present();
                    passive(conn)?;
                }
                Ok(())
            });
            if let Err(e) = outcome {
                tracing::warn!(path = %path.display(), "WAL checkpoint failed (at {WRITER_CHECKPOINT_PAGES} pages the writer waits for one): {e}");
            }
        }
        let mut s = signal.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.done += 1;
        s.running = false;
        signal.wake.notify_all();
    }
}

/// A `PASSIVE` checkpoint (copies what no reader still needs, waits for no one): whether
/// frames are left that it did not copy.
fn passive(c: &Connection) -> rusqlite::Result<bool> {
    let (log, copied): (i64, i64) =
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))?;
    Ok(copied < log)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Store;

    /// Frames the WAL file holds room for (its size; a restarted WAL is written over
    /// from its start, so the file only grows while the WAL does not start over).
    fn wal_file_frames(db: &Path) -> u64 {
        let wal = db.with_file_name(format!("{}-wal", db.file_name().unwrap().to_str().unwrap()));
        std::fs::metadata(wal).map(|m| m.len() / (4096 + 24)).unwrap_or(0)
    }

    /// (frames in the WAL, frames copied into the database) from the shared WAL index
    /// (`<db>-shm`, https://sqlite.org/walformat.html: `mxFrame` at byte 16 of the
    /// header, `nBackfill` at byte 96, native byte order).
    fn wal_index_frames(db: &Path) -> (u32, u32) {
        let shm =
            std::fs::read(db.with_file_name(format!("{}-shm", db.file_name().unwrap().to_str().unwrap()))).unwrap();
        let at = |i: usize| u32::from_ne_bytes(shm[i..i + 4].try_into().unwrap());
        (at(16), at(96))
    }

    #[test]
    fn the_writer_wakes_the_thread_once_per_threshold_and_checkpoints_itself_only_at_the_bound() {
        let s = Signal::default();
        let wanted = |s: &Signal| std::mem::take(&mut s.state.lock().unwrap().wanted);
        assert!(!s.committed(CHECKPOINT_PAGES - 1));
        assert!(!wanted(&s), "below the threshold nothing wakes");
        assert!(!s.committed(CHECKPOINT_PAGES));
        assert!(wanted(&s), "the threshold wakes the thread");
        assert!(!s.committed(CHECKPOINT_PAGES + 500));
        assert!(!wanted(&s), "not again until the WAL grew by another threshold");
        assert!(!s.committed(2 * CHECKPOINT_PAGES));
        assert!(wanted(&s));
        assert!(!s.committed(CHECKPOINT_PAGES));
        assert!(wanted(&s), "a WAL that started over and grew again wakes it again");
        assert!(!s.committed(WRITER_CHECKPOINT_PAGES - 1));
        assert!(s.committed(WRITER_CHECKPOINT_PAGES), "at the bound the writer checkpoints");
    }

    #[test]
    fn the_thread_checkpoints_while_the_writer_writes_and_the_wal_stays_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let store = Store::open(&p).unwrap();
        let checkpointer = store._checkpointer.as_ref().expect("a read-write store checkpoints on its thread");
        // About four pages a commit, written without pause: faster than the thread can
        // copy and sync, so the writer's bound is reached too.
        let label = "x".repeat(3000);
        let n = 6 * i64::from(CHECKPOINT_PAGES);
        let mut last = None;
        for i in 0..n {
            last = Some(store.create_run(&label, i).unwrap());
        }
        let (done, caught_up) = checkpointer.wait_caught_up(Duration::from_secs(60));
        assert!(caught_up && done >= 1, "the checkpoint thread ran {done} checkpoints and did not catch up");
        let frames = wal_file_frames(&p);
        // (Past the bound each write first waits for the thread to copy everything.)
        assert!(
            frames <= u64::from(WRITER_CHECKPOINT_PAGES) + 64,
            "the WAL grew to {frames} frames, past the writer's bound of {WRITER_CHECKPOINT_PAGES}"
        );
        // A checkpoint with the writer idle copies every frame (the writer's next
        // transaction then starts the WAL over).
        checkpointer.nudge();
        assert!(checkpointer.wait_caught_up(Duration::from_secs(60)).1);
        let (frames, copied) = wal_index_frames(&p);
        assert!(frames > 0 && copied == frames, "the thread's checkpoint copied {copied} of {frames} frames");
        let last = store.get_run(last.unwrap()).unwrap().expect("the last run reads back");
        assert_eq!(last.created_at_ms, n - 1);
        // Closing stops the thread first (its connection closed), so the writer's is the
        // last connection and removes the WAL.
        drop(store);
        assert!(!d.path().join("a.db-wal").exists(), "the WAL is removed at close");
    }

    #[test]
    fn a_compaction_beside_the_threads_checkpoint_still_truncates_the_wal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let store = Store::open(&p).unwrap();
        let checkpointer = store._checkpointer.as_ref().unwrap();
        let label = "x".repeat(3000);
        let keep = crate::Retention { max_age_days: None, max_rows_per_table: None };
        for round in 0..5 {
            // Past the threshold: the thread wakes and copies while the compaction's
            // TRUNCATE checkpoint starts, which SQLite would refuse as busy beside it.
            for i in 0..i64::from(CHECKPOINT_PAGES) / 3 {
                store.create_run(&label, i).unwrap();
            }
            let report = store.compact(&keep, 0).unwrap();
            assert!(report.checkpoint_complete, "round {round}: the compaction's checkpoint was refused");
            assert_eq!(wal_file_frames(&p), 0, "round {round}: the WAL was not truncated");
            assert!(checkpointer.wait_caught_up(Duration::from_secs(60)).1);
        }
    }

    #[test]
    fn a_database_put_in_its_place_is_never_checkpointed_into() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let store = Store::open(&p).unwrap();
        let checkpointer = store._checkpointer.as_ref().unwrap();
        // Frames in the WAL, below the threshold: nothing checkpointed them yet.
        for i in 0..100 {
            store.create_run("before", i).unwrap();
        }
        // Another database (closed: all of it in its file) renamed into the path.
        let other = d.path().join("b.db");
        Store::open(&other).unwrap().create_run("other", 1).unwrap();
        let theirs = std::fs::read(&other).unwrap();
        std::fs::rename(&other, &p).unwrap();
        // A checkpoint now copies this store's frames into its own file, not that one.
        checkpointer.nudge();
        assert!(checkpointer.wait_caught_up(Duration::from_secs(60)).1);
        assert!(std::fs::read(&p).unwrap() == theirs, "the database put in the store's place was written to");
        assert!(store.create_run("after", 2).unwrap_err().is_replaced());
    }
}
