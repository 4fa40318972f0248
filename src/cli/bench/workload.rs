//! What a benchmark workload of `selfsup bench` is: a name, the work one operation does, the
//! implementations that have it, and the setup that returns the operation ready to time.

use anyhow::{ensure, Context, Result};

/// The implementation a workload is timed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reference {
    /// This crate's kernels.
    Selfsup,
    /// `matrixmultiply::sgemm` (threads from `MATMUL_NUM_THREADS`, at most 4).
    Matrixmultiply,
}

impl Reference {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Selfsup => "selfsup",
            Reference::Matrixmultiply => "matrixmultiply",
        }
    }
}

/// One operation, set up and ready: each call runs it once. Inputs live in the closure.
pub type Runnable = Box<dyn FnMut() -> Result<()> + Send>;

/// The setup closure of a workload: allocates and fills the inputs for one reference.
type Setup = Box<dyn Fn(Reference) -> Result<Runnable> + Send + Sync>;

/// The work one operation does; the reported rate is this divided by the median time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Floating-point operations per op, reported as `gflops`.
    Flops(f64),
    /// Images per op, reported as `images_per_s` (training and inference workloads), and
    /// the op's flops when counted (for `--peak`'s share).
    Images { images: f64, flops: Option<f64> },
    /// No natural rate; only `seconds` is reported (NT-Xent loss, for example), and the
    /// op's flops when counted.
    Seconds { flops: Option<f64> },
}

impl Work {
    /// The flops of one op, when counted.
    pub fn flops(self) -> Option<f64> {
        match self {
            Work::Flops(f) => Some(f),
            Work::Images { flops, .. } | Work::Seconds { flops } => flops,
        }
    }
}

/// One named benchmark workload.
pub struct Workload {
    pub name: &'static str,
    /// One line for humans: what one operation is.
    pub about: String,
    pub work: Work,
    /// The references that implement this workload (`selfsup` always does).
    pub references: &'static [Reference],
    pub(super) setup: Setup,
}

impl Workload {
    /// Allocates and fills the inputs, checks one result, and returns the timed operation.
    pub fn setup(&self, reference: Reference) -> Result<Runnable> {
        ensure!(
            self.references.contains(&reference),
            "workload '{}' has no '{}' implementation",
            self.name,
            reference.name()
        );
        (self.setup)(reference).with_context(|| format!("setting up workload '{}'", self.name))
    }
}
