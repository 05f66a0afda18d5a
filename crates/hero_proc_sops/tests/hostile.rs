//! Hostile input: garbage, huge, non-UTF-8, malformed metadata and ENC
//! strings must give typed errors, never panics.

use crate::common::{Sandbox, enc_of, replace_line};
use hero_proc_sops::{Identity, LoadedIdentities, MAX_FILE_BYTES, SopsError, decrypt, key_names};

fn some_key() -> LoadedIdentities {
    LoadedIdentities::from_identities(vec![Identity::generate()])
}

/// Runs both entry points; they must return (not panic).
fn both(bytes: &[u8]) -> (Result<Vec<String>, SopsError>, Result<(), SopsError>) {
    let names = key_names(bytes);
    let dec = decrypt(bytes, &some_key()).map(|_| ());
    (names, dec)
}

#[test]
fn garbage_inputs_are_typed_errors() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\0\0\0".to_vec(),
        b"{{{{".to_vec(),
        b"- a\n- b\n".to_vec(),
        b"just a string".to_vec(),
        b"a: [1, 2\n".to_vec(),
        b"a: b\n".to_vec(),
        b"sops: 5\n".to_vec(),
        b"sops: {}\n".to_vec(),
        b"sops:\n  age: nope\n".to_vec(),
        b"sops:\n  age: [nope]\n".to_vec(),
        b"sops:\n  age:\n    - recipient: age1x\n".to_vec(),
        b"sops:\n  age:\n    - recipient: age1x\n      enc: not armored\n  mac: x\n  lastmodified: y\n".to_vec(),
        b"sops:\n  kms:\n    - arn: x\n      enc: y\n".to_vec(),
        b"sops:\n  age:\n    - {recipient: a, enc: b}\n  shamir_threshold: lots\n".to_vec(),
        b"sops:\n  age:\n    - {recipient: a, enc: b}\n  mac_only_encrypted: maybe\n".to_vec(),
        b"sops:\n  age:\n    - {recipient: a, enc: b}\n  encrypted_regex: '(('\n".to_vec(),
        b"sops:\n  age:\n    - {recipient: a, enc: b}\n  encrypted_comment_regex: x\n".to_vec(),
        b"sops:\n  age:\n    - {recipient: a, enc: b}\n  encrypted_regex: x\n  unencrypted_suffix: y\n".to_vec(),
        b"1: x\nsops:\n  age:\n    - {recipient: a, enc: b}\n".to_vec(),
        b"a: 1\na: 2\nsops:\n  age:\n    - {recipient: a, enc: b}\n".to_vec(),
        b"? [a, b]\n: c\nsops:\n  age:\n    - {recipient: a, enc: b}\n".to_vec(),
        b"\xff\xfe\x00a".to_vec(),
        b"a: \xc3\x28\n".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "a: &a [x]\nb: *c\n".as_bytes().to_vec(),
    ];
    for case in &cases {
        let (names, dec) = both(case);
        assert!(dec.is_err(), "decrypt accepted {:?}", String::from_utf8_lossy(case));
        let _ = names;
    }
    assert!(matches!(decrypt(b"\xff\xfe\x00a", &some_key()), Err(SopsError::NotUtf8 { offset: 0 })));
    assert!(matches!(key_names(b"a: b\n"), Err(SopsError::NotSopsFile)));
    assert!(matches!(key_names(b"- a\n"), Err(SopsError::NotAMapping { document: 1 })));
    assert!(matches!(key_names(b"a: [1, 2\n"), Err(SopsError::Yaml { .. })));
    let conflicting = b"sops:\n  age:\n    - {recipient: a, enc: b}\n  encrypted_regex: x\n  unencrypted_suffix: y\n";
    assert!(matches!(key_names(conflicting), Err(SopsError::ConflictingRules)));
    let kms_only = b"s: x\nsops:\n  kms:\n    - arn: x\n      enc: y\n  mac: m\n  lastmodified: l\n";
    let r = decrypt(kms_only, &some_key());
    assert!(matches!(r, Err(SopsError::NoAgeRecipients { .. })), "{r:?}");
    let comment_rx = b"sops:\n  age:\n    - {recipient: a, enc: b}\n  encrypted_comment_regex: x\n";
    assert!(matches!(key_names(comment_rx), Err(SopsError::Unsupported { .. })));
    let dup = b"a: 1\na: 2\nsops:\n  age:\n    - {recipient: a, enc: b}\n";
    assert!(matches!(key_names(dup), Err(SopsError::DuplicateKey { .. })));
    let int_key = b"1: x\nsops:\n  age:\n    - {recipient: a, enc: b}\n";
    assert!(matches!(key_names(int_key), Err(SopsError::NonStringKey { .. })));
    let deep = key_names("[".repeat(100_000).as_bytes());
    assert!(matches!(deep, Err(SopsError::YamlTooComplex { .. } | SopsError::Yaml { .. })), "{deep:?}");
    let deep = key_names(format!("a: {}{}", "[".repeat(80), "]".repeat(80)).as_bytes());
    assert!(matches!(deep, Err(SopsError::YamlTooComplex { .. })), "{deep:?}");
}

#[test]
fn huge_input_is_refused_before_parsing() {
    let huge = vec![b'a'; MAX_FILE_BYTES + 1];
    assert!(matches!(key_names(&huge), Err(SopsError::TooLarge { .. })));
    assert!(matches!(decrypt(&huge, &some_key()), Err(SopsError::TooLarge { .. })));
}

#[test]
fn malformed_enc_strings_are_typed_errors() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let enc = sb.encrypt_to("secret: value\ncount: 42\n", &[&key], &[]);
    let ids = key.loaded();
    let good = enc_of(&enc, "secret:");
    let twelve = "AAAAAAAAAAAAAAAA"; // 12 bytes of base64
    let variants = [
        "ENC[AES256_GCM,data:".to_string(),
        "ENC[]".to_string(),
        "ENC[AES256_GCM,data:@@@@,iv:AAAA,tag:AAAA,type:str]".to_string(),
        good.replacen("data:", "data:%", 1),
        good.replacen("iv:", "iv:%", 1),
        good.replacen("tag:", "tag:%", 1),
        {
            let iv_start = good.find("iv:").unwrap() + 3;
            let iv_end = good[iv_start..].find(',').unwrap() + iv_start;
            format!("{}{twelve}{}", &good[..iv_start], &good[iv_end..])
        },
        {
            let t = good.find("tag:").unwrap() + 4;
            let e = good[t..].find(',').unwrap() + t;
            format!("{}AAAAAAAAAAA={}", &good[..t], &good[e..])
        },
        good.replace("type:str", "type:weird"),
        good.replace("type:str", "type:"),
        good.replace("]", ""),
        good.replace("AES256_GCM", "AES128_GCM"),
        format!("{good}trailing"),
        "plain text secret".to_string(),
        "123".to_string(),
        "[1, 2]".to_string(),
        "{a: b}".to_string(),
    ];
    for v in &variants {
        let bad = replace_line(&enc, "secret:", &format!("secret: {v}"));
        let err = decrypt(&bad, &ids).expect_err(v);
        assert!(
            matches!(err, SopsError::InvalidEncValue { .. } | SopsError::DecryptFailed { .. } | SopsError::Yaml { .. }),
            "{v}: {err:?}"
        );
        key_names(&bad).ok();
    }
    // type: is not authenticated by sops: str -> int decrypts but is not an int.
    let retyped = replace_line(&enc, "secret:", &format!("secret: {}", good.replace("type:str", "type:int")));
    assert!(matches!(decrypt(&retyped, &ids), Err(SopsError::InvalidPlaintext { .. })));
    // ...while int -> str still matches the MAC: sops and we both accept.
    let count = enc_of(&enc, "count:");
    let as_str = replace_line(&enc, "count:", &format!("count: {}", count.replace("type:int", "type:str")));
    let file = sb.assert_agrees("int retyped as str", &as_str, &key).expect("accepted");
    assert_eq!(file.get("count").unwrap().expose(), "42");
}

#[test]
fn random_mutations_never_panic() {
    require_tools!();
    let sb = Sandbox::new();
    let key = sb.keygen();
    let enc = sb.encrypt_to("a: one\nb: 2\nc: [x, {d: true}]\nport_unencrypted: 5\n", &[&key], &[]);
    let ids = key.loaded();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"ENC[],:AZaz09+/=-_ \n\t\"'{}#&*!|>%\xff";
    let mut accepted = 0;
    for _ in 0..1500 {
        let mut m = enc.clone();
        for _ in 0..(next() % 3 + 1) {
            let pos = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[pos] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    m.remove(pos);
                }
                _ => m.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let _ = key_names(&m);
        if decrypt(&m, &ids).is_ok() {
            accepted += 1;
        }
    }
    // Some mutations are harmless (whitespace, quoting); most must be refused.
    assert!(accepted < 1500 / 4, "accepted {accepted} of 1500 mutations");
}
