//! Atomic file writes: a fresh temporary file beside the target (`.<file name>.tmp.<pid>.<n>`,
//! never another writer's), flushed, `fsync`ed and renamed over the target, then the
//! directory `fsync`ed (on Unix). On any failure the temporary file is removed and the target
//! is untouched: a reader sees the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic write: the target, and what could not be done.
#[derive(Debug)]
pub enum AtomicWriteError {
    /// The target path has no file name.
    NoFileName {
        /// The target.
        path: PathBuf,
    },
    /// An operating-system error (a missing directory, a full disk, no permission).
    Io {
        /// The target.
        path: PathBuf,
        /// What failed (`write .ckpt.tmp.1.0`, `rename ... over the target`).
        action: String,
        /// The operating system's error.
        error: io::Error,
    },
}

impl std::fmt::Display for AtomicWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFileName { path } => write!(f, "{}: the path has no file name", path.display()),
            Self::Io {
                path,
                action,
                error,
            } => write!(f, "{}: cannot {action}: {error}", path.display()),
        }
    }
}

impl std::error::Error for AtomicWriteError {}

/// Distinguishes the temporary files of concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` atomically: `write` fills a fresh temporary file next to it, which is then
/// flushed, `fsync`ed and renamed over `path`, and the directory is `fsync`ed. On any error
/// the temporary file is removed and `path` is untouched.
///
/// # Errors
/// [`AtomicWriteError`] naming `path` and the step that failed (or `write`'s own error).
pub fn write_atomically(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let path = path.as_ref();
    let io_err = |action: String, error: io::Error| AtomicWriteError::Io {
        path: path.to_path_buf(),
        action,
        error,
    };
    let Some(file_name) = path.file_name() else {
        return Err(AtomicWriteError::NoFileName {
            path: path.to_path_buf(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };

    // Create a temporary file that did not exist before (never clobber another writer's).
    let pid = std::process::id();
    let (tmp, file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".tmp.{pid}.{n}"));
        let tmp = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n % 1000 != 999 => continue,
            Err(e) => {
                return Err(io_err(
                    format!("create the temporary file {}", tmp.display()),
                    e,
                ))
            }
        }
    };

    let result = (|| {
        let mut w = io::BufWriter::with_capacity(1 << 16, file);
        write(&mut w).map_err(|e| io_err(format!("write {}", tmp.display()), e))?;
        let file = w
            .into_inner()
            .map_err(|e| io_err(format!("write {}", tmp.display()), e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_err(format!("fsync {}", tmp.display()), e))?;
        drop(file);
        fs::rename(&tmp, path)
            .map_err(|e| io_err(format!("rename {} over the target", tmp.display()), e))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(|e| io_err(format!("fsync the directory {}", dir.display()), e))
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows offers no directory handle to flush; its renames are journaled by NTFS.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
