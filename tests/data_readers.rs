//! The dataset readers: round trips of files written here, and every bad-input case.

mod common;
use common::TempDir;

use flate2::write::GzEncoder;
use flate2::Compression;
use selfsup::data::cifar::{
    parse_cifar_batch, read_cifar100_dir, read_cifar10_dir, read_cifar_batch,
};
use selfsup::data::folder::{
    decode_image, read_folder, read_labeled_folder, read_unlabeled_folder, storage_side,
    stored_size, FolderOptions, MAX_SIDE,
};
use selfsup::data::idx::{
    parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels, read_idx_pair,
};
use selfsup::data::image::{to_byte, BYTE_VALUES};
use selfsup::data::spec::{without_labels, DataSpec, LoadOptions, SpecError, FASHION_MNIST_DIR};
use selfsup::data::{DataError, Extent, ImageRef, ImageSet, Sizes};
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
    assert_eq!((s.n, s.channels, s.uniform_size()), (3, 1, Some((2, 4))));
    assert_eq!(s.labels, Some(vec![9, 0, 4]));
    assert_eq!(s.classes, Some(10));
    // The bytes as stored; byte v is the value v / 255.
    assert_eq!(s.pixels(), &img[16..]);
    assert_eq!((s.image(1).pixels[0], s.image(2).pixels[7]), (80, 230));
    assert_eq!(s.image(1).to_f32()[0], 80.0 / 255.0);
    assert_eq!(s.image(2).to_f32()[7], 230.0 / 255.0);
}

#[test]
fn idx_gzip_round_trip_detected_by_content() {
    let d = TempDir::new("idx_gz");
    let (img, lab) = three_images();
    // One with the usual name, one without `.gz`: the magic bytes decide.
    std::fs::write(d.join("img.gz"), gzip(&img)).unwrap();
    std::fs::write(d.join("lab"), gzip(&lab)).unwrap();
    let s = read_idx_pair(&d.join("img.gz"), &d.join("lab"), 10).unwrap();
    assert_eq!((s.n, s.uniform_size()), (3, Some((2, 4))));
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
    assert_eq!((s.channels, s.uniform_size()), (3, Some((32, 32))));
    assert_eq!(s.image(0).pixels, &b[1..]);
    assert_eq!(s.image(0).to_f32()[255], 1.0);
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
    assert_eq!(train.image(2).to_f32()[0], 2.0 / 255.0);
    assert!(train.image(2).pixels.iter().all(|&v| v == 2));
    assert!(train.image(3).pixels.iter().all(|&v| v == 0));
    assert_eq!(test.image(0).to_f32()[3071], 1.0);
    assert_eq!(train.pixels().len(), 10 * 3072);
    assert_eq!(train.uniform_size(), Some((32, 32)));
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

/// Folders stored with the shorter side at most `side`, no memory limit.
fn side(side: usize) -> FolderOptions {
    FolderOptions {
        storage_side: side,
        memory_limit: None,
    }
}

/// Asserts that every byte of plane `c` of `img` is `v`.
fn assert_plane(img: ImageRef<'_>, c: usize, v: u8, what: &str) {
    let plane = img.height * img.width;
    let p = &img.pixels[c * plane..(c + 1) * plane];
    assert!(
        p.iter().all(|&x| x == v),
        "{what}: plane {c} is not all {v}: {p:?}"
    );
}

#[test]
fn storage_side_and_stored_size_follow_the_rule() {
    // 8/7 of the image size, rounded up (256 for 224).
    for (size, want) in [(224, 256), (32, 37), (96, 110), (28, 32), (7, 8), (1, 2)] {
        assert_eq!(storage_side(size), want, "image size {size}");
        assert_eq!(
            FolderOptions::for_image_size(size),
            FolderOptions {
                storage_side: want,
                memory_limit: None
            }
        );
    }
    // (height, width, side) -> stored (height, width): the shorter side brought down to
    // `side`, the longer scaled alike and rounded; never brought up.
    for ((h, w, s), want) in [
        ((20, 40, 12), (12, 24)),
        ((40, 20, 12), (24, 12)),
        ((9, 9, 6), (6, 6)),
        ((300, 400, 256), (256, 341)), // 341.33
        ((375, 500, 37), (37, 49)),    // 49.33
        ((7, 10, 4), (4, 6)),          // 5.71
        ((4, 10, 3), (3, 8)),          // 7.5, rounded up
        ((100, 3, 1), (33, 1)),        // 33.33
        ((7, 13, 12), (7, 13)),        // shorter side below: kept
        ((12, 30, 12), (12, 30)),      // equal: kept
        ((1000, 1, 1), (1000, 1)),     // kept
        ((2, 2, 16384), (2, 2)),       // kept
    ] {
        assert_eq!(stored_size(h, w, s), want, "{h}x{w} at side {s}");
    }
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
    let f = read_labeled_folder(d.path(), &side(12)).unwrap();
    assert_eq!(
        f.class_names,
        Some(vec!["cat".to_string(), "dog".to_string()])
    );
    let s = &f.set;
    assert_eq!((s.n, s.channels), (4, 3));
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
    // Stored sizes: only dog/b.png (20 x 40) has a shorter side above 12; it becomes
    // 12 x 24. The others keep their size, so the sizes vary.
    let sizes: Vec<(usize, usize)> = (0..s.n)
        .map(|i| (s.image(i).height, s.image(i).width))
        .collect();
    assert_eq!(sizes, [(3, 100), (8, 8), (7, 13), (12, 24)]);
    assert!(matches!(s.sizes(), Sizes::Varied(e) if e.len() == 4));
    assert_eq!(s.uniform_size(), None);
    assert_eq!(s.side_range(), (3, 100));
    let bytes = 3 * (3 * 100 + 8 * 8 + 7 * 13 + 12 * 24);
    assert_eq!(s.pixels().len(), bytes);
    assert_eq!(s.memory_bytes(), bytes + 4 * std::mem::size_of::<Extent>());
    // Solid colors stay solid, exactly, kept or resized; channel-planar layout.
    for (i, rgb) in [(0, [10, 20, 30]), (1, [0, 255, 0]), (3, [255, 0, 0])] {
        for (c, &v) in rgb.iter().enumerate() {
            assert_plane(s.image(i), c, v, &names[i]);
        }
    }
    assert_eq!(s.image(3).to_f32()[0], 1.0);
    let jpeg = s.image(2); // blue, lossy
    let plane = 7 * 13;
    assert!(jpeg.pixels[..2 * plane].iter().all(|&v| v < 26), "{jpeg:?}");
    assert!(
        jpeg.pixels[2 * plane..].iter().all(|&v| v > 229),
        "{jpeg:?}"
    );
    // read_folder picks the labeled layout.
    assert_eq!(read_folder(d.path(), &side(12)).unwrap(), f);
    // A storage side at least the shortest side of every image keeps every image as it is.
    let big = read_labeled_folder(d.path(), &side(20)).unwrap();
    assert_eq!(big.set.image(3).height, 20);
    assert_eq!(big.set.image(3).width, 40);
}

#[test]
fn folder_of_one_stored_size_is_uniform() {
    let d = TempDir::new("folder_uniform");
    // 30 x 60 and 20 x 40 are brought down to 10 x 20; 10 x 20 is kept.
    write_png_rgb(&d.join("a.png"), 60, 30, [0, 128, 255]);
    write_png_rgb(&d.join("b.png"), 40, 20, [7, 8, 9]);
    write_png_rgb(&d.join("c.png"), 20, 10, [200, 100, 50]);
    let f = read_unlabeled_folder(d.path(), &side(10)).unwrap();
    let s = &f.set;
    assert_eq!((s.n, s.channels), (3, 3));
    assert_eq!(
        s.sizes(),
        &Sizes::Uniform {
            height: 10,
            width: 20
        }
    );
    assert_eq!(s.uniform_size(), Some((10, 20)));
    assert_eq!(s.side_range(), (10, 20));
    assert_eq!(s.pixels().len(), 3 * 3 * 10 * 20);
    assert_eq!(s.memory_bytes(), 3 * 3 * 10 * 20);
    for (i, rgb) in [[0, 128, 255], [7, 8, 9], [200, 100, 50]]
        .iter()
        .enumerate()
    {
        assert_eq!((s.image(i).height, s.image(i).width), (10, 20));
        for (c, &v) in rgb.iter().enumerate() {
            assert_plane(s.image(i), c, v, &format!("image {i}"));
        }
    }
    // Values are byte / 255.
    let v = s.image(0).to_f32();
    assert_eq!((v[0], v[200], v[400]), (0.0, 128.0 / 255.0, 1.0));
}

#[test]
fn unlabeled_folder_recursive_and_grayscale() {
    let d = TempDir::new("folder_unlabeled");
    write_png_gray(&d.join("a.png"), 5, 9, 51);
    write_png_gray(&d.join("sub/b.png"), 30, 30, 102);
    let f = read_unlabeled_folder(d.path(), &side(8)).unwrap();
    assert_eq!(
        (f.set.n, f.set.channels),
        (2, 1),
        "all grayscale: one channel"
    );
    assert_eq!(f.set.labels, None);
    // 9 x 5 is kept, 30 x 30 is brought down to 8 x 8.
    let (a, b) = (f.set.image(0), f.set.image(1));
    assert_eq!((a.channels, a.height, a.width), (1, 9, 5));
    assert_eq!((b.channels, b.height, b.width), (1, 8, 8));
    assert_eq!(f.set.pixels().len(), 9 * 5 + 8 * 8);
    assert!(a.pixels.iter().all(|&v| v == 51));
    assert!(a.to_f32().iter().all(|&v| v == 0.2));
    assert!(b.pixels.iter().all(|&v| v == 102));
    assert_eq!(f.class_names, None);
    assert_eq!(
        read_folder(d.path(), &side(8)).unwrap(),
        f,
        "images at the top: unlabeled"
    );
    // One color image makes the whole set RGB; the gray images get R = G = B.
    write_png_rgb(&d.join("c.png"), 4, 4, [0, 0, 0]);
    let f = read_unlabeled_folder(d.path(), &side(8)).unwrap();
    assert_eq!((f.set.n, f.set.channels), (3, 3));
    let files: Vec<_> = f.files.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(files, ["a.png", "c.png", "b.png"]);
    let a = f.set.image(0);
    assert_eq!((a.channels, a.height, a.width), (3, 9, 5));
    assert!(a.pixels.iter().all(|&v| v == 51));
    assert!(f.set.image(1).pixels.iter().all(|&v| v == 0));
    assert_eq!(f.set.image(2).pixels.len(), 3 * 8 * 8);
    assert!(f.set.image(2).pixels.iter().all(|&v| v == 102));
}

#[test]
fn folder_errors() {
    let d = TempDir::new("folder_bad");
    let o = side(8);
    // Empty, and only unsupported files.
    assert_err(
        read_unlabeled_folder(d.path(), &o),
        "folder_bad",
        "empty folder",
    );
    assert_err(
        read_labeled_folder(d.path(), &o),
        "folder_bad",
        "empty folder",
    );
    std::fs::write(d.join("readme.txt"), "x").unwrap();
    std::fs::write(d.join("pic.gif"), "x").unwrap();
    assert_err(read_folder(d.path(), &o), "folder_bad", "empty folder");
    // A class folder without an image.
    write_png_rgb(&d.join("a/1.png"), 4, 4, [1, 2, 3]);
    std::fs::create_dir_all(d.join("b")).unwrap();
    std::fs::write(d.join("b/x.txt"), "x").unwrap();
    assert_err(read_labeled_folder(d.path(), &o), "b", "holds no image");
    // An undecodable image, named.
    std::fs::write(d.join("b/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_err(
        read_labeled_folder(d.path(), &o),
        "broken.png",
        "undecodable",
    );
    std::fs::write(d.join("b/broken.png"), b"hello").unwrap();
    assert_err(
        read_labeled_folder(d.path(), &o),
        "broken.png",
        "undecodable",
    );
    // A missing folder; a storage side of 0 or above the decoder's limit.
    assert!(read_folder(&d.join("nope"), &o)
        .unwrap_err()
        .to_string()
        .contains("nope"));
    for bad in [0, MAX_SIDE as usize + 1] {
        assert_err(
            read_unlabeled_folder(&d.join("a"), &side(bad)),
            "a",
            &format!("storage side {bad} must be 1..=16384 pixels"),
        );
    }
    read_unlabeled_folder(&d.join("a"), &side(MAX_SIDE as usize)).unwrap();
}

#[test]
fn memory_limit_is_checked_from_the_headers_before_decoding() {
    let d = TempDir::new("folder_memory");
    // A 100 x 200 image kept and a 200 x 400 one brought down to 100 x 200 at side 100:
    // 2 x 3 x 100 x 200 = 120,000 bytes.
    write_png_rgb(&d.join("a.png"), 200, 100, [1, 2, 3]);
    write_png_rgb(&d.join("b.png"), 400, 200, [4, 5, 6]);
    let limit = |bytes: u64| FolderOptions {
        storage_side: 100,
        memory_limit: Some(bytes),
    };
    let f = read_unlabeled_folder(d.path(), &limit(120_000)).unwrap();
    assert_eq!(f.set.memory_bytes(), 120_000);
    let e = read_unlabeled_folder(d.path(), &limit(100_000))
        .unwrap_err()
        .to_string();
    for want in ["folder_memory", "120 kB", "100 kB", "--image-size"] {
        assert!(e.contains(want), "error does not say '{want}': {e}");
    }
    assert!(!e.contains('\n'), "{e}");
    // A file whose header is whole but whose data is cut: past the limit the memory error
    // comes first (nothing was decoded), within it the decoder finds the damage.
    let mut png = Vec::new();
    image::RgbImage::from_fn(200, 100, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    })
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    std::fs::write(d.join("c.png"), &png[..png.len() / 2]).unwrap();
    assert_err(
        read_unlabeled_folder(d.path(), &limit(100_000)),
        "folder_memory",
        "--image-size",
    );
    assert_err(
        read_unlabeled_folder(d.path(), &limit(1 << 30)),
        "c.png",
        "undecodable",
    );
}

#[test]
fn decode_image_stores_at_the_storage_side() {
    let mut png = Vec::new();
    solid_rgb(40, 20, [9, 99, 199])
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let d = decode_image(&png, Path::new("c.png"), 10).unwrap();
    assert_eq!((d.height, d.width, d.grayscale), (10, 20, false));
    assert_eq!(d.rgb, [9, 99, 199].repeat(10 * 20));
    let d = decode_image(&png, Path::new("c.png"), 100).unwrap();
    assert_eq!((d.height, d.width), (20, 40), "never stored larger");
    let mut gray = Vec::new();
    image::GrayImage::from_pixel(30, 30, image::Luma([77]))
        .write_to(
            &mut std::io::Cursor::new(&mut gray),
            image::ImageFormat::Png,
        )
        .unwrap();
    let d = decode_image(&gray, Path::new("g.png"), 8).unwrap();
    assert_eq!((d.height, d.width, d.grayscale), (8, 8, true));
    assert_eq!(d.rgb, vec![77; 3 * 8 * 8], "gray spread to R = G = B");
    assert_err(
        decode_image(&png, Path::new("c.png"), 0),
        "c.png",
        "storage side 0 must be 1..=16384 pixels",
    );
}

#[test]
fn decode_image_limits_stop_a_png_bomb() {
    // A valid 1 x 1 PNG whose header is patched to claim 100,000 x 100,000 pixels.
    let mut png = Vec::new();
    solid_rgb(1, 1, [1, 2, 3])
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(decode_image(&png, Path::new("ok.png"), 2).is_ok());
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let t = std::time::Instant::now();
    let e = decode_image(&png, Path::new("bomb.png"), 8)
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
    assert!(decode_image(&png, Path::new("wide.png"), 8).is_err());
    assert!(decode_image(&[], Path::new("empty.png"), 8).is_err());
}

// ---------------------------------------------------------------- the image set

#[test]
fn bytes_are_values_over_255_and_to_byte_rounds_to_nearest() {
    for v in 0..=255u8 {
        let x = f32::from(v) / 255.0;
        assert_eq!(BYTE_VALUES[v as usize], x);
        assert_eq!(to_byte(x), v);
        // A quarter of a step either side still rounds to v.
        assert_eq!(to_byte((f32::from(v) + 0.25) / 255.0), v);
        assert_eq!(to_byte((f32::from(v) - 0.25).max(0.0) / 255.0), v);
        if v < 255 {
            assert_eq!(to_byte((f32::from(v) + 0.75) / 255.0), v + 1);
        }
    }
    assert_eq!((to_byte(-0.5), to_byte(1.5), to_byte(0.5)), (0, 255, 128));
}

#[test]
fn image_set_varied_to_rgb_and_concat() {
    // Two 1-channel images of their own sizes, 1 x 4 and 2 x 3 (10 bytes), the second one
    // stored first.
    let pixels: Vec<u8> = (0..10).collect();
    let extents = vec![
        Extent {
            offset: 6,
            height: 1,
            width: 4,
        },
        Extent {
            offset: 0,
            height: 2,
            width: 3,
        },
    ];
    let s = ImageSet::varied(pixels, 1, extents).with_labels(vec![1, 0], 3);
    assert_eq!((s.n, s.channels, s.uniform_size()), (2, 1, None));
    let a = s.image(0);
    assert_eq!((a.height, a.width, a.pixels), (1, 4, &[6, 7, 8, 9][..]));
    let b = s.image(1);
    assert_eq!(
        (b.height, b.width, b.pixels),
        (2, 3, &[0, 1, 2, 3, 4, 5][..])
    );
    assert_eq!(s.side_range(), (1, 4));
    assert_eq!(s.label(0), Some(1));
    // To RGB: every plane three times, the sizes kept.
    let rgb = s.clone().to_rgb();
    assert_eq!((rgb.n, rgb.channels), (2, 3));
    assert_eq!(rgb.image(0).pixels, [6, 7, 8, 9].repeat(3));
    assert_eq!(rgb.image(1).pixels, [0, 1, 2, 3, 4, 5].repeat(3));
    assert_eq!((rgb.image(1).height, rgb.image(1).width), (2, 3));
    assert_eq!(rgb.labels, s.labels);
    assert_eq!(rgb.clone().to_rgb(), rgb, "already RGB: unchanged");
    // A uniform set stays uniform.
    let u = ImageSet::uniform(vec![5; 2 * 2 * 2], 2, 1, 2, 2).to_rgb();
    assert_eq!((u.uniform_size(), u.pixels()), (Some((2, 2)), &[5; 24][..]));
    // Concatenation: sets of one size stay uniform, of several sizes become varied; labels
    // only when every set has them.
    let one = ImageSet::uniform(vec![1; 4], 1, 1, 2, 2).with_labels(vec![2], 3);
    let two = ImageSet::uniform(vec![2; 8], 2, 1, 2, 2).with_labels(vec![0, 1], 2);
    let c = ImageSet::concat(vec![one.clone(), two.clone()]);
    assert_eq!((c.n, c.uniform_size()), (3, Some((2, 2))));
    assert_eq!(c.pixels(), [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert_eq!((c.labels, c.classes), (Some(vec![2, 0, 1]), Some(3)));
    let c = ImageSet::concat(vec![one, s.clone()]);
    assert_eq!((c.n, c.uniform_size()), (3, None));
    assert_eq!(c.image(0).pixels, [1; 4]);
    assert_eq!(c.image(1).pixels, s.image(0).pixels);
    assert_eq!(c.image(2).pixels, s.image(1).pixels);
    assert_eq!((c.image(2).height, c.image(2).width), (2, 3));
    assert_eq!(c.labels, Some(vec![2, 1, 0]));
    let c = ImageSet::concat(vec![two, ImageSet::uniform(vec![3; 4], 1, 1, 2, 2)]);
    assert_eq!((c.n, c.labels), (3, None));
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
    write_png_gray(&d.join("test/c/1.png"), 9, 9, 77);
    write_png_gray(&d.join("test/b/1.png"), 9, 9, 77);
    // Image size 5: stored with the shorter side at ceil(8 x 5 / 7) = 6.
    let opts = LoadOptions {
        image_size: 5,
        memory_limit: None,
    };
    let s = DataSpec::Folder(d.path().to_path_buf())
        .load(&opts)
        .unwrap();
    assert_eq!(s.class_names.clone().unwrap(), ["a", "b", "c"]);
    assert_eq!(s.train.labels, Some(vec![0, 1, 2]));
    let test = s.test.clone().unwrap();
    assert_eq!(test.labels, Some(vec![1, 2]));
    assert_eq!(test.classes, Some(3));
    assert_eq!(s.train.uniform_size(), Some((6, 6)));
    assert_eq!(
        (test.channels, test.uniform_size()),
        (3, Some((6, 6))),
        "gray test made RGB like train"
    );
    assert_eq!(test.pixels(), vec![77; 2 * 3 * 6 * 6], "R = G = B");
    // The memory limit reaches the folder reader.
    let small = LoadOptions {
        memory_limit: Some(100),
        ..opts
    };
    assert_err(
        DataSpec::Folder(d.path().to_path_buf()).load(&small),
        "train",
        "--image-size",
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
        (s.train.channels, s.train.uniform_size()),
        (1, Some((28, 28)))
    );
    let mut counts = [0usize; 10];
    for &l in s.train.labels.as_ref().unwrap() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
}
