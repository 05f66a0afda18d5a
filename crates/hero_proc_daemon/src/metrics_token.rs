//! The bearer token `--metrics-addr` asks for (`serve --metrics-token-file FILE`).
//!
//! `/metrics/services` relays what each service serves on its own socket, which only the
//! daemon's account can reach (`var/sockets` is 0700): on an open TCP port any local
//! account could read it through the daemon. So that page is served over TCP only with
//! a token, and with a token every page there needs it. The file is checked like the
//! other files the daemon trusts: ours (or root's), and closed to group and others, so
//! no other account can read or replace the token.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Fewer characters than this is a password, not a token.
const MIN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("metrics token file {path}: {message}")]
pub struct TokenError {
    pub path: PathBuf,
    pub message: String,
}

/// The token, compared in constant time. `Debug` never shows it.
#[derive(Clone)]
pub struct MetricsToken(String);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl MetricsToken {
    /// Read and check `path`: a regular file owned by root or this account, mode without
    /// group or other bits, holding one token of at least 16 characters.
    pub fn read(path: &Path) -> Result<MetricsToken, TokenError> {
        let err = |message: String| TokenError { path: path.to_owned(), message };
        let meta = std::fs::symlink_metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(err("not a regular file (a symlink?): give the file itself".into()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(err(format!(
                "owned by uid {}, not by root or this daemon's account (uid {me}): `chown {me} {}`",
                meta.uid(),
                path.display()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets other accounts read or change the token: `chmod 600 {}`",
                meta.mode() & 0o7777,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let token = text.trim();
        if token.len() < MIN_LEN || token.contains(char::is_whitespace) {
            return Err(err(format!(
                "it must hold one token of at least {MIN_LEN} characters and no spaces, e.g. `openssl rand -hex 32 > {}`",
                path.display()
            )));
        }
        Ok(MetricsToken(token.to_owned()))
    }

    /// Whether an `Authorization` header value carries this token as `Bearer`.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else { return false };
        bool::from(given.trim().as_bytes().ct_eq(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(mode: u32, body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, p)
    }

    #[test]
    fn a_private_file_with_a_long_token_is_read_and_compared() {
        let (_d, p) = file(0o600, "0123456789abcdef0123\n");
        let t = MetricsToken::read(&p).unwrap();
        assert!(t.admits(Some("Bearer 0123456789abcdef0123")));
        assert!(!t.admits(Some("Bearer 0123456789abcdef012")));
        assert!(!t.admits(Some("Basic 0123456789abcdef0123")));
        assert!(!t.admits(None));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn open_modes_short_tokens_and_symlinks_are_refused_with_the_fix() {
        let (_d, p) = file(0o644, "0123456789abcdef0123\n");
        let e = MetricsToken::read(&p).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        let (_d, p) = file(0o600, "short\n");
        let e = MetricsToken::read(&p).unwrap_err().to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        let (d, p) = file(0o600, "0123456789abcdef0123\n");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = MetricsToken::read(&link).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
