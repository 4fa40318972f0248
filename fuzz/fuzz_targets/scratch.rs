//! The scratch folder of the fuzz targets' files: /dev/shm where it exists (tmpfs: writes
//! and fsyncs cost nothing), else the system's temporary folder. Included by each target
//! with `#[path = "scratch.rs"] mod scratch;`.

use std::path::PathBuf;

/// The folder for this process's scratch files.
pub fn dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}
