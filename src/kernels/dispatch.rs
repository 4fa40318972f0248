//! Runtime CPU-feature dispatch, decided once per process.
//!
//! On x86_64 the AVX2+FMA kernels are used when the CPU reports both features; everywhere
//! else, and whenever `SELFSUP_FORCE_PORTABLE=1` is set, the portable kernels written with
//! `wide` are. No `target-cpu` flag is needed to build or to be fast.

use std::sync::OnceLock;

/// The instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 with AVX2 and FMA.
    Avx2Fma,
    /// The portable `wide` kernels.
    Portable,
}

impl Isa {
    /// The short name used in reports and in `SELFSUP_EXPECT_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2Fma => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// True when the environment variable forces the portable kernels.
pub fn portable_forced() -> bool {
    std::env::var("SELFSUP_FORCE_PORTABLE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The best instruction set this CPU supports, ignoring the environment.
pub fn detected_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
    }
    Isa::Portable
}

/// The instruction set in use: detected once, honouring `SELFSUP_FORCE_PORTABLE`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if portable_forced() {
            Isa::Portable
        } else {
            detected_isa()
        }
    })
}
