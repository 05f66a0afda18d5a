//! Stable error codes. JSON-RPC reserves -32768..-32000; ours are positive and never
//! renumbered, so scripts can match on them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum ErrorCode {
    /// The named object does not exist.
    NotFound = 1001,
    /// The request conflicts with the current state (e.g. deleting a running service).
    Conflict = 1002,
    /// The request is valid but refused by policy (e.g. stopping a required service).
    Refused = 1003,
    /// The object in the request does not pass validation.
    Invalid = 1004,
    /// The store failed (disk full, read-only, locked); the message says which.
    Store = 1005,
    /// The daemon is shutting down or not ready.
    Unavailable = 1006,
    /// The database file was deleted or replaced under the running daemon: it refuses
    /// every write (and starts no process) until it is restarted on a restored file.
    DatabaseReplaced = 1007,
    /// Anything else; the message says what happened.
    Internal = 1099,
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        self as i32
    }
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        Some(match code {
            1001 => ErrorCode::NotFound,
            1002 => ErrorCode::Conflict,
            1003 => ErrorCode::Refused,
            1004 => ErrorCode::Invalid,
            1005 => ErrorCode::Store,
            1006 => ErrorCode::Unavailable,
            1007 => ErrorCode::DatabaseReplaced,
            1099 => ErrorCode::Internal,
            _ => return None,
        })
    }
}
