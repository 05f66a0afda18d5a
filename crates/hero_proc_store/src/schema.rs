//! The internal schema and its forward-only migrations.
//!
//! RULE: entries of [`MIGRATIONS`] are NEVER edited, reordered or removed once released:
//! a database records how many it has applied (`PRAGMA user_version`), so an edited entry
//! would silently never run on existing databases. Change the schema by APPENDING a new
//! script. `tests::migrations_are_pinned` fails when an existing entry changes.

use rusqlite::{Connection, TransactionBehavior};

/// Marks the file as a hero_proc database (`PRAGMA application_id`, "HPRC").
pub const APPLICATION_ID: i32 = 0x4850_5243;

/// Forward-only schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
/// Append only (see the module comment).
pub const MIGRATIONS: &[&str] = &[
    // v1: the initial schema.
    r#"
PRAGMA application_id = 1213223491;

-- Config rows. spec_json is the canonical JSON of hero_proc_spec::{Action, Service}.
-- managed/revision are the reconciler's inventory: only managed rows are ever pruned.
CREATE TABLE actions (
    context       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    managed       INTEGER NOT NULL CHECK (managed IN (0, 1)),
    revision      TEXT,
    updated_at_ms INTEGER NOT NULL,
    spec_json     TEXT    NOT NULL CHECK (json_valid(spec_json)),
    PRIMARY KEY (context, name)
) STRICT;

CREATE TABLE services (
    context       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    -- Mirrors the spec's status so listings by status need not parse JSON.
    status        TEXT    NOT NULL CHECK (status IN ('start', 'stop', 'ignore')),
    managed       INTEGER NOT NULL CHECK (managed IN (0, 1)),
    revision      TEXT,
    updated_at_ms INTEGER NOT NULL,
    spec_json     TEXT    NOT NULL CHECK (json_valid(spec_json)),
    PRIMARY KEY (context, name)
) STRICT;

-- Secrets, encrypted by the caller. The ciphertext is the last column so metadata
-- listings never read its overflow pages.
CREATE TABLE secrets (
    context       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    managed       INTEGER NOT NULL CHECK (managed IN (0, 1)),
    revision      TEXT,
    updated_at_ms INTEGER NOT NULL,
    ciphertext    BLOB    NOT NULL,
    PRIMARY KEY (context, name)
) STRICT;

-- Ids are AUTOINCREMENT: never reused after compaction, because log files and external
-- references are keyed by them. finished_at_ms is set exactly when the phase is terminal.
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    label          TEXT    NOT NULL,
    phase          TEXT    NOT NULL
                   CHECK (phase IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    created_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    CHECK ((finished_at_ms IS NOT NULL) = (phase IN ('succeeded', 'failed', 'cancelled')))
) STRICT;
-- age-based compaction; id makes the (finished_at_ms, id) cursor an index range.
CREATE INDEX runs_finished ON runs (finished_at_ms, id) WHERE finished_at_ms IS NOT NULL;

-- One execution of an action. No output here: it lives in the file-based log store.
-- run_id has no ON DELETE action: deleting a run that still has jobs fails, so a run can
-- only ever go together with all of its jobs.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER REFERENCES runs (id),
    action_context  TEXT    NOT NULL,
    action_name     TEXT    NOT NULL,
    service_context TEXT,
    service_name    TEXT,
    phase           TEXT    NOT NULL
                    CHECK (phase IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt         INTEGER NOT NULL CHECK (attempt >= 0),
    pid             INTEGER,
    pid_start_ticks INTEGER,
    exit_code       INTEGER,
    signal          INTEGER,
    error           TEXT,
    created_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER,
    finished_at_ms  INTEGER,
    spec_json       TEXT    NOT NULL CHECK (json_valid(spec_json)),
    CHECK ((service_context IS NULL) = (service_name IS NULL)),
    CHECK ((finished_at_ms IS NOT NULL) = (phase IN ('succeeded', 'failed', 'cancelled')))
) STRICT;
-- list by phase, active_jobs(), counts by phase.
CREATE INDEX jobs_phase ON jobs (phase, id);
-- list by run, the run_id foreign key, compaction of a run with its jobs. Partial, so
-- it never competes with jobs_loose_finished for `run_id IS NULL`.
CREATE INDEX jobs_run ON jobs (run_id, id) WHERE run_id IS NOT NULL;
-- list by service.
CREATE INDEX jobs_service ON jobs (service_context, service_name, id) WHERE service_name IS NOT NULL;
-- age-based compaction of jobs outside runs (jobs of runs go with their run).
CREATE INDEX jobs_loose_finished ON jobs (finished_at_ms) WHERE run_id IS NULL;

CREATE TABLE sync_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    revision        TEXT    NOT NULL,
    author          TEXT,
    committed_at_ms INTEGER,
    applied_at_ms   INTEGER NOT NULL,
    result          TEXT    NOT NULL CHECK (result IN ('applied', 'failed', 'refused', 'noop')),
    error           TEXT,
    summary         TEXT    NOT NULL CHECK (json_valid(summary))
) STRICT;
CREATE INDEX sync_history_applied ON sync_history (applied_at_ms);
CREATE INDEX sync_history_result ON sync_history (result, id);

-- Exactly one row.
CREATE TABLE sync_state (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    applied_revision   TEXT,
    applied_at_ms      INTEGER,
    attempted_revision TEXT,
    attempted_at_ms    INTEGER,
    last_error         TEXT,
    suspended          INTEGER NOT NULL CHECK (suspended IN (0, 1)),
    pinned_revision    TEXT,
    updated_at_ms      INTEGER NOT NULL
) STRICT;
INSERT INTO sync_state (id, suspended, updated_at_ms) VALUES (1, 0, 0);

-- Config-repository migrations (migrations/*.rhai), not to be confused with this list.
CREATE TABLE migrations_applied (
    name          TEXT    PRIMARY KEY,
    sha256        TEXT    NOT NULL CHECK (length(sha256) = 64),
    revision      TEXT,
    applied_at_ms INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    result        TEXT    NOT NULL CHECK (result IN ('ok', 'failed')),
    error         TEXT
) STRICT;

-- Row counts, so the compactor learns how far a table is over its cap without counting
-- it: compaction cost follows the rows it deletes, not total history. Inserts are counted
-- by triggers; deletes (only the compactor deletes these rows) are subtracted by the
-- compactor once per batch, which is far cheaper than a per-row trigger. The store
-- recounts at every read-write open, so edits made with other tools cannot leave the
-- counts wrong for long.
CREATE TABLE row_counts (
    tbl TEXT    PRIMARY KEY,
    n   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO row_counts (tbl, n) VALUES ('jobs', 0), ('runs', 0), ('sync_history', 0);
CREATE TRIGGER jobs_count_ins AFTER INSERT ON jobs BEGIN
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'jobs';
END;
CREATE TRIGGER runs_count_ins AFTER INSERT ON runs BEGIN
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'runs';
END;
CREATE TRIGGER sync_history_count_ins AFTER INSERT ON sync_history BEGIN
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'sync_history';
END;
"#,
    // v2: a service stopped by hand stays stopped across daemon restarts, until someone
    // starts it or its config changes (issue 13).
    r#"
CREATE TABLE service_stops (
    context       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    stopped_at_ms INTEGER NOT NULL,
    PRIMARY KEY (context, name)
) STRICT;
"#,
    // v3: artifacts installed from the registry (SPEC 3.6): which versions the applied
    // revisions used, and when, so the cache keeps the last `keep` per name.
    r#"
CREATE TABLE artifacts (
    name            TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    used_by         TEXT    NOT NULL,
    installed_at_ms INTEGER NOT NULL,
    last_used_ms    INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;
"#,
    // v4: objects held out of sync by hand during an incident (`reconcile hold`): their
    // drift is not reverted until released or changed in git. `object` is the plan's
    // name for it (`service core/web`).
    r#"
CREATE TABLE sync_holds (
    object     TEXT    PRIMARY KEY,
    held_at_ms INTEGER NOT NULL
) STRICT;
"#,
    // v5: a change counter on config rows. Every insert or update of an action or service
    // takes the next `config_seq`, so a reader that keeps decoded rows (the reconciler's
    // live mirror) re-reads only the rows whose `version` is past what it has seen.
    // Triggers, not the Rust writers, so no write path can forget it.
    r#"
CREATE TABLE config_seq (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
) STRICT;
INSERT INTO config_seq (id, seq) VALUES (1, 0);
ALTER TABLE actions ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX actions_version ON actions (version);
CREATE INDEX services_version ON services (version);
CREATE TRIGGER actions_version_ins AFTER INSERT ON actions BEGIN
    UPDATE config_seq SET seq = seq + 1;
    UPDATE actions SET version = (SELECT seq FROM config_seq) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER actions_version_upd AFTER UPDATE OF context, name, managed, revision, updated_at_ms, spec_json ON actions BEGIN
    UPDATE config_seq SET seq = seq + 1;
    UPDATE actions SET version = (SELECT seq FROM config_seq) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER services_version_ins AFTER INSERT ON services BEGIN
    UPDATE config_seq SET seq = seq + 1;
    UPDATE services SET version = (SELECT seq FROM config_seq) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER services_version_upd AFTER UPDATE OF context, name, status, managed, revision, updated_at_ms, spec_json ON services BEGIN
    UPDATE config_seq SET seq = seq + 1;
    UPDATE services SET version = (SELECT seq FROM config_seq) WHERE rowid = NEW.rowid;
END;
"#,
];

/// Recomputes `row_counts` (see the v1 schema). Run at every read-write open.
pub(crate) const RECOUNT: &str = "
    UPDATE row_counts SET n = (SELECT count(*) FROM jobs) WHERE tbl = 'jobs';
    UPDATE row_counts SET n = (SELECT count(*) FROM runs) WHERE tbl = 'runs';
    UPDATE row_counts SET n = (SELECT count(*) FROM sync_history) WHERE tbl = 'sync_history';
";

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map(|v| v.clamp(0, i64::from(u32::MAX)) as u32)
}

/// Applies `migrations[from..]` in ONE immediate transaction (all or nothing), bumping
/// `user_version` with them. Returns the version reached. The caller has already checked
/// that `from <= migrations.len()`.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<(u32, u32)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read inside the write lock: another process may have migrated meanwhile.
    let from = user_version(&tx)?;
    let to = migrations.len() as u32;
    if from < to {
        for (i, script) in migrations.iter().enumerate().skip(from as usize) {
            tx.execute_batch(script)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
    }
    Ok((from, to.max(from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Pins every released migration. If this fails you edited an old entry: revert it and
    /// append a new migration instead. When you append one, add its hash here.
    #[test]
    fn migrations_are_pinned() {
        const PINNED: &[&str] = &[
            "dbd6805bb5c80efcce20122a401c4c0e8337af77e49ff242991039a1d6573dd8",
            "6140667883d6817231aa8b4f5729051a8b627fb6da2c856dbb989dd9850f11ae",
            "c3b6792173e5d00548ae02e1f7f78714ef77293e5a1f1575ed42ec5543fd0d1f",
            "bc512ef8e9b9ac7f6edef71e9fe8b6afb1f4fceb420e28a2983cde81a75d8114",
            "8b7b61483b509f96f15ea0ffbcbd760b13b500f89d590b2d7ae04fa245554b1f",
        ];
        let actual: Vec<String> = MIGRATIONS.iter().map(|m| hex::encode(Sha256::digest(m.as_bytes()))).collect();
        assert!(actual.len() >= PINNED.len(), "a released migration was removed: {actual:?}");
        for (i, (want, got)) in PINNED.iter().zip(&actual).enumerate() {
            assert_eq!(got, want, "MIGRATIONS[{i}] was edited; never edit a released migration, append a new one");
        }
        assert_eq!(actual.len(), PINNED.len(), "new migration(s) appended: pin their hashes here: {actual:?}");
    }

    fn fresh() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    #[test]
    fn migrate_applies_in_order_once() {
        let mut c = fresh();
        let list = ["CREATE TABLE a (x INTEGER);", "ALTER TABLE a ADD COLUMN y INTEGER;"];
        assert_eq!(migrate(&mut c, &list[..1]).unwrap(), (0, 1));
        assert_eq!(migrate(&mut c, &list).unwrap(), (1, 2));
        // Running again applies nothing (CREATE TABLE would fail if it did).
        assert_eq!(migrate(&mut c, &list).unwrap(), (2, 2));
        assert_eq!(user_version(&c).unwrap(), 2);
    }

    #[test]
    fn failed_migration_applies_nothing() {
        let mut c = fresh();
        let list = ["CREATE TABLE a (x INTEGER);", "THIS IS NOT SQL;"];
        assert!(migrate(&mut c, &list).is_err());
        assert_eq!(user_version(&c).unwrap(), 0);
        let tables: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 0, "the first migration must roll back with the second");
    }

    #[test]
    fn real_schema_applies() {
        let mut c = fresh();
        assert_eq!(migrate(&mut c, MIGRATIONS).unwrap(), (0, SCHEMA_VERSION));
        let app: i32 = c.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
        assert_eq!(app, APPLICATION_ID);
    }
}
