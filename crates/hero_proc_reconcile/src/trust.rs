//! Signed commits only (`serve --allowed-signers FILE`): a revision is applied only if
//! its commit carries an SSH signature (`git -c gpg.format=ssh commit -S`) that verifies
//! against the OpenSSH `allowed_signers` file for the committer's email, as
//! `git verify-commit` with `gpg.ssh.allowedSignersFile` would decide.
//!
//! The file is kept on the host, never in the repository it guards, and read on every
//! check, so a key rotation is an edit of the file with no restart. What is supported of
//! the format (`ssh-keygen(1)`, ALLOWED SIGNERS): principals as a comma-separated list of
//! patterns (`*` and `?` wildcards, `!` negation), the options `namespaces="git,..."`,
//! `valid-after=` and `valid-before=` (checked against the commit's committer time, as
//! git does), and ed25519, ECDSA P-256/P-384 and RSA keys. `cert-authority` lines are
//! refused with their line number: certificates are not verified here.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, PublicKey, SshSig};

/// The namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

/// One usable line of the file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    principals: Vec<String>,
    namespaces: Option<Vec<String>>,
    /// Seconds since the epoch, UTC.
    valid_after: Option<i64>,
    valid_before: Option<i64>,
    key: PublicKey,
}

/// A parsed `allowed_signers` file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    entries: Vec<Entry>,
}

/// The file could not be read or has a line that is not understood: every revision is
/// refused until it is fixed (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error(
        "cannot read the allowed signers file {path}: {source}\n  hint: `serve --allowed-signers` names a file on this host in OpenSSH allowed_signers format"
    )]
    Read { path: String, source: std::io::Error },
    #[error(
        "the allowed signers file {path} {why}: whoever can change it decides what runs as this daemon\n  hint: `chown root: {path} && chmod 644 {path}`, in a folder only its owner can write (e.g. /etc/hero_proc/)"
    )]
    Unsafe { path: String, why: String },
    #[error(
        "{path}:{line}:{col}: error: {message}\n  hint: each line is `PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY [COMMENT]`, as for git's gpg.ssh.allowedSignersFile (see ssh-keygen(1), ALLOWED SIGNERS)"
    )]
    Syntax { path: String, line: usize, col: usize, message: String },
}

/// Who signed a trusted commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The committer email the signature was accepted for.
    pub principal: String,
    /// `SHA256:...` of the key.
    pub fingerprint: String,
    /// Line of the allowed signers file that allowed it.
    pub line: usize,
}

/// Why a commit is not trusted. Each says who signed it, when anyone did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("commit {commit} is not signed by an allowed signer: it carries no signature")]
    Unsigned { commit: String },
    #[error(
        "commit {commit} is not signed by an allowed signer: its signature is not an SSH signature ({what}); only `gpg.format=ssh` signatures are verified"
    )]
    NotSsh { commit: String, what: String },
    #[error(
        "commit {commit} is not signed by an allowed signer: its SSH signature by key {fingerprint} does not verify ({why})"
    )]
    BadSignature { commit: String, fingerprint: String, why: String },
    #[error(
        "commit {commit} is not signed by an allowed signer: it was signed by key {fingerprint}, which {file} does not allow for the committer {email}{when}"
    )]
    NotAllowed { commit: String, fingerprint: String, email: String, file: String, when: String },
    #[error("commit {commit} cannot be checked: {why}")]
    Unreadable { commit: String, why: String },
}

impl AllowedSigners {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<AllowedSigners, SignersError> {
        check_owner(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|source| SignersError::Read { path: path.display().to_string(), source })?;
        AllowedSigners::parse(&text, path)
    }

    /// Parses the text of an allowed signers file read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<AllowedSigners, SignersError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let col0 = raw.len() - trimmed.len();
            let err = |col: usize, message: String| SignersError::Syntax {
                path: path.display().to_string(),
                line,
                col: col + 1,
                message,
            };
            let fields = split_fields(trimmed).map_err(|(c, m)| err(col0 + c, m))?;
            let mut it = fields.into_iter();
            let (_, principals) = it.next().expect("a non-empty line has a field");
            let principals: Vec<String> = principals.split(',').map(str::to_owned).collect();
            let (mut namespaces, mut valid_after, mut valid_before) = (None, None, None);
            let mut rest: Vec<(usize, String)> = it.collect();
            // Options come before the key type; a key type never contains '=' or starts
            // an option name.
            while let Some((c, f)) = rest.first().cloned() {
                if is_key_type(&f) {
                    break;
                }
                rest.remove(0);
                for opt in split_options(&f) {
                    let (name, value) = opt.split_once('=').map_or((opt.as_str(), None), |(n, v)| (n, Some(v)));
                    let value = value.map(|v| v.trim_matches('"').to_owned());
                    match (name.to_ascii_lowercase().as_str(), value) {
                        ("namespaces", Some(v)) => namespaces = Some(v.split(',').map(str::to_owned).collect()),
                        ("valid-after", Some(v)) => {
                            valid_after = Some(parse_time(&v).ok_or_else(|| {
                                err(col0 + c, format!("valid-after={v}: not a time (YYYYMMDD[HHMM[SS]][Z])"))
                            })?)
                        }
                        ("valid-before", Some(v)) => {
                            valid_before = Some(parse_time(&v).ok_or_else(|| {
                                err(col0 + c, format!("valid-before={v}: not a time (YYYYMMDD[HHMM[SS]][Z])"))
                            })?)
                        }
                        ("cert-authority", _) => {
                            return Err(err(
                                col0 + c,
                                "cert-authority is not supported: list the signers' own keys".into(),
                            ));
                        }
                        (other, _) => return Err(err(col0 + c, format!("unknown option `{other}`"))),
                    }
                }
            }
            let Some((kc, _)) = rest.first().cloned() else {
                return Err(err(raw.len(), "a key type and key are missing after the principals".into()));
            };
            let key_text = rest.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>().join(" ");
            let key = PublicKey::from_openssh(&key_text)
                .map_err(|e| err(col0 + kc, format!("not an OpenSSH public key: {e}")))?;
            entries.push(Entry { line, principals, namespaces, valid_after, valid_before, key });
        }
        Ok(AllowedSigners { path: path.to_path_buf(), entries })
    }

    /// How many keys the file allows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `commit` of `repo` is signed by a key this file allows for its committer
    /// email, at its committer time, in the `git` namespace.
    pub fn verify_commit(&self, repo: &git2::Repository, commit: &str) -> Result<Signer, Untrusted> {
        let short = &commit[..commit.len().min(12)];
        let unreadable = |why: String| Untrusted::Unreadable { commit: short.to_owned(), why };
        let oid = git2::Oid::from_str(commit).map_err(|e| unreadable(e.message().to_owned()))?;
        let c = repo.find_commit(oid).map_err(|e| unreadable(e.message().to_owned()))?;
        let email = c.committer().email().unwrap_or_default().to_owned();
        let time = c.committer().when().seconds();
        let (signature, signed) = match repo.extract_signature(&oid, None) {
            Ok(pair) => pair,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Err(Untrusted::Unsigned { commit: short.to_owned() });
            }
            Err(e) => return Err(unreadable(e.message().to_owned())),
        };
        let armored = String::from_utf8_lossy(&signature);
        if !armored.contains("BEGIN SSH SIGNATURE") {
            let what = if armored.contains("BEGIN PGP SIGNATURE") { "OpenPGP" } else { "unknown kind" };
            return Err(Untrusted::NotSsh { commit: short.to_owned(), what: what.to_owned() });
        }
        let sig = SshSig::from_pem(armored.trim().as_bytes()).map_err(|e| Untrusted::BadSignature {
            commit: short.to_owned(),
            fingerprint: "(unreadable)".into(),
            why: e.to_string(),
        })?;
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let bad =
            |why: String| Untrusted::BadSignature { commit: short.to_owned(), fingerprint: fingerprint.clone(), why };
        if sig.namespace() != GIT_NAMESPACE {
            return Err(bad(format!("namespace `{}` instead of `git`", sig.namespace())));
        }
        // The signature must hold for the bytes git signed, whoever made it.
        let signer_key = PublicKey::from(sig.public_key().clone());
        signer_key.verify(GIT_NAMESPACE, &signed, &sig).map_err(|e| bad(e.to_string()))?;
        // ... and its key must be allowed for the committer at the commit's time.
        let mut expired = None;
        for e in &self.entries {
            if e.key.key_data() != sig.public_key() || !principal_matches(&e.principals, &email) {
                continue;
            }
            if e.namespaces.as_ref().is_some_and(|ns| !ns.iter().any(|n| glob(n, GIT_NAMESPACE))) {
                continue;
            }
            if e.valid_after.is_some_and(|t| time < t) || e.valid_before.is_some_and(|t| time > t) {
                expired = Some(e.line);
                continue;
            }
            return Ok(Signer { principal: email, fingerprint, line: e.line });
        }
        let when = match expired {
            Some(l) => {
                format!(" at the commit's time (line {l} allows it only in its valid-after/valid-before window)")
            }
            None => String::new(),
        };
        Err(Untrusted::NotAllowed {
            commit: short.to_owned(),
            fingerprint,
            email: if email.is_empty() { "(no email)".into() } else { email },
            file: self.path.display().to_string(),
            when,
        })
    }
}

/// The file and its folder may be written only by their owner, and the file's owner is
/// root or the daemon's own user: a key another local account could add would be trusted.
fn check_owner(path: &Path) -> Result<(), SignersError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_ = |why: String| SignersError::Unsafe { path: path.display().to_string(), why };
    let read =
        |p: &Path| std::fs::metadata(p).map_err(|source| SignersError::Read { path: p.display().to_string(), source });
    let me = read(Path::new("/proc/self"))?.uid();
    let file = read(path)?;
    if file.uid() != 0 && file.uid() != me {
        return Err(unsafe_(format!("belongs to uid {}, not root nor this daemon's user", file.uid())));
    }
    if file.mode() & 0o022 != 0 {
        return Err(unsafe_(format!("is writable by its group or others (mode {:o})", file.mode() & 0o777)));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let d = read(dir)?;
        if d.mode() & 0o022 != 0 {
            return Err(unsafe_(format!(
                "is in {}, a folder others can write to (mode {:o})",
                dir.display(),
                d.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Fields separated by blanks; a double-quoted part (in options) keeps its blanks.
fn split_fields(s: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, ch) in s.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        }
        if ch.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
            continue;
        }
        if cur.is_empty() {
            start = i;
        }
        cur.push(ch);
    }
    if quoted {
        return Err((start, "an option's quoted value is not closed".into()));
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    Ok(out)
}

/// `a="x,y",b` -> [`a="x,y"`, `b`]: commas inside quotes stay.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_key_type(f: &str) -> bool {
    f.starts_with("ssh-") || f.starts_with("ecdsa-sha2-") || f.starts_with("sk-")
}

/// ssh-keygen's pattern list: the email matches some pattern and no negated one.
fn principal_matches(patterns: &[String], email: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, email) {
                return false;
            }
        } else if glob(p, email) {
            matched = true;
        }
    }
    matched
}

/// `*` any run, `?` one character; case-sensitive, as ssh's `match_pattern`.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `YYYYMMDD[HHMM[SS]][Z]` as ssh-keygen reads it; local time without `Z` is read as UTC
/// here (a daemon's local zone is not the signer's).
fn parse_time(v: &str) -> Option<i64> {
    let v = v.strip_suffix('Z').unwrap_or(v);
    if !v.bytes().all(|b| b.is_ascii_digit()) || !matches!(v.len(), 8 | 12 | 14) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| v.get(r).map_or(Some(0), |s| s.parse::<i64>().ok());
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) =
        if v.len() >= 12 { (n(8..10)?, n(10..12)?, if v.len() == 14 { n(12..14)? } else { 0 }) } else { (0, 0, 0) };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDGIB/T1LRt2gd4oQ5Sn1oWxgdLbRNqU2Aw5hkBcLsb5 ops@example";

    #[test]
    fn lines_parse_with_options_and_errors_say_where() {
        let text = format!(
            "# who may deploy\n\nalice@example.com,*@ops.example,!eve@ops.example namespaces=\"git,file\",valid-after=20260101 {KEY}\n"
        );
        let s = AllowedSigners::parse(&text, Path::new("signers")).unwrap();
        assert_eq!(s.len(), 1);
        let e = &s.entries[0];
        assert_eq!(e.line, 3);
        assert_eq!(e.namespaces.as_deref(), Some(&["git".to_owned(), "file".to_owned()][..]));
        assert_eq!(e.valid_after, Some(1_767_225_600));
        assert!(principal_matches(&e.principals, "alice@example.com"));
        assert!(principal_matches(&e.principals, "bob@ops.example"));
        assert!(!principal_matches(&e.principals, "eve@ops.example"));
        assert!(!principal_matches(&e.principals, "mallory@example.com"));

        let bad = AllowedSigners::parse("a@b ssh-ed25519 AAAAnotbase64\n", Path::new("signers")).unwrap_err();
        assert!(bad.to_string().starts_with("signers:1:5: error: not an OpenSSH public key"), "{bad}");
        let bad = AllowedSigners::parse(&format!("a@b cert-authority {KEY}\n"), Path::new("s")).unwrap_err();
        assert!(bad.to_string().starts_with("s:1:5: error: cert-authority"), "{bad}");
        let bad = AllowedSigners::parse("a@b\n", Path::new("s")).unwrap_err();
        assert!(bad.to_string().contains("key type and key are missing"), "{bad}");
        let bad = AllowedSigners::parse(&format!("a@b valid-before=2026 {KEY}\n"), Path::new("s")).unwrap_err();
        assert!(bad.to_string().contains("valid-before=2026: not a time"), "{bad}");
    }

    #[test]
    fn a_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allowed_signers");
        std::fs::write(&file, format!("a@b {KEY}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(AllowedSigners::load(&file).unwrap().len(), 1);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = AllowedSigners::load(&file).unwrap_err().to_string();
        assert!(e.contains("is writable by its group or others (mode 666)") && e.contains("chmod 644"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = AllowedSigners::load(&file).unwrap_err().to_string();
        assert!(e.contains("a folder others can write to (mode 777)"), "{e}");
    }

    #[test]
    fn times_and_globs() {
        assert_eq!(parse_time("19700101"), Some(0));
        assert_eq!(parse_time("20000301123456Z"), Some(951_914_096));
        assert_eq!(parse_time("20001301"), None);
        assert!(glob("*@example.com", "a@example.com"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("x*", "y"));
    }
}
