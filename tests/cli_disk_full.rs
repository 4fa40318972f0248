//! Writes that fail (a full disk, here a file-size limit: `ulimit -f` with SIGXFSZ ignored,
//! so a write past the limit fails with EFBIG as a full disk fails with ENOSPC) end in one
//! line naming the file, exit status 2, and leave the previous file whole; the run resumes
//! once space is back.
#![cfg(all(feature = "cli", unix))]

mod common;
use common::{selfsup, TempDir};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// Runs selfsup with `args` with files limited to `kib` KiB (RLIMIT_FSIZE, SIGXFSZ ignored).
fn limited(kib: u64, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_selfsup"));
    c.args(args).env("RUST_BACKTRACE", "0");
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: kib * 1024,
                rlim_max: kib * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    c.output().expect("run selfsup")
}

/// Exit 2 and one `error:` line naming `file`.
fn assert_write_error(o: &Output, file: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(file), "'{file}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn pretrain_args<'a>(out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "pretrain",
        "--steps",
        steps,
        "--widths",
        "4,8",
        "--batch",
        "16",
        "--quiet",
        "--knn-every",
        "0",
        "--out",
        out,
    ]
}

#[test]
fn a_full_disk_keeps_the_last_good_files_and_the_run_resumes() {
    let d = TempDir::new("disk_full");
    let run = d.join("run");
    let out = run.to_str().unwrap();
    let o = selfsup(&pretrain_args(out, "3"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(run.join("loss.png")).unwrap();
    let ckpt = run.join("ckpt-00000003.safetensors");
    let ckpt3 = std::fs::read(&ckpt).unwrap();
    let stray = || {
        std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect::<Vec<_>>()
    };

    // A finished run resumed writes its last checkpoint and plot again. The checkpoint
    // (about 90 KB) fits in 150 KiB, the plot (about 230 KB) does not: the run fails
    // naming loss.png, which stays the old, whole file.
    let resume = [pretrain_args(out, "3"), vec!["--resume"]].concat();
    let o = limited(150, &resume);
    assert_write_error(&o, "loss.png");
    assert_eq!(std::fs::read(run.join("loss.png")).unwrap(), png);
    assert!(stray().is_empty(), "{:?}", stray());

    // 8 KiB: not even the checkpoint; the good one stays, unchanged.
    let o = limited(8, &resume);
    assert_write_error(&o, "ckpt-00000003.safetensors");
    assert_eq!(std::fs::read(&ckpt).unwrap(), ckpt3);
    assert!(stray().is_empty(), "{:?}", stray());

    // Space is back: the run resumes.
    let o = selfsup(&resume);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&ckpt).unwrap(), ckpt3);

    // embed (640 KB) and export (7 KB) name their output and leave no partial file.
    let npy = d.join("emb.npy");
    let o = limited(
        64,
        &["embed", "--checkpoint", out, "--out", npy.to_str().unwrap()],
    );
    assert_write_error(&o, "emb.");
    assert!(!npy.exists());
    let onnx = d.join("enc.onnx");
    let o = limited(
        2,
        &[
            "export",
            "--checkpoint",
            out,
            "--format",
            "onnx",
            "--out",
            onnx.to_str().unwrap(),
        ],
    );
    assert_write_error(&o, "enc.onnx");
    assert!(!onnx.exists());
}
