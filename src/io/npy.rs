//! NumPy's `.npy` format (version 1.0) for `f32` matrices: a header that names the dtype
//! (`<f4`, little-endian), the order (C) and the shape, padded so the data starts on a
//! 64-byte boundary, then the values. Written as a stream (the shape is known first), so
//! embeddings of any number of images go to disk batch by batch; [`read_npy_f32`] reads
//! such files back with every header field checked.

use std::io::{self, Read, Write};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The complete header (magic, version, length, dictionary, padding) of a C-order
/// little-endian `f32` array of `shape`.
pub fn header(shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + length (2) + dict + '\n', a multiple of 64.
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes `values` as little-endian `f32` (the data part of a `.npy` file).
///
/// # Errors
/// The writer's.
pub fn write_f32(w: &mut dyn Write, values: &[f32]) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    for chunk in values.chunks(buf.len() / 4) {
        for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf[..chunk.len() * 4])?;
    }
    Ok(())
}

/// Reads a `.npy` file of little-endian `f32` in C order: its shape and values.
///
/// # Errors
/// `InvalidData` naming the problem: another magic, version, dtype or order, a malformed
/// shape, or a data part shorter or longer than the shape says.
pub fn read_npy_f32(r: &mut dyn Read) -> io::Result<(Vec<usize>, Vec<f32>)> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut pre = [0u8; 10];
    r.read_exact(&mut pre)?;
    if &pre[..6] != MAGIC {
        return Err(bad("not a .npy file (magic)".into()));
    }
    if pre[6] != 1 {
        return Err(bad(format!(
            "unsupported .npy version {}.{}",
            pre[6], pre[7]
        )));
    }
    let hlen = u16::from_le_bytes([pre[8], pre[9]]) as usize;
    let mut h = vec![0u8; hlen];
    r.read_exact(&mut h)?;
    let h = String::from_utf8(h).map_err(|_| bad("header is not text".into()))?;
    if !h.contains("'descr': '<f4'") {
        return Err(bad(format!("dtype is not little-endian f32: {}", h.trim())));
    }
    if !h.contains("'fortran_order': False") {
        return Err(bad("Fortran order is not supported".into()));
    }
    let shape_src = h
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("no shape in the header: {}", h.trim())))?;
    let shape: Vec<usize> = shape_src
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("bad dimension '{s}'"))))
        .collect::<io::Result<_>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= isize::MAX as usize / 4)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    // Read what is there (bounded by the claim), never allocating the claim up front.
    let mut bytes = Vec::new();
    r.take(count as u64 * 4 + 1).read_to_end(&mut bytes)?;
    if bytes.len() != count * 4 {
        return Err(bad(format!(
            "shape {shape:?} needs {} data bytes, the file has {}{}",
            count * 4,
            bytes.len().min(count * 4),
            if bytes.len() > count * 4 {
                " or more"
            } else {
                ""
            }
        )));
    }
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        for shape in [vec![3usize, 5], vec![7], vec![0, 4], vec![2, 3, 4]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut file = header(&shape);
            assert_eq!(file.len() % 64, 0);
            write_f32(&mut file, &values).unwrap();
            let (s, v) = read_npy_f32(&mut file.as_slice()).unwrap();
            assert_eq!(s, shape);
            assert_eq!(v, values);
        }
    }

    #[test]
    fn header_text_is_numpys() {
        let h = header(&[10, 64]);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (10, 64), }"));
        assert!(text.ends_with('\n'));
        let h1 = header(&[10]);
        assert!(std::str::from_utf8(&h1[10..]).unwrap().contains("(10,)"));
    }

    #[test]
    fn bad_files_are_errors() {
        let mut f = header(&[2, 2]);
        write_f32(&mut f, &[1.0, 2.0, 3.0]).unwrap(); // one value short
        assert!(read_npy_f32(&mut f.as_slice()).is_err());
        let mut huge = header(&[1 << 40, 1 << 30]);
        huge.extend_from_slice(&[0; 16]);
        assert!(read_npy_f32(&mut huge.as_slice()).is_err());
        let mut claim = header(&[1 << 30, 16]); // 64 GiB claimed, 16 bytes present
        claim.extend_from_slice(&[0; 16]);
        assert!(read_npy_f32(&mut claim.as_slice()).is_err());
        assert!(read_npy_f32(&mut &b"\x93NUMPZ\x01\x00\x00\x00"[..]).is_err());
        let f64s = header(&[1])
            .iter()
            .map(|&b| if b == b'4' { b'8' } else { b })
            .collect::<Vec<_>>();
        assert!(read_npy_f32(&mut f64s.as_slice()).is_err());
    }
}
