//! A user's own photo folder through the commands: mixed sizes and PNG modes, `--image-size`
//! recorded and checked on resume, the folder's default size, probe, embed and preview at
//! the trained size, and `--image-size` out of range as a one-line error.
#![cfg(feature = "cli")]

use std::path::Path;

mod common;
use common::{fails_with, newest_checkpoint, selfsup, TempDir};

fn save(img: impl Into<image::DynamicImage>, p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    img.into().save(p).unwrap();
}

/// A labeled folder with train/ and test/: two classes (dark and light images) of mixed
/// sizes and modes (RGB, grayscale, RGBA, 16-bit).
fn photo_folder(root: &Path) {
    for (split, n) in [("train", 24u32), ("test", 8)] {
        for k in 0..n {
            let light = k % 2 == 1;
            let class = if light { "light" } else { "dark" };
            let v = if light {
                200 + (k % 7) as u8 * 5
            } else {
                20 + (k % 7) as u8 * 5
            };
            let p = root.join(split).join(class).join(format!("{k}.png"));
            let (w, h) = (20 + 7 * (k % 5), 18 + 5 * (k % 3));
            match k % 4 {
                0 => save(
                    image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v])),
                    &p,
                ),
                1 => save(image::GrayImage::from_pixel(w, h, image::Luma([v])), &p),
                2 => save(
                    image::RgbaImage::from_pixel(w, h, image::Rgba([v, v, v / 3, 90])),
                    &p,
                ),
                _ => save(
                    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
                        w,
                        h,
                        image::Rgb([u16::from(v) * 257, 1000, 60000]),
                    ),
                    &p,
                ),
            }
        }
    }
}

fn ok(args: &[&str]) -> String {
    let out = selfsup(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err + &String::from_utf8_lossy(&out.stdout)
}

fn recorded_image_size(run: &Path) -> u64 {
    let text = std::fs::read_to_string(run.join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["args"]["image_size"]
        .as_u64()
        .expect("image_size recorded")
}

const TINY: &[&str] = &[
    "--widths",
    "4,8",
    "--batch",
    "8",
    "--quiet",
    "--knn-every",
    "0",
];

#[test]
fn a_photo_folder_trains_probes_and_embeds_at_its_image_size() {
    let d = TempDir::new("cli_folder");
    photo_folder(&d.0.join("photos"));
    let data = format!("folder:{}", d.0.join("photos").display());
    let run = d.0.join("run");
    let run_s = run.to_str().unwrap();
    let mut args = vec![
        "pretrain",
        "--data",
        &data,
        "--image-size",
        "24",
        "--steps",
        "2",
    ];
    args.extend_from_slice(&["--out", run_s]);
    args.extend_from_slice(TINY);
    let said = ok(&args);
    assert!(said.contains("trained at 24x24"), "{said}");
    assert!(said.contains("24 images of 3 channel(s)"), "{said}");
    assert_eq!(recorded_image_size(&run), 24);

    // Resumed at another size: refused, naming the flag and both sizes.
    let mut resume = vec![
        "pretrain",
        "--data",
        &data,
        "--image-size",
        "32",
        "--steps",
        "3",
    ];
    resume.extend_from_slice(&["--out", run_s, "--resume"]);
    resume.extend_from_slice(TINY);
    fails_with(&resume, "--image-size 24");
    // Resumed with the size left to its default: the recorded one is not the folder's
    // default (96), so that is refused too.
    let mut resume = vec!["pretrain", "--data", &data, "--steps", "3", "--out", run_s];
    resume.push("--resume");
    resume.extend_from_slice(TINY);
    fails_with(&resume, "--image-size");

    let ck = newest_checkpoint(&run);
    let ck_s = ck.to_str().unwrap();
    let table = ok(&[
        "probe",
        "--checkpoint",
        ck_s,
        "--data",
        &data,
        "--labels",
        "100%",
    ]);
    assert!(
        table.contains("raw pixels") && table.contains("random init"),
        "{table}"
    );

    // embed: one row per training image, h of width 8, at the trained size by default.
    let npy = d.0.join("emb.npy");
    ok(&[
        "embed",
        "--checkpoint",
        ck_s,
        "--data",
        &data,
        "--out",
        npy.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&bytes[..128]);
    assert!(header.contains("(24, 8)"), "{header}");
    // And at another size when asked (the encoder is convolutional).
    let npy2 = d.0.join("emb40.npy");
    let mut embed = vec!["embed", "--checkpoint", ck_s, "--data", &data];
    embed.extend_from_slice(&["--image-size", "40", "--out", npy2.to_str().unwrap()]);
    ok(&embed);
    assert_ne!(
        std::fs::read(&npy2).unwrap(),
        bytes,
        "another size, other features"
    );

    // preview at the size asked: 2 rows of (1 + 3) cells of 24 x 2 pixels, 4-pixel gaps.
    let png = d.0.join("grid.png");
    let mut preview = vec![
        "preview",
        "--data",
        &data,
        "--image-size",
        "24",
        "--images",
        "2",
    ];
    preview.extend_from_slice(&[
        "--views",
        "3",
        "--zoom",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    ok(&preview);
    let grid = image::open(&png).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (4 * (48 + 4) + 4, 2 * (48 + 4) + 4)
    );
}

#[test]
fn a_folder_defaults_to_96_pixels_and_builtin_to_its_own_size() {
    let d = TempDir::new("cli_folder_default");
    photo_folder(&d.0.join("photos"));
    let data = format!("folder:{}", d.0.join("photos").display());
    let run = d.0.join("run");
    let mut args = vec!["pretrain", "--data", &data, "--steps", "1"];
    args.extend_from_slice(&["--out", run.to_str().unwrap()]);
    args.extend_from_slice(TINY);
    let said = ok(&args);
    assert!(said.contains("trained at 96x96"), "{said}");
    assert_eq!(recorded_image_size(&run), 96);

    let run = d.0.join("builtin");
    let mut args = vec!["pretrain", "--data", "builtin:16", "--steps", "1"];
    args.extend_from_slice(&["--out", run.to_str().unwrap()]);
    args.extend_from_slice(TINY);
    let said = ok(&args);
    assert!(
        said.contains("stored at 16x16") && said.contains("trained at 16x16"),
        "{said}"
    );
    assert_eq!(recorded_image_size(&run), 16);
}

#[test]
fn image_sizes_out_of_range_are_one_line_errors() {
    let d = TempDir::new("cli_folder_bad");
    let out = d.0.join("run");
    let o = out.to_str().unwrap();
    for bad in ["0", "1", "7", "513", "100000", "abc", "-3"] {
        fails_with(
            &["pretrain", "--image-size", bad, "--out", o],
            "--image-size",
        );
        fails_with(
            &["preview", "--image-size", bad, "--out", o],
            "--image-size",
        );
    }
    fails_with(
        &["pretrain", "--image-size", "0", "--out", o],
        "from 8 to 512 pixels",
    );
    assert!(!out.exists(), "no run folder for a refused command");
}
