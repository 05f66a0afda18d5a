//! Opening the database, the [`Store`] handle and the [`Tx`] transaction type.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::checkpoint::{self, Checkpointer};
use crate::db::Db;
use crate::error::{StoreError, classify, classify_io};
use crate::schema::{self, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use crate::types::OpenInfo;

/// Knobs for opening a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a statement waits for another connection's lock before [`StoreError::Busy`].
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { busy_timeout: Duration::from_millis(5000) }
    }
}

/// WAL files are truncated to this after a checkpoint, so one burst does not leave a huge
/// WAL behind for the life of the daemon.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Rows per index `ANALYZE` samples: keeps `ANALYZE` cost independent of history size.
const ANALYSIS_LIMIT: i64 = 1000;

/// Below this much free space, [`Store::check_space`] says the disk is full: a job row, its
/// WAL frames and an index page or two must fit.
pub const MIN_FREE_BYTES: u64 = 256 * 1024;

/// (dev, ino) of the file at `path`.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Read-only connections a read-write [`Store`] keeps for its readers, at most. WAL lets
/// them read while the writer writes, so a read never waits for a write transaction or a
/// compaction step; more concurrent readers than this wait for each other only. One is
/// opened with the store, the others when reads first overlap: a daemon whose reads never
/// do (most of them) neither opens nor holds them.
pub const READERS: usize = 3;

/// Page cache of each reader (KiB): reads are short lookups and pages; the OS page
/// cache holds the rest.
const READER_CACHE_KIB: i64 = 1024;

/// The daemon's SQLite store.
///
/// One writer connection behind its own mutex, taken only by writes (transactions,
/// compaction steps), and a pool of [`READERS`] read-only connections that every read
/// method uses: in WAL mode a reader sees the last committed state without waiting for
/// the writer. The API is synchronous (each call is short and bounded; compaction
/// releases the writer between small steps). `Store` is `Send + Sync`; share it in an
/// `Arc`.
pub struct Store {
    // Field order is drop order: the readers close first, so the writer is the last
    // connection and its close checkpoints the WAL into the file and removes it (a
    // read-only connection cannot).
    readers: ReaderPool,
    /// Checkpoints the WAL for the writer; stopped (its connection closed) before the
    /// writer closes. `None` read-only, or when its thread could not start (the writer
    /// then checkpoints in its commits, as SQLite does by default).
    pub(crate) _checkpointer: Option<Checkpointer>,
    /// `None` for a handle opened with [`Store::open_read_only`].
    writer: Option<Arc<WriterSlot>>,
    /// Tells this store's batch apart from another store's on the same thread.
    id: usize,
    /// Bumped by every write to the actions table, when it is made and again once it is
    /// committed: a cache of decoded actions filled at generation N is current while the
    /// generation is still N ([`Store::actions_generation`]).
    actions_generation: AtomicU64,
    path: PathBuf,
    busy_timeout: Duration,
    read_only: bool,
    info: OpenInfo,
    /// (dev, ino) of the file opened; a path that no longer leads to it means the
    /// database was deleted or replaced under us.
    identity: Option<(u64, u64)>,
    /// Set once when that is found: from then on every write is refused.
    replaced: std::sync::OnceLock<&'static str>,
    /// What the writer's WAL hook points to: dropped after the writer.
    pub(crate) wal_signal: Option<Arc<checkpoint::Signal>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("read_only", &self.read_only).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` for reading and writing, with
    /// default options. See [`Store::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path, &StoreOptions::default())
    }

    /// Opens (creating if needed) the database at `path` for reading and writing.
    ///
    /// Creates missing parent folders (0700) and the file (0600); an existing file readable
    /// by group or others is narrowed to the owner. A new database gets
    /// `auto_vacuum=INCREMENTAL` before its first table (the only time it can be set), so
    /// compaction can shrink the file. Then WAL, `synchronous=NORMAL`, foreign keys, and
    /// the internal schema migrations, all pending ones in one transaction.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] when the file or folder is not writable (checked here, so
    /// the daemon fails at start rather than on its first job), [`StoreError::Corrupt`] for
    /// a file that is not a hero_proc database, [`StoreError::SchemaTooNew`] for a database
    /// written by a newer hero_proc, [`StoreError::Busy`] when another process holds the
    /// lock during migration.
    pub fn open_with(path: impl AsRef<Path>, opts: &StoreOptions) -> Result<Store, StoreError> {
        configure_sqlite();
        let path = path.as_ref().to_path_buf();
        prepare_file(&path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, opts.busy_timeout, 0, e))?;
        let created = {
            let db = Db::new(&conn, &path, opts.busy_timeout);
            conn.busy_timeout(opts.busy_timeout).map_err(|e| db.fail(e))?;
            // SQLite falls back to read-only when the file is not writable; refuse here.
            if conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| db.fail(e))? {
                return Err(StoreError::ReadOnly { path });
            }
            let found = check_header(&db)?;
            let created = found.is_none();
            if created {
                // Must precede the first table; it is a no-op on existing databases.
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(|e| db.fail(e))?;
            }
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(|e| db.fail(e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), mode, "database could not switch to WAL; readers will block writers");
            }
            for (name, value) in [
                ("synchronous", "NORMAL"),
                ("foreign_keys", "ON"),
                ("journal_size_limit", &JOURNAL_SIZE_LIMIT.to_string()),
                ("analysis_limit", &ANALYSIS_LIMIT.to_string()),
            ] {
                conn.pragma_update(None, name, value).map_err(|e| db.fail(e))?;
            }
            created
        };
        let (from, to) =
            schema::migrate(&mut conn, MIGRATIONS).map_err(|e| Db::new(&conn, &path, opts.busy_timeout).fail(e))?;
        // Another process may have migrated between check_header and migrate.
        if from > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path, found: from, known: SCHEMA_VERSION });
        }
        if from < to {
            tracing::info!(path = %path.display(), from, to, "database schema migrated");
        }
        {
            let db = Db::new(&conn, &path, opts.busy_timeout);
            let tx =
                rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).map_err(|e| db.fail(e))?;
            tx.execute_batch(schema::RECOUNT).map_err(|e| db.fail(e))?;
            tx.commit().map_err(|e| db.fail(e))?;
        }
        let info = OpenInfo { created, schema_from: from, schema_to: to };
        let identity = file_identity(&path).map_err(|e| classify_io(&path, "stat", e))?;
        // Opened after the migrations, so every reader sees the current schema.
        let first = open_reader(&path, opts)?;
        let signal = Arc::new(checkpoint::Signal::default());
        let writer = Arc::new(WriterSlot::new(conn));
        let checkpointer = match Checkpointer::start(&path, signal.clone(), writer.clone()) {
            Ok(c) => {
                if let Some(conn) = writer.present().as_ref() {
                    checkpoint::install(conn, &signal);
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "no checkpoint thread ({e}): commits checkpoint the WAL themselves");
                None
            }
        };
        Ok(Store {
            readers: ReaderPool::new(vec![first], READERS, Some((path.clone(), opts.clone()))),
            _checkpointer: checkpointer,
            writer: Some(writer),
            id: next_store_id(),
            actions_generation: AtomicU64::new(0),
            path,
            busy_timeout: opts.busy_timeout,
            read_only: false,
            info,
            identity: Some(identity),
            replaced: std::sync::OnceLock::new(),
            wal_signal: Some(signal),
        })
    }

    /// Opens an existing database without writing to it (`reconcile --db`, `validate --db`).
    /// Runs no migration.
    ///
    /// # Errors
    /// [`StoreError::NoDatabase`] if the file is missing, [`StoreError::SchemaTooOld`] /
    /// [`StoreError::SchemaTooNew`] unless the schema is exactly this build's,
    /// [`StoreError::Corrupt`] for a file that is not a hero_proc database.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_read_only_with(path, &StoreOptions::default())
    }

    /// [`Store::open_read_only`] with options.
    pub fn open_read_only_with(path: impl AsRef<Path>, opts: &StoreOptions) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(StoreError::NoDatabase { path });
        }
        let (conn, version) = match open_read_only_conn(&path, opts, false) {
            // A WAL database needs its -shm file, which cannot be created in a read-only
            // folder (SQLITE_READONLY_CANTINIT). Without a WAL every committed row is in the
            // main file, and no writer can be at work in a folder it cannot write to, so
            // reading the file as immutable is exact.
            Err(StoreError::ReadOnly { .. }) if crate::db::file_sizes(&path).1 == 0 => {
                open_read_only_conn(&path, opts, true)?
            }
            other => other?,
        };
        if version < SCHEMA_VERSION {
            return Err(StoreError::SchemaTooOld { path, found: version, known: SCHEMA_VERSION });
        }
        let info = OpenInfo { created: false, schema_from: version, schema_to: version };
        Ok(Store {
            readers: ReaderPool::new(vec![conn], 1, None),
            _checkpointer: None,
            writer: None,
            id: next_store_id(),
            actions_generation: AtomicU64::new(0),
            path,
            busy_timeout: opts.busy_timeout,
            read_only: true,
            info,
            identity: None,
            replaced: std::sync::OnceLock::new(),
            wal_signal: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found and did (created? migrated from which version?).
    pub fn open_info(&self) -> OpenInfo {
        self.info
    }

    /// Opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Runs `f` in one write transaction and commits if it returns `Ok`.
    ///
    /// The reconciler applies config rows, secrets and its inventory through one call, so
    /// a plan is applied entirely or not at all.
    ///
    /// # Guarantees
    /// - Atomic: if `f` returns `Err` (or panics), every write made through `tx` is rolled
    ///   back; nothing is half-applied. If the commit itself fails, likewise.
    /// - Isolated: the transaction takes the write lock when it starts (`BEGIN IMMEDIATE`),
    ///   so reads made through `tx` see exactly the state the writes apply to, and no other
    ///   writer (thread or process) interleaves.
    /// - Durable on commit against process crashes; against power loss, the last
    ///   transactions may roll back (`synchronous=NORMAL` in WAL mode) but the file stays
    ///   consistent.
    ///
    /// # Assumptions
    /// `f` is short: the writer's mutex and the database write lock are held while it
    /// runs, so it must not wait on the network or on processes, nor write through this
    /// `Store` (that would deadlock on the writer's mutex). Reads through the `Store`
    /// inside `f` do not block, but see the state before this transaction: read through
    /// `tx` instead.
    ///
    /// # Errors
    /// [`StoreError::OpenedReadOnly`] on a read-only handle; [`StoreError::Busy`] if
    /// another process holds the write lock past the busy timeout; otherwise the error
    /// `f` returned or the commit's ([`StoreError::DiskFull`], [`StoreError::ReadOnly`]...).
    pub fn transaction<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.transaction_with(f)
    }

    /// [`Store::transaction`] for closures with their own error type (anything a
    /// [`StoreError`] converts into, e.g. `anyhow::Error`).
    pub fn transaction_with<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        self.ensure_writable()?;
        let f = match self.on_batch(f, |conn, f| self.savepoint(conn, f)) {
            Ok(out) => return out,
            Err(f) => f,
        };
        if let Some(c) = &self._checkpointer {
            c.hold_back_at_bound();
        }
        let guard = self.writer()?;
        // Holding the slot rules out nesting, so the unchecked (shared-borrow) form is
        // safe, and it leaves `guard` readable for error classification.
        let tx = match rusqlite::Transaction::new_unchecked(&guard, TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => return Err(self.db(&guard).fail(e).into()),
        };
        let t = self.tx_on(&tx);
        let out = f(&t)?; // On Err the Transaction drops and rolls back.
        let touched = t.touched_actions.get();
        // Checked again just before the commit: a write into a file that is gone would be
        // acknowledged and lost.
        self.check_file()?;
        let committed = tx.commit();
        if touched {
            self.actions_written();
        }
        if let Err(e) = committed {
            return Err(self.db(&guard).fail(e).into());
        }
        Ok(out)
    }

    /// A transaction inside this thread's open batch: a savepoint, so a closure that
    /// fails undoes its own writes only, as a transaction of its own would.
    fn savepoint<T, E: From<StoreError>>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        conn.execute_batch("SAVEPOINT hero_proc_write").map_err(|e| self.db(conn).fail(e))?;
        match f(&self.tx_on(conn)) {
            Ok(out) => {
                conn.execute_batch("RELEASE hero_proc_write").map_err(|e| self.db(conn).fail(e))?;
                Ok(out)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK TO hero_proc_write; RELEASE hero_proc_write");
                Err(e)
            }
        }
    }

    fn tx_on<'a>(&'a self, conn: &'a Connection) -> Tx<'a> {
        Tx {
            conn,
            path: &self.path,
            busy_timeout: self.busy_timeout,
            actions_generation: &self.actions_generation,
            touched_actions: std::cell::Cell::new(false),
        }
    }

    /// The generation of the actions table (see the field): equal generations, equal
    /// actions. Cheap (one atomic load): for caches of decoded actions in this process,
    /// which is the only writer while it holds the database.
    pub fn actions_generation(&self) -> u64 {
        self.actions_generation.load(Ordering::Acquire)
    }

    fn actions_written(&self) {
        self.actions_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Opens a batch on the calling thread: until [`Batch::commit`], every write this
    /// thread makes through this `Store` joins one transaction (each write a savepoint in
    /// it), and its reads see those writes. Fifty job rows then cost one commit, not
    /// fifty (the supervisor's boot and a reconcile's starts).
    ///
    /// Other threads' writes wait for the batch to end, so keep it short and bounded; a
    /// batch opened inside a batch of the same store joins it (its commit does nothing).
    /// Dropping a batch without committing rolls it back.
    ///
    /// # Errors
    /// As [`Store::transaction`]'s start.
    pub fn begin_batch(&self) -> Result<Batch<'_>, StoreError> {
        self.ensure_writable()?;
        if self.in_batch() {
            return Ok(Batch { store: self, outer: false });
        }
        let slot = self.slot()?;
        let conn = slot.take();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = self.db(&conn).fail(e);
            slot.give_back(conn);
            return Err(err);
        }
        BATCH.with(|b| *b.borrow_mut() = Some((self.id, conn)));
        Ok(Batch { store: self, outer: true })
    }

    /// Whether this thread has a batch of this store open (its writes are not committed
    /// until the batch is).
    pub fn in_batch(&self) -> bool {
        self.on_batch((), |_, ()| ()).is_ok()
    }

    /// `run(conn, f)` on this thread's open batch of this store (Ok), or `f` back (Err)
    /// when there is none.
    fn on_batch<F, T>(&self, f: F, run: impl FnOnce(&Connection, F) -> T) -> Result<T, F> {
        BATCH.with(|b| match &*b.borrow() {
            Some((id, conn)) if *id == self.id => Ok(run(conn, f)),
            _ => Err(f),
        })
    }

    /// Runs a read on a reader connection: never waits for the writer (single statements
    /// read a consistent snapshot; [`Store::read_snapshot`] for several).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // Inside a batch this thread reads what it wrote.
        let f = match self.in_batch_read(f) {
            Ok(out) => return out,
            Err(f) => f,
        };
        let conn = self.readers.get();
        f(&self.db(&conn))
    }

    /// Runs several reads on one reader connection inside one read transaction: they all
    /// see the same committed state.
    pub(crate) fn read_snapshot<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let f = match self.in_batch_read(f) {
            Ok(out) => return out,
            Err(f) => f,
        };
        let conn = self.readers.get();
        let db = self.db(&conn);
        let tx = conn.unchecked_transaction().map_err(|e| db.fail(e))?;
        let out = f(&db)?;
        // Ends the read transaction (nothing to commit); a failure here changes nothing read.
        let _ = tx.finish();
        Ok(out)
    }

    /// `f` on this thread's batch (Ok), or `f` back (Err) when there is none.
    #[allow(clippy::type_complexity)]
    fn in_batch_read<T, F: FnOnce(&Db<'_>) -> Result<T, StoreError>>(&self, f: F) -> Result<Result<T, StoreError>, F> {
        self.on_batch(f, |conn, f| f(&self.db(conn)))
    }

    /// Runs `f` on the writer connection outside any transaction (pragmas that manage
    /// their own, like `incremental_vacuum` and `wal_checkpoint`).
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.ensure_writable()?;
        let f = match self.in_batch_read(f) {
            Ok(out) => return out,
            Err(f) => f,
        };
        let guard = self.writer()?;
        f(&self.db(&guard))
    }

    pub(crate) fn ensure_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::OpenedReadOnly { path: self.path.clone() });
        }
        self.check_file()
    }

    /// Whether the path still leads to the file this handle opened (one `stat`). Once it
    /// does not (deleted, or replaced by another file), every later write is refused with
    /// [`StoreError::Replaced`] for the life of this handle, and that is logged once: the
    /// daemon must be restarted after the file is restored.
    ///
    /// # Errors
    /// [`StoreError::Replaced`].
    pub fn check_file(&self) -> Result<(), StoreError> {
        let replaced = |how| StoreError::Replaced { path: self.path.clone(), how };
        if let Some(how) = self.replaced.get() {
            return Err(replaced(how));
        }
        let Some(identity) = self.identity else { return Ok(()) };
        let how = match file_identity(&self.path) {
            Ok(now) if now == identity => return Ok(()),
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
            // Cannot tell (e.g. a folder made unreadable): the write itself will say.
            Err(_) => return Ok(()),
        };
        if self.replaced.set(how).is_ok() {
            tracing::error!(path = %self.path.display(), "{}", replaced(how));
        }
        Err(replaced(self.replaced.get().copied().unwrap_or(how)))
    }

    /// Whether the file system holding the database has room for a few more writes
    /// (`statvfs`): lets a caller refuse an operation that must write later (a restart
    /// records its new job) instead of failing half-way.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`] with less than [`MIN_FREE_BYTES`] available.
    pub fn check_space(&self) -> Result<(), StoreError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())) else {
            return Ok(());
        };
        // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
            return Ok(());
        }
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < MIN_FREE_BYTES { Err(StoreError::DiskFull { path: self.path.clone() }) } else { Ok(()) }
    }

    fn slot(&self) -> Result<&WriterSlot, StoreError> {
        self.writer.as_deref().ok_or_else(|| StoreError::OpenedReadOnly { path: self.path.clone() })
    }

    /// The writer connection, once no batch has it.
    fn writer(&self) -> Result<WriterGuard<'_>, StoreError> {
        Ok(WriterGuard(self.slot()?.present()))
    }

    fn db<'a>(&'a self, conn: &'a Connection) -> Db<'a> {
        Db::new(conn, &self.path, self.busy_timeout)
    }
}

/// The reader connections: taken one per read, given back when the read ends; a new one
/// is opened (up to `max`) when a read finds none idle.
struct ReaderPool {
    idle: Mutex<Readers>,
    returned: Condvar,
    max: usize,
    /// Where more readers are opened from (`None`: never more than the first).
    source: Option<(PathBuf, StoreOptions)>,
}

struct Readers {
    conns: Vec<Connection>,
    /// Opened so far (idle or in use).
    opened: usize,
}

impl ReaderPool {
    fn new(conns: Vec<Connection>, max: usize, source: Option<(PathBuf, StoreOptions)>) -> ReaderPool {
        let opened = conns.len();
        ReaderPool { idle: Mutex::new(Readers { conns, opened }), returned: Condvar::new(), max, source }
    }

    /// A free reader: an idle one, a new one while fewer than `max` are open, or the
    /// next one given back.
    fn get(&self) -> Reader<'_> {
        // A reader is handed back by `Drop` even on panic; the list itself stays valid.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut may_open = true;
        loop {
            if let Some(conn) = idle.conns.pop() {
                return Reader { conn: Some(conn), pool: self };
            }
            if let Some((path, opts)) = &self.source
                && may_open
                && idle.opened < self.max
            {
                idle.opened += 1;
                drop(idle);
                match open_reader(path, opts) {
                    Ok(conn) => return Reader { conn: Some(conn), pool: self },
                    // Reads go on with the readers there are (the first is never closed):
                    // this one waits for one of them.
                    Err(e) => tracing::warn!("cannot open another database reader: {e}"),
                }
                may_open = false;
                idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.opened -= 1;
                continue;
            }
            idle = self.returned.wait(idle).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

struct Reader<'p> {
    conn: Option<Connection>,
    pool: &'p ReaderPool,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("held until drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).conns.push(conn);
            self.pool.returned.notify_one();
        }
    }
}

/// A read-only connection to the (already open and migrated) database at `path`.
fn open_reader(path: &Path, opts: &StoreOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, opts.busy_timeout, 0, e))?;
    {
        let db = Db::new(&conn, path, opts.busy_timeout);
        conn.busy_timeout(opts.busy_timeout).map_err(|e| db.fail(e))?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB).map_err(|e| db.fail(e))?;
    }
    Ok(conn)
}

/// A write transaction, see [`Store::transaction`]. Every write method of [`Store`] exists
/// here too (the `Store` ones are one-call transactions), plus the reads a planner needs.
pub struct Tx<'a> {
    /// In a transaction of its own, or in a savepoint of this thread's batch.
    conn: &'a Connection,
    path: &'a Path,
    busy_timeout: Duration,
    actions_generation: &'a AtomicU64,
    /// An action was written: the generation moves again after the commit.
    touched_actions: std::cell::Cell<bool>,
}

impl Tx<'_> {
    pub(crate) fn db(&self) -> Db<'_> {
        Db::new(self.conn, self.path, self.busy_timeout)
    }

    /// An action row is being written: caches of decoded actions are stale from now
    /// (this thread's reads see the write at once) and again at the commit.
    pub(crate) fn actions_written(&self) {
        self.touched_actions.set(true);
        self.actions_generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A batch of this thread's writes, see [`Store::begin_batch`].
#[must_use = "a batch that is dropped rolls back; call commit"]
pub struct Batch<'s> {
    store: &'s Store,
    /// The batch that began the transaction (an inner one only joins it).
    outer: bool,
}

impl Batch<'_> {
    /// Commits the batch's writes (an inner batch: nothing, its outer one commits).
    ///
    /// # Errors
    /// As [`Store::transaction`]'s commit; the writes are then rolled back.
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.end(true)
    }

    /// Commit (or roll back) the transaction and give the connection back to the slot:
    /// the outer batch only, once.
    fn end(&mut self, commit: bool) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.outer) {
            return Ok(());
        }
        let Some((_, conn)) = BATCH.with(|b| b.borrow_mut().take()) else { return Ok(()) };
        let store = self.store;
        let r = if commit {
            store.check_file().and_then(|()| conn.execute_batch("COMMIT").map_err(|e| store.db(&conn).fail(e)))
        } else {
            Ok(())
        };
        if !commit || r.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Whatever the batch wrote is now visible to every thread (or rolled back).
        store.actions_written();
        if let Some(slot) = &store.writer {
            slot.give_back(conn);
        }
        r
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let _ = self.end(false);
    }
}

thread_local! {
    /// The batch open on this thread: (store id, the writer connection it took).
    static BATCH: std::cell::RefCell<Option<(usize, Connection)>> = const { std::cell::RefCell::new(None) };
}

fn next_store_id() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The writer connection: in the slot, or out with the thread whose batch holds it.
pub(crate) struct WriterSlot {
    conn: Mutex<Option<Connection>>,
    back: Condvar,
}

impl WriterSlot {
    fn new(conn: Connection) -> WriterSlot {
        WriterSlot { conn: Mutex::new(Some(conn)), back: Condvar::new() }
    }

    /// The slot locked, once the connection is in it (no batch has it out).
    pub(crate) fn present(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic inside a transaction rolled it back while unwinding: the connection is fine.
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        while conn.is_none() {
            conn = self.back.wait(conn).unwrap_or_else(PoisonError::into_inner);
        }
        conn
    }

    /// Take the connection out for a batch, once no one else uses it.
    fn take(&self) -> Connection {
        self.present().take().expect("present")
    }

    fn give_back(&self, conn: Connection) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        self.back.notify_all();
    }
}

/// The writer connection, held for one write.
struct WriterGuard<'a>(MutexGuard<'a, Option<Connection>>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0.as_ref().expect("held while present")
    }
}

/// Creates the parent folder (0700) and the file (0600) if missing; narrows an existing
/// file that group or others can read.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent).map_err(|e| classify_io(path, "create folder", e))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            narrow_permissions(path);
            Ok(())
        }
        Err(e) => Err(classify_io(path, "create file", e)),
    }
}

/// Only ever removes bits: a file an operator made read-only stays read-only.
#[cfg(unix)]
fn narrow_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let narrowed = mode & !0o077;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed)) {
            Ok(()) => tracing::warn!(path = %path.display(), from = format!("{mode:o}"), to = format!("{narrowed:o}"),
                "database file was readable by others; narrowed its permissions"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "database file is readable by others and could not be narrowed")
            }
        }
    }
}

/// Process-wide SQLite settings, made before the first connection (after it, SQLite
/// refuses them and they are left as they are): no memory statistics, which this process
/// never reads and which cost a global mutex around every allocation SQLite makes (a
/// tenth of a job's store write).
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config with an int argument, as SQLITE_CONFIG_MEMSTATUS takes;
        // it only fails (SQLITE_MISUSE) once SQLite is initialized, changing nothing.
        let r = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if r != rusqlite::ffi::SQLITE_OK {
            tracing::debug!("SQLite was initialized before the store: memory statistics stay on ({r})");
        }
    });
}

fn open_read_only_conn(path: &Path, opts: &StoreOptions, immutable: bool) -> Result<(Connection, u32), StoreError> {
    configure_sqlite();
    let mut flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        flags |= OpenFlags::SQLITE_OPEN_URI;
        Connection::open_with_flags(format!("file:{}?immutable=1", uri_escape(path)), flags)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| classify(path, opts.busy_timeout, 0, e))?;
    let version = {
        let db = Db::new(&conn, path, opts.busy_timeout);
        conn.busy_timeout(opts.busy_timeout).map_err(|e| db.fail(e))?;
        check_header(&db)?.unwrap_or(0)
    };
    Ok((conn, version))
}

/// Percent-encodes a path for a `file:` URI.
fn uri_escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the header fields that decide whether the file is ours. `None` means an empty
/// database (new); `Some(v)` an existing hero_proc database at schema `v`.
fn check_header(db: &Db<'_>) -> Result<Option<u32>, StoreError> {
    let version = schema::user_version(db.conn).map_err(|e| db.fail(e))?;
    let app: i32 = db.conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| db.fail(e))?;
    let objects: i64 =
        db.conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(|e| db.fail(e))?;
    let path = db.path.to_path_buf();
    if version == 0 && app == 0 && objects == 0 {
        return Ok(None);
    }
    if app != APPLICATION_ID {
        let detail = if app == 0 {
            "an SQLite database of another program".to_owned()
        } else {
            format!("an SQLite database with application_id {app:#x}")
        };
        return Err(StoreError::Corrupt { path, detail });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { path, found: version, known: SCHEMA_VERSION });
    }
    Ok(Some(version))
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn run(store: &Store) -> Result<RunId, StoreError> {
        store.create_run("t", 1)
    }
    use crate::RunId;

    #[test]
    fn a_deleted_database_refuses_writes_until_reopened() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let store = Store::open(&p).unwrap();
        run(&store).unwrap();
        std::fs::remove_file(&p).unwrap();
        let e = run(&store).unwrap_err();
        assert!(e.is_replaced() && e.to_string().contains("was deleted"), "{e}");
        // Still refused, even once a file is back: this handle writes to the old one.
        drop(Store::open(&p).unwrap());
        assert!(run(&store).unwrap_err().is_replaced());
        assert!(store.check_file().is_err());
    }

    #[test]
    fn a_database_replaced_by_rename_refuses_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let store = Store::open(&p).unwrap();
        let other = d.path().join("b.db");
        drop(Store::open(&other).unwrap());
        std::fs::rename(&other, &p).unwrap();
        let e = run(&store).unwrap_err();
        assert!(e.to_string().contains("replaced by another file"), "{e}");
    }
}
