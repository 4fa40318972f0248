//! Optimizers and the learning-rate schedule: each optimizer against an f64 reference written
//! here from the documented update equations (PyTorch's `SGD` and `AdamW` docs, SimCLR's TF
//! `LARSOptimizer`), hand-worked two-step examples, the LARS trust ratio with zero norms,
//! thread-count invariance, checkpoint round trips, error paths, the schedule, and a step
//! that allocates nothing once warm.

use selfsup::optim::{
    trust_ratio, AdamW, AdamWConfig, Lars, LarsConfig, LrScaling, LrSchedule, Optimizer,
    OptimizerConfig, ParamGroup, Sgd, SgdConfig, CHUNK,
};
use selfsup::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------------
// A counting allocator that counts only on threads that ask for it, so tests running in
// parallel do not disturb the count.

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_alloc() {
    if COUNTING.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-scale, scale)`.
    fn f32(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(scale)).collect()
    }
}

/// A model-like layout: a weight longer than `CHUNK` (the parallel path), BatchNorm
/// gamma/beta (excluded), a weight decayed but not adapted, a bias adapted but not decayed,
/// an empty group, a frozen gap covered by no group, and a weight whose parameters start at
/// zero (LARS trust 1 on the first step).
const N: usize = 20_764;
const FROZEN: std::ops::Range<usize> = 20_650..20_700;
const ZERO_W: std::ops::Range<usize> = 20_700..20_764;

fn groups() -> Vec<ParamGroup> {
    const { assert!(20_000 > CHUNK) };
    vec![
        ParamGroup::weight("conv1.weight [16, 1250]", 0..20_000),
        ParamGroup::excluded("bn1.gamma [64]", 20_000..20_064),
        ParamGroup::excluded("bn1.beta [64]", 20_064..20_128),
        ParamGroup::new("fc.weight [10, 50]", 20_128..20_628, true, false),
        ParamGroup::new("fc.bias [22]", 20_628..20_650, false, true),
        ParamGroup::weight("empty", 20_650..20_650),
        ParamGroup::weight("zero.weight [64]", ZERO_W),
    ]
}

fn init_params(rng: &mut Rng) -> Vec<f32> {
    let mut p = rng.vec(N, 1.0);
    p[ZERO_W].fill(0.0);
    p
}

/// Largest `|x - r| / (atol + rtol * |r|)`; `<= 1` passes.
fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len());
    let mut worst = (0.0f64, 0usize);
    for (i, (&x, &r)) in got.iter().zip(want).enumerate() {
        let d = (f64::from(x) - r).abs();
        let e = if d == 0.0 {
            0.0
        } else {
            d / (atol + rtol * r.abs())
        };
        if e.is_nan() || e > worst.0 {
            worst = (if e.is_nan() { f64::INFINITY } else { e }, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: element {i}: got {} want {} (error {:.3} of tolerance)",
        got[i],
        want[i],
        worst.0
    );
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn sq_norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

const LRS: [f32; 6] = [0.05, 0.1, 0.0, 0.07, 0.1, 0.03];

// ---------------------------------------------------------------------------------------------
// f64 references, written from the documented equations.

/// `torch.optim.SGD` (its docs' algorithm box), per tensor.
fn sgd_ref(
    c: &SgdConfig,
    p: &mut [f64],
    g: &[f64],
    b: &mut [f64],
    t: u64,
    grp: &[ParamGroup],
    lr: f64,
) {
    let (mu, tau, wd) = (
        f64::from(c.momentum),
        f64::from(c.dampening),
        f64::from(c.weight_decay),
    );
    for gr in grp {
        for i in gr.range.clone() {
            let mut d = g[i];
            if gr.decay && wd != 0.0 {
                d += wd * p[i];
            }
            if mu != 0.0 {
                b[i] = if t == 1 {
                    d
                } else {
                    mu * b[i] + (1.0 - tau) * d
                };
                d = if c.nesterov { d + mu * b[i] } else { b[i] };
            }
            p[i] -= lr * d;
        }
    }
}

/// SimCLR's `LARSOptimizer` with `classic_momentum=True`, per tensor.
fn lars_ref(c: &LarsConfig, p: &mut [f64], g: &[f64], v: &mut [f64], grp: &[ParamGroup], lr: f64) {
    let (mu, wd, eta) = (
        f64::from(c.momentum),
        f64::from(c.weight_decay),
        f64::from(c.eta),
    );
    for gr in grp {
        let r = gr.range.clone();
        let gd: Vec<f64> = r
            .clone()
            .map(|i| {
                if gr.decay && wd != 0.0 {
                    g[i] + wd * p[i]
                } else {
                    g[i]
                }
            })
            .collect();
        let mut trust = 1.0;
        if gr.adapt {
            let (pn, gn) = (sq_norm(&p[r.clone()]).sqrt(), sq_norm(&gd).sqrt());
            if pn > 0.0 && gn > 0.0 {
                trust = eta * pn / gn;
            }
        }
        let s = lr * trust;
        for (k, i) in r.enumerate() {
            v[i] = mu * v[i] + s * gd[k];
            let update = if c.nesterov {
                mu * v[i] + s * gd[k]
            } else {
                v[i]
            };
            p[i] -= update;
        }
    }
}

/// `torch.optim.AdamW` (its docs' algorithm box, `amsgrad=False`), per tensor.
#[allow(clippy::too_many_arguments)]
fn adamw_ref(
    c: &AdamWConfig,
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    t: u64,
    grp: &[ParamGroup],
    lr: f64,
) {
    let (b1, b2, eps, wd) = (
        f64::from(c.beta1),
        f64::from(c.beta2),
        f64::from(c.eps),
        f64::from(c.weight_decay),
    );
    for gr in grp {
        for i in gr.range.clone() {
            if gr.decay {
                p[i] *= 1.0 - lr * wd;
            }
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let mhat = m[i] / (1.0 - b1.powi(t as i32));
            let vhat = v[i] / (1.0 - b2.powi(t as i32));
            p[i] -= lr * mhat / (vhat.sqrt() + eps);
        }
    }
}

/// Runs `opt` and the reference side by side for `LRS.len()` steps with fresh random
/// gradients each step and compares the parameters after every step; the frozen gap must
/// keep its bits.
fn check_against_reference(
    what: &str,
    mut opt: Optimizer,
    mut reference: impl FnMut(&mut [f64], &[f64], u64, f64),
    seed: u64,
) {
    let mut rng = Rng(seed);
    let grp = groups();
    let mut p = init_params(&mut rng);
    let frozen0 = p[FROZEN].to_vec();
    let mut pr = widen(&p);
    for (s, &lr) in LRS.iter().enumerate() {
        let g = rng.vec(N, 0.1);
        opt.step(&mut p, &g, &grp, lr).unwrap();
        reference(&mut pr, &widen(&g), s as u64 + 1, f64::from(lr));
        assert_close(&format!("{what} step {}", s + 1), &p, &pr, 2e-5, 1e-6);
    }
    assert_eq!(opt.steps(), LRS.len() as u64);
    assert_eq!(
        p[FROZEN].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        frozen0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "{what}: an element outside every group changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the references.

#[test]
fn sgd_matches_the_f64_reference() {
    let configs = [
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-4,
        },
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 5e-4,
        },
        SgdConfig {
            momentum: 0.8,
            dampening: 0.3,
            nesterov: false,
            weight_decay: 1e-2,
        },
        SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-2,
        },
        SgdConfig::default(),
    ];
    for (k, c) in configs.into_iter().enumerate() {
        let grp = groups();
        let mut b = vec![0.0f64; N];
        check_against_reference(
            &format!("sgd {c:?}"),
            OptimizerConfig::Sgd(c).build(N).unwrap(),
            |p, g, t, lr| sgd_ref(&c, p, g, &mut b, t, &grp, lr),
            10 + k as u64,
        );
    }
}

#[test]
fn lars_matches_the_f64_reference() {
    let configs = [
        LarsConfig::default(),
        LarsConfig {
            momentum: 0.9,
            weight_decay: 1e-3,
            eta: 0.01,
            nesterov: true,
        },
        LarsConfig {
            momentum: 0.0,
            weight_decay: 0.1,
            eta: 0.02,
            nesterov: false,
        },
        LarsConfig {
            momentum: 0.5,
            weight_decay: 0.0,
            eta: 1.0,
            nesterov: false,
        },
    ];
    for (k, c) in configs.into_iter().enumerate() {
        let grp = groups();
        let mut v = vec![0.0f64; N];
        check_against_reference(
            &format!("lars {c:?}"),
            OptimizerConfig::Lars(c).build(N).unwrap(),
            |p, g, _, lr| lars_ref(&c, p, g, &mut v, &grp, lr),
            20 + k as u64,
        );
    }
}

#[test]
fn adamw_matches_the_f64_reference() {
    let configs = [
        AdamWConfig::default(),
        AdamWConfig {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        },
        AdamWConfig {
            beta1: 0.0,
            beta2: 0.5,
            eps: 1e-3,
            weight_decay: 0.0,
        },
    ];
    for (k, c) in configs.into_iter().enumerate() {
        let grp = groups();
        let (mut m, mut v) = (vec![0.0f64; N], vec![0.0f64; N]);
        check_against_reference(
            &format!("adamw {c:?}"),
            OptimizerConfig::AdamW(c).build(N).unwrap(),
            |p, g, t, lr| adamw_ref(&c, p, g, &mut m, &mut v, t, &grp, lr),
            30 + k as u64,
        );
    }
}

#[test]
fn groups_in_any_order_give_the_same_bits() {
    let mut rng = Rng(40);
    let p0 = init_params(&mut rng);
    let g = rng.vec(N, 0.1);
    let grp = groups();
    let mut rev = grp.clone();
    rev.reverse();
    let mut a = OptimizerConfig::Lars(LarsConfig::default())
        .build(N)
        .unwrap();
    let mut b = a.clone();
    let (mut pa, mut pb) = (p0.clone(), p0);
    a.step(&mut pa, &g, &grp, 0.1).unwrap();
    b.step(&mut pb, &g, &rev, 0.1).unwrap();
    assert_eq!(bits(&pa), bits(&pb));
}

// ---------------------------------------------------------------------------------------------
// Hand-worked two-step examples (every number below is exact in f32).

fn two_steps(
    opt: &mut Optimizer,
    p: &mut [f32],
    g: &[f32],
    grp: &[ParamGroup],
    lr: f32,
) -> [Vec<f32>; 2] {
    opt.step(p, g, grp, lr).unwrap();
    let first = p.to_vec();
    opt.step(p, g, grp, lr).unwrap();
    [first, p.to_vec()]
}

#[test]
fn sgd_two_steps_by_hand() {
    // momentum 0.5, dampening 0.5, weight decay 0.5, lr 0.25; p = 2, g = 1 at both steps.
    // Element 0 is decayed, element 1 is not.
    //   step 1, decayed:   d = 1 + 0.5*2 = 2;   b = d = 2 (first step: no dampening);
    //                      p = 2 - 0.25*2 = 1.5
    //   step 2, decayed:   d = 1 + 0.5*1.5 = 1.75;  b = 0.5*2 + 0.5*1.75 = 1.875;
    //                      p = 1.5 - 0.25*1.875 = 1.03125
    //   step 1, plain:     d = 1;  b = 1;  p = 2 - 0.25 = 1.75
    //   step 2, plain:     d = 1;  b = 0.5*1 + 0.5*1 = 1;  p = 1.75 - 0.25 = 1.5
    let c = SgdConfig {
        momentum: 0.5,
        dampening: 0.5,
        nesterov: false,
        weight_decay: 0.5,
    };
    let grp = [
        ParamGroup::weight("w", 0..1),
        ParamGroup::excluded("b", 1..2),
    ];
    let mut opt: Optimizer = Sgd::new(c, 2).unwrap().into();
    let [s1, s2] = two_steps(&mut opt, &mut [2.0, 2.0], &[1.0, 1.0], &grp, 0.25);
    assert_eq!(s1, [1.5, 1.75]);
    assert_eq!(s2, [1.03125, 1.5]);
    assert_eq!(opt.state_tensors()[0].1, [1.875, 1.0]);

    // Nesterov: momentum 0.5, no dampening, no decay, lr 0.25; p = 2, g = 1 at both steps.
    //   step 1:  b = 1;                d = 1 + 0.5*1 = 1.5;   p = 2 - 0.25*1.5 = 1.625
    //   step 2:  b = 0.5*1 + 1 = 1.5;  d = 1 + 0.5*1.5 = 1.75; p = 1.625 - 0.25*1.75 = 1.1875
    let c = SgdConfig {
        momentum: 0.5,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 0.0,
    };
    let mut opt: Optimizer = Sgd::new(c, 1).unwrap().into();
    let grp = [ParamGroup::weight("w", 0..1)];
    let [s1, s2] = two_steps(&mut opt, &mut [2.0], &[1.0], &grp, 0.25);
    assert_eq!(s1, [1.625]);
    assert_eq!(s2, [1.1875]);
}

#[test]
fn lars_two_steps_by_hand() {
    // momentum 0.5, weight decay 0.5, eta 0.25, lr 0.5.
    // Tensor w = [3, 4] (decayed, adapted) with g = [0, 0] at both steps, so g' = 0.5*p:
    //   step 1:  ||p|| = 5, g' = [1.5, 2], ||g'|| = 2.5, trust = 0.25*5/2.5 = 0.5,
    //            lr*trust = 0.25;  v = 0.25*[1.5, 2] = [0.375, 0.5];
    //            p = [3 - 0.375, 4 - 0.5] = [2.625, 3.5]
    //   step 2:  p = 0.875*[3, 4], ||p|| = 4.375, g' = [1.3125, 1.75], ||g'|| = 2.1875,
    //            trust = 0.25*4.375/2.1875 = 0.5, lr*trust = 0.25;
    //            v = 0.5*[0.375, 0.5] + 0.25*[1.3125, 1.75] = [0.515625, 0.6875];
    //            p = [2.625 - 0.515625, 3.5 - 0.6875] = [2.109375, 2.8125]
    // Tensor b = [1] (excluded: no decay, trust 1) with g = 1:
    //   step 1:  v = 0.5*1 = 0.5;           p = 1 - 0.5 = 0.5
    //   step 2:  v = 0.5*0.5 + 0.5 = 0.75;  p = 0.5 - 0.75 = -0.25
    let c = LarsConfig {
        momentum: 0.5,
        weight_decay: 0.5,
        eta: 0.25,
        nesterov: false,
    };
    let grp = [
        ParamGroup::weight("w", 0..2),
        ParamGroup::excluded("b", 2..3),
    ];
    let mut opt: Optimizer = Lars::new(c, 3).unwrap().into();
    let [s1, s2] = two_steps(&mut opt, &mut [3.0, 4.0, 1.0], &[0.0, 0.0, 1.0], &grp, 0.5);
    assert_eq!(s1, [2.625, 3.5, 0.5]);
    assert_eq!(s2, [2.109375, 2.8125, -0.25]);
    assert_eq!(opt.state_tensors()[0].1, [0.515625, 0.6875, 0.75]);

    // Nesterov, same tensor b alone: update = momentum*v + lr*g'.
    //   step 1:  v = 0.5;    update = 0.25 + 0.5 = 0.75;   p = 1 - 0.75 = 0.25
    //   step 2:  v = 0.75;   update = 0.375 + 0.5 = 0.875; p = 0.25 - 0.875 = -0.625
    let c = LarsConfig {
        nesterov: true,
        ..c
    };
    let mut opt: Optimizer = Lars::new(c, 1).unwrap().into();
    let grp = [ParamGroup::excluded("b", 0..1)];
    let [s1, s2] = two_steps(&mut opt, &mut [1.0], &[1.0], &grp, 0.5);
    assert_eq!(s1, [0.25]);
    assert_eq!(s2, [-0.625]);
}

#[test]
fn adamw_two_steps_by_hand() {
    // beta1 0.5, beta2 0.75, eps 0, weight decay 0.5, lr 0.5; p = 1, g = 1 at both steps.
    // Element 0 is decayed, element 1 is not.
    //   step 1 (t = 1):  p *= 1 - 0.5*0.5 = 0.75 -> 0.75;  m = 0.5;  v = 0.25;
    //                    1 - beta1 = 0.5, sqrt(1 - beta2) = 0.5, step size 0.5/0.5 = 1;
    //                    denom = sqrt(0.25)/0.5 = 1;  p = 0.75 - 1*0.5/1 = 0.25
    //   step 2 (t = 2):  p = 0.25*0.75 = 0.1875;  m = 0.25 + 0.5 = 0.75;
    //                    v = 0.75*0.25 + 0.25 = 0.4375;  1 - beta1^2 = 0.75, step size 2/3;
    //                    1 - beta2^2 = 0.4375, denom = sqrt(0.4375)/sqrt(0.4375) = 1;
    //                    p = 0.1875 - (2/3)*0.75 = 0.1875 - 0.5 = -0.3125
    //   undecayed:       step 1 p = 1 - 0.5 = 0.5;  step 2 p = 0.5 - 0.5 = 0
    // (f32(2/3) * 0.75 = 0.50000001 rounds to 0.5, so these are exact.)
    let c = AdamWConfig {
        beta1: 0.5,
        beta2: 0.75,
        eps: 0.0,
        weight_decay: 0.5,
    };
    let grp = [
        ParamGroup::weight("w", 0..1),
        ParamGroup::excluded("b", 1..2),
    ];
    let mut opt: Optimizer = AdamW::new(c, 2).unwrap().into();
    let [s1, s2] = two_steps(&mut opt, &mut [1.0, 1.0], &[1.0, 1.0], &grp, 0.5);
    assert_eq!(s1, [0.25, 0.5]);
    assert_eq!(s2, [-0.3125, 0.0]);
    let st = opt.state_tensors();
    assert_eq!(st[0], ("adamw.exp_avg".to_string(), &[0.75f32, 0.75][..]));
    assert_eq!(
        st[1],
        ("adamw.exp_avg_sq".to_string(), &[0.4375f32, 0.4375][..])
    );
}

// ---------------------------------------------------------------------------------------------
// The LARS trust ratio.

#[test]
fn lars_trust_ratio_with_zero_norms() {
    // eta * ||p|| / ||g'|| with eta widened from f32: 0.001f32 * 5 / 2.5.
    assert_eq!(
        trust_ratio(0.001, 25.0, 6.25),
        f64::from(0.001f32) * 5.0 / 2.5
    );
    assert_eq!(trust_ratio(0.5, 25.0, 6.25), 1.0);
    assert_eq!(trust_ratio(0.001, 0.0, 4.0), 1.0);
    assert_eq!(trust_ratio(0.001, 4.0, 0.0), 1.0);
    assert_eq!(trust_ratio(0.001, 0.0, 0.0), 1.0);
    assert_eq!(trust_ratio(0.001, 4.0, f64::NAN), 1.0);

    let c = LarsConfig {
        momentum: 0.9,
        weight_decay: 0.0,
        eta: 0.01,
        nesterov: false,
    };
    let grp = [
        // ||p|| = 5, ||g|| = 1.25: trust = 0.01*5/1.25 = 0.04; p = p - lr*0.04*g.
        ParamGroup::weight("a", 0..2),
        // ||p|| = 0: trust 1, p = -lr*g.
        ParamGroup::weight("zero p", 2..4),
        // ||g|| = 0: trust 1 and nothing moves.
        ParamGroup::weight("zero g", 4..6),
        // both 0: nothing moves, no NaN.
        ParamGroup::weight("zero both", 6..8),
    ];
    let mut p = [3.0, 4.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0];
    let g = [0.75, 1.0, 0.5, -0.25, 0.0, 0.0, 0.0, 0.0];
    let mut opt = Lars::new(c, 8).unwrap();
    opt.step(&mut p, &g, &grp, 2.0).unwrap();
    let want = [
        3.0 - 2.0 * 0.04 * 0.75,
        4.0 - 2.0 * 0.04 * 1.0,
        -1.0,
        0.5,
        1.0,
        2.0,
        0.0,
        0.0,
    ];
    assert_close("lars trust", &p, &want, 1e-7, 0.0);

    // With decay the decayed gradient wd*p alone sets the ratio: g = 0, wd = 0.5,
    // ||g'|| = 0.5*||p||, trust = eta/0.5 = 0.02, update = lr*0.02*0.5*p = 0.02*p at lr 2.
    let c = LarsConfig {
        weight_decay: 0.5,
        ..c
    };
    let mut opt = Lars::new(c, 2).unwrap();
    let mut p = [3.0f32, 4.0];
    opt.step(&mut p, &[0.0, 0.0], &[ParamGroup::weight("a", 0..2)], 2.0)
        .unwrap();
    assert_close(
        "lars decay-only trust",
        &p,
        &[3.0 * 0.98, 4.0 * 0.98],
        1e-7,
        0.0,
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism across thread counts.

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn all_configs() -> Vec<OptimizerConfig> {
    vec![
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 1e-4,
        }),
        OptimizerConfig::Lars(LarsConfig {
            nesterov: true,
            ..LarsConfig::default()
        }),
        OptimizerConfig::Lars(LarsConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ]
}

#[test]
fn bit_identical_for_any_thread_count() {
    // A long tensor split into many chunks, so the norms and the updates run in parallel.
    let n = 7 * CHUNK + 123;
    let grp = [
        ParamGroup::weight("big", 0..n - 200),
        ParamGroup::excluded("bn", n - 200..n - 100),
        ParamGroup::weight("small", n - 100..n),
    ];
    for config in all_configs() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut rng = Rng(50);
                let mut p = rng.vec(n, 1.0);
                let mut opt = config.build(n).unwrap();
                for &lr in &LRS[..3] {
                    let g = rng.vec(n, 0.1);
                    opt.step(&mut p, &g, &grp, lr).unwrap();
                }
                let state: Vec<Vec<u32>> =
                    opt.state_tensors().iter().map(|(_, t)| bits(t)).collect();
                (bits(&p), state)
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(
                run(threads) == one,
                "{config:?}: {threads} threads differ from 1"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

#[test]
fn state_round_trip_gives_the_same_next_step() {
    let grp = groups();
    for config in all_configs() {
        let mut rng = Rng(60);
        let mut p = init_params(&mut rng);
        let mut a = config.build(N).unwrap();
        for &lr in &LRS[..3] {
            let g = rng.vec(N, 0.1);
            a.step(&mut p, &g, &grp, lr).unwrap();
        }
        // Save as a checkpoint would (owned names and data), restore into a fresh optimizer.
        let saved: Vec<(String, Vec<f32>)> = a
            .state_tensors()
            .into_iter()
            .map(|(name, t)| (name, t.to_vec()))
            .collect();
        assert!(saved
            .iter()
            .all(|(name, t)| name.starts_with(a.kind()) && t.len() == N));
        let mut b = config.build(N).unwrap();
        b.load_state_tensors(a.steps(), saved.iter().map(|(n, t)| (n, t)))
            .unwrap();
        assert_eq!(b.steps(), 3);
        assert_eq!(b.config(), a.config());

        let g = rng.vec(N, 0.1);
        let (mut pa, mut pb) = (p.clone(), p.clone());
        a.step(&mut pa, &g, &grp, 0.05).unwrap();
        b.step(&mut pb, &g, &grp, 0.05).unwrap();
        assert_eq!(bits(&pa), bits(&pb), "{config:?}");
        assert_eq!(a.steps(), 4);
    }
}

#[test]
fn loading_state_of_the_wrong_kind_or_length_fails_and_changes_nothing() {
    let sgd = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    })
    .build(4)
    .unwrap();
    let mut lars = OptimizerConfig::Lars(LarsConfig::default())
        .build(4)
        .unwrap();
    let mut adamw = OptimizerConfig::AdamW(AdamWConfig::default())
        .build(4)
        .unwrap();
    let bad = |r: selfsup::Result<()>| {
        assert!(
            matches!(
                r,
                Err(Error::InvalidArgument { .. }) | Err(Error::ShapeMismatch { .. })
            ),
            "{r:?}"
        )
    };
    // Another kind.
    bad(lars.load_state_tensors(1, sgd.state_tensors()));
    bad(adamw.load_state_tensors(1, sgd.state_tensors()));
    // Wrong length.
    bad(lars.load_state_tensors(1, [("lars.momentum", &[0.0f32; 3][..])]));
    // Missing, repeated and extra tensors.
    bad(adamw.load_state_tensors(1, [("adamw.exp_avg", &[1.0f32; 4][..])]));
    bad(lars.load_state_tensors(
        1,
        [
            ("lars.momentum", &[1.0f32; 4][..]),
            ("lars.momentum", &[1.0f32; 4][..]),
        ],
    ));
    bad(lars.load_state_tensors(
        1,
        [
            ("lars.momentum", &[1.0f32; 4][..]),
            ("lars.other", &[1.0f32; 4][..]),
        ],
    ));
    bad(lars.load_state_tensors(1, Vec::<(&str, &[f32])>::new()));
    // Nothing changed.
    assert_eq!(lars.steps(), 0);
    assert!(lars.state_tensors()[0].1.iter().all(|&x| x == 0.0));
    assert!(adamw
        .state_tensors()
        .iter()
        .all(|(_, t)| t.iter().all(|&x| x == 0.0)));
    // The right state loads.
    lars.load_state_tensors(7, [("lars.momentum", vec![1.0f32; 4])])
        .unwrap();
    assert_eq!(lars.steps(), 7);
    assert_eq!(lars.state_tensors()[0].1, [1.0; 4]);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn step_errors_change_nothing() {
    let n = 10;
    for config in all_configs() {
        let mut opt = config.build(n).unwrap();
        let mut p = vec![1.0f32; n];
        let g = vec![0.5f32; n];
        let ok = [
            ParamGroup::weight("a", 0..4),
            ParamGroup::excluded("b", 4..10),
        ];
        let cases: Vec<(&str, selfsup::Result<()>)> = vec![
            (
                "short params",
                opt.step(&mut p[..9], &g[..9], &ok[..1], 0.1),
            ),
            ("short grads", opt.step(&mut p, &g[..9], &ok, 0.1)),
            (
                "group past the end",
                opt.step(&mut p, &g, &[ParamGroup::weight("a", 5..11)], 0.1),
            ),
            (
                "reversed group",
                opt.step(
                    &mut p,
                    &g,
                    &[ParamGroup::weight(
                        "a",
                        std::ops::Range { start: 5, end: 3 },
                    )],
                    0.1,
                ),
            ),
            (
                "overlap",
                opt.step(
                    &mut p,
                    &g,
                    &[ParamGroup::weight("a", 0..5), ParamGroup::weight("b", 4..6)],
                    0.1,
                ),
            ),
            (
                "overlap out of order",
                opt.step(
                    &mut p,
                    &g,
                    &[
                        ParamGroup::weight("a", 6..8),
                        ParamGroup::weight("b", 0..2),
                        ParamGroup::weight("c", 1..3),
                    ],
                    0.1,
                ),
            ),
            ("NaN lr", opt.step(&mut p, &g, &ok, f32::NAN)),
            ("infinite lr", opt.step(&mut p, &g, &ok, f32::INFINITY)),
            ("negative lr", opt.step(&mut p, &g, &ok, -0.1)),
        ];
        for (what, r) in cases {
            assert!(
                matches!(
                    r,
                    Err(Error::InvalidArgument { .. }) | Err(Error::ShapeMismatch { .. })
                ),
                "{config:?} {what}: {r:?}"
            );
        }
        assert_eq!(opt.steps(), 0);
        assert!(
            p.iter().all(|&x| x == 1.0),
            "{config:?}: params changed on error"
        );
        assert!(opt
            .state_tensors()
            .iter()
            .all(|(_, t)| t.iter().all(|&x| x == 0.0)));
        // The error names the group.
        let e = opt
            .step(
                &mut p,
                &g,
                &[ParamGroup::weight("layer3.conv.weight", 0..11)],
                0.1,
            )
            .unwrap_err();
        assert!(e.to_string().contains("layer3.conv.weight"), "{e}");
        // Empty and adjacent groups are fine; an lr of 0 is fine.
        let fine = [
            ParamGroup::weight("e", 3..3),
            ParamGroup::weight("a", 0..3),
            ParamGroup::weight("b", 3..10),
        ];
        opt.step(&mut p, &g, &fine, 0.0).unwrap();
    }
}

#[test]
fn invalid_configs_are_errors() {
    let bad = [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: -0.1,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 1.0,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(SgdConfig {
            dampening: 1.5,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(SgdConfig {
            weight_decay: f32::NAN,
            ..SgdConfig::default()
        }),
        // Nesterov without momentum, or with dampening (PyTorch refuses both).
        OptimizerConfig::Sgd(SgdConfig {
            nesterov: true,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            nesterov: true,
            weight_decay: 0.0,
        }),
        OptimizerConfig::Lars(LarsConfig {
            eta: -1.0,
            ..LarsConfig::default()
        }),
        OptimizerConfig::Lars(LarsConfig {
            weight_decay: f32::INFINITY,
            ..LarsConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            beta1: 1.0,
            ..AdamWConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            beta2: -0.5,
            ..AdamWConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            eps: -1e-8,
            ..AdamWConfig::default()
        }),
    ];
    for c in bad {
        assert!(
            matches!(c.build(3), Err(Error::InvalidArgument { .. })),
            "{c:?} was accepted"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The schedule.

#[test]
fn schedule_values() {
    // Peak 1, 10 warmup steps, 110 in all: the cosine runs over steps 10..110.
    let s = LrSchedule::new(1.0, 10, 110).unwrap();
    assert_eq!(s.lr(0), 0.0); // warmup start: SimCLR's first update has lr 0
    assert_eq!(s.lr(5), 0.5); // 1 * 5/10
    assert_eq!(s.lr(9), 0.9);
    assert_eq!(s.lr(10), 1.0); // warmup end: the peak
    assert_eq!(s.lr(60), 0.5); // midpoint of the cosine: 0.5*(1 + cos(pi/2))
    assert!((s.lr(35) - 0.5 * (1.0 + std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-6); // a quarter: cos(pi/4)
    assert!(s.lr(109) > 0.0 && s.lr(109) < 1e-3);
    assert_eq!(s.lr(110), 0.0); // end
    assert_eq!(s.lr(1_000_000), 0.0); // past the end: stays at the final value

    let mut prev = f32::INFINITY;
    for step in 10..=110 {
        let lr = s.lr(step);
        assert!(lr <= prev, "not monotonic at step {step}: {lr} > {prev}");
        prev = lr;
    }
    let mut prev = -1.0;
    for step in 0..=10 {
        assert!(s.lr(step) > prev);
        prev = s.lr(step);
    }

    // Decay to a fraction: midpoint 0.1 + 0.9*0.5 = 0.55, end 0.1.
    let s = LrSchedule::with_final_fraction(2.0, 0, 100, 0.1).unwrap();
    assert_eq!(s.lr(0), 2.0); // no warmup: the peak at once
    assert!((s.lr(50) - 1.1).abs() < 1e-6);
    assert!((s.lr(100) - 0.2).abs() < 1e-7);
    assert!((s.lr(500) - 0.2).abs() < 1e-7);

    // Warmup over the whole run.
    let s = LrSchedule::new(1.0, 4, 4).unwrap();
    assert_eq!(
        [s.lr(0), s.lr(1), s.lr(2), s.lr(3), s.lr(4)],
        [0.0, 0.25, 0.5, 0.75, 0.0]
    );
    assert_eq!(
        (
            s.peak(),
            s.warmup_steps(),
            s.total_steps(),
            s.final_fraction()
        ),
        (1.0, 4, 4, 0.0)
    );
}

#[test]
fn schedule_errors() {
    let bad = |r: selfsup::Result<LrSchedule>| {
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}")
    };
    bad(LrSchedule::new(1.0, 0, 0));
    bad(LrSchedule::new(1.0, 11, 10));
    bad(LrSchedule::new(f32::NAN, 1, 10));
    bad(LrSchedule::new(-1.0, 1, 10));
    bad(LrSchedule::with_final_fraction(1.0, 1, 10, 1.5));
    bad(LrSchedule::with_final_fraction(1.0, 1, 10, f32::NAN));
}

#[test]
fn simclr_scaling_rules() {
    // Linear: base * batch / 256 (SimCLR's LARS base 0.3 gives 4.8 at batch 4096).
    assert_eq!(LrScaling::Linear.scale(0.3, 256), 0.3);
    assert!((LrScaling::Linear.scale(0.3, 4096) - 4.8).abs() < 1e-6);
    // Square root: base * sqrt(batch) (SimCLR's base 0.075 also gives 4.8 at batch 4096).
    assert!((LrScaling::Sqrt.scale(0.075, 4096) - 4.8).abs() < 1e-6);
    assert!((LrScaling::Sqrt.scale(0.075, 256) - 1.2).abs() < 1e-6);
    let s = LrSchedule::scaled(0.3, LrScaling::Linear, 512, 10, 100, 0.0).unwrap();
    assert_eq!(s.peak(), 0.6);
}

// ---------------------------------------------------------------------------------------------
// No allocation per step.

#[test]
fn a_warm_step_allocates_nothing() {
    let n = 3 * CHUNK + 5;
    let grp = [
        ParamGroup::weight("big", 0..n - 100),
        ParamGroup::excluded("bn", n - 100..n - 50),
        ParamGroup::new("fc", n - 50..n, true, false),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = Rng(70);
        let mut p = rng.vec(n, 1.0);
        let g = rng.vec(n, 0.1);
        for config in all_configs() {
            let mut opt = config.build(n).unwrap();
            opt.step(&mut p, &g, &grp, 0.1).unwrap(); // warm-up
            opt.step(&mut p, &g, &grp, 0.1).unwrap();
            COUNTING.with(|c| c.set(true));
            let before = ALLOCS.load(Ordering::Relaxed);
            opt.step(&mut p, &g, &grp, 0.1).unwrap();
            let count = ALLOCS.load(Ordering::Relaxed) - before;
            COUNTING.with(|c| c.set(false));
            assert_eq!(count, 0, "{config:?}: a step allocated {count} times");
        }
    });
}
