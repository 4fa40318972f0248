//! The files of `selfsup bench`: the `--json` report (checked up front, written or printed
//! at the end) and the `--baseline` report it is compared with.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::report::{self, Figures};

/// Writes a JSON report to `path` (`-`: standard output).
pub fn write_json(path: &Path, text: &str) -> Result<()> {
    if path == Path::new("-") {
        io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(path, text)
            .with_context(|| format!("cannot write --json file '{}'", path.display()))?;
    }
    Ok(())
}

/// The workloads' figures of the earlier JSON report at `path`.
pub fn load_baseline(path: &Path) -> Result<Vec<(String, Figures)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --baseline file '{}'", path.display()))?;
    report::parse_workloads(&text).with_context(|| format!("--baseline file '{}'", path.display()))
}

/// Fails early when `--json FILE` could not be written at the end.
pub fn check_json_target(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure!(
        dir.is_dir(),
        "--json file '{}': directory '{}' does not exist",
        path.display(),
        dir.display()
    );
    ensure!(
        !path.is_dir(),
        "--json file '{}' is a directory",
        path.display()
    );
    Ok(())
}
