//! `service.*`: services' specs, their lifecycle (start, stop, restart) and runtime state,
//! and a hero service's domain sockets.

use std::sync::Arc;

use hero_proc_rpc::ErrorCode;
use hero_proc_rpc::methods as m;
use hero_proc_rpc::wire::*;
use hero_proc_store::{Origin, Ref};
use jsonrpsee::types::Params;

use super::common::*;
use super::{Ctx, Registry};

pub(super) fn register(r: &mut Registry) {
    r.add_raw::<m::ServiceSet, _, _>(set);
    r.add::<m::ServiceGet, _, _>(get);
    r.add::<m::ServiceList, _, _>(list);
    r.add::<m::ServiceDelete, _, _>(delete);
    r.add::<m::ServiceStart, _, _>(start);
    r.add::<m::ServiceStop, _, _>(stop);
    r.add::<m::ServiceRestart, _, _>(restart);
    r.add::<m::ServiceStatus, _, _>(status);
    r.add::<m::ServiceDomains, _, _>(domains);
    r.add::<m::ServiceDomainHealth, _, _>(domain_health);
}

async fn set(p: Params<'static>, c: Arc<Ctx>) -> Res<Done> {
    validate_object(&p, "service", hero_proc_spec::object::check_service)?;
    let s: ServiceSet = parse(&p)?;
    check_names("service", &s.service.context, &s.service.name)?;
    for r in s.service.actions.iter().chain(&s.service.requires).chain(&s.service.after) {
        let (ctx, name) = r.split();
        check_names("reference", ctx.unwrap_or(&s.service.context), name)?;
    }
    let w = hand_warning(&c, "service", &Ref::new(&s.service.context, &s.service.name));
    let r = c.engine.set_service(s.service, Origin::manual()).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    r
}

async fn get(r: Ref, c: Arc<Ctx>) -> Res<hero_proc_spec::Service> {
    match c.engine.store.get_service(&r.context, &r.name).map_err(store_err)? {
        Some(s) => Ok(s.value),
        None => {
            Err(rpc_err(ErrorCode::NotFound, format!("no service {r}; `hero_proc service list` shows what exists")))
        }
    }
}

async fn list(_: NoParams, c: Arc<Ctx>) -> Res<Vec<ServiceView>> {
    c.engine.status(None).await.map(crate::views::services).map_err(engine_err)
}

/// A change by hand: the reconciler reports it as drift on its next sync.
async fn delete(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    let w = hand_warning(&c, "service", &r);
    let res = c.engine.delete_service(r).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    res
}

async fn start(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    // Starting a service git wants started is what git says; one it wants stopped is not.
    let wants_stop = c
        .engine
        .store
        .get_service(&r.context, &r.name)
        .ok()
        .flatten()
        .is_some_and(|s| s.value.status == hero_proc_spec::ServiceStatus::Stop);
    let w = if wants_stop { hand_warning(&c, "service", &r) } else { None };
    let res = c.engine.start_service(r).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    res
}

async fn stop(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    let wants_start = c
        .engine
        .store
        .get_service(&r.context, &r.name)
        .ok()
        .flatten()
        .is_some_and(|s| s.value.status == hero_proc_spec::ServiceStatus::Start);
    let w = if wants_start { hand_warning(&c, "service", &r) } else { None };
    let res = c.engine.stop_service(r).await.map(done).map(|d| warned(d, w)).map_err(engine_err);
    c.reconciler.changed_by_hand();
    res
}

async fn restart(r: Ref, c: Arc<Ctx>) -> Res<Done> {
    c.engine.restart_service(r).await.map(done).map_err(engine_err)
}

async fn status(r: Ref, c: Arc<Ctx>) -> Res<ServiceView> {
    let mut v = c.engine.status(Some(r.clone())).await.map(crate::views::services).map_err(engine_err)?;
    v.pop().ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no service {r}")))
}

async fn domains(r: Ref, c: Arc<Ctx>) -> Res<Vec<CheckView>> {
    let expand = c.paths.expand();
    let tree = hero_proc_engine::health::hero_sockets(&r.name, &expand).await;
    Ok(tree.into_iter().filter(|s| s.role.contains('/')).map(|s| probed_now(s.role, &s.health)).collect())
}

async fn domain_health(q: DomainHealth, c: Arc<Ctx>) -> Res<CheckView> {
    let path = c.paths.root.join(format!("var/sockets/{}_server/{}/{}.sock", q.name, q.domain_context, q.domain));
    if !path.exists() {
        return Err(rpc_err(ErrorCode::NotFound, format!("no domain socket {}", path.display())));
    }
    let h = hero_proc_engine::health::check(
        &hero_proc_spec::Probe::UnixSocket(path.display().to_string()),
        &q.name,
        &c.paths.expand(),
    )
    .await;
    Ok(probed_now(format!("{}/{}", q.domain_context, q.domain), &h))
}

/// A probe made for this answer, as a check view.
fn probed_now(check: String, h: &hero_proc_engine::health::Health) -> CheckView {
    crate::views::check(hero_proc_engine::CheckResult::new(check, h.to_result(), hero_proc_engine::now_ms()))
}
