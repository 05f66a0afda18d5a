//! Commit statuses on the forge (hero.yaml `forgejo:`): after each sync attempt of a
//! revision the daemon tells the forge how that revision fared on this host, as Flux's
//! notification-controller does: `pending` when it starts, then `success` (applied and
//! its services running) or `failure` (refused, invalid, not decrypted, an artifact or a
//! migration failed), with the one-line reason, under the context `hero_proc/<host>`.
//!
//! Delivery never holds up a sync: posts go through a queue to one task, in order, and a
//! failed post is retried with backoff (1 s doubling to 60 s, six tries) unless a newer
//! status of the same commit is waiting. Deliveries and failures are counted (metrics)
//! and the last of each is shown in `reconcile status`. The token is sent only in the
//! `Authorization` header, to the forge's own host; it is in no log, error or answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How a revision fared on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
        }
    }
}

/// Where statuses go: `POST {api}/repos/{repo}/statuses/{sha}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Forge {
    /// `https://HOST/api/v1`, no trailing `/`.
    pub api: String,
    /// `OWNER/NAME`.
    pub repo: String,
    token: String,
}

impl std::fmt::Debug for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forge").field("api", &self.api).field("repo", &self.repo).finish_non_exhaustive()
    }
}

impl Forge {
    /// The forge of hero.yaml `forgejo:`: `url` and `repo` as given, else derived from an
    /// `https://HOST/OWNER/NAME(.git)` repository URL. `Err` says what is missing.
    pub fn from_settings(
        f: &hero_proc_spec::Forgejo,
        token: Option<&str>,
        repo_location: Option<&str>,
    ) -> Result<Forge, String> {
        let Some(token) = token else {
            return Err(format!(
                "the forgejo token `{}` was not decrypted on this host (no age key for secrets/core.sops.yaml?)",
                f.token.name
            ));
        };
        let derived = repo_location.and_then(derive_from_remote);
        let api =
            match (&f.url, &derived) {
                (Some(u), _) => u.trim_end_matches('/').to_owned(),
                (None, Some((api, _))) => api.clone(),
                (None, None) => return Err(
                    "hero.yaml `forgejo:` has no `url`, and the repository is not an https:// URL to derive it from"
                        .into(),
                ),
            };
        let repo =
            match (&f.repo, derived) {
                (Some(r), _) => r.clone(),
                (None, Some((_, r))) => r,
                (None, None) => return Err(
                    "hero.yaml `forgejo:` has no `repo`, and the repository is not an https:// URL to derive it from"
                        .into(),
                ),
            };
        Ok(Forge { api, repo, token: token.to_owned() })
    }
}

/// `https://[user@]HOST[:PORT]/OWNER/NAME[.git]` -> (`https://HOST[:PORT]/api/v1`, `OWNER/NAME`).
fn derive_from_remote(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    let (owner, name) = path.split_once('/')?;
    if host.is_empty() || owner.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((format!("https://{host}/api/v1"), format!("{owner}/{name}")))
}

pub use hero_proc_reconcile::CommitStatusView;

struct Post {
    forge: Arc<Forge>,
    sha: String,
    state: State,
    description: String,
}

#[derive(Default)]
struct Shared {
    forge: Option<Arc<Forge>>,
    view: CommitStatusView,
    last_posted: Option<(String, State)>,
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// The daemon's status poster (one per daemon).
pub struct CommitStatus {
    context: String,
    tx: tokio::sync::mpsc::UnboundedSender<Post>,
    shared: Arc<Mutex<Shared>>,
}

/// A post or answer that takes longer fails (and is retried).
const TIMEOUT: Duration = Duration::from_secs(10);
const TRIES: u32 = 6;

impl CommitStatus {
    /// Starts the delivery task (on the current runtime). `host` names the context.
    pub fn start(host: Option<&str>) -> Arc<CommitStatus> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let context = format!("hero_proc/{}", host.unwrap_or("default"));
        tokio::spawn(deliver(rx, shared.clone(), context.clone(), client()));
        Arc::new(CommitStatus { context, tx, shared })
    }

    /// The forge of the revision just loaded (`None`: statuses off).
    pub fn configure(&self, forge: Result<Option<Forge>, String>) {
        let mut s = self.shared.lock().expect("status lock");
        match forge {
            Ok(f) => {
                s.view.target = f.as_ref().map(|f| format!("{} at {}", f.repo, f.api));
                s.forge = f.map(Arc::new);
            }
            Err(why) => {
                s.view.target = Some(format!("not posted: {why}"));
                s.forge = None;
            }
        }
    }

    /// Queue `state` for `sha`. A status already said is not said again (a sync of a
    /// revision already reported, or a retry of a failure), and a revision reported
    /// final gets no new `pending` for syncs that only heal drift or retry.
    pub fn post(&self, sha: &str, state: State, description: &str) {
        let mut s = self.shared.lock().expect("status lock");
        let Some(forge) = s.forge.clone() else { return };
        if let Some((last_sha, last)) = &s.last_posted
            && last_sha == sha
            && (*last == state || (state == State::Pending && *last != State::Pending))
        {
            return;
        }
        s.last_posted = Some((sha.to_owned(), state));
        // Forgejo keeps at most 255 characters of a description; one line is the point.
        let mut description: String = description.lines().next().unwrap_or_default().chars().take(250).collect();
        if description.is_empty() {
            description = state.as_str().to_owned();
        }
        let _ = self.tx.send(Post { forge, sha: sha.to_owned(), state, description });
    }

    /// `None` while no revision has configured a forge.
    pub fn view(&self) -> Option<CommitStatusView> {
        let s = self.shared.lock().expect("status lock");
        s.view.target.as_ref()?;
        Some(CommitStatusView { context: self.context.clone(), ..s.view.clone() })
    }

    /// `hero_proc/<host>`.
    pub fn context(&self) -> &str {
        &self.context
    }
}

fn client() -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let https = tls.https_or_http().enable_http1().wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

async fn deliver(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Post>,
    shared: Arc<Mutex<Shared>>,
    context: String,
    client: Client,
) {
    let mut queue: VecDeque<Post> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        let Some(p) = queue.pop_front() else { continue };
        let what = format!("{} for {}", p.state.as_str(), &p.sha[..p.sha.len().min(12)]);
        for attempt in 1..=TRIES {
            match send(&client, &p, &context).await {
                Ok(()) => {
                    let mut s = shared.lock().expect("status lock");
                    s.view.delivered += 1;
                    s.view.last_delivered = Some(what.clone());
                    s.view.last_error = None;
                    break;
                }
                Err(e) => {
                    let retry = attempt < TRIES;
                    let msg = format!(
                        "cannot post {what} to {}: {e}{}",
                        p.forge.repo,
                        if retry { " (retrying)" } else { " (gave up)" }
                    );
                    tracing::warn!("commit status: {msg}");
                    {
                        let mut s = shared.lock().expect("status lock");
                        s.view.failed += 1;
                        s.view.last_error = Some(msg);
                    }
                    while let Ok(p) = rx.try_recv() {
                        queue.push_back(p);
                    }
                    // A newer status of the same commit says more than this one would.
                    if !retry || queue.iter().any(|q| q.sha == p.sha) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs((1u64 << (attempt - 1)).min(60))).await;
                }
            }
        }
    }
}

/// One POST; the error names the status code or the transport failure, never the token.
async fn send(client: &Client, p: &Post, context: &str) -> Result<(), String> {
    let url = format!("{}/repos/{}/statuses/{}", p.forge.api, p.forge.repo, p.sha);
    let body = serde_json::json!({
        "state": p.state.as_str(),
        "context": context,
        "description": p.description,
    });
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(&url)
        .header(http::header::USER_AGENT, concat!("hero_proc/", env!("CARGO_PKG_VERSION")))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("token {}", p.forge.token))
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let resp = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Err(_) => return Err(format!("no answer from {url} within {}s", TIMEOUT.as_secs())),
        Ok(Err(e)) => {
            return Err(format!("{url}: {}", std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    // Read (and drop) a bounded answer so the connection can be reused.
    let _ = tokio::time::timeout(
        TIMEOUT,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(resp.into_body(), 64 << 10)),
    )
    .await;
    if status.is_success() { Ok(()) } else { Err(format!("{status} from {url}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_repo_come_from_an_https_remote() {
        assert_eq!(
            derive_from_remote("https://bot@forge.example.com/hero/hero-config.git"),
            Some(("https://forge.example.com/api/v1".into(), "hero/hero-config".into()))
        );
        assert_eq!(
            derive_from_remote("https://forge.example.com:3000/hero/cfg/"),
            Some(("https://forge.example.com:3000/api/v1".into(), "hero/cfg".into()))
        );
        assert_eq!(derive_from_remote("ssh://git@forge/hero/cfg"), None);
        assert_eq!(derive_from_remote("https://forge/hero"), None);
        assert_eq!(derive_from_remote("https://forge/a/b/c"), None);
        let f = hero_proc_spec::Forgejo { url: None, repo: None, token: hero_proc_spec::Named::new("t") };
        assert!(Forge::from_settings(&f, None, Some("https://f/a/b")).unwrap_err().contains("not decrypted"));
        assert!(Forge::from_settings(&f, Some("x"), Some("/srv/repo")).unwrap_err().contains("no `url`"));
        let forge = Forge::from_settings(&f, Some("secret-token"), Some("https://f/a/b")).unwrap();
        assert!(!format!("{forge:?}").contains("secret-token"));
    }
}
