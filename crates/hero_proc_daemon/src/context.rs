//! What the RPC handlers, `/metrics` and the webhook share: the one daemon context.

use std::sync::Arc;

use hero_proc_engine::Engine;

use crate::Paths;
use crate::compactor::Compactor;
use crate::reconciler::Reconciler;
use crate::secrets::Vault;

pub struct Ctx {
    pub engine: Engine,
    pub paths: Paths,
    pub compactor: Compactor,
    pub vault: Arc<Vault>,
    pub reconciler: Arc<Reconciler>,
    pub started_at_ms: i64,
}

impl Ctx {
    pub fn new(
        engine: Engine,
        paths: Paths,
        compactor: Compactor,
        vault: Arc<Vault>,
        reconciler: Arc<Reconciler>,
    ) -> Self {
        Ctx { engine, paths, compactor, vault, reconciler, started_at_ms: hero_proc_engine::supervisor::now_ms() }
    }
}
