//! The `rpc_request` fuzz target's committed corpus (`fuzz/corpus/rpc_request/`), then
//! seeded mutations of it, through the daemon's real request path: the same harness as
//! the fuzz target (`fuzz/rpc_harness.rs`: a real store, engine and vault over a
//! temporary root, the `Router` the socket serves), on the debug build `cargo test`
//! already has, so CI checks the RPC path on every run without a second, sanitizer build
//! of the daemon. The libFuzzer target is for longer runs (docs/RELIABILITY.md).
//!
//! The seed changes on every run and is printed; `HERO_PROC_FUZZ_SEED=<seed>` replays a
//! run, `HERO_PROC_FUZZ_CASES=<n>` sets the number of mutated inputs (default 2000). A
//! failing input is written to `fuzz/artifacts/rpc_request/` and named in the failure.

// Its seed, counts and corpus reading; the mutations here are of JSON-RPC, its own.
#[allow(dead_code)]
#[path = "../../../tests/support/fuzz_replay.rs"]
mod fuzz_replay;
#[path = "../../../tests/support/rng.rs"]
mod rng;
#[path = "../../../fuzz/rpc_harness.rs"]
mod rpc_harness;

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use rng::Rng;

/// The first panic of any thread (a handler, the engine's task, a blocking task), which
/// the harness's answers alone could miss.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

#[test]
fn rpc_corpus_and_seeded_mutations_through_the_real_router() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let (seed, cases) = fuzz_replay::seed_and_cases(2000);
    println!(
        "rpc_corpus: seed {seed}, {cases} mutated inputs (replay: HERO_PROC_FUZZ_SEED={seed} cargo test --workspace \
         --test rpc_corpus)"
    );

    let mut corpus = fuzz_replay::read_inputs(&fuzz.join("corpus/rpc_request"));
    assert!(corpus.len() >= 20, "the committed corpus is missing: {} inputs", corpus.len());
    corpus.extend(fuzz_replay::read_inputs(&fuzz.join("seeds/rpc_request")));

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut first = PANIC.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(info.to_string());
        }
        drop(first);
        previous(info);
    }));

    // SAFETY: this binary's only test; nothing else reads the environment while it boots.
    let h = unsafe { rpc_harness::Harness::boot() };

    // The one method list, the router and the OpenRPC document agree: every method of
    // the list is served (a missing handler would answer "method not found", -32601),
    // and `rpc.discover` documents exactly the list, each with a result schema.
    let answer = |method: &str| -> Value {
        let req = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": { "name": "nope" } });
        let (_, body) = h.post(serde_json::to_vec(&req).unwrap().as_slice()).unwrap();
        serde_json::from_slice(&body).unwrap()
    };
    for m in hero_proc_rpc::methods::METHODS {
        // Harmless here: `core/nope` does not exist, and this daemon follows no repository.
        let a = answer(m.name);
        assert_ne!(a["error"]["code"], -32601, "{} is in the list but not served: {a}", m.name);
    }
    assert_eq!(answer("no.such")["error"]["code"], -32601);
    let doc = answer("rpc.discover");
    let documented: Vec<&str> =
        doc["result"]["methods"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let listed: Vec<&str> = hero_proc_rpc::methods::METHODS.iter().map(|m| m.name).collect();
    assert_eq!(documented, listed);
    for m in doc["result"]["methods"].as_array().unwrap() {
        assert!(m["result"]["schema"].as_object().is_some_and(|s| !s.is_empty()), "{}", m["name"]);
    }
    let started = Instant::now();
    let fail = |what: &str, input: &[u8], e: String| -> ! {
        let dir = fuzz.join("artifacts/rpc_request");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("replay-{seed}-{}", what.replace(['/', ' '], "_")));
        let _ = std::fs::write(&file, input);
        h.reap();
        panic!("{what} (kept in {}; seed {seed}): {e}\ninput: {}", file.display(), String::from_utf8_lossy(input));
    };
    let run = |what: &str, input: &[u8]| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.feed(input)))
            .unwrap_or_else(|_| Err("the request panicked".into()));
        let panicked = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (r, panicked) {
            (_, Some(p)) => fail(what, input, format!("a thread panicked: {p}")),
            (Err(e), None) => fail(what, input, e),
            (Ok(()), None) => {}
        }
    };

    for (name, input) in &corpus {
        run(&format!("corpus {name}"), input);
    }
    let replayed = started.elapsed();

    let methods: Vec<&str> = hero_proc_rpc::methods::METHODS.iter().map(|m| m.name).collect();
    let mut rng = Rng(seed);
    for i in 0..cases {
        let (_, base) = &corpus[rng.below(corpus.len())];
        let mut input = base.clone();
        for _ in 0..=rng.below(3) {
            input = mutate(&mut rng, input, &corpus, &methods);
        }
        run(&format!("mutation {i}"), &input);
    }
    println!(
        "rpc_corpus: {} corpus inputs in {:.1} s, {cases} mutated inputs in {:.1} s",
        corpus.len(),
        replayed.as_secs_f64(),
        (started.elapsed() - replayed).as_secs_f64()
    );

    // The daemon still answers, and what the inputs started is gone once reaped.
    let (status, body) = h.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(status == 200 && v["result"]["pid"] == std::process::id(), "{status} {v}");
    h.reap();
    assert_eq!(rpc_harness::descendants(std::process::id()), Vec::<u32>::new(), "processes left after the reap");
}

/// One mutation: of the bytes (as libFuzzer does), of the JSON tree (a value swapped for
/// an edge case, a key dropped, another method of the table, a batch, a notification),
/// or a splice with another input (more requests in one input).
fn mutate(rng: &mut Rng, mut input: Vec<u8>, corpus: &[(String, Vec<u8>)], methods: &[&str]) -> Vec<u8> {
    match rng.below(10) {
        0..=2 => {
            if input.is_empty() {
                input.push(b'{');
            }
            let at = rng.below(input.len());
            match rng.below(5) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input[at] = b"{}[]\":,0-9eE.\\ \nnulltruefalse\x00\xff"[rng.below(30)],
                2 => {
                    let end = (at + 1 + rng.below(16)).min(input.len());
                    input.drain(at..end);
                }
                3 => {
                    let end = (at + 1 + rng.below(16)).min(input.len());
                    let piece = input[at..end].to_vec();
                    input.splice(at..at, piece);
                }
                _ => {
                    let piece: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                    input.splice(at..at, piece);
                }
            }
            input
        }
        3..=8 => {
            // One line of the input, as JSON.
            let text = String::from_utf8_lossy(&input).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            let pick = rng.below(lines.len());
            let Some(mut v) = lines.get(pick).and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
                return mutate(rng, input, corpus, methods);
            };
            match rng.below(6) {
                0 => {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("method".into(), json!(methods[rng.below(methods.len())]));
                    }
                }
                1 => {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("id");
                    }
                }
                2 => v = json!([v.clone(), v]),
                3 => {
                    // Drop a key somewhere.
                    let mut paths = Vec::new();
                    nodes(&v, &mut Vec::new(), &mut paths);
                    let p = &paths[rng.below(paths.len())];
                    if let Some((last, parent)) = p.split_last()
                        && let Some(o) = at_path(&mut v, parent).and_then(Value::as_object_mut)
                    {
                        o.remove(last);
                    }
                }
                _ => {
                    let mut paths = Vec::new();
                    nodes(&v, &mut Vec::new(), &mut paths);
                    let p = paths[rng.below(paths.len())].clone();
                    let edge = edge_value(rng, corpus);
                    if let Some(slot) = at_path(&mut v, &p) {
                        *slot = edge;
                    }
                }
            }
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            if let Some(l) = out.get_mut(pick) {
                *l = v.to_string();
            }
            out.join("\n").into_bytes()
        }
        _ => {
            let (_, other) = &corpus[rng.below(corpus.len())];
            input.push(b'\n');
            input.extend_from_slice(other);
            input
        }
    }
}

/// Paths (object keys and array indexes as text) of every node under `v`.
fn nodes(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                at.push(k.clone());
                nodes(c, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                at.push(i.to_string());
                nodes(c, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(o) => o.get_mut(k),
        Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

fn edge_value(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(i64::MAX),
        5 => json!(u64::MAX),
        6 => json!(1e308),
        7 => json!(""),
        8 => json!("../../../../etc/passwd"),
        9 => json!("x".repeat(1 + rng.below(70_000))),
        10 => json!([]),
        11 => json!({}),
        12 => json!("*/0 * * * *"),
        13 => json!("core/\u{0}\u{202e}é"),
        14 => {
            // Deep nesting (the JSON decoders' recursion limits).
            let depth = 1 + rng.below(300);
            serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap_or(Value::Null)
        }
        _ => {
            // A value from another input.
            let (_, other) = &corpus[rng.below(corpus.len())];
            let text = String::from_utf8_lossy(other).into_owned();
            let Some(v) = text.lines().find_map(|l| serde_json::from_str::<Value>(l).ok()) else { return Value::Null };
            let mut paths = Vec::new();
            nodes(&v, &mut Vec::new(), &mut paths);
            let p = paths[rng.below(paths.len())].clone();
            let mut v = v;
            at_path(&mut v, &p).map(|x| x.take()).unwrap_or(Value::Null)
        }
    }
}
