//! The cryptography sops uses, reproduced: `ENC[AES256_GCM,...]` values are
//! AES-256-GCM with a 32-byte IV (so GHASH-derived counters, not the usual
//! 12-byte nonce) and a 16-byte tag; the 32-byte data key is wrapped per
//! recipient as an armored age file; several key groups combine their parts
//! with Shamir's secret sharing over GF(2^8).

use std::io::Read;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Tag};
use base64::Engine;
use zeroize::Zeroizing;

/// AES-256-GCM with sops's 32-byte nonce.
type SopsGcm = AesGcm<Aes256, U32>;

/// Length of the IV sops writes (`nonceSize` in sops's `aes/cipher.go`).
pub(crate) const IV_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Longest `ENC[...]` string accepted (10 MiB of base64 is far beyond any secret).
const MAX_ENC_LEN: usize = 16 * 1024 * 1024;

/// A parsed `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` string.
pub(crate) struct EncValue<'a> {
    /// Ciphertext followed by the tag, as Go's `gcm.Open` receives it.
    sealed: Vec<u8>,
    iv: Vec<u8>,
    /// The `type:` field (`str`, `int`, ...).
    pub kind: &'a str,
}

/// Returns true when `s` looks like a sops encrypted value at all.
pub(crate) fn looks_encrypted(s: &str) -> bool {
    s.starts_with("ENC[")
}

/// Parses an `ENC[...]` string. Only the exact shape sops writes is accepted;
/// the reason string never includes the input.
pub(crate) fn parse_enc(s: &str) -> Result<EncValue<'_>, &'static str> {
    if s.len() > MAX_ENC_LEN {
        return Err("encrypted value too long");
    }
    let body = s.strip_prefix("ENC[AES256_GCM,").ok_or("not an ENC[AES256_GCM,...] value")?;
    let body = body.strip_suffix(']').ok_or("missing closing `]`")?;
    let mut parts = body.split(',');
    let mut field = |name: &'static str| -> Result<&str, &'static str> {
        parts.next().and_then(|p| p.strip_prefix(name)).ok_or("fields must be data:,iv:,tag:,type: in that order")
    };
    let data = field("data:")?;
    let iv = field("iv:")?;
    let tag = field("tag:")?;
    let kind = field("type:")?;
    if parts.next().is_some() {
        return Err("unexpected extra field");
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sealed = b64.decode(data).map_err(|_| "data is not valid base64")?;
    let iv = b64.decode(iv).map_err(|_| "iv is not valid base64")?;
    let tag = b64.decode(tag).map_err(|_| "tag is not valid base64")?;
    if iv.len() != IV_LEN {
        return Err("iv is not 32 bytes");
    }
    if tag.len() != TAG_LEN {
        return Err("tag is not 16 bytes");
    }
    if kind.is_empty() {
        return Err("empty type");
    }
    sealed.extend_from_slice(&tag);
    Ok(EncValue { sealed, iv, kind })
}

/// The file's data key, ready to open values.
pub(crate) struct DataKey {
    gcm: SopsGcm,
}

impl DataKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        DataKey { gcm: SopsGcm::new(GenericArray::from_slice(key)) }
    }

    /// Opens one value; `None` when authentication fails (wrong key, wrong
    /// additional data, or modified bytes).
    pub(crate) fn open(&self, enc: &EncValue<'_>, additional_data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let split = enc.sealed.len().checked_sub(TAG_LEN)?;
        let mut buf = Zeroizing::new(enc.sealed[..split].to_vec());
        let tag = Tag::clone_from_slice(&enc.sealed[split..]);
        let nonce = GenericArray::from_slice(&enc.iv);
        self.gcm.decrypt_in_place_detached(nonce, additional_data, &mut buf, &tag).ok()?;
        Some(buf)
    }
}

/// Outcome of trying our identities on one age stanza.
pub(crate) enum Unwrap {
    Ok(Zeroizing<Vec<u8>>),
    NoMatch,
    Malformed(&'static str),
}

/// Unwraps one `sops.age[].enc` armored age file with the given identities.
pub(crate) fn age_unwrap(armored: &str, identities: &[age::x25519::Identity]) -> Unwrap {
    if identities.is_empty() {
        return Unwrap::NoMatch;
    }
    if armored.len() > 64 * 1024 {
        return Unwrap::Malformed("age stanza too large");
    }
    let reader = age::armor::ArmoredReader::new(armored.as_bytes());
    let decryptor = match age::Decryptor::new(reader) {
        Ok(d) => d,
        Err(_) => return Unwrap::Malformed("the age data in `enc` is not a valid age file"),
    };
    let ids = identities.iter().map(|i| i as &dyn age::Identity);
    let mut stream = match decryptor.decrypt(ids) {
        Ok(s) => s,
        Err(age::DecryptError::NoMatchingKeys) => return Unwrap::NoMatch,
        Err(_) => return Unwrap::Malformed("the age header in `enc` could not be decrypted"),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(64));
    match (&mut stream).take(1024).read_to_end(&mut out) {
        Ok(_) => Unwrap::Ok(out),
        Err(_) => Unwrap::Malformed("the age payload in `enc` is corrupted"),
    }
}

/// GF(2^8) multiplication with the AES polynomial, as in the Shamir code
/// sops vendors from HashiCorp Vault.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut r = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        let carry = a & 0x80;
        a <<= 1;
        if carry != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    r
}

fn gf_inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8).
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 != 0 {
            result = gf_mul(result, base);
        }
        base = gf_mul(base, base);
        e >>= 1;
    }
    result
}

/// Recombines Shamir parts (each ends with its x coordinate) into the
/// secret, by Lagrange interpolation at x = 0.
pub(crate) fn shamir_combine(parts: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    if parts.len() < 2 {
        return Err("fewer than two Shamir parts");
    }
    let len = parts[0].len();
    if len < 2 || parts.iter().any(|p| p.len() != len) {
        return Err("Shamir parts have different or invalid lengths");
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if *x == 0 || xs[..i].contains(x) {
            return Err("duplicate or zero Shamir part coordinate");
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (idx, out) in secret.iter_mut().enumerate() {
        let mut acc = 0u8;
        for (i, part) in parts.iter().enumerate() {
            let mut basis = 1u8;
            for (j, xj) in xs.iter().enumerate() {
                if i != j {
                    // (0 - xj) / (xi - xj); subtraction is XOR.
                    basis = gf_mul(basis, gf_mul(*xj, gf_inv(xs[i] ^ xj)));
                }
            }
            acc ^= gf_mul(part[idx], basis);
        }
        *out = acc;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_parsing_rejects_malformed_values() {
        let iv = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        let tag = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let good = format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:{tag},type:str]");
        assert!(parse_enc(&good).is_ok());
        let short_iv = base64::engine::general_purpose::STANDARD.encode([0u8; 12]);
        for bad in [
            "hello".to_string(),
            "ENC[AES256_GCM,data:AAAA".to_string(),
            format!("ENC[AES256_GCM,data:!!!!,iv:{iv},tag:{tag},type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:{short_iv},tag:{tag},type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:AAAA,type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:{tag},type:]"),
            format!("ENC[AES256_GCM,data:AAAA,tag:{tag},iv:{iv},type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:{tag},type:str,x:y]"),
            format!("ENC[AES256_CBC,data:AAAA,iv:{iv},tag:{tag},type:str]"),
        ] {
            assert!(parse_enc(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gcm_with_32_byte_nonce_round_trips() {
        let key = [7u8; 32];
        let dk = DataKey::new(&key);
        let iv = [9u8; 32];
        let mut buf = b"secret".to_vec();
        let tag = dk.gcm.encrypt_in_place_detached(GenericArray::from_slice(&iv), b"a:", &mut buf).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let s =
            format!("ENC[AES256_GCM,data:{},iv:{},tag:{},type:str]", b64.encode(&buf), b64.encode(iv), b64.encode(tag));
        let enc = parse_enc(&s).unwrap();
        assert_eq!(dk.open(&enc, b"a:").unwrap().as_slice(), b"secret");
        assert!(dk.open(&enc, b"b:").is_none());
    }

    /// Written by the real `sops` 3.11 (tests/fixtures/shamir/make.sh): four age key
    /// groups, `shamir_threshold: 3`, with the test-only keys that made it.
    const SHAMIR_FILE: &str = include_str!("../tests/fixtures/shamir/secrets.sops.yaml");
    const SHAMIR_KEYS: [&str; 4] = [
        include_str!("../tests/fixtures/shamir/key1.txt"),
        include_str!("../tests/fixtures/shamir/key2.txt"),
        include_str!("../tests/fixtures/shamir/key3.txt"),
        include_str!("../tests/fixtures/shamir/key4.txt"),
    ];

    /// The Shamir parts sops wrapped for each group, unwrapped with that group's key.
    fn sops_parts() -> Vec<Zeroizing<Vec<u8>>> {
        let meta = crate::decrypt::parse_file(SHAMIR_FILE.as_bytes()).unwrap().metadata;
        assert_eq!((meta.groups.len(), meta.shamir_threshold), (4, 3));
        meta.groups
            .iter()
            .zip(SHAMIR_KEYS)
            .map(|(group, key)| {
                let id = crate::LoadedIdentities::parse(key, "fixture").unwrap();
                match age_unwrap(&group[0].enc, id.identities()) {
                    Unwrap::Ok(part) => part,
                    _ => panic!("the fixture key does not open its group"),
                }
            })
            .collect()
    }

    /// Opens the file's one value with a recombined key, as sops wrote it (AAD `api_token:`).
    fn opens(key: &[u8]) -> Option<Vec<u8>> {
        let key: [u8; 32] = key.try_into().ok()?;
        let line = SHAMIR_FILE.lines().find(|l| l.starts_with("api_token: ")).unwrap();
        let enc = parse_enc(line.trim_start_matches("api_token: ")).unwrap();
        DataKey::new(&key).open(&enc, b"api_token:").map(|v| v.to_vec())
    }

    #[test]
    fn shamir_recombines_parts_that_real_sops_split() {
        let parts = sops_parts();
        // sops (Vault's code) appends the x coordinate to each 32-byte share.
        assert!(parts.iter().all(|p| p.len() == 33), "{:?}", parts.iter().map(|p| p.len()).collect::<Vec<_>>());
        let mut keys = Vec::new();
        for skip in 0..4 {
            // Every 3 of the 4 groups, in any order, give the data key sops used.
            let mut three: Vec<_> = (0..4).filter(|i| *i != skip).map(|i| parts[i].clone()).collect();
            for _ in 0..3 {
                let key = shamir_combine(&three).unwrap();
                assert_eq!(opens(&key).as_deref(), Some(&b"shamir-3-of-4-from-real-sops"[..]), "without group {skip}");
                keys.push(key);
                three.rotate_left(1);
            }
            // All four (more than the threshold) give it too.
            assert!(keys.windows(2).all(|w| w[0] == w[1]));
        }
        assert_eq!(opens(&shamir_combine(&parts).unwrap()).as_deref(), Some(&b"shamir-3-of-4-from-real-sops"[..]));
        // Two (below the threshold) interpolate a line through two points: not the key.
        for (a, b) in [(0, 1), (1, 3), (2, 3)] {
            let key = shamir_combine(&[parts[a].clone(), parts[b].clone()]).unwrap();
            assert!(opens(&key).is_none(), "two of four parts must not recover the key");
        }
        assert!(shamir_combine(&[parts[0].clone(), parts[0].clone(), parts[1].clone()]).is_err());
        assert!(shamir_combine(&parts[..1]).is_err());
    }

    #[test]
    fn gf_arithmetic_matches_published_aes_vectors() {
        // FIPS-197 section 4.2: {57}*{83} = {c1}, {57}*{13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        // FIPS-197 section 5.1.1: the S-box input {53} has inverse {ca}.
        assert_eq!(gf_inv(0x53), 0xca);
        assert_eq!(gf_inv(0x01), 0x01);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "{a:#04x}");
        }
    }
}
