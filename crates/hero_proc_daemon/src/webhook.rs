//! The push webhook (`serve --webhook-addr`): Forgejo, Gitea and GitHub send a POST on
//! every push; a valid one triggers an immediate fetch and sync instead of waiting for
//! the poll interval.
//!
//! Every request must carry an HMAC-SHA256 of its body under the shared secret:
//! `X-Forgejo-Signature` / `X-Gitea-Signature` (hex) or `X-Hub-Signature-256`
//! (`sha256=<hex>`). Unsigned or wrongly signed requests get 401 and trigger nothing.
//! The body is only authenticated, never trusted for what to apply: the reconciler
//! fetches and reads the repository itself.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use sha2::Sha256;

use crate::reconciler::Reconciler;

/// Bodies larger than this are refused (push payloads are a few KiB to a few hundred).
const MAX_BODY: usize = 4 << 20;

/// The outcome of checking one request's signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Unsigned,
    BadSignature,
}

/// Check a body against the signature headers. Constant-time comparison (`verify_slice`).
pub fn verify(secret: &[u8], body: &[u8], headers: &http::HeaderMap) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let given = if let Some(h) = header("x-hub-signature-256") {
        h.strip_prefix("sha256=").unwrap_or(h)
    } else if let Some(h) = header("x-forgejo-signature").or_else(|| header("x-gitea-signature")) {
        h
    } else {
        return Verdict::Unsigned;
    };
    let Ok(given) = hex::decode(given) else { return Verdict::BadSignature };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    if mac.verify_slice(&given).is_ok() { Verdict::Accepted } else { Verdict::BadSignature }
}

/// The webhook's bounds: a forge opens a connection or two per push, so a small cap kept
/// well below the fd limit (a flood here cannot take the fds the RPC socket needs), short
/// timeouts, and a body that must arrive at a pace of at least 1 KiB/s after 5 s.
fn limits() -> hero_proc_net::Limits {
    let mut l = hero_proc_net::Limits::public("webhook", hero_proc_net::fd_budget(32, 8));
    l.header_timeout = std::time::Duration::from_secs(10);
    l.request_timeout = Some(std::time::Duration::from_secs(30));
    l
}

const PACE: hero_proc_net::Pace =
    hero_proc_net::Pace { grace: std::time::Duration::from_secs(5), min_bytes_per_sec: 1024 };

pub async fn serve(listener: tokio::net::TcpListener, secret: String, reconciler: Arc<Reconciler>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the push webhook");
    }
    let secret: Arc<[u8]> = secret.into_bytes().into();
    let make = move |peer: std::net::SocketAddr| {
        let secret = secret.clone();
        let reconciler = reconciler.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let secret = secret.clone();
            let reconciler = reconciler.clone();
            async move {
                let reply = |status: u16, text: &'static str| {
                    hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(text.as_bytes())))
                        .unwrap_or_default()
                };
                if req.method() != hyper::Method::POST {
                    return Ok::<_, std::convert::Infallible>(reply(405, "POST a push event here\n"));
                }
                let (parts, body) = req.into_parts();
                let body = match Limited::new(hero_proc_net::Paced::new(body, PACE), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) if e.is::<hero_proc_net::TooSlow>() => {
                        tracing::warn!(%peer, "webhook: {e}");
                        return Ok(reply(408, "body too slow: send the whole push event at once\n"));
                    }
                    Err(_) => return Ok(reply(413, "body too large or unreadable\n")),
                };
                match verify(&secret, &body, &parts.headers) {
                    Verdict::Accepted => {
                        tracing::info!(%peer, "webhook: push received; syncing now");
                        reconciler.trigger();
                        Ok(reply(202, "sync triggered\n"))
                    }
                    Verdict::Unsigned => {
                        tracing::warn!(%peer, "webhook: refused an unsigned request");
                        Ok(reply(401, "unsigned: configure the webhook secret in the forge\n"))
                    }
                    Verdict::BadSignature => {
                        tracing::warn!(%peer, "webhook: refused a request with a wrong signature");
                        Ok(reply(401, "wrong signature\n"))
                    }
                }
            }
        })
    };
    hero_proc_net::serve(listener, limits(), make, std::future::pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        let mut h = http::HeaderMap::new();
        assert_eq!(verify(b"s3cret", body, &h), Verdict::Unsigned);
        h.insert("x-forgejo-signature", good.parse().unwrap());
        assert_eq!(verify(b"s3cret", body, &h), Verdict::Accepted);
        assert_eq!(verify(b"other", body, &h), Verdict::BadSignature);
        assert_eq!(verify(b"s3cret", b"tampered", &h), Verdict::BadSignature);
        let mut h = http::HeaderMap::new();
        h.insert("x-hub-signature-256", format!("sha256={good}").parse().unwrap());
        assert_eq!(verify(b"s3cret", body, &h), Verdict::Accepted);
        let mut h = http::HeaderMap::new();
        h.insert("x-gitea-signature", "zz-not-hex".parse().unwrap());
        assert_eq!(verify(b"s3cret", body, &h), Verdict::BadSignature);
    }
}
