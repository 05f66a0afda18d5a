//! The RPC request decoder: a JSON-RPC envelope, then each method's parameters into the
//! wire types the daemon decodes them into. Errors only, no panic.
#![no_main]

use hero_proc_rpc::wire::*;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Envelope {
    jsonrpc: String,
    id: Option<serde_json::Value>,
    method: String,
    #[serde(default)]
    params: serde_json::Value,
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Envelope>(data) else { return };
    let p = req.params;
    match req.method.as_str() {
        "action.set" => drop(serde_json::from_value::<ActionSet>(p)),
        "service.set" => drop(serde_json::from_value::<ServiceSet>(p)),
        "run.submit" => drop(serde_json::from_value::<RunSubmit>(p)),
        "run.get" => drop(serde_json::from_value::<RunGet>(p)),
        "job.list" => drop(serde_json::from_value::<JobQuery>(p)),
        "log.query" => drop(serde_json::from_value::<LogQuery>(p)),
        "secret.set" => drop(serde_json::from_value::<SecretSet>(p)),
        _ => drop(serde_json::from_value::<ObjectRef>(p)),
    }
});
