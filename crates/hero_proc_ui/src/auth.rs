//! Who may use the UI over TCP.
//!
//! The TCP listener serves the RPC of a daemon that runs as root, so every request must
//! (1) name this UI in `Host` (a DNS-rebinding page cannot), (2) carry the token from the
//! login URL, as the cookie it set or `Authorization: Bearer`, and (3) for writes, come
//! from this UI's own origin. The token is new at every start and only its owner can read
//! the token file. The Unix socket needs none of this: it is 0600, so only its owner
//! connects.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The cookie the login URL sets.
pub const COOKIE: &str = "hero_proc_ui";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot generate the UI token: the system random source failed: {0}")]
    Random(getrandom::Error),
    #[error(
        "cannot write the UI token file {path}: {source}\n  hint: the UI writes it owner-only in the folder above; check that folder exists and is writable by this user"
    )]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "refusing to write the UI token into {dir}: {why}\n  hint: this folder must be a real folder owned by the user running `hero_proc ui` and not writable by others (chmod 0700 or 0755); fix it or choose another HERO_ROOTDIR"
    )]
    UnsafeDir { dir: PathBuf, why: String },
}

/// 32 random bytes, hex-encoded.
pub fn generate_token() -> Result<String, TokenError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(TokenError::Random)?;
    Ok(hex::encode(b))
}

/// The token file: written owner-only, removed when dropped if it still holds our token.
pub struct TokenFile {
    path: PathBuf,
    token: String,
}

impl TokenFile {
    /// Write `token` to `path` (mode 0600). A new file with a random name is created with
    /// O_EXCL in the same folder and renamed over `path`: nothing an attacker planted at
    /// `path` (a symlink, a file they can read) is ever opened or followed.
    pub fn write(path: &Path, token: &str) -> Result<TokenFile, TokenError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let werr = |source| TokenError::Write { path: path.to_owned(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(werr)?;
        check_dir(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".ui.token.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(werr)?;
        tmp.write_all(token.as_bytes()).map_err(werr)?;
        tmp.write_all(b"\n").map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.persist(path).map_err(|e| werr(e.error))?;
        Ok(TokenFile { path: path.to_owned(), token: token.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        // Another UI started since may have written its own token there: leave that one.
        if std::fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The folder must be ours and closed to others, so no one can swap the file under us.
fn check_dir(dir: &Path) -> Result<(), TokenError> {
    let unsafe_dir = |why: String| TokenError::UnsafeDir { dir: dir.to_owned(), why };
    let m = std::fs::symlink_metadata(dir).map_err(|source| TokenError::Write { path: dir.to_owned(), source })?;
    if !m.is_dir() {
        return Err(unsafe_dir("it is not a folder (a symlink?)".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(unsafe_dir(format!("it is owned by uid {}, not by this user (uid {me})", m.uid())));
    }
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!("it is writable by group or others (mode {:o})", m.mode() & 0o7777)));
    }
    Ok(())
}

/// What the gate decided for one TCP request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Pass,
    /// The login URL with the right token: set the cookie and redirect to `/`.
    Login {
        set_cookie: String,
    },
    Refuse(Refusal),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// The parts of a request the gate reads.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
}

pub struct Gate {
    token: String,
    /// Exact `Host` values accepted (lowercase).
    hosts: Vec<String>,
}

impl Gate {
    /// `local` is the bound TCP address; `allow` are `--allow-host` names (with or without
    /// a port: a bare name also allows `name:PORT`).
    pub fn new(token: String, local: SocketAddr, allow: &[String]) -> Gate {
        let port = local.port();
        let mut hosts = Vec::new();
        if !local.ip().is_unspecified() {
            hosts.push(local.to_string());
        }
        if local.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        for a in allow {
            let a = a.trim().to_ascii_lowercase();
            if a.is_empty() {
                continue;
            }
            hosts.push(format!("{a}:{port}"));
            hosts.push(a);
        }
        Gate { token, hosts }
    }

    /// The `Host` values this UI answers to.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn check(&self, req: &RequestView<'_>) -> Decision {
        let host = header(req.headers, http::header::HOST).map(str::to_ascii_lowercase);
        let Some(host) = host.filter(|h| self.hosts.contains(h)) else {
            return Decision::Refuse(Refusal {
                status: 421,
                message: format!(
                    "this UI answers only to Host {}; got {:?}. To reach it under another name, restart it with `hero_proc ui --allow-host NAME`",
                    self.hosts.join(", "),
                    header(req.headers, http::header::HOST).unwrap_or("(none)")
                ),
            });
        };
        if req.path == "/health" {
            return Decision::Pass;
        }
        if req.method == "GET"
            && req.path == "/"
            && let Some(t) = query_token(req.query)
        {
            return if self.token_is(&t) {
                Decision::Login { set_cookie: format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", self.token) }
            } else {
                Decision::Refuse(Refusal {
                    status: 401,
                    message: "this login URL's token is not the current one".into(),
                })
            };
        }
        if !self.authenticated(req.headers) {
            return Decision::Refuse(Refusal {
                status: 401,
                message: "not logged in: open the login URL printed by `hero_proc ui` (the token is also in its ui.token file, readable by its owner only), or send `Authorization: Bearer TOKEN`".into(),
            });
        }
        if req.method != "GET" && req.method != "HEAD" {
            let origin = header(req.headers, http::header::ORIGIN).map(str::to_ascii_lowercase);
            let same = origin.as_deref().is_some_and(|o| {
                o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")).is_some_and(|h| h == host)
            });
            if !same {
                return Decision::Refuse(Refusal {
                    status: 403,
                    message: format!(
                        "a write needs the Origin of this UI (http://{host}); got {}. Use the UI's own buttons, or the CLI",
                        origin.as_deref().unwrap_or("none")
                    ),
                });
            }
        }
        Decision::Pass
    }

    fn authenticated(&self, headers: &http::HeaderMap) -> bool {
        let bearer = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_is(t.trim()));
        bearer || cookies(headers).any(|(k, v)| k == COOKIE && self.token_is(v))
    }

    fn token_is(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(self.token.as_bytes()))
    }
}

fn header(h: &http::HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn cookies(h: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    h.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

fn query_token(q: &str) -> Option<String> {
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a str, path: &'a str, query: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
        RequestView { method, path, query, headers }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_of_a_loopback_bind_and_allowed_names() {
        let g = Gate::new("t".into(), "127.0.0.1:8470".parse().unwrap(), &["UI.example".into()]);
        assert_eq!(g.hosts(), ["127.0.0.1:8470", "localhost:8470", "ui.example:8470", "ui.example"]);
        let g = Gate::new("t".into(), "0.0.0.0:8470".parse().unwrap(), &[]);
        assert!(g.hosts().is_empty(), "0.0.0.0 is no name a browser should use");
    }

    #[test]
    fn the_token_is_compared_whole() {
        let g = Gate::new("abcd".into(), "127.0.0.1:1".parse().unwrap(), &[]);
        let h = headers(&[("host", "127.0.0.1:1"), ("cookie", "x=1; hero_proc_ui=abc")]);
        assert!(matches!(g.check(&view("GET", "/api/x", "", &h)), Decision::Refuse(Refusal { status: 401, .. })));
        let h = headers(&[("host", "127.0.0.1:1"), ("cookie", "x=1; hero_proc_ui=abcd")]);
        assert_eq!(g.check(&view("GET", "/api/x", "", &h)), Decision::Pass);
        let h = headers(&[("host", "127.0.0.1:1"), ("authorization", "Bearer abcd")]);
        assert_eq!(g.check(&view("GET", "/", "", &h)), Decision::Pass);
    }

    #[test]
    fn origin_must_be_this_ui_for_writes() {
        let g = Gate::new("abcd".into(), "127.0.0.1:1".parse().unwrap(), &[]);
        let ok =
            headers(&[("host", "localhost:1"), ("authorization", "Bearer abcd"), ("origin", "http://localhost:1")]);
        assert_eq!(g.check(&view("POST", "/api/x", "", &ok)), Decision::Pass);
        let other =
            headers(&[("host", "localhost:1"), ("authorization", "Bearer abcd"), ("origin", "http://127.0.0.1:1")]);
        assert!(matches!(g.check(&view("POST", "/api/x", "", &other)), Decision::Refuse(Refusal { status: 403, .. })));
    }

    #[test]
    fn token_file_is_owner_only_and_replaces_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = dir.path().join("var/ui.token");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let f = TokenFile::write(&path, "secret").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "the symlink was followed");
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        drop(f);
        assert!(!path.exists());
    }
}
