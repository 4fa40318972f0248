//! Fuzzes the public GEMM API (`gemm`, `gemm_packed`, `matmul`) on shapes up to 40 with
//! arbitrary strides (zero, padded, huge), buffer lengths, transposes, alpha/beta and fused
//! epilogues whose vectors may have the wrong length.
//!
//! Oracles:
//! 1. `MatRef::new` accepts exactly the views that fit their buffer; `MatMut::new` rejects
//!    every view that does not fit, accepts the dense layouts, and whatever it accepts has
//!    pairwise distinct elements (checked by brute force).
//! 2. Nothing panics: bad input comes back as the right `Error`, and an error leaves C's
//!    buffer bit-for-bit untouched.
//! 3. A successful call matches `reference::gemm_f64` within `reference::gemm_tolerance`
//!    (plus the epilogue's own rounding), overwrites a NaN-poisoned C when `beta = 0`, and
//!    leaves every element of C's buffer outside the view bit-for-bit unchanged.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use selfsup::kernels::gemm::{
    gemm, gemm_packed, matmul, Fused, GemmParams, MatMut, MatRef, Transpose,
};
use selfsup::kernels::reference::{gemm_f64, gemm_tolerance};
use selfsup::Error;

const MAX_DIM: usize = 40;
/// Buffers are capped at this many elements; a view needing more must be rejected.
const MAX_LEN: usize = 1 << 16;

const ALPHAS: [f32; 6] = [1.0, -1.0, 0.0, 0.5, 2.0, 1e-3];
const BETAS: [f32; 5] = [0.0, 1.0, -1.0, 0.5, 3.0];
const SCALES: [f32; 4] = [1.0, 0.5, -2.0, 0.0];
const BIASES: [f32; 4] = [0.0, 1.0, -3.5, 0.25];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stride {
    /// What the dense layout has here.
    Dense,
    /// Dense plus a gap.
    Padded(u8),
    /// Any small value, whatever the shape.
    Small(u8),
    Zero,
    Huge(Huge),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Huge {
    Max,
    HalfMax,
    IsizeMaxPlusOne,
    Pow62,
    MaxMinus(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    /// Exactly what the view needs.
    Exact,
    /// More than it needs.
    Extra(u8),
    /// Less than it needs.
    Short(u8),
    /// Any small length.
    Any(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct ViewSpec {
    col_major: bool,
    row_stride: Stride,
    col_stride: Stride,
    len: Len,
}

/// A vector of the epilogue: its values, and `Some` for a length that is off.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct VecSpec {
    value: u8,
    len_off: Option<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct EpiSpec {
    row_scale: Option<VecSpec>,
    col_scale: Option<VecSpec>,
    row_bias: Option<VecSpec>,
    col_bias: Option<VecSpec>,
    relu: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Gemm,
    /// `gemm_packed` on views transposed beforehand, flags `No`.
    Packed,
    /// `gemm_packed` with the transpose flags set as drawn: an error unless both are `No`.
    PackedWithFlags,
    /// `matmul`: dense row-major, `alpha = 1`, `beta = 0`, no epilogue, no transposes.
    Matmul,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tweak {
    /// C's rows differ from op(A)'s.
    CRows(u8),
    /// C's columns differ from op(B)'s.
    CCols(u8),
    /// op(B)'s depth differs from op(A)'s.
    Depth(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    m: u8,
    n: u8,
    k: u8,
    trans_a: bool,
    trans_b: bool,
    a: ViewSpec,
    b: ViewSpec,
    c: ViewSpec,
    alpha: u8,
    beta: u8,
    epilogue: Option<EpiSpec>,
    tweak: Option<Tweak>,
    entry: Entry,
    seed: u64,
}

/// Elements a `rows x cols` view reaches (the crate's rule, restated), `None` on overflow.
fn required_len(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

fn resolve_stride(s: Stride, dense: usize) -> usize {
    match s {
        Stride::Dense => dense,
        Stride::Padded(p) => dense.saturating_add(usize::from(p % 8) + 1),
        Stride::Small(x) => usize::from(x % 64),
        Stride::Zero => 0,
        Stride::Huge(Huge::Max) => usize::MAX,
        Stride::Huge(Huge::HalfMax) => usize::MAX / 2,
        Stride::Huge(Huge::IsizeMaxPlusOne) => isize::MAX as usize + 1,
        Stride::Huge(Huge::Pow62) => 1 << 62,
        Stride::Huge(Huge::MaxMinus(d)) => usize::MAX - usize::from(d),
    }
}

/// A drawn layout: `(row_stride, col_stride, buffer length)` for a `rows x cols` view.
fn resolve_view(spec: &ViewSpec, rows: usize, cols: usize) -> (usize, usize, usize) {
    let (rs, cs) = if spec.col_major {
        let rs = resolve_stride(spec.row_stride, 1);
        (
            rs,
            resolve_stride(spec.col_stride, rows.max(1).saturating_mul(rs)),
        )
    } else {
        let cs = resolve_stride(spec.col_stride, 1);
        (
            resolve_stride(spec.row_stride, cols.max(1).saturating_mul(cs)),
            cs,
        )
    };
    let fallback = match spec.len {
        Len::Any(x) => usize::from(x),
        Len::Extra(x) | Len::Short(x) => usize::from(x),
        Len::Exact => 7,
    } % 4096;
    let len = match (spec.len, required_len(rows, cols, rs, cs)) {
        (Len::Exact, Some(n)) => n,
        (Len::Extra(e), Some(n)) => n.saturating_add(usize::from(e % 17) + 1),
        (Len::Short(s), Some(n)) => n.saturating_sub(usize::from(s % 5) + 1),
        _ => fallback,
    };
    (rs, cs, len.min(MAX_LEN))
}

fn fits(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) -> bool {
    required_len(rows, cols, rs, cs).is_some_and(|need| need <= len)
}

/// Deterministic values in `[-1, 1)`.
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// An epilogue vector of length `want` (or off by 1..=3 when drawn so) and whether it fits.
fn epi_vec(spec: Option<VecSpec>, want: usize, table: &[f32; 4]) -> (Option<Vec<f32>>, bool) {
    let Some(spec) = spec else {
        return (None, true);
    };
    let len = match spec.len_off {
        None => want,
        Some(d) if d % 2 == 0 => want + 1 + usize::from(d / 2 % 3),
        Some(d) => want.saturating_sub(1 + usize::from(d / 2 % 3)),
    };
    let v = (0..len)
        .map(|e| table[(usize::from(spec.value) + e) % table.len()])
        .collect();
    (Some(v), len == want)
}

/// `x - d` when that is not negative, else `x + d`: never `x`.
fn off_by(x: usize, d: usize) -> usize {
    x.checked_sub(d).unwrap_or(x + d)
}

fn dims(x: u8) -> usize {
    usize::from(x) % (MAX_DIM + 1)
}

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    let entry = input.entry;
    let matmul_mode = entry == Entry::Matmul;
    let (m, n, k) = (dims(input.m), dims(input.n), dims(input.k));
    let (trans_a, trans_b) = if matmul_mode {
        (false, false)
    } else {
        (input.trans_a, input.trans_b)
    };
    let (alpha, beta) = if matmul_mode {
        (1.0, 0.0)
    } else {
        (
            ALPHAS[usize::from(input.alpha) % ALPHAS.len()],
            BETAS[usize::from(input.beta) % BETAS.len()],
        )
    };
    let tweak = |t: u8| 1 + usize::from(t % 3);
    let (mut c_rows, mut c_cols, mut kb) = (m, n, k);
    match input.tweak {
        _ if matmul_mode => {}
        None => {}
        Some(Tweak::CRows(t)) => c_rows = off_by(m, tweak(t)),
        Some(Tweak::CCols(t)) => c_cols = off_by(n, tweak(t)),
        Some(Tweak::Depth(t)) => kb = off_by(k, tweak(t)),
    }
    let shapes_agree = (c_rows, c_cols, kb) == (m, n, k);

    // Stored shapes: op(A) is m x k, op(B) is kb x n.
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, kb) } else { (kb, n) };
    let dense = ViewSpec {
        col_major: false,
        row_stride: Stride::Dense,
        col_stride: Stride::Dense,
        len: Len::Exact,
    };
    let pick = |s: ViewSpec| {
        if matmul_mode {
            ViewSpec {
                len: s.len,
                ..dense
            }
        } else {
            s
        }
    };
    let (a_rs, a_cs, a_len) = resolve_view(&pick(input.a), a_rows, a_cols);
    let (b_rs, b_cs, b_len) = resolve_view(&pick(input.b), b_rows, b_cols);
    let (c_rs, c_cs, c_len) = resolve_view(&pick(input.c), c_rows, c_cols);

    let a_buf = fill(a_len, input.seed);
    let b_buf = fill(b_len, input.seed ^ 0xB);
    let mut c_buf = fill(c_len, input.seed ^ 0xC);

    // Oracle 1: the view constructors.
    let a_view = MatRef::new(&a_buf, a_rows, a_cols, a_rs, a_cs);
    check_ref_ctor(&a_view, fits(a_rows, a_cols, a_rs, a_cs, a_len));
    let b_view = MatRef::new(&b_buf, b_rows, b_cols, b_rs, b_cs);
    check_ref_ctor(&b_view, fits(b_rows, b_cols, b_rs, b_cs, b_len));
    let c_fits = fits(c_rows, c_cols, c_rs, c_cs, c_len);
    let c_ok = check_mut_ctor(&mut c_buf, c_rows, c_cols, c_rs, c_cs, c_fits);

    // The C view's positions, and C's values as the reference reads them.
    let offsets: Vec<usize> = if c_ok {
        (0..c_rows)
            .flat_map(|i| (0..c_cols).map(move |j| i * c_rs + j * c_cs))
            .collect()
    } else {
        Vec::new()
    };
    if beta == 0.0 {
        // C must not be read: poison it.
        offsets.iter().for_each(|&o| c_buf[o] = f32::NAN);
    }
    let c_before = c_buf.clone();

    if matmul_mode {
        let all_fit = a_view.is_ok() && b_view.is_ok() && c_ok;
        let r = matmul(m, n, k, &a_buf, &b_buf, &mut c_buf);
        match r {
            Ok(()) => assert!(all_fit, "matmul accepted buffers that do not fit"),
            Err(Error::OutOfBounds { .. }) => assert!(!all_fit, "matmul: {r:?}"),
            Err(e) => panic!("matmul: unexpected error {e}"),
        }
        if r.is_err() {
            assert_same_bits(&c_before, &c_buf, "C after a failed matmul");
            return;
        }
        let a = MatRef::row_major(&a_buf, m, k).expect("fits");
        let b = MatRef::row_major(&b_buf, k, n).expect("fits");
        let none = Fused::default();
        compare(
            (m, n, k),
            1.0,
            0.0,
            a,
            b,
            &c_before,
            &c_buf,
            (c_rs, c_cs),
            &none,
        );
    } else {
        let (Ok(a), Ok(b), true) = (a_view, b_view, c_ok) else {
            return;
        };
        let (a_op, b_op) = (op(a, trans_a), op(b, trans_b));

        let epi = input.epilogue;
        let (row_scale, f1) = epi_vec(epi.and_then(|e| e.row_scale), c_rows, &SCALES);
        let (col_scale, f2) = epi_vec(epi.and_then(|e| e.col_scale), c_cols, &SCALES);
        let (row_bias, f3) = epi_vec(epi.and_then(|e| e.row_bias), c_rows, &BIASES);
        let (col_bias, f4) = epi_vec(epi.and_then(|e| e.col_bias), c_cols, &BIASES);
        let fused = Fused {
            row_scale: row_scale.as_deref(),
            col_scale: col_scale.as_deref(),
            row_bias: row_bias.as_deref(),
            col_bias: col_bias.as_deref(),
            relu: epi.is_some_and(|e| e.relu),
        };
        let epi_fits = f1 && f2 && f3 && f4;

        let mut params = GemmParams::new().alpha(alpha).beta(beta);
        if epi.is_some() {
            params = params.epilogue(&fused);
        }
        let flagged = params.trans_a(tr(trans_a)).trans_b(tr(trans_b));
        let c = MatMut::new(&mut c_buf, c_rows, c_cols, c_rs, c_cs).expect("accepted above");
        let flags_refused = entry == Entry::PackedWithFlags && (trans_a || trans_b);
        let r = match entry {
            Entry::Gemm => gemm(&flagged, a, b, c),
            Entry::Packed => gemm_packed(&params, &a_op, &b_op, c),
            Entry::PackedWithFlags => gemm_packed(&flagged, &a_op, &b_op, c),
            Entry::Matmul => unreachable!(),
        };
        match &r {
            Ok(()) => assert!(
                !flags_refused && shapes_agree && epi_fits,
                "accepted a bad call: shapes agree {shapes_agree}, epilogue fits {epi_fits}"
            ),
            Err(Error::InvalidArgument { .. }) => assert!(flags_refused, "{r:?}"),
            Err(Error::ShapeMismatch { .. }) => {
                assert!(
                    !flags_refused,
                    "{r:?}: flags should have been refused first"
                );
                assert!(!(shapes_agree && epi_fits), "{r:?} on agreeing shapes");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        if r.is_err() {
            assert_same_bits(&c_before, &c_buf, "C after a failed call");
            return;
        }
        compare(
            (m, n, k),
            alpha,
            beta,
            a_op,
            b_op,
            &c_before,
            &c_buf,
            (c_rs, c_cs),
            &fused,
        );
    }

    // Oracle 3b: nothing outside the view changed.
    let mut inside = vec![false; c_buf.len()];
    offsets.iter().for_each(|&o| inside[o] = true);
    for (p, ((x, y), inside)) in c_before.iter().zip(&c_buf).zip(&inside).enumerate() {
        assert!(
            *inside || x.to_bits() == y.to_bits(),
            "C[{p}] outside the view changed: {x} -> {y}"
        );
    }
}

fn tr(t: bool) -> Transpose {
    if t {
        Transpose::Yes
    } else {
        Transpose::No
    }
}

fn op(v: MatRef<'_>, t: bool) -> MatRef<'_> {
    if t {
        v.t()
    } else {
        v
    }
}

fn check_ref_ctor(view: &selfsup::Result<MatRef<'_>>, fits: bool) {
    match view {
        Ok(_) => assert!(fits, "MatRef::new accepted a view that does not fit"),
        Err(Error::OutOfBounds { .. }) => assert!(!fits, "MatRef::new refused a fitting view"),
        Err(e) => panic!("MatRef::new: unexpected error {e}"),
    }
}

/// Checks `MatMut::new` on these parts; true when it accepted them.
fn check_mut_ctor(
    buf: &mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    fits: bool,
) -> bool {
    let r = MatMut::new(buf, rows, cols, rs, cs).map(|_| ());
    let dense = (rs == cols && cs == 1) || (rs == 1 && cs == rows);
    match r {
        Ok(()) => {
            assert!(fits, "MatMut::new accepted a view that does not fit");
            let mut offs: Vec<usize> = (0..rows)
                .flat_map(|i| (0..cols).map(move |j| i * rs + j * cs))
                .collect();
            offs.sort_unstable();
            assert!(
                offs.windows(2).all(|w| w[0] != w[1]),
                "MatMut::new accepted a self-overlapping view {rows}x{cols} strides ({rs}, {cs})"
            );
            true
        }
        Err(Error::OutOfBounds { .. }) => {
            assert!(!fits, "MatMut::new refused a fitting view (out of bounds)");
            false
        }
        Err(Error::SelfOverlap { .. }) => {
            assert!(fits, "MatMut::new: overlap reported before bounds");
            assert!(!dense, "MatMut::new refused a dense layout {rows}x{cols}");
            false
        }
        Err(e) => panic!("MatMut::new: unexpected error {e}"),
    }
}

fn assert_same_bits(before: &[f32], after: &[f32], what: &str) {
    for (p, (x, y)) in before.iter().zip(after).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: element {p} changed {x} -> {y}"
        );
    }
}

/// Oracle 3a: the view's values against the f64 reference, epilogue included.
#[allow(clippy::too_many_arguments)]
fn compare(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    beta: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c_before: &[f32],
    c_after: &[f32],
    (rs, cs): (usize, usize),
    epi: &Fused<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let at = |c: &[f32], i: usize, j: usize| c[i * rs + j * cs];
    let c0: Vec<f32> = (0..m)
        .flat_map(|i| (0..n).map(move |j| at(c_before, i, j)))
        .collect();
    let want = gemm_f64(alpha, a, b, beta, &c0);
    let tol = gemm_tolerance(alpha, a, b, beta, &c0);
    let eps = f64::from(f32::EPSILON);
    for i in 0..m {
        for j in 0..n {
            let v = want[i * n + j];
            let s = epi.row_scale.map_or(1.0, |r| f64::from(r[i]))
                * epi.col_scale.map_or(1.0, |c| f64::from(c[j]));
            let bias = epi.row_bias.map_or(0.0, |r| f64::from(r[i]))
                + epi.col_bias.map_or(0.0, |c| f64::from(c[j]));
            let mut expect = v * s + bias;
            if epi.relu {
                expect = expect.max(0.0);
            }
            let bound = s.abs() * tol[i * n + j]
                + 4.0 * eps * ((v * s).abs() + s.abs() * tol[i * n + j] + bias.abs())
                + 1e-30;
            let got = f64::from(at(c_after, i, j));
            let err = (got - expect).abs();
            assert!(
                err <= bound,
                "C[{i},{j}] = {got}, reference {expect}, error {err} > bound {bound} \
                 ({m}x{n}x{k}, alpha {alpha}, beta {beta})"
            );
        }
    }
}
