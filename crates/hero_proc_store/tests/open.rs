//! Opening: pragmas of a new file, permissions, migrations, schema checks.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;
use hero_proc_store::schema::SCHEMA_VERSION;
use hero_proc_store::{Origin, Store, StoreError};
use rusqlite::Connection;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn new_file_is_incremental_vacuum_and_wal() {
    let (t, store) = open();
    let stats = store.db_stats().unwrap();
    assert_eq!(stats.auto_vacuum, "incremental");
    assert_eq!(stats.schema_version, SCHEMA_VERSION);
    drop(store);
    // Check with an independent connection: these are properties of the file.
    let c = Connection::open(&t.path).unwrap();
    let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    let jm: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(av, 2, "auto_vacuum must be INCREMENTAL (2)");
    assert_eq!(jm, "wal");
}

#[test]
fn foreign_keys_are_enforced() {
    // foreign_keys is a per-connection setting: check its effect.
    let (_t, store) = open();
    let a = action("core", "x");
    let err = store.create_job(&new_job(&a, Some(hero_proc_store::RunId(999)), 0)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: "run", .. }), "{err}");
}

#[test]
fn creates_folders_0700_and_file_0600() {
    let t = tmp();
    let store = Store::open(&t.path).unwrap();
    store.put_action(&action("core", "a"), &Origin::manual()).unwrap();
    let var = t.dir.path().join("var");
    assert_eq!(mode(&var), 0o700);
    assert_eq!(mode(&var.join("hero_proc")), 0o700);
    assert_eq!(mode(&t.path), 0o600);
    // SQLite gives the WAL the database file's mode.
    let wal = t.path.with_file_name("hero_proc.db-wal");
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600);
}

#[test]
fn existing_file_readable_by_others_is_narrowed() {
    let (t, store) = open();
    drop(store);
    std::fs::set_permissions(&t.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&t.path).unwrap();
    assert_eq!(mode(&t.path), 0o600);
}

#[test]
fn reopen_runs_no_migration_twice() {
    let t = tmp();
    let first = Store::open(&t.path).unwrap().open_info();
    assert!(first.created);
    assert_eq!((first.schema_from, first.schema_to), (0, SCHEMA_VERSION));
    assert_eq!(first.migrations_applied(), SCHEMA_VERSION);
    let store = Store::open(&t.path).unwrap();
    store.put_action(&action("core", "a"), &Origin::manual()).unwrap();
    let second = store.open_info();
    assert!(!second.created);
    assert_eq!((second.schema_from, second.schema_to), (SCHEMA_VERSION, SCHEMA_VERSION));
    assert_eq!(second.migrations_applied(), 0);
    drop(store);
    // The data survived the reopen (a re-run v1 would have failed on CREATE TABLE anyway).
    let store = Store::open(&t.path).unwrap();
    assert_eq!(store.list_actions().unwrap().len(), 1);
    assert_eq!(store.open_info().migrations_applied(), 0);
}

#[test]
fn schema_too_new_is_refused() {
    let (t, store) = open();
    drop(store);
    let c = Connection::open(&t.path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Store::open(&t.path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err:?}");
    assert!(
        msg.contains(&format!(
            "database schema v99 is newer than this hero_proc (knows v{SCHEMA_VERSION}); upgrade hero_proc"
        )),
        "{msg}"
    );
    assert!(msg.contains(&t.path.display().to_string()), "{msg}");
    let err = Store::open_read_only(&t.path).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err:?}");
}

#[test]
fn read_only_open_reads_and_refuses_writes() {
    let (t, store) = open();
    store.put_action(&action("core", "a"), &Origin::git("abc")).unwrap();
    let ro = Store::open_read_only(&t.path).unwrap();
    assert!(ro.is_read_only());
    assert_eq!(ro.get_action("core", "a").unwrap().unwrap().revision.as_deref(), Some("abc"));
    let err = ro.put_action(&action("core", "b"), &Origin::manual()).unwrap_err();
    assert!(matches!(err, StoreError::OpenedReadOnly { .. }), "{err:?}");
    assert!(matches!(
        ro.compact(&hero_proc_store::Retention::default(), 0).unwrap_err(),
        StoreError::OpenedReadOnly { .. }
    ));
    // The writer still works next to it.
    store.put_action(&action("core", "b"), &Origin::manual()).unwrap();
    assert_eq!(ro.list_actions().unwrap().len(), 2);
}

#[test]
fn read_only_open_of_missing_file() {
    let t = tmp();
    let err = Store::open_read_only(&t.path).unwrap_err();
    assert!(matches!(err, StoreError::NoDatabase { .. }), "{err:?}");
    assert!(!t.path.exists(), "a read-only open must not create anything");
}

#[test]
fn read_only_open_of_old_schema() {
    let t = tmp();
    std::fs::create_dir_all(t.path.parent().unwrap()).unwrap();
    let c = Connection::open(&t.path).unwrap();
    c.pragma_update(None, "application_id", hero_proc_store::schema::APPLICATION_ID).unwrap();
    drop(c);
    let err = Store::open_read_only(&t.path).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooOld { found: 0, .. }), "{err:?}");
    // A read-write open migrates it.
    let s = Store::open(&t.path).unwrap();
    assert_eq!(s.open_info().schema_to, SCHEMA_VERSION);
    drop(s);
    Store::open_read_only(&t.path).unwrap();
}

#[test]
fn another_programs_database_is_refused() {
    let t = tmp();
    std::fs::create_dir_all(t.path.parent().unwrap()).unwrap();
    let c = Connection::open(&t.path).unwrap();
    c.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY); INSERT INTO photos VALUES (1);").unwrap();
    drop(c);
    let err = Store::open(&t.path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("move the file aside"), "{err}");
    // Untouched.
    let c = Connection::open(&t.path).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM photos", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn legacy_database_without_auto_vacuum_is_converted_by_compaction() {
    let t = tmp();
    std::fs::create_dir_all(t.path.parent().unwrap()).unwrap();
    // A file whose first page exists before the store opens it: auto_vacuum stays NONE.
    let c = Connection::open(&t.path).unwrap();
    c.pragma_update(None, "auto_vacuum", "NONE").unwrap();
    c.execute_batch("PRAGMA application_id = 1213223491; CREATE TABLE t (x); DROP TABLE t;").unwrap();
    drop(c);
    let store = Store::open(&t.path).unwrap();
    assert_eq!(store.db_stats().unwrap().auto_vacuum, "none");
    finished_jobs(&store, 500, 0, hero_proc_store::Phase::Succeeded);
    let r = store.compact(&hero_proc_store::Retention { max_age_days: None, max_rows_per_table: Some(10) }, 0).unwrap();
    assert_eq!(r.jobs_deleted, 490);
    let stats = store.db_stats().unwrap();
    assert_eq!(stats.auto_vacuum, "incremental");
    assert_eq!(stats.freelist_count, 0);
    assert!(r.bytes_after < r.bytes_before);
}

/// Descriptors of this process open on `path` itself (not its -wal or -shm).
fn fds_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
        .count()
}

#[test]
fn a_store_opens_one_reader_and_more_only_when_reads_overlap() {
    let (_t, store) = open();
    let path = store.path().canonicalize().unwrap();
    // The writer, the checkpoint thread's connection and one reader.
    assert_eq!(fds_on(&path), 3, "a new store holds the writer, the checkpointer and one reader");
    store.put_action(&action("core", "a"), &Origin::manual()).unwrap();
    for _ in 0..100 {
        assert!(store.get_action("core", "a").unwrap().is_some());
    }
    assert_eq!(fds_on(&path), 3, "reads one after the other share the one reader");
    // Eight threads reading at once: more readers, never more than READERS.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..300 {
                    assert!(store.list_actions().unwrap().len() == 1);
                }
            });
        }
    });
    let n = fds_on(&path);
    assert!((3..=2 + hero_proc_store::READERS).contains(&n), "{n} descriptors on the database");
}
