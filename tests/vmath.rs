//! The public slice APIs of `kernels::vmath` (`exp`, `ln`, `log1p`, `softplus`, in place and
//! `_into`) through the runtime dispatch: every length from 0 to 40 (all tail lengths, several
//! full vectors), inputs that mix ordinary values, boundaries and special values, checked
//! against `f64` references to the accuracy the module documents, and bit for bit against
//! one-element calls. Run once as is and once with `SELFSUP_FORCE_PORTABLE=1` to cover both
//! backends (the unit tests in `src/kernels/vmath.rs` call each backend directly).

use selfsup::kernels::vmath::{
    exp_inplace, exp_into, ln_inplace, ln_into, log1p_inplace, log1p_into, softplus_inplace,
    softplus_into,
};
use selfsup::Error;

/// One function under test: its two slice entry points, the `f64` reference, the input
/// generator and the documented bound (max ulp for normal results, max error in units of
/// 2^-149 for subnormal ones).
struct Func {
    name: &'static str,
    inplace: fn(&mut [f32]),
    into: fn(&[f32], &mut [f32]) -> selfsup::Result<()>,
    reference: fn(f64) -> f64,
    /// Maps a uniform `u` in [0, 1) to an ordinary input.
    ordinary: fn(f32) -> f32,
    /// Boundaries and special values, mixed into the inputs.
    specials: &'static [f32],
    max_ulp: f64,
    max_subnormal: f64,
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;
const TINY: f32 = f32::MIN_POSITIVE;
const SUB: f32 = 1.0e-40;
/// The smallest positive subnormal, 2^-149.
const SUB_MIN: f32 = f32::MIN_POSITIVE / 8_388_608.0;

fn funcs() -> [Func; 4] {
    [
        Func {
            name: "exp",
            inplace: exp_inplace,
            into: exp_into,
            reference: f64::exp,
            ordinary: |u| 210.0 * u - 110.0,
            specials: &[
                NAN,
                INF,
                -INF,
                0.0,
                -0.0,
                88.722_83,
                88.722_84,
                -87.336_55,
                -103.972_08,
                -104.0,
                f32::MAX,
                -f32::MAX,
                1e-30,
            ],
            max_ulp: 1.02,
            max_subnormal: 1.0,
        },
        Func {
            name: "ln",
            inplace: ln_inplace,
            into: ln_into,
            reference: f64::ln,
            // Positive values over every binade, 2^-149 up to 2^128.
            ordinary: |u| (277.0 * u - 149.0).exp2(),
            specials: &[
                NAN,
                INF,
                -INF,
                0.0,
                -0.0,
                -1.0,
                1.0,
                0.999_999_94,
                1.000_000_1,
                TINY,
                SUB,
                SUB_MIN,
                f32::MAX,
                -TINY,
            ],
            max_ulp: 0.85,
            max_subnormal: 0.0,
        },
        Func {
            name: "log1p",
            inplace: log1p_inplace,
            into: log1p_into,
            reference: f64::ln_1p,
            // (-1, 0] and positive values from 2^-60 to 2^40.
            ordinary: |u| {
                if u < 0.3 {
                    -u / 0.3
                } else {
                    (100.0 * u - 60.0).exp2()
                }
            },
            specials: &[
                NAN,
                INF,
                -INF,
                0.0,
                -1.0,
                -0.999_999_94,
                -2.0,
                1e-30,
                -1e-30,
                1e-8,
                SUB,
                f32::MAX,
            ],
            max_ulp: 0.95,
            max_subnormal: 0.0,
        },
        Func {
            name: "softplus",
            inplace: softplus_inplace,
            into: softplus_into,
            reference: |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
            ordinary: |u| 230.0 * u - 115.0,
            specials: &[
                NAN,
                INF,
                -INF,
                0.0,
                -0.0,
                16.0,
                17.0,
                -88.0,
                -103.972_08,
                -104.0,
                f32::MAX,
                -f32::MAX,
                1e-30,
            ],
            max_ulp: 1.0,
            max_subnormal: 1.0,
        },
    ]
}

/// xorshift32, as the other tests use.
struct Rng(u32);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// `len` inputs for `f`: mostly ordinary values, every fourth one a special value.
fn inputs(f: &Func, len: usize, seed: u32) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(2_654_435_761) | 1);
    (0..len)
        .map(|i| {
            let u = rng.unit();
            if i % 4 == 3 {
                f.specials[(u * f.specials.len() as f32) as usize % f.specials.len()]
            } else {
                (f.ordinary)(u)
            }
        })
        .collect()
}

/// The error of `y` against the reference `r`, in ulps of the `f32` result (`2^-149` for
/// subnormal results; an infinite `y` counts as 2^128), or `None` when `y` has the wrong class
/// (a reference that rounds to an infinity or NaN must be met exactly).
fn error(y: f32, r: f64) -> Option<(f64, bool)> {
    let rf = r as f32;
    if rf.is_nan() {
        return y.is_nan().then_some((0.0, false));
    }
    if rf.is_infinite() {
        return (y == rf).then_some((0.0, false));
    }
    if y.is_nan() {
        return None;
    }
    let yv = if y.is_infinite() {
        y.signum() as f64 * 2f64.powi(128)
    } else {
        y as f64
    };
    let subnormal = r.abs() < f32::MIN_POSITIVE as f64;
    let ulp = if subnormal {
        2f64.powi(-149)
    } else {
        let e = (((r.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023).min(127);
        2f64.powi(e - 23)
    };
    Some(((yv - r).abs() / ulp, subnormal))
}

#[test]
fn slices_of_every_length_match_the_reference_and_single_element_calls() {
    eprintln!("vmath slices on {}", selfsup::kernels::isa().name());
    for f in funcs() {
        let mut worst = (0.0f64, 0.0f64);
        for len in 0..=40 {
            let x = inputs(&f, len, len as u32 + 1);
            let mut inplace = x.clone();
            (f.inplace)(&mut inplace);
            let mut into = vec![NAN; len];
            (f.into)(&x, &mut into).unwrap();
            for i in 0..len {
                let mut one = [x[i]];
                (f.inplace)(&mut one);
                assert_eq!(
                    inplace[i].to_bits(),
                    one[0].to_bits(),
                    "{} len {len} [{i}] x = {:e}: slice {:e}, alone {:e}",
                    f.name,
                    x[i],
                    inplace[i],
                    one[0]
                );
                assert_eq!(
                    into[i].to_bits(),
                    one[0].to_bits(),
                    "{} len {len} [{i}] x = {:e}: _into {:e}, alone {:e}",
                    f.name,
                    x[i],
                    into[i],
                    one[0]
                );
                let r = (f.reference)(x[i] as f64);
                let Some((e, subnormal)) = error(inplace[i], r) else {
                    panic!("{}({:e}) = {:e}, reference {r:e}", f.name, x[i], inplace[i]);
                };
                let (bound, w) = if subnormal {
                    (f.max_subnormal, &mut worst.1)
                } else {
                    (f.max_ulp, &mut worst.0)
                };
                assert!(
                    e <= bound,
                    "{}({:e}) = {:e}, reference {r:e}: error {e} > {bound} {}",
                    f.name,
                    x[i],
                    inplace[i],
                    if subnormal { "x 2^-149" } else { "ulp" }
                );
                *w = w.max(e);
            }
        }
        eprintln!(
            "{}: max {:.3} ulp, subnormal results max {:.3} x 2^-149",
            f.name, worst.0, worst.1
        );
    }
}

#[test]
fn into_checks_the_lengths_and_leaves_dst_alone() {
    for f in funcs() {
        let x = [0.5f32; 9];
        for dst_len in [0, 8, 10] {
            let mut dst = vec![7.0f32; dst_len];
            let err = (f.into)(&x, &mut dst).unwrap_err();
            assert!(
                matches!(err, Error::ShapeMismatch { .. }),
                "{}: {err}",
                f.name
            );
            assert!(dst.iter().all(|&v| v == 7.0), "{}: dst was written", f.name);
        }
        (f.into)(&[], &mut []).unwrap();
    }
}

/// (slice function, name, (input, exact output) pairs)
type SpecialCase = (fn(&mut [f32]), &'static str, &'static [(f32, f32)]);

#[test]
fn special_values() {
    let cases: &[SpecialCase] = &[
        (
            exp_inplace,
            "exp",
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, 0.0),
                (0.0, 1.0),
                (89.0, INF),
                (-104.0, 0.0),
            ],
        ),
        (
            ln_inplace,
            "ln",
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, NAN),
                (0.0, -INF),
                (-0.0, -INF),
                (-1.0, NAN),
                (1.0, 0.0),
            ],
        ),
        (
            log1p_inplace,
            "log1p",
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, NAN),
                (-1.0, -INF),
                (-2.0, NAN),
                (0.0, 0.0),
                (-0.0, -0.0),
                (1e-35, 1e-35),
            ],
        ),
        (
            softplus_inplace,
            "softplus",
            &[
                (NAN, NAN),
                (INF, INF),
                (-INF, 0.0),
                (0.0, std::f32::consts::LN_2),
                (1000.0, 1000.0),
                (f32::MAX, f32::MAX),
                (-1000.0, 0.0),
            ],
        ),
    ];
    for &(func, name, pairs) in cases {
        // Every special value in every lane position, with a full vector and a tail.
        for pos in 0..11 {
            for &(x, want) in pairs {
                let mut v = vec![0.25f32; 11];
                v[pos] = x;
                func(&mut v);
                let got = v[pos];
                let same = (want.is_nan() && got.is_nan()) || want.to_bits() == got.to_bits();
                assert!(same, "{name}({x:e}) = {got:e} at [{pos}], want {want:e}");
            }
        }
    }
}
