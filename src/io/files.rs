//! Files udpkit reads that someone else wrote (`merge`'s interval logs): opened so that
//! nothing about them can hang or swell the reader.
//!
//! Promise: [`open_regular`] never waits (a FIFO with no writer does not hang the open) and
//! gives back only a regular file no larger than the limit asked for, checked on the file
//! opened (not on its name, which may change meanwhile); anything else (a FIFO, a device
//! such as `/dev/zero`, a directory, a socket, a file too large) is an error that says
//! what it is.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens `path` for reading if it is a regular file of at most `max_bytes`; returns it
/// with its size.
pub fn open_regular(path: &Path, max_bytes: u64) -> io::Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO opens at once (no writer: reads end), a terminal is not made ours.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            kind_of(&meta)
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    if meta.len() > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, more than the {max_bytes} read at most",
                meta.len()
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads `buf.len()` bytes at `offset` of `file` without moving the file's offset.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Raises this process's limit of open files (the soft limit, up to the hard one) to at
/// least `files`, where it is lower; best effort.
pub fn allow_open_files(files: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit to fill, then to give back.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let want = (files as libc::rlim_t).min(limit.rlim_max);
            if limit.rlim_cur < want {
                limit.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = files;
}

/// What a file that is neither regular nor a directory is.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = meta;
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_bounded_size_are_opened() {
        let dir = std::env::temp_dir();
        let err = |p: &Path, max| open_regular(p, max).unwrap_err().to_string();
        assert!(err(&dir, 1 << 20).contains("a directory"));
        #[cfg(unix)]
        assert!(err(Path::new("/dev/zero"), 1 << 20).contains("a device"));
        let file = dir.join(format!("udpkit-files-{}", std::process::id()));
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(open_regular(&file, 5).unwrap().1, 5);
        assert!(err(&file, 4).contains("more than"));
        std::fs::remove_file(&file).unwrap();
    }
}
