//! `artifact.*`: the versions in the daemon's artifact cache (SPEC 3.6).

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add::<m::ArtifactList, _, _>(list);
    r.add::<m::ArtifactPrune, _, _>(prune);
}

async fn list(_: NoParams, c: Arc<Ctx>) -> Res<Vec<ArtifactView>> {
    let a = c.reconciler.artifacts().clone();
    let rows = tokio::task::spawn_blocking(move || a.list())
        .await
        .map_err(|e| rpc_err(ErrorCode::Internal, e.to_string()))?
        .map_err(store_err)?;
    Ok(rows
        .into_iter()
        .map(|(r, cached)| ArtifactView {
            name: r.name,
            version: r.version,
            digest: r.digest,
            size: r.size,
            used_by: r.used_by,
            installed_at_ms: r.installed_at_ms,
            last_used_ms: r.last_used_ms,
            cached,
        })
        .collect())
}

async fn prune(q: ArtifactPrune, c: Arc<Ctx>) -> Res<ArtifactPruned> {
    let keep = match q.keep {
        Some(k) if (1..=1000).contains(&k) => k,
        Some(k) => {
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!("invalid parameters: keep: {k} is not between 1 and 1000"),
            ));
        }
        None => c.reconciler.registry_keep(),
    };
    let p = c.reconciler.prune_artifacts(keep).await.map_err(reconcile_err)?;
    Ok(ArtifactPruned { versions: p.versions, files: p.files, bytes: p.bytes })
}
