//! The SQL behind every operation, on a borrowed connection (plain or in a transaction).

use std::path::Path;
use std::time::Duration;

use hero_proc_spec::{Action, Service, ServiceStatus};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use crate::error::{StoreError, classify};
use crate::types::*;

/// A connection plus what error messages need.
pub(crate) struct Db<'a> {
    pub conn: &'a Connection,
    pub path: &'a Path,
    pub busy_timeout: Duration,
}

pub(crate) type R<T> = Result<T, StoreError>;

const TERMINAL_SQL: &str = "('succeeded', 'failed', 'cancelled')";

pub(crate) const JOB_COLS: &str = "id, run_id, action_context, action_name, service_context, service_name, phase, \
     attempt, pid, pid_start_ticks, exit_code, signal, error, created_at_ms, started_at_ms, finished_at_ms, spec_json";

const RUN_COLS: &str = "id, label, phase, created_at_ms, finished_at_ms";

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn status_str(s: ServiceStatus) -> &'static str {
    match s {
        ServiceStatus::Start => "start",
        ServiceStatus::Stop => "stop",
        ServiceStatus::Ignore => "ignore",
    }
}

fn conversion(col: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, msg.into())
}

fn phase_at(row: &Row<'_>, col: usize) -> rusqlite::Result<Phase> {
    let s: String = row.get(col)?;
    Phase::parse(&s).ok_or_else(|| conversion(col, format!("unknown phase `{s}`")))
}

fn opt_u32(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<u32>> {
    row.get::<_, Option<i64>>(col)?
        .map(|v| u32::try_from(v).map_err(|_| conversion(col, format!("{v} out of range"))))
        .transpose()
}

fn opt_u64(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<u64>> {
    row.get::<_, Option<i64>>(col)?
        .map(|v| u64::try_from(v).map_err(|_| conversion(col, format!("{v} out of range"))))
        .transpose()
}

fn opt_i32(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<i32>> {
    row.get::<_, Option<i64>>(col)?
        .map(|v| i32::try_from(v).map_err(|_| conversion(col, format!("{v} out of range"))))
        .transpose()
}

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let service = match (row.get::<_, Option<String>>(4)?, row.get::<_, Option<String>>(5)?) {
        (Some(context), Some(name)) => Some(Ref { context, name }),
        _ => None,
    };
    Ok(Job {
        id: JobId(row.get(0)?),
        run_id: row.get::<_, Option<i64>>(1)?.map(RunId),
        action: Ref { context: row.get(2)?, name: row.get(3)? },
        service,
        phase: phase_at(row, 6)?,
        attempt: opt_u32(row, 7)?.unwrap_or(0),
        pid: opt_u32(row, 8)?,
        pid_start_ticks: opt_u64(row, 9)?,
        exit_code: opt_i32(row, 10)?,
        signal: opt_i32(row, 11)?,
        error: row.get(12)?,
        created_at_ms: row.get(13)?,
        started_at_ms: row.get(14)?,
        finished_at_ms: row.get(15)?,
        spec_json: row.get(16)?,
    })
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: RunId(row.get(0)?),
        label: row.get(1)?,
        phase: phase_at(row, 2)?,
        created_at_ms: row.get(3)?,
        finished_at_ms: row.get(4)?,
    })
}

/// Raw config row before its JSON is decoded.
struct RawRow {
    context: String,
    name: String,
    managed: bool,
    revision: Option<String>,
    updated_at_ms: i64,
    spec_json: String,
}

fn raw_from_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        context: row.get(0)?,
        name: row.get(1)?,
        managed: row.get(2)?,
        revision: row.get(3)?,
        updated_at_ms: row.get(4)?,
        spec_json: row.get(5)?,
    })
}

impl<'a> Db<'a> {
    pub fn new(conn: &'a Connection, path: &'a Path, busy_timeout: Duration) -> Db<'a> {
        Db { conn, path, busy_timeout }
    }

    /// Classifies a SQLite error, reading the OS errno behind it from the connection.
    pub fn fail(&self, e: rusqlite::Error) -> StoreError {
        // SAFETY: the handle is valid while `self.conn` is borrowed; sqlite3_system_errno
        // only reads a field of the connection.
        let errno = unsafe { ffi::sqlite3_system_errno(self.conn.handle()) };
        classify(self.path, self.busy_timeout, errno, e)
    }

    fn serde(&self, what: String, source: serde_json::Error) -> StoreError {
        StoreError::Serde { path: self.path.to_path_buf(), what, source }
    }

    fn not_found(&self, kind: &'static str, key: impl ToString) -> StoreError {
        StoreError::NotFound { path: self.path.to_path_buf(), kind, key: key.to_string() }
    }

    fn invalid(&self, what: String) -> StoreError {
        StoreError::InvalidState { path: self.path.to_path_buf(), what }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, kind: &str, raw: RawRow) -> R<Stored<T>> {
        let value = serde_json::from_str(&raw.spec_json)
            .map_err(|e| self.serde(format!("decode {kind} {}/{}", raw.context, raw.name), e))?;
        Ok(Stored { value, managed: raw.managed, revision: raw.revision, updated_at_ms: raw.updated_at_ms })
    }

    // ---- actions ----------------------------------------------------------------------

    pub fn put_action(&self, a: &Action, origin: &Origin) -> R<()> {
        let json =
            serde_json::to_string(a).map_err(|e| self.serde(format!("encode action {}/{}", a.context, a.name), e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO actions (context, name, managed, revision, updated_at_ms, spec_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (context, name) DO UPDATE SET managed = excluded.managed,
                     revision = excluded.revision, updated_at_ms = excluded.updated_at_ms,
                     spec_json = excluded.spec_json",
            )
            .and_then(|mut s| s.execute(params![a.context, a.name, origin.managed, origin.revision, now_ms(), json]))
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn get_action(&self, context: &str, name: &str) -> R<Option<Stored<Action>>> {
        let raw = self
            .conn
            .prepare_cached(
                "SELECT context, name, managed, revision, updated_at_ms, spec_json FROM actions
                 WHERE context = ?1 AND name = ?2",
            )
            .and_then(|mut s| s.query_row(params![context, name], raw_from_row).optional())
            .map_err(|e| self.fail(e))?;
        raw.map(|r| self.decode("action", r)).transpose()
    }

    pub fn list_actions(&self) -> R<Vec<Stored<Action>>> {
        let raws = self.query_raw(
            "SELECT context, name, managed, revision, updated_at_ms, spec_json FROM actions ORDER BY context, name",
            [],
        )?;
        raws.into_iter().map(|r| self.decode("action", r)).collect()
    }

    /// The rows past `since` and how many rows there are: run in one read snapshot.
    pub fn changed_since<T: serde::de::DeserializeOwned>(&self, kind: &str, table: &str, since: i64) -> R<Changed<T>> {
        let count = format!("SELECT count(*) FROM {table}");
        let rows: i64 = self
            .conn
            .prepare_cached(&count)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.fail(e))?;
        let sql = format!(
            "SELECT context, name, managed, revision, updated_at_ms, spec_json, version FROM {table} WHERE version > ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.fail(e))?;
        let raws = stmt
            .query_map([since], |row| Ok((raw_from_row(row)?, row.get::<_, i64>(6)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.fail(e))?;
        let changed = raws.into_iter().map(|(raw, v)| Ok((v, self.decode(kind, raw)?))).collect::<R<Vec<_>>>()?;
        Ok(Changed { rows: rows as usize, changed })
    }

    pub fn delete_action(&self, context: &str, name: &str) -> R<bool> {
        self.delete_keyed("DELETE FROM actions WHERE context = ?1 AND name = ?2", context, name)
    }

    // ---- services ---------------------------------------------------------------------

    pub fn put_service(&self, s: &Service, origin: &Origin) -> R<()> {
        let json =
            serde_json::to_string(s).map_err(|e| self.serde(format!("encode service {}/{}", s.context, s.name), e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO services (context, name, status, managed, revision, updated_at_ms, spec_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (context, name) DO UPDATE SET status = excluded.status,
                     managed = excluded.managed, revision = excluded.revision,
                     updated_at_ms = excluded.updated_at_ms, spec_json = excluded.spec_json",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.context,
                    s.name,
                    status_str(s.status),
                    origin.managed,
                    origin.revision,
                    now_ms(),
                    json
                ])
            })
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn get_service(&self, context: &str, name: &str) -> R<Option<Stored<Service>>> {
        let raw = self
            .conn
            .prepare_cached(
                "SELECT context, name, managed, revision, updated_at_ms, spec_json FROM services
                 WHERE context = ?1 AND name = ?2",
            )
            .and_then(|mut s| s.query_row(params![context, name], raw_from_row).optional())
            .map_err(|e| self.fail(e))?;
        raw.map(|r| self.decode("service", r)).transpose()
    }

    pub fn list_services(&self, status: Option<ServiceStatus>) -> R<Vec<Stored<Service>>> {
        let raws = match status {
            None => self.query_raw(
                "SELECT context, name, managed, revision, updated_at_ms, spec_json FROM services
                 ORDER BY context, name",
                [],
            )?,
            Some(st) => self.query_raw(
                "SELECT context, name, managed, revision, updated_at_ms, spec_json FROM services
                 WHERE status = ?1 ORDER BY context, name",
                [status_str(st)],
            )?,
        };
        raws.into_iter().map(|r| self.decode("service", r)).collect()
    }

    pub fn delete_service(&self, context: &str, name: &str) -> R<bool> {
        self.delete_keyed("DELETE FROM services WHERE context = ?1 AND name = ?2", context, name)
    }

    fn query_raw<P: rusqlite::Params>(&self, sql: &str, p: P) -> R<Vec<RawRow>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_map(p, raw_from_row)?.collect())
            .map_err(|e| self.fail(e))
    }

    fn delete_keyed(&self, sql: &str, context: &str, name: &str) -> R<bool> {
        let n = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params![context, name]))
            .map_err(|e| self.fail(e))?;
        Ok(n > 0)
    }

    // ---- secrets ----------------------------------------------------------------------

    /// Insert or replace a secret. `updated_at_ms` is when its value last changed: a
    /// re-seal of the same value (an adoption, the same value set again) keeps it, so
    /// processes started since are not taken for older than their secrets.
    pub fn put_secret(&self, s: &SecretRecord, origin: &Origin) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO secrets (context, name, fingerprint, source, managed, revision, updated_at_ms, ciphertext)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (context, name) DO UPDATE SET fingerprint = excluded.fingerprint,
                     source = excluded.source, managed = excluded.managed, revision = excluded.revision,
                     updated_at_ms = CASE WHEN secrets.fingerprint = excluded.fingerprint
                         THEN secrets.updated_at_ms ELSE excluded.updated_at_ms END,
                     ciphertext = excluded.ciphertext",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.context,
                    s.name,
                    s.fingerprint,
                    s.source,
                    origin.managed,
                    origin.revision,
                    now_ms(),
                    s.ciphertext
                ])
            })
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn get_secret(&self, context: &str, name: &str) -> R<Option<Stored<SecretRecord>>> {
        self.conn
            .prepare_cached(
                "SELECT context, name, fingerprint, source, managed, revision, updated_at_ms, ciphertext
                 FROM secrets WHERE context = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![context, name], |r| {
                    Ok(Stored {
                        value: SecretRecord {
                            context: r.get(0)?,
                            name: r.get(1)?,
                            fingerprint: r.get(2)?,
                            source: r.get(3)?,
                            ciphertext: r.get(7)?,
                        },
                        managed: r.get(4)?,
                        revision: r.get(5)?,
                        updated_at_ms: r.get(6)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.fail(e))
    }

    /// Never selects the ciphertext column.
    pub fn list_secrets(&self) -> R<Vec<Stored<SecretMeta>>> {
        self.conn
            .prepare_cached(
                "SELECT context, name, fingerprint, source, managed, revision, updated_at_ms
                 FROM secrets ORDER BY context, name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(Stored {
                        value: SecretMeta {
                            context: r.get(0)?,
                            name: r.get(1)?,
                            fingerprint: r.get(2)?,
                            source: r.get(3)?,
                        },
                        managed: r.get(4)?,
                        revision: r.get(5)?,
                        updated_at_ms: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.fail(e))
    }

    pub fn delete_secret(&self, context: &str, name: &str) -> R<bool> {
        self.delete_keyed("DELETE FROM secrets WHERE context = ?1 AND name = ?2", context, name)
    }

    // ---- runs -------------------------------------------------------------------------

    pub fn create_run(&self, label: &str, created_at_ms: i64) -> R<RunId> {
        self.create_run_in(label, Phase::Pending, created_at_ms)
    }

    /// A new run in `phase` (pending or running: a run is created unfinished).
    pub fn create_run_in(&self, label: &str, phase: Phase, created_at_ms: i64) -> R<RunId> {
        if phase.is_terminal() {
            return Err(self.invalid(format!("a new run cannot be {phase}")));
        }
        self.conn
            .prepare_cached("INSERT INTO runs (label, phase, created_at_ms) VALUES (?1, ?2, ?3) RETURNING id")
            .and_then(|mut s| s.query_row(params![label, phase.as_str(), created_at_ms], |r| r.get(0)))
            .map(RunId)
            .map_err(|e| self.fail(e))
    }

    pub fn set_run_phase(&self, id: RunId, phase: Phase, at_ms: i64) -> R<()> {
        // Built once: this runs for every run that ends.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE runs SET phase = ?2,
                     finished_at_ms = CASE WHEN ?2 IN {TERMINAL_SQL} THEN ?3 ELSE NULL END
                 WHERE id = ?1 AND phase NOT IN {TERMINAL_SQL}"
            )
        });
        let n = self
            .conn
            .prepare_cached(&SQL)
            .and_then(|mut s| s.execute(params![id.0, phase.as_str(), at_ms]))
            .map_err(|e| self.fail(e))?;
        if n == 1 {
            return Ok(());
        }
        match self.get_run(id)? {
            None => Err(self.not_found("run", id)),
            // Setting the same final phase again is a harmless repeat.
            Some(r) if r.phase == phase => Ok(()),
            Some(r) => Err(self.invalid(format!("run {id} is already {}; a finished run does not change", r.phase))),
        }
    }

    pub fn get_run(&self, id: RunId) -> R<Option<Run>> {
        self.conn
            .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id.0], run_from_row).optional())
            .map_err(|e| self.fail(e))
    }

    pub fn list_runs(&self, limit: u32, before_id: Option<RunId>) -> R<Vec<Run>> {
        self.conn
            .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id < ?1 ORDER BY id DESC LIMIT ?2"))
            .and_then(|mut s| s.query_map(params![before_id.map_or(i64::MAX, |b| b.0), limit], run_from_row)?.collect())
            .map_err(|e| self.fail(e))
    }

    /// [`Db::list_runs`] with each run's newest `max_jobs` jobs (ascending by id) and
    /// whether it has more: two queries, whatever the number of runs.
    pub fn list_runs_with_jobs(&self, limit: u32, before_id: Option<RunId>, max_jobs: u32) -> R<Vec<RunWithJobs>> {
        let runs = self.list_runs(limit, before_id)?;
        let (Some(newest), Some(oldest)) = (runs.first(), runs.last()) else { return Ok(Vec::new()) };
        // The page is every run with an id in [oldest, newest], so one range covers them.
        let sql = format!(
            "SELECT {JOB_COLS} FROM (
                 SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY id DESC) AS nth
                 FROM jobs WHERE run_id BETWEEN ?1 AND ?2)
             WHERE nth <= ?3 ORDER BY run_id, id"
        );
        let jobs: Vec<Job> = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params![oldest.id.0, newest.id.0, i64::from(max_jobs) + 1], job_from_row)?.collect()
            })
            .map_err(|e| self.fail(e))?;
        let mut by_run: std::collections::HashMap<i64, Vec<Job>> = std::collections::HashMap::new();
        for j in jobs {
            if let Some(r) = j.run_id {
                by_run.entry(r.0).or_default().push(j);
            }
        }
        Ok(runs
            .into_iter()
            .map(|run| {
                let mut jobs = by_run.remove(&run.id.0).unwrap_or_default();
                // Ascending, so the extra one fetched to tell `jobs_more` is the oldest.
                let jobs_more = jobs.len() > max_jobs as usize;
                if jobs_more {
                    jobs.drain(..jobs.len() - max_jobs as usize);
                }
                RunWithJobs { run, jobs, jobs_more }
            })
            .collect())
    }

    // ---- jobs -------------------------------------------------------------------------

    pub fn create_job(&self, job: &NewJob<'_>) -> R<JobId> {
        let a = job.action;
        let json =
            serde_json::to_string(a).map_err(|e| self.serde(format!("encode action {}/{}", a.context, a.name), e))?;
        let (sctx, sname) = match &job.service {
            Some(s) => (Some(s.context.as_str()), Some(s.name.as_str())),
            None => (None, None),
        };
        let res = self
            .conn
            .prepare_cached(
                "INSERT INTO jobs (run_id, action_context, action_name, service_context, service_name, phase,
                                   attempt, created_at_ms, spec_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8) RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        job.run_id.map(|r| r.0),
                        a.context,
                        a.name,
                        sctx,
                        sname,
                        job.attempt,
                        job.created_at_ms,
                        json
                    ],
                    |r| r.get(0),
                )
            });
        match res {
            Ok(id) => Ok(JobId(id)),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                Err(self.not_found("run", job.run_id.map_or_else(String::new, |r| r.to_string())))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    pub fn mark_job_running(&self, id: JobId, pid: u32, pid_start_ticks: Option<u64>, started_at_ms: i64) -> R<()> {
        let ticks = pid_start_ticks.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let n = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET phase = 'running', pid = ?2, pid_start_ticks = ?3, started_at_ms = ?4
                 WHERE id = ?1 AND phase = 'pending'",
            )
            .and_then(|mut s| s.execute(params![id.0, pid, ticks, started_at_ms]))
            .map_err(|e| self.fail(e))?;
        if n == 1 { Ok(()) } else { Err(self.job_transition_error(id, "mark running")) }
    }

    pub fn finish_job(&self, id: JobId, exit: &JobExit) -> R<()> {
        if !exit.phase.is_terminal() {
            return Err(self.invalid(format!("finish_job({id}) needs a final phase, got {}", exit.phase)));
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET phase = ?2, exit_code = ?3, signal = ?4, error = ?5, finished_at_ms = ?6
                 WHERE id = ?1 AND phase IN ('pending', 'running')",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.0,
                    exit.phase.as_str(),
                    exit.exit_code,
                    exit.signal,
                    exit.error,
                    exit.finished_at_ms
                ])
            })
            .map_err(|e| self.fail(e))?;
        if n == 1 { Ok(()) } else { Err(self.job_transition_error(id, "finish")) }
    }

    /// `pending -> final` with the start (PID, start time, when) and the exit in one
    /// statement: a job that started and ended between two writes.
    pub fn finish_started_job(
        &self,
        id: JobId,
        pid: u32,
        pid_start_ticks: Option<u64>,
        started_at_ms: i64,
        exit: &JobExit,
    ) -> R<()> {
        if !exit.phase.is_terminal() {
            return Err(self.invalid(format!("finish_started_job({id}) needs a final phase, got {}", exit.phase)));
        }
        let ticks = pid_start_ticks.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let n = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET phase = ?2, pid = ?3, pid_start_ticks = ?4, started_at_ms = ?5, exit_code = ?6,
                                 signal = ?7, error = ?8, finished_at_ms = ?9
                 WHERE id = ?1 AND phase = 'pending'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.0,
                    exit.phase.as_str(),
                    pid,
                    ticks,
                    started_at_ms,
                    exit.exit_code,
                    exit.signal,
                    exit.error,
                    exit.finished_at_ms
                ])
            })
            .map_err(|e| self.fail(e))?;
        if n == 1 { Ok(()) } else { Err(self.job_transition_error(id, "start and finish")) }
    }

    fn job_transition_error(&self, id: JobId, what: &str) -> StoreError {
        match self.get_job(id) {
            Ok(None) => self.not_found("job", id),
            Ok(Some(j)) => self.invalid(format!("cannot {what} job {id}: it is already {}", j.phase)),
            Err(e) => e,
        }
    }

    pub fn get_job(&self, id: JobId) -> R<Option<Job>> {
        self.conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id.0], job_from_row).optional())
            .map_err(|e| self.fail(e))
    }

    pub fn list_jobs(&self, f: &JobFilter) -> R<Vec<Job>> {
        let mut sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id < ?1");
        let mut args: Vec<Value> = vec![Value::Integer(f.before_id.map_or(i64::MAX, |b| b.0))];
        if let Some(p) = f.phase {
            args.push(Value::Text(p.as_str().to_owned()));
            sql.push_str(&format!(" AND phase = ?{}", args.len()));
        }
        if let Some(s) = &f.service {
            args.push(Value::Text(s.context.clone()));
            args.push(Value::Text(s.name.clone()));
            sql.push_str(&format!(" AND service_context = ?{} AND service_name = ?{}", args.len() - 1, args.len()));
        }
        if let Some(r) = f.run_id {
            args.push(Value::Integer(r.0));
            sql.push_str(&format!(" AND run_id = ?{}", args.len()));
        }
        args.push(Value::Integer(i64::from(f.limit)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_map(rusqlite::params_from_iter(args), job_from_row)?.collect())
            .map_err(|e| self.fail(e))
    }

    pub fn active_jobs(&self) -> R<Vec<Job>> {
        self.conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE phase IN ('pending', 'running') ORDER BY id"))
            .and_then(|mut s| s.query_map([], job_from_row)?.collect())
            .map_err(|e| self.fail(e))
    }

    pub fn job_counts_by_phase(&self) -> R<PhaseCounts> {
        let rows: Vec<(String, i64)> = self
            .conn
            .prepare_cached("SELECT phase, count(*) FROM jobs GROUP BY phase")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.fail(e))?;
        let mut c = PhaseCounts::default();
        for (p, n) in rows {
            if let Some(p) = Phase::parse(&p) {
                *c.slot(p) = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(c)
    }

    // ---- holds --------------------------------------------------------------------------

    /// Hold `object` out of sync (`true` if it was not held yet).
    pub fn put_hold(&self, object: &str, at_ms: i64) -> R<bool> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO sync_holds (object, held_at_ms) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![object, at_ms]))
            .map(|n| n > 0)
            .map_err(|e| self.fail(e))
    }

    /// `false` if it was not held.
    pub fn delete_hold(&self, object: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM sync_holds WHERE object = ?1")
            .and_then(|mut s| s.execute(params![object]))
            .map(|n| n > 0)
            .map_err(|e| self.fail(e))
    }

    /// Held objects and since when, by name.
    pub fn list_holds(&self) -> R<Vec<(String, i64)>> {
        self.conn
            .prepare_cached("SELECT object, held_at_ms FROM sync_holds ORDER BY object")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.fail(e))
    }

    // ---- artifacts ----------------------------------------------------------------------

    /// Insert or refresh an artifact version's record (`installed_at_ms` is kept).
    pub fn put_artifact(&self, a: &ArtifactRecord) -> R<()> {
        let used_by = serde_json::to_string(&a.used_by)
            .map_err(|e| self.serde(format!("encode users of {}@{}", a.name, a.version), e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO artifacts (name, version, digest, size, used_by, installed_at_ms, last_used_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name, version) DO UPDATE SET digest = excluded.digest, size = excluded.size,
                   used_by = excluded.used_by, last_used_ms = excluded.last_used_ms",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.name,
                    a.version,
                    a.digest,
                    i64::try_from(a.size).unwrap_or(i64::MAX),
                    used_by,
                    a.installed_at_ms,
                    a.last_used_ms
                ])
            })
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    pub fn list_artifacts(&self) -> R<Vec<ArtifactRecord>> {
        let rows: Vec<(ArtifactRecord, String)> = self
            .conn
            .prepare_cached(
                "SELECT name, version, digest, size, used_by, installed_at_ms, last_used_ms
                 FROM artifacts ORDER BY name, last_used_ms DESC, version",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    let size: i64 = r.get(3)?;
                    Ok((
                        ArtifactRecord {
                            name: r.get(0)?,
                            version: r.get(1)?,
                            digest: r.get(2)?,
                            size: u64::try_from(size).unwrap_or(0),
                            used_by: Vec::new(),
                            installed_at_ms: r.get(5)?,
                            last_used_ms: r.get(6)?,
                        },
                        r.get(4)?,
                    ))
                })?
                .collect()
            })
            .map_err(|e| self.fail(e))?;
        rows.into_iter()
            .map(|(mut a, used_by)| {
                a.used_by = serde_json::from_str(&used_by)
                    .map_err(|e| self.serde(format!("decode users of {}@{}", a.name, a.version), e))?;
                Ok(a)
            })
            .collect()
    }

    pub fn delete_artifact(&self, name: &str, version: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM artifacts WHERE name = ?1 AND version = ?2")
            .and_then(|mut s| s.execute(params![name, version]))
            .map(|n| n > 0)
            .map_err(|e| self.fail(e))
    }

    // ---- sync -------------------------------------------------------------------------

    pub fn record_sync(&self, rec: &SyncRecord) -> R<i64> {
        let summary = serde_json::to_string(&rec.summary)
            .map_err(|e| self.serde(format!("encode sync summary of {}", rec.revision), e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO sync_history (revision, author, committed_at_ms, applied_at_ms, result, error, summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        rec.revision,
                        rec.author,
                        rec.committed_at_ms,
                        rec.applied_at_ms,
                        rec.result.as_str(),
                        rec.error,
                        summary
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(|e| self.fail(e))
    }

    pub fn history(&self, limit: u32) -> R<Vec<SyncEntry>> {
        let rows: Vec<(i64, SyncRecord, String)> = self
            .conn
            .prepare_cached(
                "SELECT id, revision, author, committed_at_ms, applied_at_ms, result, error, summary
                 FROM sync_history ORDER BY id DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit], |r| {
                    let result: String = r.get(5)?;
                    let rec = SyncRecord {
                        revision: r.get(1)?,
                        author: r.get(2)?,
                        committed_at_ms: r.get(3)?,
                        applied_at_ms: r.get(4)?,
                        summary: serde_json::Value::Null,
                        result: SyncResult::parse(&result)
                            .ok_or_else(|| conversion(5, format!("unknown sync result `{result}`")))?,
                        error: r.get(6)?,
                    };
                    Ok((r.get(0)?, rec, r.get(7)?))
                })?
                .collect()
            })
            .map_err(|e| self.fail(e))?;
        rows.into_iter()
            .map(|(id, mut record, summary)| {
                record.summary =
                    serde_json::from_str(&summary).map_err(|e| self.serde(format!("decode sync summary {id}"), e))?;
                Ok(SyncEntry { id, record })
            })
            .collect()
    }

    pub fn sync_state(&self) -> R<SyncState> {
        self.conn
            .prepare_cached(
                "SELECT applied_revision, applied_at_ms, attempted_revision, attempted_at_ms, last_error,
                        suspended, pinned_revision FROM sync_state WHERE id = 1",
            )
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(SyncState {
                        applied_revision: r.get(0)?,
                        applied_at_ms: r.get(1)?,
                        attempted_revision: r.get(2)?,
                        attempted_at_ms: r.get(3)?,
                        last_error: r.get(4)?,
                        suspended: r.get(5)?,
                        pinned_revision: r.get(6)?,
                    })
                })
            })
            .map_err(|e| self.fail(e))
    }

    pub fn set_sync_state(&self, s: &SyncState) -> R<()> {
        self.conn
            .prepare_cached(
                "UPDATE sync_state SET applied_revision = ?1, applied_at_ms = ?2, attempted_revision = ?3,
                     attempted_at_ms = ?4, last_error = ?5, suspended = ?6, pinned_revision = ?7,
                     updated_at_ms = ?8
                 WHERE id = 1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.applied_revision,
                    s.applied_at_ms,
                    s.attempted_revision,
                    s.attempted_at_ms,
                    s.last_error,
                    s.suspended,
                    s.pinned_revision,
                    now_ms()
                ])
            })
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    // ---- config-repository migrations -------------------------------------------------

    pub fn record_migration(&self, m: &AppliedMigration) -> R<()> {
        let existing: Option<String> = self
            .conn
            .prepare_cached("SELECT result FROM migrations_applied WHERE name = ?1")
            .and_then(|mut s| s.query_row([&m.name], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        if existing.as_deref() == Some(MigrationResult::Ok.as_str()) {
            return Err(self.invalid(format!(
                "migration {} is already recorded as applied; applied migrations are never re-run or rewritten",
                m.name
            )));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO migrations_applied (name, sha256, revision, applied_at_ms, duration_ms, result, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, revision = excluded.revision,
                     applied_at_ms = excluded.applied_at_ms, duration_ms = excluded.duration_ms,
                     result = excluded.result, error = excluded.error",
            )
            .and_then(|mut s| {
                s.execute(params![
                    m.name,
                    m.sha256,
                    m.revision,
                    m.applied_at_ms,
                    m.duration_ms,
                    m.result.as_str(),
                    m.error
                ])
            })
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn applied_migrations(&self) -> R<Vec<AppliedMigration>> {
        self.conn
            .prepare_cached(
                "SELECT name, sha256, revision, applied_at_ms, duration_ms, result, error
                 FROM migrations_applied ORDER BY name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    let result: String = r.get(5)?;
                    Ok(AppliedMigration {
                        name: r.get(0)?,
                        sha256: r.get(1)?,
                        revision: r.get(2)?,
                        applied_at_ms: r.get(3)?,
                        duration_ms: r.get(4)?,
                        result: if result == "ok" { MigrationResult::Ok } else { MigrationResult::Failed },
                        error: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.fail(e))
    }

    // ---- stop intent ------------------------------------------------------------------

    pub fn set_stop_intent(&self, context: &str, name: &str, at_ms: i64) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO service_stops (context, name, stopped_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (context, name) DO UPDATE SET stopped_at_ms = excluded.stopped_at_ms",
            )
            .and_then(|mut s| s.execute(params![context, name, at_ms]))
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    pub fn clear_stop_intent(&self, context: &str, name: &str) -> R<bool> {
        self.delete_keyed("DELETE FROM service_stops WHERE context = ?1 AND name = ?2", context, name)
    }

    pub fn stop_intents(&self) -> R<Vec<(Ref, i64)>> {
        self.conn
            .prepare_cached("SELECT context, name, stopped_at_ms FROM service_stops ORDER BY context, name")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((Ref::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| self.fail(e))
    }

    // ---- stats ------------------------------------------------------------------------

    pub fn pragma_u64(&self, name: &str) -> R<u64> {
        let v: i64 = self.conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).map_err(|e| self.fail(e))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    pub fn db_stats(&self) -> R<DbStats> {
        let page_size = self.pragma_u64("page_size")?;
        let page_count = self.pragma_u64("page_count")?;
        let freelist_count = self.pragma_u64("freelist_count")?;
        let auto_vacuum = match self.pragma_u64("auto_vacuum")? {
            0 => "none",
            1 => "full",
            _ => "incremental",
        };
        let schema_version = u32::try_from(self.pragma_u64("user_version")?).unwrap_or(u32::MAX);
        let (db_bytes, wal_bytes) = file_sizes(self.path);
        Ok(DbStats {
            page_size,
            page_count,
            freelist_count,
            size_bytes: page_size * page_count,
            file_bytes: db_bytes + wal_bytes,
            wal_bytes,
            auto_vacuum: auto_vacuum.to_owned(),
            schema_version,
        })
    }
}

/// Bytes of the database file and of its WAL (0 when absent).
pub(crate) fn file_sizes(path: &Path) -> (u64, u64) {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (len(path), len(Path::new(&wal)))
}
