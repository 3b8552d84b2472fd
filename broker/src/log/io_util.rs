//! Small file helpers shared by the log: positional vectored writes, positional reads
//! into fresh (not zeroed) buffers, and the write-fsync-rename sequence every checkpoint
//! goes through.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Reads exactly `len` bytes at `offset` with `pread` into a new buffer that is not
/// zeroed first: a fetch from the active segment reads up to megabytes, and zeroing them
/// only for the kernel to overwrite them cost as much as a tenth of the read.
pub(crate) fn pread_exact(file: &File, len: usize, offset: u64) -> io::Result<bytes::BytesMut> {
    let mut buf = bytes::BytesMut::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        // SAFETY: `pread` writes at most `spare.len()` bytes into `spare`, memory this
        // buffer owns; only the bytes it reports written are marked initialised below.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + done as u64) as libc::off_t,
            )
        };
        let n = match transferred(
            n,
            io::ErrorKind::UnexpectedEof,
            "the file ends before the bytes asked for",
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        // SAFETY: the kernel initialised `n` more bytes, within the capacity.
        unsafe { buf.set_len(done + n) };
    }
    Ok(buf)
}

/// What a `pread`/`pwritev` return value says: bytes moved, the call's error
/// (`Interrupted` for the caller to retry), or `zero` when it moved nothing.
fn transferred(n: isize, zero: io::ErrorKind, why: &'static str) -> io::Result<usize> {
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(zero, why)),
        n => Ok(n as usize),
    }
}

/// Writes all of `parts` at `offset` with `pwritev`, retrying short writes.
pub(crate) fn pwritev_all(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` for the whole call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as i32,
                offset as libc::off_t,
            )
        };
        let mut n = match transferred(n, io::ErrorKind::WriteZero, "pwritev wrote nothing") {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        offset += n as u64;
        while n > 0 {
            if n >= parts[0].len() {
                n -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` atomically: write a temp file, fsync it, rename over, fsync the dir.
/// A crash leaves either the old content or the new, never a torn mix.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}
