//! A JSON-RPC client over the daemon's Unix socket. One HTTP/1.1 connection, reused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::net::UnixStream;

use crate::ErrorCode;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to the hero_proc daemon at {}: {source}\n  hint: start it with `hero_proc serve`, or point HERO_PROC_SOCKET / --socket at its socket", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("lost the connection to the daemon: {0}")]
    Transport(String),
    #[error("{message}")]
    Rpc { code: i32, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable code of an RPC error, if it is one of ours.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rpc { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }
}

pub struct Client {
    path: PathBuf,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    next_id: AtomicU64,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream =
            UnixStream::connect(path).await.map_err(|source| ClientError::Connect { path: path.to_owned(), source })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { path: path.to_owned(), sender, next_id: AtomicU64::new(1) })
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// Call `method` with by-name `params`; decode the result. Prefer [`Client::call_typed`],
    /// which takes the name and both types from the method's one definition.
    pub async fn call<P: Serialize, R: DeserializeOwned>(&mut self, method: &str, params: P) -> Result<R, ClientError> {
        let value = self
            .call_value(method, serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?)
            .await?;
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(format!("{method}: {e}")))
    }

    /// Call the method `M` with its params; decode its result.
    pub async fn call_typed<M: crate::methods::Method>(
        &mut self,
        params: &M::Params,
    ) -> Result<M::Result, ClientError> {
        self.call(M::NAME, params).await
    }

    /// Call `M`, whose result is the JSON of a type this crate does not define (the
    /// reconciler's), and decode it as `T`.
    pub async fn call_foreign<M, T>(&mut self, params: &M::Params) -> Result<T, ClientError>
    where
        M: crate::methods::Method<Result = crate::wire::Foreign>,
        T: DeserializeOwned,
    {
        let raw = self.call_typed::<M>(params).await?;
        raw.decode().map_err(|e| ClientError::Protocol(format!("{}: {e}", M::NAME)))
    }

    pub async fn call_value(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = if params.is_null() { json!({}) } else { params };
        let body = serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, bytes) = self.request(http::Method::POST, "/rpc", body).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("HTTP {status}: {e}: {}", String::from_utf8_lossy(&bytes))))?;
        if let Some(err) = v.get("error") {
            return Err(ClientError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0) as i32,
                message: err.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_owned(),
            });
        }
        v.get("result").cloned().ok_or_else(|| ClientError::Protocol("answer has neither result nor error".into()))
    }

    /// A plain GET (`/health`, `/metrics`, `/openrpc.json`).
    pub async fn get(&mut self, path: &str) -> Result<(u16, String), ClientError> {
        let (status, bytes) = self.request(http::Method::GET, path, Vec::new()).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn request(&mut self, method: http::Method, path: &str, body: Vec<u8>) -> Result<(u16, Bytes), ClientError> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.sender.ready().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self.sender.send_request(req).await.map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Transport(e.to_string()))?.to_bytes();
        Ok((status, bytes))
    }
}
