//! The `proc` module of migrations over the daemon's own engine: the same operations
//! the RPC uses. Migrations run on a blocking thread (Rhai is synchronous), so each call
//! enters the runtime with `Handle::block_on`.
//!
//! Objects a migration creates are *not* managed from git (it is not their source):
//! they are listed as unmanaged by the plan and never pruned.

use hero_proc_engine::Engine;
use hero_proc_logstore::{Level, LogEvent};
use hero_proc_migrate::{LogLevel, ProcOps, ServiceRow, log_source};
use hero_proc_spec::{Action, Service};
use hero_proc_store::{Origin, Ref};
use tokio::runtime::Handle;

pub struct EngineProc {
    engine: Engine,
    handle: Handle,
}

impl EngineProc {
    /// `handle`: the daemon's runtime; call the methods from a blocking thread only.
    pub fn new(engine: Engine, handle: Handle) -> EngineProc {
        EngineProc { engine, handle }
    }
}

impl ProcOps for EngineProc {
    fn action_set(&mut self, action: Action) -> Result<(), String> {
        self.handle.block_on(self.engine.set_action(action, Origin::manual())).map(|_| ()).map_err(|e| e.to_string())
    }

    fn action_get(&mut self, context: &str, name: &str) -> Result<Option<Action>, String> {
        self.engine.store.get_action(context, name).map(|a| a.map(|s| s.value)).map_err(|e| e.to_string())
    }

    fn action_list(&mut self) -> Result<Vec<Action>, String> {
        self.engine.store.list_actions().map(|l| l.into_iter().map(|s| s.value).collect()).map_err(|e| e.to_string())
    }

    fn service_set(&mut self, service: Service) -> Result<(), String> {
        self.handle.block_on(self.engine.set_service(service, Origin::manual())).map(|_| ()).map_err(|e| e.to_string())
    }

    fn service_start(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.handle.block_on(self.engine.start_service(Ref::new(context, name))).map(|_| ()).map_err(|e| e.to_string())
    }

    fn service_stop(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.handle.block_on(self.engine.stop_service(Ref::new(context, name))).map(|_| ()).map_err(|e| e.to_string())
    }

    fn service_restart(&mut self, context: &str, name: &str) -> Result<(), String> {
        self.handle
            .block_on(self.engine.restart_service(Ref::new(context, name)))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn service_list(&mut self) -> Result<Vec<ServiceRow>, String> {
        let views = self.handle.block_on(self.engine.status(None)).map_err(|e| e.to_string())?;
        Ok(views.into_iter().map(|v| (v.context, v.name, v.state.as_str().to_owned())).collect())
    }

    fn run_submit(&mut self, actions: Vec<String>) -> Result<i64, String> {
        let refs = actions.iter().map(|a| Ref::parse(a).map_err(|e| e.to_string())).collect::<Result<Vec<Ref>, _>>()?;
        let label = format!("migration: {}", actions.join(" "));
        self.handle.block_on(self.engine.submit(refs, label)).map(|s| s.run.0).map_err(|e| e.to_string())
    }

    fn secret_names(&mut self, context: &str) -> Result<Vec<String>, String> {
        let list = self.engine.store.list_secrets().map_err(|e| e.to_string())?;
        let mut names: Vec<String> =
            list.into_iter().filter(|s| s.value.context == context).map(|s| s.value.name).collect();
        names.sort();
        Ok(names)
    }

    fn log(&mut self, migration: &str, level: LogLevel, message: &str) -> Result<(), String> {
        let level = match level {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        };
        let source = log_source(migration);
        tracing::info!(source = %source, "{message}");
        let ev = LogEvent {
            ts_ms: hero_proc_store::now_ms(),
            source,
            level,
            message: message.to_owned(),
            job_id: None,
            fields: Default::default(),
        };
        self.engine.logs.append_event(&ev).map_err(|e| e.to_string())
    }
}
