//! Job output: one file per job that the child writes directly, copy-truncate rotation,
//! and reads (forward pages, tails) that cost what they return.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Op, Result, io_err};
use crate::lines::{Concat, RevLines, read_exact_at, split_lines};
use crate::{FILE_MODE, LogStore, lock, open_append};

/// How to read a job's output.
///
/// - `tail_lines: None`: read forward from `offset` (default the start), at most
///   `max_bytes` (unbounded when `None`: the whole range is held in memory); a page ends
///   at a line boundary when it can, and `next_offset` is where the next page (or a
///   follower) continues.
/// - `tail_lines: Some(n)`: the last `n` lines, read backwards from the end, never
///   before `offset`, and at most `max_bytes` back from the end (set it: a child that
///   prints one endless line would otherwise be read whole).
///
/// Offsets address the live file only. With `include_rotated` and no `offset`, the
/// rotated generations (oldest first) come before the live file as one stream.
///
/// A range the write-time cap dropped (see [`LogStore::cap_job_output`]) reads as one
/// line `[... N bytes dropped ...]`: a forward page stops where the hole starts, and
/// the next one starts with the marker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadOpts {
    pub tail_lines: Option<usize>,
    pub max_bytes: Option<u64>,
    pub offset: Option<u64>,
    pub include_rotated: bool,
    /// A forward page stops after this many lines (short lines cost more in memory than
    /// their bytes).
    pub max_lines: Option<usize>,
    /// Longer lines are cut to this many bytes, followed by `[... N bytes cut ...]`.
    pub max_line_bytes: Option<usize>,
}

/// What [`LogStore::read_job_output`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    /// Lines without their `\n`, lossy UTF-8. A last line the child has not finished yet
    /// is included as it is.
    pub lines: Vec<String>,
    /// Position in the live file after the last byte returned (0 if the read stopped
    /// inside a rotated generation); pass it as `offset` to follow the output.
    pub next_offset: u64,
    /// Data exists beyond what was returned: after it when reading forward, before it
    /// when tailing.
    pub has_more: bool,
    /// The requested `offset` was past the end of the live file, which was rotated or
    /// truncated since; reading restarted from its beginning.
    pub reset: bool,
    /// A forward page stopped inside a line: the next page's first line continues it.
    pub ends_mid_line: bool,
}

/// What one rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateReport {
    /// The live file had data and is now empty.
    pub rotated: bool,
    /// Bytes copied to `.1`.
    pub copied_bytes: u64,
    /// Generations deleted to stay within `rotated_generations`.
    pub files_deleted: u64,
    /// Bytes gone for good: deleted generations, or the live data when no generation is
    /// kept.
    pub bytes_dropped: u64,
}

/// Copy passes before truncating: each pass copies what the child wrote during the
/// previous one, shrinking the window in which output can be lost.
const COPY_PASSES: usize = 8;

impl LogStore {
    /// The live output file of a job: `jobs/<job_id>.log`.
    pub fn job_output_path(&self, job_id: i64) -> PathBuf {
        self.jobs_dir.join(format!("{job_id}.log"))
    }

    /// A rotated generation: `jobs/<job_id>.log.<generation>`, 1 the newest.
    pub fn rotated_output_path(&self, job_id: i64, generation: u32) -> PathBuf {
        self.jobs_dir.join(format!("{job_id}.log.{generation}"))
    }

    fn rotation_tmp_path(&self, job_id: i64) -> PathBuf {
        self.jobs_dir.join(format!("{job_id}.log.1.tmp"))
    }

    /// Opens (creating, 0600) the job's output file for appending. Give it to the child
    /// as both stdout and stderr, e.g.
    /// `cmd.stdout(f.try_clone()?).stderr(f)`: the child then writes to the file itself,
    /// so its output outlives the daemon, and `O_APPEND` keeps its writes at the end
    /// across copy-truncate rotations. A restarted job with the same id appends.
    pub fn open_job_output(&self, job_id: i64) -> Result<File> {
        let path = self.job_output_path(job_id);
        // A spare becomes the file when there is one and the job has none yet.
        self.spares.take_as(&path);
        open_append(&path).map_err(io_err(Op::OpenJobOutput, path))
    }

    /// After a job's end is recorded: its live output file goes back to the spare pool
    /// (see [`LogStore::keep_spare_outputs`]) if the job wrote nothing and no process has
    /// the file open any more (a child the job started in the background may still
    /// write). The next job's file is then a rename, not a new inode, which is most of
    /// what a job that prints nothing costs the file system. The job's output then reads
    /// as [`Error::NoOutput`]. Returns whether the file went; when it stays (output, a
    /// writer left, rotated generations, a full pool, rotation or caps at work), nothing
    /// changes.
    pub fn recycle_job_output(&self, job_id: i64) -> bool {
        if !self.spares.has_room() {
            return false;
        }
        let path = self.job_output_path(job_id);
        // Most files that stay hold output: one `stat` tells, before any lock, open or
        // lease (emptiness is checked again under the lease).
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.len() == 0 && m.blocks() == 0) {
            return false;
        }
        // Rotation and caps move files too; a rotation of this file in progress would
        // copy the next job's output under this one's name.
        let Ok(_g) = self.maint.try_lock() else { return false };
        if self.rotated_output_path(job_id, 1).exists() {
            return false;
        }
        self.spares.give_back(&path)
    }

    /// Existing rotated generations, ascending. Generations past the configured count
    /// (left by a larger earlier setting) are included so nothing is orphaned.
    fn generations(&self, job_id: i64) -> Vec<(u32, PathBuf)> {
        let mut out = Vec::new();
        let mut g = 1;
        loop {
            let p = self.rotated_output_path(job_id, g);
            let exists = p.exists();
            if exists {
                out.push((g, p));
            } else if g >= self.config.rotated_generations {
                return out;
            }
            g += 1;
        }
    }

    /// Reads a job's output; see [`ReadOpts`]. `Error::NoOutput` if the job has neither
    /// a live file nor a rotated generation.
    pub fn read_job_output(&self, job_id: i64, opts: ReadOpts) -> Result<JobOutput> {
        let live_path = self.job_output_path(job_id);
        let mut stream = Concat::default();
        if opts.include_rotated && opts.offset.is_none() {
            for (_, path) in self.generations(job_id).into_iter().rev() {
                if let Some((f, m)) = open_read(&path)? {
                    stream.push(f, m.len());
                }
            }
        }
        let live_base = stream.len();
        let mut live_len = 0;
        let mut hole = None;
        let mut live_ino = None;
        match open_read(&live_path)? {
            Some((f, m)) => {
                let len = m.len();
                live_len = len;
                live_ino = Some(m.ino());
                hole = crate::punch::dropped_range(&f, len)
                    .map_err(io_err(Op::ReadJobOutput, &live_path))?
                    .map(|(h, e)| (live_base + h, live_base + e));
                stream.push(f, len);
            }
            None if stream.is_empty() => return Err(Error::NoOutput { job_id, path: live_path }),
            None => {}
        }
        let end = stream.len();
        let (start, reset) = match opts.offset {
            Some(o) if o > live_len => (live_base, true),
            Some(o) => (live_base + o, false),
            None => (0, false),
        };
        let read = match opts.tail_lines {
            Some(n) => tail(&stream, start, end, n, &opts, hole),
            None => forward(&stream, start, end, &opts, hole),
        };
        let mut r = read.map_err(io_err(Op::ReadJobOutput, &live_path))?;
        // An empty file recycled while it was read (see `recycle_job_output`) may be the
        // next job's by now: what was read is that job's, not this one's.
        if let Some(ino) = live_ino
            && fs::metadata(&live_path).map_or(true, |m| m.ino() != ino)
        {
            return Err(Error::NoOutput { job_id, path: live_path });
        }
        if let Some(max) = opts.max_line_bytes {
            for l in &mut r.lines {
                cut_line(l, max);
            }
        }
        Ok(JobOutput {
            lines: r.lines,
            next_offset: r.pos.saturating_sub(live_base),
            has_more: r.has_more,
            reset,
            ends_mid_line: r.mid_line,
        })
    }

    /// Copy-truncates the job's live file now: `.N` is dropped, `.k` becomes `.k+1`,
    /// the live data becomes `.1`, and the live file is emptied while the child keeps
    /// writing to it. See the crate docs for what can be lost.
    pub fn rotate_job_output(&self, job_id: i64) -> Result<RotateReport> {
        let _g = lock(&self.maint);
        self.rotate_locked(job_id)
    }

    pub(crate) fn rotate_locked(&self, job_id: i64) -> Result<RotateReport> {
        let live_path = self.job_output_path(job_id);
        let mut rep = RotateReport::default();
        let live = match OpenOptions::new().read(true).write(true).open(&live_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rep),
            Err(e) => return Err(io_err(Op::Rotate, live_path)(e)),
        };
        let len = live.metadata().map_err(io_err(Op::Rotate, &live_path))?.len();
        if len == 0 {
            return Ok(rep);
        }
        let keep = self.config.rotated_generations;
        for (g, path) in self.generations(job_id) {
            if g >= keep {
                rep.bytes_dropped += remove_file(&path, Op::Rotate)?;
                rep.files_deleted += 1;
            }
        }
        if keep == 0 {
            live.set_len(0).map_err(io_err(Op::Truncate, &live_path))?;
            rep.rotated = true;
            rep.bytes_dropped += len;
            return Ok(rep);
        }
        for g in (1..keep).rev() {
            let (from, to) = (self.rotated_output_path(job_id, g), self.rotated_output_path(job_id, g + 1));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(Op::Rotate, from)(e)),
            }
        }
        let tmp = self.rotation_tmp_path(job_id);
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err(Op::Rotate, &tmp))?;
        // A capped file's dropped range is not copied (it would read as zeros): the
        // generation gets the marker line in its place.
        let mut pos = 0u64;
        let mut copied = 0u64;
        let len_now = live.metadata().map_err(io_err(Op::Rotate, &live_path))?.len();
        if let Some((h, e)) = crate::punch::dropped_range(&live, len_now).map_err(io_err(Op::Rotate, &live_path))? {
            let mut src = &live;
            // dropped_range moved the offset.
            src.seek(SeekFrom::Start(0)).map_err(io_err(Op::Rotate, &live_path))?;
            copied += io::copy(&mut io::Read::take(src, h), &mut out).map_err(io_err(Op::Rotate, &tmp))?;
            let marker = format!("\n{}\n", crate::punch::dropped_marker(e - h));
            io::Write::write_all(&mut out, marker.as_bytes()).map_err(io_err(Op::Rotate, &tmp))?;
            copied += marker.len() as u64;
            pos = e;
        }
        for _ in 0..COPY_PASSES {
            let now = live.metadata().map_err(io_err(Op::Rotate, &live_path))?.len();
            if now <= pos {
                break;
            }
            let mut src = &live;
            src.seek(SeekFrom::Start(pos)).map_err(io_err(Op::Rotate, &live_path))?;
            let want = now - pos;
            let n = io::copy(&mut io::Read::take(src, want), &mut out).map_err(io_err(Op::Rotate, &tmp))?;
            pos += n;
            copied += n;
            if n < want {
                // The file shrank under us (someone else truncated it); keep what we got.
                break;
            }
        }
        drop(out);
        // Rename before truncating: a crash in between duplicates data, never loses it.
        let first = self.rotated_output_path(job_id, 1);
        fs::rename(&tmp, &first).map_err(io_err(Op::Rotate, &tmp))?;
        live.set_len(0).map_err(io_err(Op::Truncate, &live_path))?;
        rep.rotated = true;
        rep.copied_bytes = copied;
        Ok(rep)
    }

    /// Deletes the job's live file and every rotated generation (for the compactor, when
    /// the job's row goes). Returns the bytes freed; a job without files frees 0.
    pub fn delete_job_output(&self, job_id: i64) -> Result<u64> {
        let mut freed = remove_file(&self.job_output_path(job_id), Op::Delete)?;
        freed += remove_file(&self.rotation_tmp_path(job_id), Op::Delete)?;
        for (_, path) in self.generations(job_id) {
            freed += remove_file(&path, Op::Delete)?;
        }
        Ok(freed)
    }
}

/// Opens for reading, with its current metadata; `None` if missing.
fn open_read(path: &std::path::Path) -> Result<Option<(File, fs::Metadata)>> {
    match File::open(path) {
        Ok(f) => {
            let m = f.metadata().map_err(io_err(Op::ReadJobOutput, path))?;
            Ok(Some((f, m)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(Op::ReadJobOutput, path)(e)),
    }
}

/// Removes a file, returning its size; a missing file is 0 bytes.
pub(crate) fn remove_file(path: &std::path::Path, op: Op) -> Result<u64> {
    let len = match fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(op, path)(e)),
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(len),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(op, path)(e)),
    }
}

struct Read {
    lines: Vec<String>,
    pos: u64,
    has_more: bool,
    mid_line: bool,
}

/// Cuts a line longer than `max` bytes at a char boundary and says how much went.
fn cut_line(l: &mut String, max: usize) {
    if l.len() <= max {
        return;
    }
    let mut at = max;
    while !l.is_char_boundary(at) {
        at -= 1;
    }
    let cut = l.len() - at;
    l.truncate(at);
    l.push_str(&format!(" [... {cut} bytes cut ...]"));
}

/// Forward page of `[start, end)`, never crossing the dropped range `hole`: a page
/// stops where it starts, and a page starting inside it begins with the marker.
fn forward(s: &Concat, start: u64, end: u64, opts: &ReadOpts, hole: Option<(u64, u64)>) -> io::Result<Read> {
    let mut start = start;
    let mut marker = None;
    let mut page_end = end;
    if let Some((h, e)) = hole {
        if start >= h && start < e {
            marker = Some(crate::punch::dropped_marker(e - h));
            start = e;
        } else if start < h {
            page_end = h;
        }
    }
    let stop = opts.max_bytes.map_or(page_end, |m| page_end.min(start.saturating_add(m)));
    let len = usize::try_from(stop - start).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let mut buf = vec![0u8; len];
    read_exact_at(s, &mut buf, start)?;
    if stop < page_end && buf.last() != Some(&b'\n') {
        // End the page at a line boundary unless one line is larger than the page.
        if let Some(i) = memchr::memrchr(b'\n', &buf) {
            buf.truncate(i + 1);
        }
    }
    if let Some(max) = opts.max_lines
        && let Some(i) = memchr::memchr_iter(b'\n', &buf).nth(max.max(1) - 1)
    {
        buf.truncate(i + 1);
    }
    let pos = start + buf.len() as u64;
    // Stopping at the hole ends the line there: the marker goes on its own line.
    let mid_line = !buf.is_empty() && buf.last() != Some(&b'\n') && pos != page_end;
    let mut lines = split_lines(&buf);
    if let Some(m) = marker {
        lines.insert(0, m);
    }
    Ok(Read { lines, pos, has_more: pos < end, mid_line })
}

/// The last `n` lines of `[start, end)`, reading at most `max_bytes` back from `end`;
/// a dropped range in between reads as its marker line.
fn tail(s: &Concat, start: u64, end: u64, n: usize, opts: &ReadOpts, hole: Option<(u64, u64)>) -> io::Result<Read> {
    let from = opts.max_bytes.map_or(start, |m| start.max(end.saturating_sub(m)));
    // (range start, range end, marker before it): newest range first.
    let mut ranges = Vec::new();
    match hole {
        Some((h, e)) if h < end && e > from => {
            ranges.push((from.max(e), end, None));
            if from < h {
                ranges.push((from, h, Some(crate::punch::dropped_marker(e - h))));
            } else {
                ranges.push((from, from, Some(crate::punch::dropped_marker(e - h))));
            }
        }
        _ => ranges.push((from, end, None)),
    }
    let mut lines = Vec::new();
    let mut all_done = true;
    for (a, b, marker) in ranges {
        if lines.len() >= n {
            all_done = false;
            break;
        }
        if let Some(m) = marker {
            lines.push(m.into_bytes());
        }
        let mut rev = RevLines::new(s, a, b)?;
        while lines.len() < n {
            match rev.next_line()? {
                Some(l) => lines.push(l),
                None => break,
            }
        }
        if rev.done() && a == from && from > start && lines.len() > 1 && a < b {
            // The byte budget cut the first line; drop the fragment unless it is all we have.
            let mut before = [0u8];
            read_exact_at(s, &mut before, from - 1)?;
            if before[0] != b'\n' {
                lines.pop();
            }
        }
        all_done &= rev.done();
    }
    let has_more = !all_done || from > start;
    let lines = lines.into_iter().rev().map(|l| String::from_utf8_lossy(&l).into_owned()).collect();
    Ok(Read { lines, pos: end, has_more, mid_line: false })
}
