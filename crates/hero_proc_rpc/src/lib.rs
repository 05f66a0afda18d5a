//! The RPC contract shared by the daemon and every client (CLI, UI, scripts).
//!
//! JSON-RPC 2.0 over HTTP on a Unix socket (SPEC 6). This crate holds what both sides
//! must agree on, and nothing else: the method table (from which the OpenRPC document
//! is generated), the wire types, the error codes, and a small client. The daemon
//! registers a handler for each method of [`methods`] by its type; a test holds it to that.

pub mod client;
pub mod error;
pub mod listen;
pub mod methods;
pub mod schema;
pub mod wire;

pub use client::{Client, ClientError};
pub use error::ErrorCode;

/// The socket path: `--socket` > `HERO_PROC_SOCKET` > `$HERO_ROOTDIR/var/sockets/hero_proc.sock`.
pub fn default_socket(root: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("HERO_PROC_SOCKET") {
        Some(s) => s.into(),
        None => root.join("var/sockets/hero_proc.sock"),
    }
}
