//! Downloading: streamed, hashed on the way, checked, then renamed into the store.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::{
    ArtifactError, ArtifactId, Cache, Cause, Counters, Digest, InstallError, Installed, MAX_ARTIFACT_BYTES, Registry,
};

/// Downloads at once, at most (each is I/O-bound; more would only split the bandwidth).
const PARALLEL: usize = 4;
/// Chunks in flight between the network and the writer thread.
const CHUNKS_IN_FLIGHT: usize = 16;
/// Kept free on the disk beyond the file itself: the database and logs live there too.
const DISK_RESERVE: u64 = 16 << 20;

/// Where progress goes (the CLI draws a line on a terminal; the daemon counts).
pub trait Progress: Send + Sync {
    fn started(&self, _id: &ArtifactId, _total: Option<u64>) {}
    fn advanced(&self, _id: &ArtifactId, _bytes: u64) {}
    fn finished(&self, _id: &ArtifactId) {}
}

/// No progress shown.
pub struct Quiet;
impl Progress for Quiet {}

/// Redirects followed at most (a registry that hands downloads to object storage needs one).
const MAX_REDIRECTS: usize = 5;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Why a request got no answer.
enum RequestError {
    Timeout,
    Connect(String),
    Other(String),
}

/// Makes pinned artifacts present in a [`Cache`].
#[derive(Clone)]
pub struct Installer {
    client: HttpClient,
    registry: Registry,
    cache: Cache,
    counters: Arc<Counters>,
    /// One download per digest at a time: a second install of the same file waits for
    /// the first and then finds it in the store.
    in_flight: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Installer {
    pub fn new(registry: Registry, cache: Cache, counters: Arc<Counters>) -> Result<Installer, String> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(registry.timeout));
        // The system's CA store (a forge with a private CA), else Mozilla's roots.
        let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let https = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Installer { client, registry, cache, counters, in_flight: Arc::default() })
    }

    /// A request to `url`, redirects followed; the token goes only to the registry's
    /// own host. The answer's headers arrive within `registry.timeout`.
    async fn request(
        &self,
        method: http::Method,
        url: &str,
        limit: std::time::Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, RequestError> {
        let registry_host = url.parse::<http::Uri>().ok().and_then(|u| u.authority().cloned());
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: http::Uri = url.parse().map_err(|e| RequestError::Other(format!("bad URL: {e}")))?;
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(http::header::USER_AGENT, concat!("hero_proc/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = &self.registry.token
                && uri.authority() == registry_host.as_ref()
            {
                req = req.header(http::header::AUTHORIZATION, format!("token {}", t.expose()));
            }
            let req = req.body(http_body_util::Empty::new()).map_err(|e| RequestError::Other(e.to_string()))?;
            let resp = match tokio::time::timeout(limit, self.client.request(req)).await {
                Err(_) => return Err(RequestError::Timeout),
                Ok(Err(e)) if e.is_connect() => return Err(RequestError::Connect(innermost(&e))),
                Ok(Err(e)) => return Err(RequestError::Other(innermost(&e))),
                Ok(Ok(r)) => r,
            };
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(next) = resp.headers().get(http::header::LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            // An absolute URL, or a path on the same host.
            url = if next.starts_with('/') {
                let base = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                format!("{}://{base}{next}", uri.scheme_str().unwrap_or("https"))
            } else {
                next.to_owned()
            };
        }
        Err(RequestError::Other(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// The same installer for another registry setting, sharing the client's pool, the
    /// counters and the in-flight downloads.
    pub fn with_registry(&self, registry: Registry) -> Result<Installer, String> {
        let mut i = Installer::new(registry, self.cache.clone(), self.counters.clone())?;
        i.in_flight = self.in_flight.clone();
        Ok(i)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Make every `(id, digest)` present and linked. Missing digests are downloaded
    /// (each once, `PARALLEL` at a time); links are made only when every download
    /// succeeded, so a failed install changes no link. All failures are reported.
    pub async fn install(
        &self,
        needed: &[(ArtifactId, Digest)],
        progress: &dyn Progress,
    ) -> Result<Installed, InstallError> {
        let io_fail = |id: &ArtifactId, e: io::Error| {
            let cause = disk_or_io(&e);
            self.counters.failed(cause);
            ArtifactError { id: id.clone(), cause, message: format!("cannot prepare the artifact store: {e}") }
        };
        if let Err(e) = self.cache.prepare() {
            let id = needed.first().map(|(id, _)| id.clone());
            return Err(InstallError { failed: id.map(|id| io_fail(&id, e)).into_iter().collect() });
        }
        // One download per digest, named by the first version that uses it.
        let mut missing: BTreeMap<&Digest, &ArtifactId> = BTreeMap::new();
        for (id, d) in needed {
            if !self.cache.has(d) {
                missing.entry(d).or_insert(id);
            }
        }
        let mut out = Installed::default();
        let mut failed = Vec::new();
        let missing: Vec<(&ArtifactId, &Digest)> = missing.into_iter().map(|(d, id)| (id, d)).collect();
        for batch in missing.chunks(PARALLEL) {
            let results = futures_join(batch.iter().map(|(id, d)| self.fetch_into_store(id, d, progress))).await;
            for ((id, _), r) in batch.iter().zip(results) {
                match r {
                    Ok(Some(size)) => out.downloaded.push(((*id).clone(), size)),
                    Ok(None) => {}
                    Err(e) => failed.push(e),
                }
            }
        }
        if !failed.is_empty() {
            return Err(InstallError { failed });
        }
        for (id, d) in needed {
            match self.cache.link(id, d) {
                Ok(true) => out.linked.push(id.clone()),
                Ok(false) => {}
                Err(e) => failed.push(io_fail(id, e)),
            }
        }
        if failed.is_empty() { Ok(out) } else { Err(InstallError { failed }) }
    }

    /// Download `id` and return its digest and size without keeping it (for
    /// `hero_proc artifact lock`, on a machine that has no store).
    pub async fn digest_of(&self, id: &ArtifactId, progress: &dyn Progress) -> Result<(Digest, u64), ArtifactError> {
        let (digest, size) = self.stream(id, None, progress).await?;
        Ok((digest, size))
    }

    /// The size the registry announces for `id` (a `HEAD`; the file's size for
    /// `file://`), for a preview. `None` when it does not say or cannot be reached.
    pub async fn size_of(&self, id: &ArtifactId) -> Option<u64> {
        let url = self.registry.url_of(id);
        if let Some(path) = url.strip_prefix("file://") {
            return std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len());
        }
        // A preview must not wait long on a registry that is down: it holds the sync.
        let limit = self.registry.timeout.min(std::time::Duration::from_secs(2));
        let resp = self.request(http::Method::HEAD, &url, limit).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }

    /// [`Installer::size_of`] for several at once; results in order.
    pub async fn sizes_of(&self, ids: &[ArtifactId]) -> Vec<Option<u64>> {
        futures_join(ids.iter().map(|id| self.size_of(id))).await
    }

    /// [`Installer::digest_of`] for several, `PARALLEL` at a time; results in order.
    pub async fn digests_of(
        &self,
        ids: &[ArtifactId],
        progress: &dyn Progress,
    ) -> Vec<Result<(Digest, u64), ArtifactError>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(PARALLEL) {
            out.extend(futures_join(batch.iter().map(|id| self.digest_of(id, progress))).await);
        }
        out
    }

    /// Download `d` into the store unless it is there (or another install is bringing
    /// it). `Some(size)` when this call downloaded it.
    async fn fetch_into_store(
        &self,
        id: &ArtifactId,
        d: &Digest,
        progress: &dyn Progress,
    ) -> Result<Option<u64>, ArtifactError> {
        let gate = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(d.clone()).or_default().clone()
        };
        let _turn = gate.lock().await;
        if self.cache.has(d) {
            return Ok(None);
        }
        let tmp = self.cache.tmp_dir().join(format!("{}.{}.part", d.hex(), std::process::id()));
        let result = self.stream(id, Some(&tmp), progress).await;
        let finish = match result {
            Ok((got, size)) if got == *d => {
                // Checked: executable by every account, then under its name.
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                    .and_then(|()| std::fs::rename(&tmp, self.cache.file_of(d)))
                    .and_then(|()| sync_dir(&self.cache.file_of(d)))
                    .map(|()| size)
                    .map_err(|e| {
                        let cause = disk_or_io(&e);
                        ArtifactError { id: id.clone(), cause, message: format!("cannot store the checked file: {e}") }
                    })
            }
            Ok((got, size)) => Err(ArtifactError {
                id: id.clone(),
                cause: Cause::Digest,
                message: format!(
                    "the {size} bytes from {} have digest {got}, but artifacts.lock pins {d}; nothing was installed. The registry (or something on the way) serves other bytes for this version: if it was re-published on purpose, delete its line from artifacts.lock, run `hero_proc artifact lock` and review the new digest in the PR",
                    self.source_of(id)
                ),
            }),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&tmp);
        {
            // Drop the gate once nobody waits on it.
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&gate) <= 2 {
                map.remove(d);
            }
        }
        match finish {
            Ok(size) => {
                self.counters.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(size))
            }
            Err(e) => {
                self.counters.failed(e.cause);
                Err(e)
            }
        }
    }

    fn no_space(&self, id: &ArtifactId, url: &str, n: u64) -> ArtifactError {
        ArtifactError {
            id: id.clone(),
            cause: Cause::Disk,
            message: format!(
                "no space for {url}: {n} bytes needed, and {} MiB kept free, under {}; free space or prune old versions (`hero_proc artifact prune`)",
                DISK_RESERVE >> 20,
                self.cache.tmp_dir().display()
            ),
        }
    }

    fn source_of(&self, id: &ArtifactId) -> String {
        self.registry.url_of(id)
    }

    /// Stream `id` through SHA-256, into `into` when given (created new, owner-only,
    /// fsynced). The digest and byte count of what arrived.
    async fn stream(
        &self,
        id: &ArtifactId,
        into: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<(Digest, u64), ArtifactError> {
        let url = self.registry.url_of(id);
        let fail = |cause: Cause, message: String| ArtifactError { id: id.clone(), cause, message };
        if let Some(dir) = url.strip_prefix("file://") {
            let path = PathBuf::from(dir);
            if let Ok(m) = std::fs::metadata(&path) {
                let n = m.len();
                if n > MAX_ARTIFACT_BYTES {
                    return Err(fail(
                        Cause::TooLarge,
                        format!("{url} is {n} bytes, more than the {MAX_ARTIFACT_BYTES} accepted"),
                    ));
                }
                if into.is_some() && self.cache.free_bytes().is_some_and(|free| free < n.saturating_add(DISK_RESERVE)) {
                    return Err(self.no_space(id, &url, n));
                }
            }
            let into = into.map(Path::to_path_buf);
            let (tx, rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
            let writer = tokio::task::spawn_blocking(move || write_and_hash(rx, into.as_deref()));
            let read = tokio::task::spawn_blocking(move || -> io::Result<()> {
                let mut f = std::fs::File::open(&path)?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return Ok(());
                    }
                }
            });
            progress.started(id, None);
            let read = read.await.map_err(|e| fail(Cause::Io, e.to_string()))?;
            if let Err(e) = read {
                let _ = writer.await;
                return Err(match e.kind() {
                    io::ErrorKind::NotFound => fail(Cause::NotFound, format!("{url} does not exist")),
                    _ => fail(Cause::Io, format!("cannot read {url}: {e}")),
                });
            }
            let (digest, size) = writer
                .await
                .map_err(|e| fail(Cause::Io, e.to_string()))?
                .map_err(|e| fail(disk_or_io(&e), format!("cannot write the download: {e}")))?;
            progress.advanced(id, size);
            progress.finished(id);
            return Ok((digest, size));
        }
        let resp = self
            .request(http::Method::GET, &url, self.registry.timeout)
            .await
            .map_err(|e| request_error(id, &url, e))?;
        let status = resp.status();
        if !status.is_success() {
            let (cause, what) = match status.as_u16() {
                404 => (
                    Cause::NotFound,
                    "the registry has no such package version or file: was it published (`PUT .../NAME/VERSION/NAME`)? Is the version in the script right?".to_owned(),
                ),
                401 | 403 => (
                    Cause::Unauthorized,
                    "the registry refused the credentials: check `registry.token` in hero.yaml and that the secret holds a token with package read access".to_owned(),
                ),
                s if s >= 500 => (Cause::Server, "the registry failed; the sync retries with its backoff".to_owned()),
                _ => (Cause::Http, "unexpected answer".to_owned()),
            };
            return Err(fail(cause, format!("{status} from {url}: {what}")));
        }
        let total: Option<u64> =
            resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut body = resp.into_body();
        if let Some(n) = total {
            if n > MAX_ARTIFACT_BYTES {
                return Err(fail(
                    Cause::TooLarge,
                    format!("{url} is {n} bytes, more than the {MAX_ARTIFACT_BYTES} accepted"),
                ));
            }
            if into.is_some()
                && let Some(free) = self.cache.free_bytes()
                && free < n.saturating_add(DISK_RESERVE)
            {
                tracing::debug!(%id, free, "no space for the download");
                return Err(self.no_space(id, &url, n));
            }
        }
        progress.started(id, total);
        let truncated = |received: u64| {
            tracing::debug!(%id, received, "download cut short");
            fail(
                Cause::Truncated,
                format!(
                    "the connection to {url} ended before the body was complete ({} bytes announced); the sync retries with its backoff",
                    total.map_or("no length".to_owned(), |t| t.to_string())
                ),
            )
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let into_owned = into.map(Path::to_path_buf);
        let writer = tokio::task::spawn_blocking(move || write_and_hash(rx, into_owned.as_deref()));
        let mut received: u64 = 0;
        let body: Result<(), ArtifactError> = loop {
            use http_body_util::BodyExt;
            // Each read gets `timeout`: a stalled registry fails, a slow one does not.
            let frame = match tokio::time::timeout(self.registry.timeout, body.frame()).await {
                Err(_) => Err(RequestError::Timeout),
                Ok(None) => Ok(None),
                Ok(Some(Err(e))) => Err(RequestError::Other(e.to_string())),
                Ok(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => Ok(Some(d)),
                    Err(_) => continue, // trailers
                },
            };
            match frame {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    if received > MAX_ARTIFACT_BYTES {
                        break Err(fail(Cause::TooLarge, format!("{url} sent more than {MAX_ARTIFACT_BYTES} bytes")));
                    }
                    self.counters.bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    progress.advanced(id, bytes.len() as u64);
                    if tx.send(bytes.to_vec()).await.is_err() {
                        break Ok(()); // the writer failed: its error is reported below
                    }
                }
                Ok(None) => break Ok(()),
                // The messages hold no byte counts that change from one try to the next:
                // history writes one line per revision and error.
                Err(RequestError::Timeout) => {
                    tracing::debug!(%id, received, "download stalled");
                    break Err(fail(
                        Cause::Timeout,
                        format!(
                            "{url} sent nothing for {:?} in the middle of the body; the sync retries with its backoff (`registry.timeout` in hero.yaml)",
                            self.registry.timeout
                        ),
                    ));
                }
                Err(_) => break Err(truncated(received)),
            }
        };
        drop(tx);
        let written = writer.await.map_err(|e| fail(Cause::Io, e.to_string()))?;
        progress.finished(id);
        body?;
        if let Some(t) = total
            && received != t
        {
            return Err(truncated(received));
        }
        written.map_err(|e| fail(disk_or_io(&e), format!("cannot write the download of {url}: {e}")))
    }
}

/// Run futures concurrently on this task and collect their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.expect("every future finished")).collect()
}

/// The writer thread: hash every chunk, write it to `into` (a new file, never an
/// existing one) and fsync at the end.
fn write_and_hash(mut rx: mpsc::Receiver<Vec<u8>>, into: Option<&Path>) -> io::Result<(Digest, u64)> {
    let mut file = match into {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Some(std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p)?)
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        if let Some(f) = file.as_mut() {
            f.write_all(&chunk)?;
        }
    }
    if let Some(f) = file {
        f.sync_all()?;
    }
    let digest = Digest::from_hex(&hex::encode(hasher.finalize())).expect("sha256 is 64 hex digits");
    Ok((digest, size))
}

fn sync_dir(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn disk_or_io(e: &io::Error) -> Cause {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS) | Some(libc::EACCES) => Cause::Disk,
        _ => Cause::Io,
    }
}

fn request_error(id: &ArtifactId, url: &str, e: RequestError) -> ArtifactError {
    let (cause, message) = match e {
        RequestError::Timeout => (
            Cause::Timeout,
            format!("{url}: no answer in time (`registry.timeout` in hero.yaml); the sync retries with its backoff"),
        ),
        RequestError::Connect(d) => {
            (Cause::Connect, format!("{url}: cannot connect; the sync retries with its backoff ({d})"))
        }
        RequestError::Other(d) => (Cause::Connect, format!("{url}: the request failed ({d})")),
    };
    ArtifactError { id: id.clone(), cause, message }
}

/// The innermost error's text (hyper's outer ones say only "client error").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
