//! Training: the [`Method`] trait that SimCLR and RotNet ([`image`]) and Quick Thoughts
//! ([`text`]) implement, the one loop [`fit()`] that runs any of them in any process group,
//! the [`Observer`] it reports to, the [`StopSignal`] that ends a run early (with a checkpoint
//! at the step it reached), the run folder, and the training state on disk.
//!
//! A run in a few lines (the whole program: `examples/pretrain_simclr.rs`):
//!
//! ```no_run
//! # fn main() -> selfsup::Result<()> {
//! use std::sync::Arc;
//! use selfsup::data::{builtin::{builtin_splits, BuiltinConfig}, Splits};
//! use selfsup::train::image::{ImageMethod, PretrainConfig, Pretrainer};
//! use selfsup::train::{fit, FitConfig, Recipe, RunLength, Silent};
//!
//! let (train, test) = builtin_splits(&BuiltinConfig::default());
//! let splits = Arc::new(Splits::new(train, Some(test)));
//! // The quick recipe (`selfsup pretrain`'s defaults) and its learning rate.
//! let (cfg, lr) = Recipe::Quick.pretrain_config(ImageMethod::SimClr, 3, 32, true);
//! let mut trainer = Pretrainer::new(cfg.clone(), Arc::clone(&splits.train))?.with_monitor(splits);
//! let mut run = FitConfig::new("runs/lib", cfg.settings("builtin"), lr);
//! run.length = Some(RunLength::Minutes(2.0));
//! let summary = fit(&mut trainer, &run, &mut Silent)?;
//! println!("{} steps, kNN accuracy {:?}", summary.steps, summary.monitor_value);
//! # Ok(()) }
//! ```

pub mod core;
pub mod embed;
pub mod embed_text;
pub mod fit;
pub mod group;
pub mod image;
pub mod memory;
pub mod method;
pub mod observer;
pub mod recipe;
pub mod run_dir;
pub mod state;
pub mod stop;
pub mod text;

pub use self::core::Core;
pub use fit::{fit, FitConfig, RunLength};
pub use memory::{available_memory, MemoryPlan};
pub use method::{Method, MonitorKind, StepStats, Unit};
pub use observer::{FitSummary, Observer, RunStart, Silent};
pub use recipe::{OptimizerKind, Recipe};
pub use run_dir::{RunArgs, RunDir, RunSettings};
pub use state::{load, resume_latest, save, save_in, Metadata, OPTIMIZER_KEY, OPTIMIZER_STEPS_KEY};
pub use stop::StopSignal;
