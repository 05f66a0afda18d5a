//! The per-job cap at write time: when a job's file holds more than `max_file_bytes` on
//! disk, the middle is deallocated with `fallocate(PUNCH_HOLE | KEEP_SIZE)`. The child
//! keeps appending to the same descriptor (its offsets never move, so nothing it writes
//! is lost to a race the way copy-truncate loses bytes), the head and the tail stay, and
//! the file system itself records the dropped range: readers find it with
//! `SEEK_HOLE`/`SEEK_DATA` and print `[... N bytes dropped ...]` in its place.
//!
//! Punching needs a file system that supports it (ext4, xfs, btrfs, tmpfs); elsewhere
//! the caller falls back to copy-truncate rotation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::error::{Op, Result, io_err};
use crate::{LogStore, lock};

/// Holes are punched on this boundary: a multiple of every common block size, so the
/// range really is freed and `SEEK_HOLE` reports exactly where the head ends.
const ALIGN: u64 = 64 * 1024;

/// What one [`LogStore::cap_job_output`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchReport {
    /// Bytes on disk before (`st_blocks * 512`, at most the length).
    pub disk_bytes_before: u64,
    /// Bytes on disk after.
    pub disk_bytes_after: u64,
    /// The whole dropped range after this call (`[start, end)` of the file), if any.
    pub dropped: Option<(u64, u64)>,
    /// No hole could be punched (the file system cannot, or the cap is under 512 KiB, too
    /// small to keep a head at the punch granularity): the caller should rotate instead.
    pub unsupported: bool,
}

/// Bytes a file takes on disk: allocated blocks, but never more than its length (a small
/// file has a whole block allocated; a sparse one less than its length).
pub(crate) fn disk_bytes(m: &std::fs::Metadata) -> u64 {
    m.len().min(m.blocks().saturating_mul(512))
}

/// The first hole of `[0, len)` and where data resumes after it, if there is one. Moves
/// the descriptor's offset: read with `pread` (or seek) afterwards.
pub(crate) fn dropped_range(f: &File, len: u64) -> io::Result<Option<(u64, u64)>> {
    if len == 0 {
        return Ok(None);
    }
    let fd = f.as_raw_fd();
    // SAFETY: lseek on a descriptor we own; it only moves that descriptor's offset.
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    if hole < 0 {
        let e = io::Error::last_os_error();
        // No SEEK_HOLE support: the file system has no holes to report.
        return if e.raw_os_error() == Some(libc::EINVAL) { Ok(None) } else { Err(e) };
    }
    let hole = hole as u64;
    if hole >= len {
        return Ok(None);
    }
    // SAFETY: as above.
    let data = unsafe { libc::lseek(fd, hole as libc::off_t, libc::SEEK_DATA) };
    let data = if data < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: hole up to the end (the child has not written past the punch yet).
        if e.raw_os_error() == Some(libc::ENXIO) { len } else { return Err(e) }
    } else {
        (data as u64).min(len)
    };
    Ok(Some((hole, data)))
}

/// Disk use past which a file is punched: a quarter of the cap stays free as headroom.
fn trigger(cap: u64) -> u64 {
    cap - cap / 4
}

/// The marker a reader prints where the dropped range was.
pub fn dropped_marker(bytes: u64) -> String {
    format!("[... {bytes} bytes dropped ...]")
}

impl LogStore {
    /// Holds the job's live file to `max_file_bytes` on disk: past three quarters of it,
    /// keeps the first eighth of the cap (the head) and the last three eighths (the
    /// tail) and punches out what is between. The last quarter is headroom for what a
    /// child writes at full speed before the next call. Cheap when under (one `stat`);
    /// call it as the file grows (the engine does on every inotify write event).
    pub fn cap_job_output(&self, job_id: i64) -> Result<PunchReport> {
        let path = self.job_output_path(job_id);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PunchReport::default()),
            Err(e) => return Err(io_err(Op::Stat, path)(e)),
        };
        if disk_bytes(&meta) <= trigger(self.config.max_file_bytes) {
            let d = disk_bytes(&meta);
            return Ok(PunchReport { disk_bytes_before: d, disk_bytes_after: d, ..Default::default() });
        }
        let _g = lock(&self.maint);
        self.cap_locked(job_id)
    }

    pub(crate) fn cap_locked(&self, job_id: i64) -> Result<PunchReport> {
        let path = self.job_output_path(job_id);
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PunchReport::default()),
            Err(e) => return Err(io_err(Op::Cap, path)(e)),
        };
        let meta = f.metadata().map_err(io_err(Op::Cap, &path))?;
        let before = disk_bytes(&meta);
        let mut rep = PunchReport { disk_bytes_before: before, disk_bytes_after: before, ..Default::default() };
        let cap = self.config.max_file_bytes;
        let head = (cap / 8) / ALIGN * ALIGN;
        if head == 0 {
            // Under 512 KiB a head cannot be kept at the punch granularity: rotate instead.
            rep.unsupported = true;
            return Ok(rep);
        }
        let end = meta.len().saturating_sub(cap / 8 * 3) / ALIGN * ALIGN;
        if before > trigger(cap) && end > head {
            // SAFETY: fallocate on a descriptor we own; it only deallocates `[head, end)`.
            let r = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    head as libc::off_t,
                    (end - head) as libc::off_t,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    rep.unsupported = true;
                    return Ok(rep);
                }
                return Err(io_err(Op::Cap, path)(e));
            }
        }
        let meta = f.metadata().map_err(io_err(Op::Cap, &path))?;
        rep.disk_bytes_after = disk_bytes(&meta);
        rep.dropped = dropped_range(&f, meta.len()).map_err(io_err(Op::Cap, &path))?;
        Ok(rep)
    }
}
