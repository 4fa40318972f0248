//! Writes the built-in images as a labeled image folder of PNG files, the layout
//! `--data folder:DIR` reads: `DIR/train/<class>/<i>.png` and `DIR/test/<class>/<i>.png`.
//! A photo collection without a download, for measuring the folder path (its memory, the
//! default image size).
//!
//! ```sh
//! cargo run --release --example builtin_folder -- /tmp/shapes96 100000 96
//! selfsup pretrain --data folder:/tmp/shapes96 --minutes 10
//! ```
//!
//! Arguments: the folder (created), the number of training images (the test split has a
//! tenth of them, at least 100), the side in pixels (8 to 512).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use selfsup::data::builtin::{builtin_splits, BuiltinConfig, CLASS_NAMES};
use selfsup::data::ImageSet;

fn write_split(set: &ImageSet, dir: &Path) -> Result<(), String> {
    for name in CLASS_NAMES {
        let d = dir.join(name.replace(' ', "_"));
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    (0..set.n).into_par_iter().try_for_each(|i| {
        let img = set.image(i);
        let label = set.label(i).unwrap_or(0) as usize;
        let plane = img.height * img.width;
        let mut rgb = Vec::with_capacity(3 * plane);
        for p in 0..plane {
            for c in 0..3 {
                rgb.push(img.pixels[c * plane + p]);
            }
        }
        let path: PathBuf = dir
            .join(CLASS_NAMES[label].replace(' ', "_"))
            .join(format!("{i:06}.png"));
        image::save_buffer(
            &path,
            &rgb,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: builtin_folder DIR N_TRAIN SIDE";
    let (Some(dir), Some(n), Some(side)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(n), Ok(side)) = (n.parse::<usize>(), side.parse::<usize>()) else {
        eprintln!("{usage}: N_TRAIN and SIDE are numbers");
        std::process::exit(2);
    };
    if !(8..=512).contains(&side) || n == 0 {
        eprintln!("{usage}: SIDE from 8 to 512, N_TRAIN at least 1");
        std::process::exit(2);
    }
    let dir = PathBuf::from(dir);
    let cfg = BuiltinConfig {
        n_train: n,
        n_test: (n / 10).max(100),
        side,
        ..BuiltinConfig::default()
    };
    let (train, test) = builtin_splits(&cfg);
    let result = write_split(&train, &dir.join("train"))
        .and_then(|()| write_split(&test, &dir.join("test")));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    eprintln!(
        "{}: {} training and {} test images of {side}x{side} pixels",
        dir.display(),
        train.n,
        test.n
    );
}
