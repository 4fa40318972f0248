//! The dataset readers: round trips of files written here, and every bad-input case.

mod common;
use common::TempDir;

use flate2::write::GzEncoder;
use flate2::Compression;
use selfsup::data::cifar::{
    parse_cifar_batch, read_cifar100_dir, read_cifar10_dir, read_cifar_batch,
};
use selfsup::data::folder::{
    decode_image, read_folder, read_labeled_folder, read_unlabeled_folder, MAX_SIDE,
};
use selfsup::data::idx::{
    parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels, read_idx_pair,
};
use selfsup::data::spec::{without_labels, DataSpec, LoadOptions, SpecError, FASHION_MNIST_DIR};
use selfsup::data::DataError;
use std::io::Write;
use std::path::{Path, PathBuf};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// Asserts a format error that names `file` and mentions `what`.
fn assert_err<T: std::fmt::Debug>(r: Result<T, DataError>, file: &str, what: &str) {
    let e = r.unwrap_err();
    let s = e.to_string();
    assert!(s.contains(file), "error does not name {file}: {s}");
    assert!(
        s.to_lowercase().contains(&what.to_lowercase()),
        "error does not say '{what}': {s}"
    );
}

// ---------------------------------------------------------------- IDX

fn three_images() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 10) as u8).collect();
    (idx_images(3, 2, 4, &pixels), idx_labels(&[9, 0, 4]))
}

#[test]
fn idx_raw_round_trip() {
    let d = TempDir::new("idx_raw");
    let (img, lab) = three_images();
    std::fs::write(d.join("img"), &img).unwrap();
    std::fs::write(d.join("lab"), &lab).unwrap();
    let i = read_idx_images(&d.join("img")).unwrap();
    assert_eq!((i.n, i.rows, i.cols), (3, 2, 4));
    assert_eq!(i.pixels, img[16..]);
    assert_eq!(read_idx_labels(&d.join("lab")).unwrap(), vec![9, 0, 4]);
    let s = read_idx_pair(&d.join("img"), &d.join("lab"), 10).unwrap();
    assert_eq!((s.n, s.channels, s.height, s.width), (3, 1, 2, 4));
    assert_eq!(s.labels, Some(vec![9, 0, 4]));
    assert_eq!(s.classes, Some(10));
    assert_eq!(s.image(1)[0], 80.0 / 255.0);
    assert_eq!(s.image(2)[7], 230.0 / 255.0);
}

#[test]
fn idx_gzip_round_trip_detected_by_content() {
    let d = TempDir::new("idx_gz");
    let (img, lab) = three_images();
    // One with the usual name, one without `.gz`: the magic bytes decide.
    std::fs::write(d.join("img.gz"), gzip(&img)).unwrap();
    std::fs::write(d.join("lab"), gzip(&lab)).unwrap();
    let s = read_idx_pair(&d.join("img.gz"), &d.join("lab"), 10).unwrap();
    assert_eq!((s.n, s.height, s.width), (3, 2, 4));
    assert_eq!(s.labels, Some(vec![9, 0, 4]));
    let raw = parse_idx_images(&img, Path::new("x")).unwrap();
    assert_eq!(parse_idx_images(&gzip(&img), Path::new("x")).unwrap(), raw);
    // A raw file named `.gz` is still read as raw.
    std::fs::write(d.join("raw.gz"), &img).unwrap();
    assert_eq!(read_idx_images(&d.join("raw.gz")).unwrap(), raw);
}

#[test]
fn idx_truncated() {
    let d = TempDir::new("idx_trunc");
    let (img, lab) = three_images();
    for (name, bytes) in [
        ("short_data", &img[..img.len() - 1]),
        ("short_header", &img[..10]),
        ("empty", &img[..0]),
        ("short_labels", &lab[..lab.len() - 2]),
    ] {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = if name == "short_labels" {
            read_idx_labels(&p).map(|_| ())
        } else {
            read_idx_images(&p).map(|_| ())
        };
        assert_err(r, name, "truncated");
    }
    // Gzip streams cut short.
    let gz = gzip(&img);
    let p = d.join("short.gz");
    std::fs::write(&p, &gz[..gz.len() - 12]).unwrap();
    assert!(read_idx_images(&p)
        .unwrap_err()
        .to_string()
        .contains("short.gz"));
    assert!(parse_idx_images(&gz[..gz.len() / 2], Path::new("half.gz")).is_err());
}

#[test]
fn idx_trailing_bytes() {
    let (mut img, _) = three_images();
    img.push(0);
    assert_err(
        parse_idx_images(&img, Path::new("long")),
        "long",
        "trailing",
    );
    assert_err(
        parse_idx_images(&gzip(&img), Path::new("long.gz")),
        "long.gz",
        "trailing",
    );
}

#[test]
fn idx_wrong_magic_and_type() {
    let (img, lab) = three_images();
    let p = Path::new("f.idx");
    let mut bad = img.clone();
    bad[0] = 0x89;
    assert_err(parse_idx_images(&bad, p), "f.idx", "not an IDX file");
    let mut f32s = img.clone();
    f32s[2] = 0x0d;
    assert_err(parse_idx_images(&f32s, p), "f.idx", "f32");
    // A label file given as images, and images as labels.
    assert_err(parse_idx_images(&lab, p), "f.idx", "dimensions");
    assert_err(parse_idx_labels(&img, p), "f.idx", "dimensions");
    // A PNG is not an IDX file.
    assert_err(
        parse_idx_images(b"\x89PNG\r\n\x1a\n0000000000", p),
        "f.idx",
        "not an IDX",
    );
}

#[test]
fn idx_huge_header_does_not_allocate() {
    let d = TempDir::new("idx_huge");
    // n = 4 billion images of 28 x 28 (and 2 billion labels), with 10 bytes of data.
    let img = idx_images(4_000_000_000, 28, 28, &[0; 10]);
    let lab = {
        let mut b = vec![0, 0, 8, 1];
        b.extend(2_000_000_000u32.to_be_bytes());
        b.extend([0u8; 10]);
        b
    };
    assert_err(parse_idx_images(&img, Path::new("i")), "i", "limit");
    assert_err(parse_idx_images(&gzip(&img), Path::new("i")), "i", "limit");
    assert_err(parse_idx_labels(&lab, Path::new("l")), "l", "truncated");
    assert_err(
        parse_idx_labels(&gzip(&lab), Path::new("l")),
        "l",
        "truncated",
    );
    // Under the limit but far more than present: raw checked against the file's length.
    let img = idx_images(1_000_000, 28, 28, &[0; 10]);
    std::fs::write(d.join("big"), &img).unwrap();
    assert_err(read_idx_images(&d.join("big")), "big", "truncated");
    std::fs::write(d.join("big.gz"), gzip(&img)).unwrap();
    assert_err(read_idx_images(&d.join("big.gz")), "big.gz", "truncated");
    // A zero dimension.
    assert_err(
        parse_idx_images(&idx_images(0, 28, 28, &[]), Path::new("z")),
        "z",
        "zero",
    );
}

#[test]
fn idx_gzip_bomb_stops_at_the_claimed_size() {
    // The header claims 4 bytes of data; the stream inflates to 64 MiB of zeros.
    let mut raw = idx_images(1, 2, 2, &[]);
    raw.resize(16 + (64 << 20), 0);
    let gz = gzip(&raw);
    assert!(gz.len() < 1 << 20);
    let t = std::time::Instant::now();
    assert_err(
        parse_idx_images(&gz, Path::new("bomb.gz")),
        "bomb.gz",
        "trailing",
    );
    assert!(t.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn idx_corrupt_gzip() {
    let (img, _) = three_images();
    let mut gz = gzip(&img);
    let m = gz.len() / 2;
    for b in &mut gz[12..m] {
        *b ^= 0x5a;
    }
    assert!(parse_idx_images(&gz, Path::new("c.gz"))
        .unwrap_err()
        .to_string()
        .contains("c.gz"));
    // A bad CRC at the end.
    let mut gz = gzip(&img);
    let n = gz.len();
    gz[n - 6] ^= 1;
    assert_err(parse_idx_images(&gz, Path::new("crc.gz")), "crc.gz", "gzip");
    // The gzip magic and nothing else.
    assert!(parse_idx_images(&[0x1f, 0x8b], Path::new("g")).is_err());
}

#[test]
fn idx_pair_count_mismatch_and_label_range() {
    let d = TempDir::new("idx_pair");
    let (img, _) = three_images();
    std::fs::write(d.join("img"), &img).unwrap();
    std::fs::write(d.join("two"), idx_labels(&[1, 2])).unwrap();
    assert_err(
        read_idx_pair(&d.join("img"), &d.join("two"), 10),
        "two",
        "2 labels for 3 images",
    );
    std::fs::write(d.join("ten"), idx_labels(&[1, 10, 2])).unwrap();
    assert_err(
        read_idx_pair(&d.join("img"), &d.join("ten"), 10),
        "ten",
        "out of range",
    );
    let e = read_idx_pair(&d.join("nope"), &d.join("ten"), 10).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope"));
}

// ---------------------------------------------------------------- CIFAR

fn cifar_record(labels: &[u8], fill: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend(std::iter::repeat_n(fill, 3072));
    r
}

#[test]
fn cifar10_round_trip_and_bad_label() {
    let d = TempDir::new("cifar_one");
    let p = d.join("data_batch_1.bin");
    let mut b = vec![7u8];
    b.extend((0..3072).map(|i| (i % 256) as u8));
    std::fs::write(&p, &b).unwrap();
    let s = read_cifar_batch(&p, 1, 10).unwrap();
    assert_eq!((s.n, s.label(0)), (1, Some(7)));
    assert_eq!(s.image(0)[255], 1.0);
    b[0] = 10;
    std::fs::write(&p, &b).unwrap();
    assert_err(
        read_cifar_batch(&p, 1, 10),
        "data_batch_1.bin",
        "out of range",
    );
    std::fs::write(&p, &b[..100]).unwrap();
    assert_err(read_cifar_batch(&p, 1, 10), "data_batch_1.bin", "multiple");
    std::fs::write(&p, []).unwrap();
    assert_err(read_cifar_batch(&p, 1, 10), "data_batch_1.bin", "empty");
}

#[test]
fn cifar_parse_rejects_bad_arguments_without_panic() {
    let rec = cifar_record(&[1], 0);
    assert!(parse_cifar_batch(&rec, Path::new("x"), 0, 10).is_err());
    assert!(parse_cifar_batch(&rec, Path::new("x"), 3, 10).is_err());
    assert!(parse_cifar_batch(&rec, Path::new("x"), 1, 0).is_err());
    assert!(parse_cifar_batch(&rec, Path::new("x"), 1, 257).is_err());
}

fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 1..=5u8 {
        let mut b = cifar_record(&[k], k);
        b.extend(cifar_record(&[k + 4], 0));
        std::fs::write(dir.join(format!("data_batch_{k}.bin")), b).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[3], 255)).unwrap();
}

#[test]
fn cifar10_dir_round_trip_and_missing_file() {
    let d = TempDir::new("cifar10");
    write_cifar10(d.path());
    let (train, test) = read_cifar10_dir(d.path()).unwrap();
    assert_eq!((train.n, test.n), (10, 1));
    assert_eq!(
        train.labels,
        Some(vec![1, 5, 2, 6, 3, 7, 4, 8, 5, 9]),
        "batches in order"
    );
    assert_eq!(train.image(2)[0], 2.0 / 255.0);
    assert_eq!(test.image(0)[3071], 1.0);
    assert_eq!(train.images.len(), 10 * 3072);
    // The archive's subfolder.
    let d2 = TempDir::new("cifar10_sub");
    write_cifar10(&d2.join("cifar-10-batches-bin"));
    assert_eq!(read_cifar10_dir(d2.path()).unwrap().0.n, 10);
    std::fs::remove_file(d.join("data_batch_4.bin")).unwrap();
    assert_err(read_cifar10_dir(d.path()), "data_batch_4.bin", "missing");
    let spec: DataSpec = format!("cifar10:{}", d2.path().display()).parse().unwrap();
    let s = spec.load(&LoadOptions::default()).unwrap();
    assert_eq!(s.class_names.unwrap()[9], "truck");
    assert_eq!(s.test.unwrap().n, 1);
}

#[test]
fn cifar100_dir_round_trip_and_bad_labels() {
    let d = TempDir::new("cifar100");
    let sub = d.join("cifar-100-binary");
    std::fs::create_dir_all(&sub).unwrap();
    let mut tr = cifar_record(&[19, 99], 1);
    tr.extend(cifar_record(&[0, 42], 2));
    std::fs::write(sub.join("train.bin"), &tr).unwrap();
    std::fs::write(sub.join("test.bin"), cifar_record(&[5, 7], 3)).unwrap();
    let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
    std::fs::write(sub.join("fine_label_names.txt"), names).unwrap();
    let (train, test) = read_cifar100_dir(d.path()).unwrap();
    assert_eq!(train.labels, Some(vec![99, 42]));
    assert_eq!((test.label(0), train.classes), (Some(7), Some(100)));
    let spec = DataSpec::Cifar100(d.path().to_path_buf());
    assert_eq!(
        spec.load(&LoadOptions::default())
            .unwrap()
            .class_names
            .unwrap()[42],
        "class42"
    );
    std::fs::write(sub.join("test.bin"), cifar_record(&[5, 100], 3)).unwrap();
    assert_err(read_cifar100_dir(d.path()), "test.bin", "out of range");
    std::fs::write(sub.join("test.bin"), cifar_record(&[20, 1], 3)).unwrap();
    assert_err(read_cifar100_dir(d.path()), "test.bin", "coarse");
    std::fs::remove_file(sub.join("train.bin")).unwrap();
    assert_err(read_cifar100_dir(d.path()), "train.bin", "missing");
}

// ---------------------------------------------------------------- folders

fn solid_rgb(w: u32, h: u32, c: [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_pixel(w, h, image::Rgb(c))
}

fn write_png_rgb(p: &Path, w: u32, h: u32, c: [u8; 3]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    solid_rgb(w, h, c).save(p).unwrap();
}

fn write_png_gray(p: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(w, h, image::Luma([v]))
        .save(p)
        .unwrap();
}

fn write_jpeg(p: &Path, w: u32, h: u32, c: [u8; 3]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(p).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95)
        .encode_image(&solid_rgb(w, h, c))
        .unwrap();
}

#[test]
fn labeled_folder_mixed_sizes_and_formats() {
    let d = TempDir::new("folder_labeled");
    // Classes created out of order: sorted by name they are cat, dog.
    write_png_rgb(&d.join("dog/b.png"), 40, 20, [255, 0, 0]);
    write_jpeg(&d.join("dog/a.JPG"), 13, 7, [0, 0, 255]);
    write_png_rgb(&d.join("cat/x.png"), 8, 8, [0, 255, 0]);
    write_png_rgb(&d.join("cat/deeper/y.png"), 100, 3, [10, 20, 30]);
    std::fs::write(d.join("cat/notes.txt"), "skipped").unwrap();
    std::fs::write(d.join("cat/.hidden.png"), "skipped").unwrap();
    let f = read_labeled_folder(d.path(), 16, 12).unwrap();
    assert_eq!(
        f.class_names,
        Some(vec!["cat".to_string(), "dog".to_string()])
    );
    let s = &f.set;
    assert_eq!((s.n, s.channels, s.height, s.width), (4, 3, 16, 12));
    assert_eq!(s.images.len(), 4 * 3 * 16 * 12);
    assert_eq!(s.labels, Some(vec![0, 0, 1, 1]));
    assert_eq!(s.classes, Some(2));
    let names: Vec<_> = f
        .files
        .iter()
        .map(|p| {
            p.strip_prefix(d.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["cat/deeper/y.png", "cat/x.png", "dog/a.JPG", "dog/b.png"]
    );
    // Solid colors stay solid through the resize; channel-planar layout.
    let plane = 16 * 12;
    let img = s.image(3); // dog/b.png, red
    assert!(img[..plane].iter().all(|&v| v == 1.0));
    assert!(img[plane..].iter().all(|&v| v == 0.0));
    let jpeg = s.image(2); // blue, lossy
    assert!(jpeg[2 * plane..].iter().all(|&v| v > 0.9));
    assert!(s.images.iter().all(|v| (0.0..=1.0).contains(v)));
    // read_folder picks the labeled layout.
    assert_eq!(read_folder(d.path(), 16, 12).unwrap(), f);
}

#[test]
fn unlabeled_folder_recursive_and_grayscale() {
    let d = TempDir::new("folder_unlabeled");
    write_png_gray(&d.join("a.png"), 5, 9, 51);
    write_png_gray(&d.join("sub/b.png"), 30, 30, 102);
    let f = read_unlabeled_folder(d.path(), 8, 8).unwrap();
    assert_eq!(
        (f.set.n, f.set.channels),
        (2, 1),
        "all grayscale: one channel"
    );
    assert_eq!(f.set.labels, None);
    assert!(f.set.image(0).iter().all(|&v| v == 0.2));
    assert_eq!(f.class_names, None);
    assert_eq!(
        read_folder(d.path(), 8, 8).unwrap(),
        f,
        "images at the top: unlabeled"
    );
    // One color image makes the whole set RGB.
    write_png_rgb(&d.join("c.png"), 4, 4, [0, 0, 0]);
    let f = read_unlabeled_folder(d.path(), 8, 8).unwrap();
    assert_eq!((f.set.n, f.set.channels), (3, 3));
    assert!(f.set.image(0).iter().all(|&v| v == 0.2));
}

#[test]
fn folder_errors() {
    let d = TempDir::new("folder_bad");
    // Empty, and only unsupported files.
    assert_err(
        read_unlabeled_folder(d.path(), 8, 8),
        "folder_bad",
        "empty folder",
    );
    assert_err(
        read_labeled_folder(d.path(), 8, 8),
        "folder_bad",
        "empty folder",
    );
    std::fs::write(d.join("readme.txt"), "x").unwrap();
    std::fs::write(d.join("pic.gif"), "x").unwrap();
    assert_err(read_folder(d.path(), 8, 8), "folder_bad", "empty folder");
    // A class folder without an image.
    write_png_rgb(&d.join("a/1.png"), 4, 4, [1, 2, 3]);
    std::fs::create_dir_all(d.join("b")).unwrap();
    std::fs::write(d.join("b/x.txt"), "x").unwrap();
    assert_err(read_labeled_folder(d.path(), 8, 8), "b", "holds no image");
    // An undecodable image, named.
    std::fs::write(d.join("b/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_err(
        read_labeled_folder(d.path(), 8, 8),
        "broken.png",
        "undecodable",
    );
    std::fs::write(d.join("b/broken.png"), b"hello").unwrap();
    assert_err(
        read_labeled_folder(d.path(), 8, 8),
        "broken.png",
        "undecodable",
    );
    // A missing folder, a zero output size.
    assert!(read_folder(&d.join("nope"), 8, 8)
        .unwrap_err()
        .to_string()
        .contains("nope"));
    assert_err(
        read_unlabeled_folder(&d.join("a"), 0, 8),
        "a",
        "output size",
    );
}

#[test]
fn decode_image_limits_stop_a_png_bomb() {
    // A valid 1 x 1 PNG whose header is patched to claim 100,000 x 100,000 pixels.
    let mut png = Vec::new();
    solid_rgb(1, 1, [1, 2, 3])
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(decode_image(&png, Path::new("ok.png"), 2, 2).is_ok());
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let t = std::time::Instant::now();
    let e = decode_image(&png, Path::new("bomb.png"), 8, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bomb.png"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 1.0);
    // Just over the side limit.
    png[16..20].copy_from_slice(&(MAX_SIDE + 1).to_be_bytes());
    png[20..24].copy_from_slice(&1u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    assert!(decode_image(&png, Path::new("wide.png"), 8, 8).is_err());
    assert!(decode_image(&[], Path::new("empty.png"), 8, 8).is_err());
}

// ---------------------------------------------------------------- specs

#[test]
fn spec_parse_and_display() {
    let cases = [
        ("fashion-mnist", "fashion-mnist"),
        ("fashion-mnist:/d", "fashion-mnist:/d"),
        ("idx:/d", "idx:/d"),
        ("mnist:/d", "idx:/d"),
        ("cifar10:/d", "cifar10:/d"),
        ("cifar100:rel/d", "cifar100:rel/d"),
        ("folder:/a:b", "folder:/a:b"),
        ("builtin", "builtin"),
    ];
    for (s, shown) in cases {
        let spec: DataSpec = s.parse().unwrap();
        assert_eq!(spec.to_string(), shown);
        assert_eq!(shown.parse::<DataSpec>().unwrap(), spec);
    }
    assert_eq!(
        "fashion-mnist".parse::<DataSpec>().unwrap(),
        DataSpec::FashionMnist(FASHION_MNIST_DIR.into())
    );
    let e = "imagenet:/d".parse::<DataSpec>().unwrap_err();
    assert!(matches!(e, SpecError::UnknownKind(_)));
    let msg = e.to_string();
    for kind in [
        "imagenet",
        "fashion-mnist",
        "idx:DIR",
        "cifar10:DIR",
        "cifar100:DIR",
        "folder:DIR",
        "builtin",
    ] {
        assert!(msg.contains(kind), "{msg}");
    }
    assert!(matches!(
        "idx".parse::<DataSpec>(),
        Err(SpecError::MissingDir(_))
    ));
    assert!(matches!(
        "folder:".parse::<DataSpec>(),
        Err(SpecError::MissingDir(_))
    ));
    assert!(matches!(
        "builtin:x".parse::<DataSpec>(),
        Err(SpecError::BuiltinSide(_))
    ));
    assert!("".parse::<DataSpec>().is_err());
}

#[test]
fn spec_idx_dir_raw_and_gz_and_missing_files() {
    let d = TempDir::new("spec_idx");
    let (img, lab) = three_images();
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), gzip(&img)).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), &lab).unwrap();
    std::fs::write(
        d.join("t10k-images-idx3-ubyte"),
        idx_images(1, 2, 4, &[0; 8]),
    )
    .unwrap();
    let spec: DataSpec = format!("idx:{}", d.path().display()).parse().unwrap();
    assert_err(
        spec.load(&LoadOptions::default()),
        "t10k-labels-idx1-ubyte",
        "missing",
    );
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_labels(&[2]))).unwrap();
    let s = spec.load(&LoadOptions::default()).unwrap();
    assert_eq!(
        (s.train.n, s.train.labels.as_deref()),
        (3, Some(&[9, 0, 4][..]))
    );
    let test = s.test.unwrap();
    assert_eq!((test.n, test.label(0)), (1, Some(2)));
    // The same files as fashion-mnist:DIR get the class names.
    let f = DataSpec::FashionMnist(d.path().to_path_buf())
        .load(&LoadOptions::default())
        .unwrap();
    assert_eq!(f.class_names.unwrap()[9], "Ankle boot");
    // Test images of another size than train.
    std::fs::write(
        d.join("t10k-images-idx3-ubyte"),
        idx_images(1, 4, 2, &[0; 8]),
    )
    .unwrap();
    assert_err(
        spec.load(&LoadOptions::default()),
        "t10k-images",
        "train images",
    );
}

#[test]
fn spec_fashion_mnist_missing_package() {
    let e = DataSpec::FashionMnist("/nonexistent/fashion-mnist".into())
        .load(&LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    assert!(e.contains("/nonexistent/fashion-mnist"), "{e}");
    // The package's own place: read it when installed, else the same advice.
    let spec: DataSpec = "fashion-mnist".parse().unwrap();
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        let e = spec.load(&LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    }
}

#[test]
fn spec_folder_with_and_without_splits() {
    let d = TempDir::new("spec_folder");
    write_png_rgb(&d.join("train/b/1.png"), 9, 9, [0, 0, 0]);
    write_png_rgb(&d.join("train/a/1.png"), 9, 9, [0, 0, 0]);
    write_png_rgb(&d.join("train/c/1.png"), 9, 9, [0, 0, 0]);
    // The test split lacks class a: its labels still index the train classes.
    write_png_gray(&d.join("test/c/1.png"), 9, 9, 0);
    write_png_gray(&d.join("test/b/1.png"), 9, 9, 0);
    let opts = LoadOptions {
        height: 6,
        width: 5,
    };
    let s = DataSpec::Folder(d.path().to_path_buf())
        .load(&opts)
        .unwrap();
    assert_eq!(s.class_names.clone().unwrap(), ["a", "b", "c"]);
    assert_eq!(s.train.labels, Some(vec![0, 1, 2]));
    let test = s.test.clone().unwrap();
    assert_eq!(test.labels, Some(vec![1, 2]));
    assert_eq!(test.classes, Some(3));
    assert_eq!(
        (test.channels, test.height, test.width),
        (3, 6, 5),
        "gray test made RGB like train"
    );
    // Pretraining gets no labels.
    let pre = without_labels(s.train);
    assert_eq!((pre.labels, pre.classes, pre.n), (None, None, 3));
    // A test class unknown to train.
    write_png_rgb(&d.join("test/zebra/1.png"), 9, 9, [0, 0, 0]);
    assert_err(
        DataSpec::Folder(d.path().to_path_buf()).load(&opts),
        "zebra",
        "not a class",
    );
    // No splits: everything is train.
    let s = DataSpec::Folder(d.join("train")).load(&opts).unwrap();
    assert_eq!((s.train.n, s.test.is_none()), (3, true));
    // Missing folder.
    assert_err(
        DataSpec::Folder(d.join("nope")).load(&opts),
        "nope",
        "not a directory",
    );
}

#[test]
fn spec_missing_dirs_and_builtin() {
    let opts = LoadOptions::default();
    for s in [
        "idx:/nonexistent/x",
        "cifar10:/nonexistent/x",
        "cifar100:/nonexistent/x",
    ] {
        let spec: DataSpec = s.parse().unwrap();
        assert_err(spec.load(&opts), "/nonexistent/x", "not a directory");
    }
    assert!(DataSpec::Builtin { side: 32 }
        .load(&opts)
        .unwrap_err()
        .to_string()
        .contains("builtin"));
}

/// The real Fashion-MNIST files, when installed (`apt-get install dataset-fashion-mnist`) or
/// named by `SELFSUP_FASHION_MNIST_DIR`; skipped otherwise (nothing is downloaded).
#[test]
fn real_fashion_mnist_when_present() {
    let dir = std::env::var_os("SELFSUP_FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
    if !dir.is_dir() {
        return;
    }
    let s = DataSpec::FashionMnist(dir)
        .load(&LoadOptions::default())
        .unwrap();
    let test = s.test.unwrap();
    assert_eq!((s.train.n, test.n), (60_000, 10_000));
    assert_eq!(
        (s.train.channels, s.train.height, s.train.width),
        (1, 28, 28)
    );
    let mut counts = [0usize; 10];
    for &l in s.train.labels.as_ref().unwrap() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
}
