//! Interop with the real sops CLI: files written by `sops --encrypt` decrypt
//! to what `sops --decrypt` prints, and every tampering sops refuses is
//! refused here too (and vice versa).

use crate::common;

use crate::common::{Sandbox, enc_of, line, remove_line, replace_line};
use hero_proc_sops::{KeyEnv, SopsError, Value, ValueKind, decrypt, inspect, key_names, load_identities};

const TYPES: &str = r#"a_str: hello world
an_int: 42
neg: -7
big: 9223372036854775807
f_tenth: 0.1
f_three: 3.0
f_big: 1e21
f_small: 1.5e-7
f_mid: 123456789.125
f_neg: -2.5
f_int_like: 100000.0
f_million: 1e6
b_true: true
b_false: false
empty: ""
quoted_num: "0123"
uni: "héllo ✓ 日本 🚀"
multi: |
  line one
  line two
nul: null
when: 2001-12-14t21:59:43.10-05:00
day: 2002-12-14
db:
  password: hunter2
  port: 5432
  nested:
    deep: true
list:
  - one
  - 2
  - nested: x
  - [inner, 3.5]
"#;

#[test]
fn scalars_match_sops_extract() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let enc = sb.encrypt_to(TYPES, &[&key], &[]);
    let file = decrypt(&enc, &key.loaded()).expect("decrypt");
    assert_eq!(file.recipients(), std::slice::from_ref(&key.recipient));
    let doc = &file.documents()[0];
    for (name, value) in doc.entries() {
        let Value::Scalar(s) = value else { continue };
        let theirs = sb.sops_extract(&enc, &key.file, name);
        assert_eq!(s.expose(), common::extract_text(s.kind(), &theirs), "value of {name}");
    }
    // Spot checks, including Go float formatting.
    let get = |k: &str| file.get(k).unwrap_or_else(|| panic!("{k}")).expose().to_string();
    assert_eq!(get("a_str"), "hello world");
    assert_eq!(get("an_int"), "42");
    assert_eq!(get("big"), "9223372036854775807");
    assert_eq!(get("f_tenth"), "0.1");
    assert_eq!(get("f_three"), "3");
    assert_eq!(get("f_big"), "1e+21");
    assert_eq!(get("f_small"), "1.5e-07");
    assert_eq!(get("f_mid"), "1.23456789125e+08");
    assert_eq!(get("f_int_like"), "100000");
    assert_eq!(get("f_million"), "1e+06");
    assert_eq!(get("b_true"), "true");
    assert_eq!(get("b_false"), "false");
    assert_eq!(get("empty"), "");
    assert_eq!(get("quoted_num"), "0123");
    assert_eq!(get("uni"), "héllo ✓ 日本 🚀");
    assert_eq!(get("multi"), "line one\nline two\n");
    assert_eq!(get("when"), "2001-12-14T21:59:43.1-05:00");
    assert_eq!(get("day"), "2002-12-14T00:00:00Z");
    assert!(matches!(doc.value("nul"), Some(Value::Null)));
    assert_eq!(file.get("f_big").unwrap().kind(), ValueKind::Float);
    assert_eq!(file.get("when").unwrap().kind(), ValueKind::Time);
    assert!(file.get("a_str").unwrap().is_encrypted());
    assert!(!file.get("empty").unwrap().is_encrypted(), "sops never encrypts empty strings");
    // Nested maps and lists.
    let db = doc.value("db").expect("db");
    assert_eq!(db.get("password").and_then(Value::as_secret).unwrap().expose(), "hunter2");
    assert_eq!(db.get("port").and_then(Value::as_secret).unwrap().expose(), "5432");
    let deep = db.get("nested").and_then(|n| n.get("deep")).and_then(Value::as_secret).unwrap();
    assert_eq!(deep.expose(), "true");
    let Some(Value::List(items)) = doc.value("list") else { panic!("list") };
    assert_eq!(items[0].as_secret().unwrap().expose(), "one");
    assert_eq!(items[1].as_secret().unwrap().expose(), "2");
    assert_eq!(items[2].get("nested").and_then(Value::as_secret).unwrap().expose(), "x");
    let Value::List(inner) = &items[3] else { panic!("inner list") };
    assert_eq!(inner[1].as_secret().unwrap().expose(), "3.5");
    assert!(file.get("db").is_none(), "get() is for scalars");
    // Key order is the file's order.
    assert_eq!(file.keys()[..3], ["a_str", "an_int", "neg"]);
}

#[test]
fn key_names_without_a_key() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let enc = sb.encrypt_to(TYPES, &[&key], &[]);
    let names = key_names(&enc).expect("names");
    assert_eq!(names.first().map(String::as_str), Some("a_str"));
    assert!(names.contains(&"db".to_string()));
    assert!(!names.contains(&"sops".to_string()));
    assert_eq!(names.len(), TYPES.lines().filter(|l| !l.starts_with(' ') && l.contains(':')).count());
    let info = inspect(&enc).expect("inspect");
    assert_eq!(info.recipients, vec![key.recipient.clone()]);
}

#[test]
fn multi_document_files() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "a: 1\nb: two\n---\nc: 3.5\nd: [x, true]\n---\ne: last\nb: again\n";
    let enc = sb.encrypt_to(plain, &[&key], &[]);
    let file = sb.assert_agrees("multi-doc", &enc, &key).expect("decrypt");
    assert_eq!(file.documents().len(), 3);
    assert_eq!(file.documents()[1].get("c").unwrap().expose(), "3.5");
    assert_eq!(file.documents()[2].get("b").unwrap().expose(), "again");
    assert_eq!(file.get("b").unwrap().expose(), "two", "get() takes the first document that has the key");
    assert_eq!(file.keys(), ["a", "b", "c", "d", "e"]);
    assert_eq!(key_names(&enc).unwrap(), ["a", "b", "c", "d", "e"]);
    // Dropping the last document changes the MAC.
    let text = String::from_utf8(enc.clone()).unwrap();
    let cut = text.rfind("\n---\n").unwrap();
    sb.assert_agrees("last document removed", &text.as_bytes()[..=cut], &key).expect_err("refused");
}

#[test]
fn unencrypted_suffix_flag() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "token: s3cret\nurl_plain: https://example.org\nport_plain: 0x1F\nnest_plain:\n  inner: visible\n";
    let enc = sb.encrypt_to(plain, &[&key], &["--unencrypted-suffix", "_plain"]);
    assert!(line(&enc, "url_plain:").contains("https://example.org"));
    let file = sb.assert_agrees("suffix", &enc, &key).expect("decrypt");
    assert!(file.get("token").unwrap().is_encrypted());
    assert!(!file.get("url_plain").unwrap().is_encrypted());
    assert_eq!(file.get("port_plain").unwrap().expose(), "31");
    // A plaintext value is covered by the MAC: editing it is refused by both.
    let edited = replace_line(&enc, "url_plain:", "url_plain: https://evil.example");
    let err = sb.assert_agrees("edited plaintext", &edited, &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacMismatch), "{err}");
}

#[test]
fn encrypted_regex_flag() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain =
        "user: bob\npassword: pw\nport: 5432\nnest:\n  password: inner\n  other: o\ndata:\n  - password: x\n    z: 1\n";
    let enc = sb.encrypt_to(plain, &[&key], &["--encrypted-regex", "^pass"]);
    assert_eq!(line(&enc, "user:"), "user: bob");
    let file = sb.assert_agrees("encrypted-regex", &enc, &key).expect("decrypt");
    assert_eq!(file.get("password").unwrap().expose(), "pw");
    assert!(file.get("password").unwrap().is_encrypted());
    assert!(!file.get("user").unwrap().is_encrypted());
    let nest = file.documents()[0].value("nest").unwrap();
    assert_eq!(nest.get("password").and_then(Value::as_secret).unwrap().expose(), "inner");
    // Putting the secret in clear where the rule says "encrypted" is refused.
    let clear = replace_line(&enc, "password:", "password: pw");
    let err = sb.assert_agrees("plaintext where encrypted", &clear, &key).expect_err("refused");
    assert!(matches!(err, SopsError::InvalidEncValue { .. }), "{err}");
    assert!(err.to_string().contains("password"), "{err}");
}

#[test]
fn other_rules_and_mac_only_encrypted() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "user: bob\npassword: pw\nport: 5432\napi_secret: tok\nflag_unencrypted: true\n";
    for args in [
        &["--unencrypted-regex", "^(user|port)$"][..],
        &["--encrypted-suffix", "_secret"][..],
        &["--mac-only-encrypted"][..],
        &["--mac-only-encrypted", "--encrypted-regex", "^pass"][..],
    ] {
        let enc = sb.encrypt_to(plain, &[&key], args);
        let file = sb.assert_agrees(&format!("{args:?}"), &enc, &key).expect("decrypt");
        assert_eq!(file.get("password").unwrap().expose(), "pw", "{args:?}");
        assert_eq!(file.get("port").unwrap().expose(), "5432", "{args:?}");
    }
}

#[test]
fn changed_plaintext_value_matches_sops_decision() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "secret: s\nport_unencrypted: 5432\nnote_unencrypted: hello\n";
    // Default: the MAC covers plaintext values, so sops refuses the edit.
    let enc = sb.encrypt_to(plain, &[&key], &[]);
    let edited = replace_line(&enc, "port_unencrypted:", "port_unencrypted: 5433");
    let err = sb.assert_agrees("plaintext edited (full MAC)", &edited, &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacMismatch));
    // The same number written differently is the same value for sops.
    let same = replace_line(&enc, "port_unencrypted:", "port_unencrypted: 0x1538");
    let ok = sb.assert_agrees("plaintext rewritten equivalently", &same, &key).expect("accepted");
    assert_eq!(ok.get("port_unencrypted").unwrap().expose(), "5432");
    let quoted = replace_line(&enc, "port_unencrypted:", "port_unencrypted: \"5432\"");
    sb.assert_agrees("plaintext int quoted (same MAC text)", &quoted, &key).expect("accepted");
    // With mac_only_encrypted, plaintext values are outside the MAC: sops accepts.
    let enc = sb.encrypt_to(plain, &[&key], &["--mac-only-encrypted"]);
    let edited = replace_line(&enc, "note_unencrypted:", "note_unencrypted: changed");
    let file = sb.assert_agrees("plaintext edited (mac_only_encrypted)", &edited, &key).expect("accepted");
    assert_eq!(file.get("note_unencrypted").unwrap().expose(), "changed");
    assert!(!file.get("note_unencrypted").unwrap().is_encrypted());
}

#[test]
fn two_recipients_either_key_works() {
    require_tools!();
    let sb = Sandbox::new();
    let (k1, k2) = (sb.keygen(), sb.keygen());
    let enc = sb.encrypt_to("token: abc\n", &[&k1, &k2], &[]);
    for k in [&k1, &k2] {
        let file = sb.assert_agrees("either key", &enc, k).expect("decrypt");
        assert_eq!(file.get("token").unwrap().expose(), "abc");
        assert_eq!(file.recipients(), &[k1.recipient.clone(), k2.recipient.clone()]);
    }
}

#[test]
fn sops_yaml_creation_rules() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    std::fs::write(
        sb.path().join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: .*\n    age: {}\n    encrypted_regex: ^(token|password)$\n",
            key.recipient
        ),
    )
    .unwrap();
    let enc = sb.encrypt("token: t\nname: visible\n", &[]);
    let file = sb.assert_agrees("creation rule", &enc, &key).expect("decrypt");
    assert!(file.get("token").unwrap().is_encrypted());
    assert!(!file.get("name").unwrap().is_encrypted());
}

#[test]
fn shamir_key_groups() {
    require_tools!();
    let sb = Sandbox::new();
    let (k1, k2, k3) = (sb.keygen(), sb.keygen(), sb.keygen());
    std::fs::write(
        sb.path().join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: .*\n    shamir_threshold: 2\n    key_groups:\n      - age: [{}]\n      - age: [{}]\n      - age: [{}]\n",
            k1.recipient, k2.recipient, k3.recipient
        ),
    )
    .unwrap();
    let enc = sb.encrypt("secret: s3cr3t\n", &[]);
    assert!(String::from_utf8_lossy(&enc).contains("key_groups"));
    // Two keys (two groups) recover the data key.
    let both = sb.path().join("k13.txt");
    let text = format!("{}\n{}\n", k1.secret_line(), k3.secret_line());
    std::fs::write(&both, &text).unwrap();
    let two = common::Key { file: both, recipient: k1.recipient.clone() };
    let file = sb.assert_agrees("shamir 2 of 3", &enc, &two).expect("decrypt");
    assert_eq!(file.get("secret").unwrap().expose(), "s3cr3t");
    assert_eq!(file.recipients().len(), 3);
    // One key is not enough, for sops and for us.
    let err = sb.assert_agrees("shamir 1 of 3", &enc, &k2).expect_err("refused");
    assert!(matches!(err, SopsError::NotEnoughKeyGroups { recovered: 1, required: 2, .. }), "{err}");
}

#[test]
fn single_key_group_is_written_flat() {
    require_tools!();
    let sb = Sandbox::new();
    let (k1, k2) = (sb.keygen(), sb.keygen());
    std::fs::write(
        sb.path().join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: .*\n    key_groups:\n      - age: [{}, {}]\n",
            k1.recipient, k2.recipient
        ),
    )
    .unwrap();
    let enc = sb.encrypt("secret: s\n", &[]);
    sb.assert_agrees("one key group", &enc, &k2).expect("decrypt");
}

#[test]
fn file_not_for_us_names_sources_and_recipients() {
    require_tools!();
    let sb = Sandbox::new();
    let (theirs, ours) = (sb.keygen(), sb.keygen());
    let enc = sb.encrypt_to("token: abc\n", &[&theirs], &[]);
    let env = KeyEnv {
        hero_proc_age_key_file: Some(ours.file.clone()),
        sops_age_key_file: Some(sb.path().join("missing.txt")),
        hero_rootdir: Some(sb.path().join("root")),
        ..KeyEnv::default()
    };
    let keys = load_identities(&env).expect("our key loads");
    let err = decrypt(&enc, &keys).expect_err("not for us");
    let SopsError::NoMatchingIdentity { file_recipients, our_recipients, sources } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!(file_recipients, std::slice::from_ref(&theirs.recipient));
    assert_eq!(our_recipients, std::slice::from_ref(&ours.recipient));
    assert_eq!(sources.len(), 6);
    let msg = err.to_string();
    for needle in [
        "HERO_PROC_AGE_KEY_FILE",
        ours.file.to_str().unwrap(),
        "SOPS_AGE_KEY_FILE",
        "file not found",
        "SOPS_AGE_KEY: not set",
        "cfg/age/keys.txt",
        "SOPS_AGE_KEY_CMD",
        "XDG_CONFIG_HOME",
        &theirs.recipient,
        &ours.recipient,
        "sops updatekeys",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    assert!(!msg.contains(&ours.secret_line()) && !msg.contains("AGE-SECRET-KEY"), "key material in {msg}");
    assert!(sb.sops_decrypt(&enc, &ours.file, None).is_err(), "sops agrees");
}

#[test]
fn tampered_values_are_refused_like_sops() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "alpha: first-secret\nbeta: second-secret\nlist:\n  - one\n  - two\nport_unencrypted: 1\n";
    let enc = sb.encrypt_to(plain, &[&key], &[]);
    sb.assert_agrees("untouched", &enc, &key).expect("baseline decrypts");

    // Flip one byte of the ciphertext.
    let alpha = enc_of(&enc, "alpha:");
    let data_at = alpha.find("data:").unwrap() + 5;
    let mut flipped = alpha.clone().into_bytes();
    flipped[data_at] = if flipped[data_at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let bad = replace_line(&enc, "alpha:", &format!("alpha: {flipped}"));
    let err = sb.assert_agrees("flipped data byte", &bad, &key).expect_err("refused");
    assert!(matches!(&err, SopsError::DecryptFailed { path } if path.as_str() == "alpha"), "{err}");

    // Swap two values between keys.
    let beta = enc_of(&enc, "beta:");
    let swapped = replace_line(&enc, "alpha:", &format!("alpha: {beta}"));
    let swapped = replace_line(&swapped, "beta:", &format!("beta: {alpha}"));
    let err = sb.assert_agrees("swapped values", &swapped, &key).expect_err("refused");
    assert!(matches!(err, SopsError::DecryptFailed { .. }), "{err}");

    // Swap two list items (same additional data: only the MAC sees it).
    let one = enc_of(&enc, "    - ENC");
    let text = String::from_utf8(enc.clone()).unwrap();
    let items: Vec<&str> = text.lines().filter(|l| l.starts_with("    - ENC")).collect();
    let (i0, i1) = (items[0].to_string(), items[1].to_string());
    assert!(i0.contains(&one));
    let swapped = text.replacen(&i0, "@@", 1).replacen(&i1, &i0, 1).replacen("@@", &i1, 1);
    let err = sb.assert_agrees("swapped list items", swapped.as_bytes(), &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacMismatch), "{err}");

    // Remove a key.
    let removed = remove_line(&enc, "beta:");
    let err = sb.assert_agrees("removed key", &removed, &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacMismatch), "{err}");

    // Reorder two keys.
    let (la, lb) = (line(&enc, "alpha:"), line(&enc, "beta:"));
    let reordered = text.replacen(&la, "@@", 1).replacen(&lb, &la, 1).replacen("@@", &lb, 1);
    assert!(reordered.find("beta:").unwrap() < reordered.find("alpha:").unwrap());
    sb.assert_agrees("reordered keys", reordered.as_bytes(), &key).expect_err("refused");

    // Empty a value.
    let emptied = replace_line(&enc, "alpha:", "alpha: \"\"");
    let err = sb.assert_agrees("emptied value", &emptied, &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacMismatch), "{err}");

    // Add a plaintext value (in the MAC) or a null (outside the MAC, sops accepts).
    let added = replace_line(&enc, "alpha:", &format!("extra_unencrypted: x\n{}", line(&enc, "alpha:")));
    sb.assert_agrees("added plaintext key", &added, &key).expect_err("refused");
    let added_null = replace_line(&enc, "alpha:", &format!("extra: null\n{}", line(&enc, "alpha:")));
    sb.assert_agrees("added null key", &added_null, &key).expect("sops accepts nulls");

    // Edit sops.lastmodified (it is the MAC's additional data).
    let lm = line(&enc, "    lastmodified:");
    let edited = replace_line(&enc, "    lastmodified:", "    lastmodified: \"2001-01-01T00:00:00Z\"");
    let err = sb.assert_agrees("edited lastmodified", &edited, &key).expect_err("refused");
    assert!(matches!(err, SopsError::MacInvalid { .. }), "{err}");
    // The same instant written with +00:00 is the same RFC 3339 text for Go.
    let stamp = lm.split('"').nth(1).unwrap().to_string();
    let same =
        replace_line(&enc, "    lastmodified:", &format!("    lastmodified: \"{}\"", stamp.replace('Z', "+00:00")));
    sb.assert_agrees("lastmodified respelled", &same, &key).expect("accepted");

    // Remove or corrupt the MAC.
    let no_mac = remove_line(&enc, "    mac:");
    sb.assert_agrees("removed mac", &no_mac, &key).expect_err("refused");
    let mac = enc_of(&enc, "    mac:");
    let bad_mac = replace_line(&enc, "    mac:", &format!("    mac: {}", mac.replacen("data:", "data:AA", 1)));
    sb.assert_agrees("corrupted mac", &bad_mac, &key).expect_err("refused");

    // Duplicate a key.
    let dup = replace_line(&enc, "beta:", &line(&enc, "alpha:"));
    sb.assert_agrees("duplicate key", &dup, &key).expect_err("refused");
}

#[test]
fn key_material_sources_decrypt() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let enc = sb.encrypt_to("token: abc\n", &[&key], &[]);
    let text = std::fs::read_to_string(&key.file).unwrap();
    let root = sb.path().join("root");
    std::fs::create_dir_all(root.join("cfg/age")).unwrap();
    std::fs::write(root.join("cfg/age/keys.txt"), &text).unwrap();
    for env in [
        KeyEnv { sops_age_key: Some(text.clone().into()), ..KeyEnv::default() },
        KeyEnv { hero_rootdir: Some(root.clone()), ..KeyEnv::default() },
        KeyEnv { sops_age_key_cmd: Some(format!("cat '{}'", key.file.display())), ..KeyEnv::default() },
        KeyEnv { home: Some(root.clone()), xdg_config_home: Some(root.join("cfg/age/..")), ..KeyEnv::default() },
    ] {
        if env.xdg_config_home.is_some() {
            let xdg = root.join("cfg/age/../sops/age");
            std::fs::create_dir_all(&xdg).unwrap();
            std::fs::write(xdg.join("keys.txt"), &text).unwrap();
        }
        let keys = load_identities(&env).expect("loads");
        assert_eq!(decrypt(&enc, &keys).expect("decrypts").get("token").unwrap().expose(), "abc");
    }
}

#[test]
fn timestamps_and_odd_plaintext_match_sops() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let plain = "a: 2001-12-14t21:59:43.10-05:00\nb: 2001-12-14 21:59:43.10 -5\nc: 2001-12-15 2:59:43.10\n\
x_unencrypted: 1_000\ny_unencrypted: 0777\nz_unencrypted: .inf\nt_unencrypted: 2001-12-14\n\
f_unencrypted: 1e3\nq_unencrypted: \"5\"\nh_unencrypted: 0x1F\nbn: !!binary aGVsbG8=\nyes_unencrypted: yes\n\
j: -0.0\nk: .NaN\nl: 0o17\nm: 0b101\nn: +12\no: 1.\np: .5\n";
    let enc = sb.encrypt_to(plain, &[&key], &[]);
    let file = sb.assert_agrees("types zoo", &enc, &key).expect("decrypt");
    for (name, value) in file.documents()[0].entries() {
        let Value::Scalar(s) = value else { continue };
        let theirs = sb.sops_extract(&enc, &key.file, name);
        assert_eq!(s.expose(), common::extract_text(s.kind(), &theirs), "value of {name}");
    }
}
