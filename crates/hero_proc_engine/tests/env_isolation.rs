//! Its own test binary: it sets a variable in the process environment, which must not
//! race with other tests spawning processes.

use hero_proc_engine::paths::Expand;
use hero_proc_engine::process;
use hero_proc_spec::{Action, Interpreter, Restart, Stop};

#[tokio::test]
async fn key_material_is_not_inherited() {
    // SAFETY: the only test in this binary, so no other thread reads the environment.
    unsafe { std::env::set_var("SOPS_AGE_KEY", "AGE-SECRET-KEY-MARKER") };
    let dir = tempfile::tempdir().unwrap();
    let expand = Expand::new(dir.path(), dir.path());
    let path = dir.path().join("out.log");
    let out = std::fs::File::create(&path).unwrap();
    let action = Action {
        name: "t".into(),
        context: "core".into(),
        description: None,
        interpreter: Interpreter::Sh,
        script: "echo \"key=${SOPS_AGE_KEY:-none} root=$HERO_ROOTDIR\"".into(),
        env: Default::default(),
        cwd: None,
        process: false,
        restart: Restart::default(),
        stop: Stop::default(),
        timeout: None,
        health: vec![],
        metrics: None,
        depends_on: vec![],
        schedule: None,
        tags: vec![],
        user: None,
        group: None,
        pos: Default::default(),
    };
    let mut p = process::spawn(&action, &[], &expand, &out).unwrap();
    p.wait().await.unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), format!("key=none root={}\n", dir.path().display()));
}
