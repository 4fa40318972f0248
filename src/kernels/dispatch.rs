//! Runtime CPU-feature dispatch, decided once per process.
//!
//! On x86_64 the AVX-512 kernels (the GEMM microkernel and the direct convolution's tile,
//! with the AVX2 kernels for everything else) are used when the CPU reports AVX-512F, AVX2
//! and FMA; the AVX2+FMA kernels when it reports AVX2 and FMA; everywhere else, and whenever
//! `SELFSUP_FORCE_PORTABLE=1` is set, the portable kernels written with `wide` are.
//! `SELFSUP_FORCE_AVX2=1` keeps an AVX-512 CPU on the AVX2 kernels (to compare them, or to
//! test them there). No `target-cpu` flag is needed to build or to be fast.

use std::sync::OnceLock;

/// The instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 with AVX-512F, AVX2 and FMA: the AVX-512 GEMM and convolution tiles (the AVX2
    /// convolution tile for layers of 16 output channels or fewer), the AVX2 kernels
    /// elsewhere.
    Avx512,
    /// x86_64 with AVX2 and FMA.
    Avx2Fma,
    /// The portable `wide` kernels.
    Portable,
}

impl Isa {
    /// The short name used in reports and in `SELFSUP_EXPECT_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// True when the AVX2+FMA kernels may run (also on an AVX-512 CPU).
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Avx2Fma)
    }
}

/// True when the environment variable `name` is set to something other than empty or `0`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// True when the environment variable forces the portable kernels.
pub fn portable_forced() -> bool {
    env_flag("SELFSUP_FORCE_PORTABLE")
}

/// The best instruction set this CPU supports, ignoring the environment.
pub fn detected_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            return Isa::Avx2Fma;
        }
    }
    Isa::Portable
}

/// The instruction set in use: detected once, honouring `SELFSUP_FORCE_PORTABLE` and
/// `SELFSUP_FORCE_AVX2`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if portable_forced() {
            Isa::Portable
        } else {
            match detected_isa() {
                Isa::Avx512 if env_flag("SELFSUP_FORCE_AVX2") => Isa::Avx2Fma,
                other => other,
            }
        }
    })
}
