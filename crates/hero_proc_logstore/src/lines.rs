//! Reading primitives: positional reads over one file or over several files seen as one
//! stream (rotated generations followed by the live file), and a line iterator that
//! walks backwards from the end, so a tail or a newest-first query costs what it
//! returns, not the size of the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Smallest backwards read; grows with the pending partial line so a very long line
/// costs O(n), not O(n²).
const CHUNK: usize = 64 * 1024;

/// `pread`-style reads; `&self` so one handle serves many readers without seeking.
pub(crate) trait ReadAt {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, pos)
    }
}

/// Fills `buf` from `pos`; a short file (truncated meanwhile) is `UnexpectedEof`.
pub(crate) fn read_exact_at<R: ReadAt + ?Sized>(r: &R, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match r.read_at(buf, pos) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Several files read as one byte stream, each up to the length it had when added
/// (a snapshot, so a file that keeps growing does not move the stream's end).
#[derive(Default)]
pub(crate) struct Concat {
    /// (file, logical start, length)
    segs: Vec<(File, u64, u64)>,
    total: u64,
}

impl Concat {
    pub(crate) fn push(&mut self, file: File, len: u64) {
        self.segs.push((file, self.total, len));
        self.total += len;
    }

    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }
}

impl ReadAt for Concat {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let idx = self.segs.partition_point(|(_, start, len)| start + len <= pos);
        let Some((file, start, len)) = self.segs.get(idx) else { return Ok(0) };
        let within = pos - start;
        let n = buf.len().min(usize::try_from(len - within).unwrap_or(usize::MAX));
        FileExt::read_at(file, &mut buf[..n], within)
    }
}

/// Lines of the byte range `[start, end)` from the last to the first, without their
/// `\n`. A final `\n` ends the last line rather than starting an empty one.
pub(crate) struct RevLines<'r, R: ReadAt + ?Sized> {
    r: &'r R,
    start: u64,
    /// `buf` holds the bytes `[pos, pos + buf.len())` not yet returned.
    pos: u64,
    buf: Vec<u8>,
    /// Leading bytes of `buf` not yet searched for `\n` (the rest holds none).
    unsearched: usize,
    done: bool,
}

impl<'r, R: ReadAt + ?Sized> RevLines<'r, R> {
    pub(crate) fn new(r: &'r R, start: u64, end: u64) -> io::Result<Self> {
        let mut pos = end;
        if end > start {
            let mut last = [0u8];
            read_exact_at(r, &mut last, end - 1)?;
            if last[0] == b'\n' {
                pos = end - 1;
            }
        }
        Ok(RevLines { r, start, pos, buf: Vec::new(), unsearched: 0, done: end <= start })
    }

    /// True once the first line of the range has been returned.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    pub(crate) fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if let Some(i) = memchr::memrchr(b'\n', &self.buf[..self.unsearched]) {
                let line = self.buf[i + 1..].to_vec();
                self.buf.truncate(i);
                self.unsearched = i;
                return Ok(Some(line));
            }
            if self.pos == self.start {
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let want = CHUNK.max(self.buf.len());
            let n = usize::try_from(self.pos - self.start).map_or(want, |avail| avail.min(want));
            let new_pos = self.pos - n as u64;
            let mut chunk = vec![0u8; n + self.buf.len()];
            read_exact_at(self.r, &mut chunk[..n], new_pos)?;
            chunk[n..].copy_from_slice(&self.buf);
            self.buf = chunk;
            self.pos = new_pos;
            self.unsearched = n;
        }
    }
}

/// Splits bytes into lines (lossy UTF-8); a final `\n` does not start an empty line.
pub(crate) fn split_lines(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// In-memory reader that counts the bytes it hands out.
    struct Mem {
        data: Vec<u8>,
        read: Cell<u64>,
    }

    impl ReadAt for Mem {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            let pos = pos as usize;
            if pos >= self.data.len() {
                return Ok(0);
            }
            let n = buf.len().min(self.data.len() - pos);
            buf[..n].copy_from_slice(&self.data[pos..pos + n]);
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    fn mem(s: &[u8]) -> Mem {
        Mem { data: s.to_vec(), read: Cell::new(0) }
    }

    fn rev_all(data: &[u8], start: u64, end: u64) -> Vec<String> {
        let m = mem(data);
        let mut r = RevLines::new(&m, start, end).unwrap();
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(String::from_utf8(l).unwrap());
        }
        out
    }

    #[test]
    fn reverse_lines_edge_cases() {
        assert!(rev_all(b"", 0, 0).is_empty());
        assert_eq!(rev_all(b"\n", 0, 1), [""]);
        assert_eq!(rev_all(b"a", 0, 1), ["a"]);
        assert_eq!(rev_all(b"a\nb\n", 0, 4), ["b", "a"]);
        assert_eq!(rev_all(b"a\nb", 0, 3), ["b", "a"]);
        assert_eq!(rev_all(b"a\n\nb\n\n", 0, 6), ["", "b", "", "a"]);
        // A sub-range: only "b\nc" of "a\nb\nc\nd".
        assert_eq!(rev_all(b"a\nb\nc\nd", 2, 5), ["c", "b"]);
    }

    #[test]
    fn reverse_matches_forward_on_long_and_many_lines() {
        let mut data = Vec::new();
        let mut expected = Vec::new();
        for i in 0..5000 {
            // Some lines much longer than a chunk, to cross chunk boundaries.
            let line = if i % 997 == 0 { "x".repeat(200_000) } else { format!("line {i}") };
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
            expected.push(line);
        }
        expected.reverse();
        assert_eq!(rev_all(&data, 0, data.len() as u64), expected);
    }

    #[test]
    fn tail_reads_only_the_end() {
        let mut data = Vec::new();
        for i in 0..1_000_000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let m = mem(&data);
        let mut r = RevLines::new(&m, 0, data.len() as u64).unwrap();
        for i in (999_990..1_000_000).rev() {
            assert_eq!(r.next_line().unwrap().unwrap(), format!("line {i}").into_bytes());
        }
        assert!(!r.done());
        assert!(m.read.get() <= (CHUNK as u64) + 1, "read {} of {} bytes", m.read.get(), data.len());
    }

    #[test]
    fn split_lines_is_lossy_and_ignores_the_final_newline() {
        assert!(split_lines(b"").is_empty());
        assert_eq!(split_lines(b"a\n"), ["a"]);
        assert_eq!(split_lines(b"a\n\n"), ["a", ""]);
        assert_eq!(split_lines(b"a\xffb\nc"), ["a\u{fffd}b", "c"]);
    }
}
