//! The protocol-buffers wire format, write side only, as much of it as an ONNX file needs:
//! base-128 varints (wire type 0) and length-delimited fields (wire type 2: bytes, strings,
//! nested messages). Repeated scalars are written unpacked, one field per value (what the
//! proto2 definition of ONNX declares; every parser also reads the packed form, and vice
//! versa).

/// Wire type 0: a varint (int32, int64, uint64, bool, enum).
const VARINT: u8 = 0;
/// Wire type 2: a length, then that many bytes (bytes, string, a nested message).
const LEN: u8 = 2;

/// Appends `v` as a base-128 varint: 7 bits per byte, least significant group first, the
/// high bit set on every byte but the last (1 to 10 bytes).
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One message being encoded: its fields, in the order they are added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// An empty message (which encodes to no bytes).
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        debug_assert!(field >= 1, "protobuf field numbers start at 1");
        write_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A varint field (`uint64`, `bool`, an enum).
    pub fn uint64(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, VARINT);
        write_varint(&mut self.buf, v);
        self
    }

    /// An `int64` (or `int32`) field: a negative value is its 64-bit two's complement, ten
    /// bytes long, as the format defines for the non-zigzag signed types.
    pub fn int64(&mut self, field: u32, v: i64) -> &mut Self {
        self.uint64(field, v as u64)
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, data: &[u8]) -> &mut Self {
        self.key(field, LEN);
        write_varint(&mut self.buf, data.len() as u64);
        self.buf.extend_from_slice(data);
        self
    }

    /// A `string` field (UTF-8).
    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    /// The encoded fields.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded fields, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, v);
        out
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        // 128 = 1 * 128 + 0.
        assert_eq!(varint(128), [0x80, 0x01]);
        // 300 = 0b10_0101100: low group 0101100 (0x2c) with the high bit, then 0b10.
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(16_383), [0xff, 0x7f]);
        assert_eq!(varint(16_384), [0x80, 0x80, 0x01]);
        // 64 bits: nine groups of seven ones, then the last bit alone.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint(u64::MAX), max);
    }

    #[test]
    fn negative_int64_is_ten_bytes_of_twos_complement() {
        let mut m = Message::new();
        m.int64(1, -1);
        let mut want = vec![0x08];
        want.extend([0xff; 9]);
        want.push(0x01);
        assert_eq!(m.as_bytes(), want);
    }

    #[test]
    fn a_small_message_encodes_as_the_format_defines() {
        // The format's own worked example: field 1 = 150 is 08 96 01.
        let mut m = Message::new();
        m.uint64(1, 150);
        assert_eq!(m.as_bytes(), [0x08, 0x96, 0x01]);

        // Field 2 = "testing": key (2 << 3) | 2 = 0x12, length 7, the bytes.
        let mut s = Message::new();
        s.string(2, "testing");
        assert_eq!(
            s.as_bytes(),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );

        // Field 3 holding the first message: key (3 << 3) | 2 = 0x1a, length 3, its bytes;
        // then field 16 = 1, whose key needs two bytes: (16 << 3) | 0 = 128 = 80 01.
        let mut outer = Message::new();
        outer.message(3, &m).uint64(16, 1);
        assert_eq!(
            outer.into_bytes(),
            [0x1a, 0x03, 0x08, 0x96, 0x01, 0x80, 0x01, 0x01]
        );

        // Empty things: an empty message has no bytes, an empty string field still has its
        // key and a zero length.
        assert!(Message::new().as_bytes().is_empty());
        let mut e = Message::new();
        e.string(1, "");
        assert_eq!(e.as_bytes(), [0x0a, 0x00]);
    }
}
