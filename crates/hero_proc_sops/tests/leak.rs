//! No decrypted value and no key material may appear in any error's Display
//! or Debug, nor in `DecryptedFile`'s Debug. A marker secret is planted and
//! every reachable error path is triggered.

use crate::common::{Sandbox, enc_of, line, remove_line, replace_line};
use hero_proc_sops::{KeyEnv, LoadedIdentities, decrypt, key_names, load_identities};

const MARK: &str = "LEAKMARK9c1e";

fn assert_clean(what: &str, shown: &str, secret_line: &str) {
    assert!(!shown.contains(MARK), "{what}: marker leaked: {shown}");
    assert!(!shown.contains(secret_line), "{what}: key leaked: {shown}");
    assert!(!shown.contains("AGE-SECRET-KEY"), "{what}: key material leaked: {shown}");
}

#[test]
fn marker_never_leaks() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let other = sb.keygen();
    let secret = key.secret_line();
    let plain = format!(
        "password: {MARK}-one\nnum_mark: 12345\nlist:\n  - {MARK}-two\n  - {MARK}-three\nnested:\n  token: {MARK}-four\nnote_unencrypted: {MARK}-five\n"
    );
    let enc = sb.encrypt_to(&plain, &[&key], &[]);
    let ids = key.loaded();

    // Success: Debug of the whole result shows no value.
    let file = decrypt(&enc, &ids).expect("decrypt");
    assert_eq!(file.get("password").unwrap().expose(), format!("{MARK}-one"));
    assert_clean("DecryptedFile Debug", &format!("{file:?} {file:#?}"), &secret);
    assert_clean("LoadedIdentities Debug", &format!("{ids:?}"), &secret);
    assert_clean(
        "SecretValue",
        &format!("{} {:?}", file.get("password").unwrap(), file.get("password").unwrap()),
        &secret,
    );

    let pw = enc_of(&enc, "password:");
    let tok = enc_of(&enc, "    token:");
    let data_at = pw.find("data:").unwrap() + 5;
    let mut flipped = pw.clone().into_bytes();
    flipped[data_at] = if flipped[data_at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();

    let mut broken: Vec<(&str, Vec<u8>)> = vec![
        ("flipped", replace_line(&enc, "password:", &format!("password: {flipped}"))),
        ("swapped", replace_line(&enc, "password:", &format!("password: {tok}"))),
        ("removed", remove_line(&enc, "num_mark:")),
        ("plaintext where encrypted", replace_line(&enc, "password:", &format!("password: {MARK}"))),
        ("int plaintext where encrypted", replace_line(&enc, "password:", "password: 12345")),
        (
            "malformed enc",
            replace_line(&enc, "password:", &format!("password: ENC[AES256_GCM,data:{MARK},iv:x,tag:y,type:str]")),
        ),
        (
            "unknown type",
            replace_line(&enc, "password:", &format!("password: {}", pw.replace("type:str", &format!("type:{MARK}")))),
        ),
        ("retyped", replace_line(&enc, "password:", &format!("password: {}", pw.replace("type:str", "type:int")))),
        (
            "retyped float",
            replace_line(&enc, "password:", &format!("password: {}", pw.replace("type:str", "type:float"))),
        ),
        (
            "retyped bool",
            replace_line(&enc, "password:", &format!("password: {}", pw.replace("type:str", "type:bool"))),
        ),
        (
            "retyped time",
            replace_line(&enc, "password:", &format!("password: {}", pw.replace("type:str", "type:time"))),
        ),
        ("edited plaintext", replace_line(&enc, "note_unencrypted:", &format!("note_unencrypted: {MARK}-x"))),
        ("lastmodified", replace_line(&enc, "    lastmodified:", "    lastmodified: \"2001-01-01T00:00:00Z\"")),
        ("lastmodified garbage", replace_line(&enc, "    lastmodified:", &format!("    lastmodified: {MARK}"))),
        ("mac garbage", replace_line(&enc, "    mac:", &format!("    mac: {MARK}"))),
        ("mac removed", remove_line(&enc, "    mac:")),
        ("bad tag", replace_line(&enc, "password:", &format!("password: !!int {MARK}"))),
        ("yaml error", replace_line(&enc, "password:", &format!("password: \"{MARK}"))),
        ("dup key", replace_line(&enc, "num_mark:", &line(&enc, "password:"))),
        ("big int", replace_line(&enc, "note_unencrypted:", "note_unencrypted: 18446744073709551615")),
        ("bad binary", replace_line(&enc, "note_unencrypted:", &format!("note_unencrypted: !!binary {MARK}"))),
        ("non-utf8", {
            let mut v = enc.clone();
            v.extend_from_slice(format!("x: {MARK}").as_bytes());
            v.push(0xff);
            v
        }),
    ];
    broken.push(("unencrypted-regex rule", {
        let e = sb.encrypt_to(&plain, &[&key], &["--encrypted-regex", "^password$"]);
        replace_line(&e, "password:", &format!("password: {MARK}"))
    }));

    for (what, bytes) in &broken {
        match decrypt(bytes, &ids) {
            Ok(f) => assert_clean(what, &format!("{f:?}"), &secret),
            Err(e) => assert_clean(what, &format!("{e} {e:?}"), &secret),
        }
        if let Err(e) = key_names(bytes) {
            assert_clean(what, &format!("{e} {e:?}"), &secret);
        }
        // And with the wrong key: the error lists recipients and sources only.
        if let Err(e) = decrypt(bytes, &other.loaded()) {
            assert_clean(what, &format!("{e} {e:?}"), &other.secret_line());
        }
    }

    // Identity loading errors never show key text or command lines.
    let bad_file = sb.path().join("bad-key.txt");
    std::fs::write(&bad_file, format!("AGE-SECRET-KEY-1{MARK}\n")).unwrap();
    let env = KeyEnv {
        hero_proc_age_key_file: Some(bad_file),
        sops_age_key: Some(format!("{MARK}\n{secret}x").into()),
        sops_age_key_cmd: Some(format!("echo {MARK}; echo {MARK} >&2; exit 4")),
        ..KeyEnv::default()
    };
    assert_clean("KeyEnv Debug", &format!("{env:?}"), &secret);
    let err = load_identities(&env).expect_err("nothing valid");
    assert_clean("KeyError", &format!("{err} {err:?}"), &secret);
    let err = LoadedIdentities::parse(&format!("{secret}\n{MARK}\n"), "inline").expect_err("bad line");
    assert_clean("parse error", &format!("{err} {err:?}"), &secret);
    // With one good source, the others' failures are recorded, still clean.
    let env = KeyEnv {
        sops_age_key_file: Some(key.file.clone()),
        sops_age_key_cmd: Some(format!("echo {MARK}")),
        ..KeyEnv::default()
    };
    let loaded = load_identities(&env).expect("one good source");
    assert_clean("sources", &format!("{loaded:?} {:?}", loaded.sources()), &secret);
    let not_ours = sb.encrypt_to("x: y\n", &[&other], &[]);
    let err = decrypt(&not_ours, &loaded).expect_err("not ours");
    assert_clean("no match", &format!("{err} {err:?}"), &secret);
}
