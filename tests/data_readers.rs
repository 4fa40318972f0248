use selfsup::data::cifar::read_cifar_batch;

#[test]
fn cifar10_round_trip_and_bad_label() {
    let dir = std::env::temp_dir().join(format!("selfsup_data_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("data_batch_1.bin");
    let mut b = vec![7u8];
    b.extend((0..3072).map(|i| (i % 256) as u8));
    std::fs::write(&p, &b).unwrap();
    let s = read_cifar_batch(&p, 1, 10).unwrap();
    assert_eq!((s.n, s.label(0)), (1, Some(7)));
    assert_eq!(s.image(0)[255], 1.0);
    b[0] = 10;
    std::fs::write(&p, &b).unwrap();
    let e = read_cifar_batch(&p, 1, 10).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("out of range"),
        "{e}"
    );
    std::fs::write(&p, &b[..100]).unwrap();
    let e = read_cifar_batch(&p, 1, 10).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
