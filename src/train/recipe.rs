//! Training recipes: the settings an image run takes when its caller leaves them out.
//! `Quick` is what measurement says learns fastest in a budget of minutes (small batches,
//! LARS at a high rate, crops of at least 30%, a narrow encoder); `Paper` is SimCLR's
//! (Chen et al. 2020, CIFAR-10 appendix) and RotNet's (Gidaris et al. 2018) settings for
//! runs of hundreds of epochs. How `Quick` was chosen: docs/results.md.

use serde::{Deserialize, Serialize};

use crate::data::augment::SimclrAugment;
use crate::nn::ResNetConfig;
use crate::optim::{AdamWConfig, LarsConfig, OptimizerConfig, SgdConfig};
use crate::train::image::{ImageMethod, PretrainConfig};

/// A named set of defaults for the image methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// Measured for runs of minutes: batch 32, LARS at lr 2, weight decay 1e-6, tau 0.2,
    /// crops of at least 30%, colour strength 0.5, widths 8,16,32 on the built-in data and
    /// 8,16,32,256 elsewhere; RotNet: batch 32, SGD at 0.2 x batch/32.
    #[default]
    Quick,
    /// The papers' long-run settings: SimCLR batch 256, LARS at 0.3 x batch/256, weight
    /// decay 1e-6, tau 0.5, crops down to 8%, colour strength 0.5 below 64 pixels and 1.0
    /// from there; RotNet batch 128, SGD at 0.1 x batch/128, weight decay 5e-4; widths
    /// 32,64,128.
    Paper,
}

/// The optimizer families a recipe names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum 0.9.
    Sgd,
    /// LARS (BatchNorm and biases excluded from decay and adaptation).
    Lars,
    /// AdamW.
    Adamw,
}

impl OptimizerKind {
    /// `"sgd"`, `"lars"` or `"adamw"`, as runs record it.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Lars => "lars",
            OptimizerKind::Adamw => "adamw",
        }
    }

    /// The optimizer of this kind with `weight_decay` (SGD: momentum 0.9).
    pub fn config(self, weight_decay: f32) -> OptimizerConfig {
        match self {
            OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                weight_decay,
                ..SgdConfig::default()
            }),
            OptimizerKind::Lars => OptimizerConfig::Lars(LarsConfig {
                weight_decay,
                ..LarsConfig::default()
            }),
            OptimizerKind::Adamw => OptimizerConfig::AdamW(AdamWConfig {
                weight_decay,
                ..AdamWConfig::default()
            }),
        }
    }

    /// The learning rate and weight decay of this optimizer when the recipe names another:
    /// SGD 0.06, LARS 0.3, AdamW 0.001, each times batch/256; decay 5e-4, 1e-6, 0.05.
    fn generic(self, global_batch: usize) -> (f64, f32) {
        let scale = global_batch as f64 / 256.0;
        match self {
            OptimizerKind::Sgd => (0.06 * scale, 5e-4),
            OptimizerKind::Lars => (0.3 * scale, 1e-6),
            OptimizerKind::Adamw => (1e-3 * scale, 0.05),
        }
    }
}

/// The resolved defaults of one image run.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDefaults {
    /// Images per step on each process.
    pub batch: usize,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// NT-Xent's temperature (SimCLR).
    pub tau: f32,
    /// The smallest crop area of the random resized crop (SimCLR).
    pub crop_min: f32,
    /// The colour-jitter strength (SimCLR).
    pub strength: f32,
    /// The encoder's widths per stage.
    pub widths: Vec<usize>,
}

impl Recipe {
    /// `"quick"` or `"paper"`.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Quick => "quick",
            Recipe::Paper => "paper",
        }
    }

    /// The defaults of `method` on images of side `image_size`; `builtin`: the data is the
    /// built-in set (ten simple shapes, for which a narrower encoder is enough).
    pub fn image(self, method: ImageMethod, image_size: usize, builtin: bool) -> ImageDefaults {
        match self {
            Recipe::Quick => ImageDefaults {
                batch: 32,
                optimizer: match method {
                    ImageMethod::SimClr => OptimizerKind::Lars,
                    ImageMethod::RotNet => OptimizerKind::Sgd,
                },
                tau: 0.2,
                crop_min: 0.3,
                strength: 0.5,
                widths: if builtin {
                    vec![8, 16, 32]
                } else {
                    vec![8, 16, 32, 256]
                },
            },
            Recipe::Paper => ImageDefaults {
                batch: match method {
                    ImageMethod::SimClr => 256,
                    ImageMethod::RotNet => 128,
                },
                optimizer: match method {
                    ImageMethod::SimClr => OptimizerKind::Lars,
                    ImageMethod::RotNet => OptimizerKind::Sgd,
                },
                tau: 0.5,
                crop_min: 0.08,
                strength: crate::data::augment::SimclrAugment::recommended_strength(image_size),
                widths: vec![32, 64, 128],
            },
        }
    }

    /// A whole pretraining configuration of this recipe for `method` on square images of
    /// `channels x size x size` (`builtin`: the built-in set), and its peak learning rate
    /// (for [`crate::train::FitConfig::new`]); one process. Set fields to change the rest.
    pub fn pretrain_config(
        self,
        method: ImageMethod,
        channels: usize,
        size: usize,
        builtin: bool,
    ) -> (PretrainConfig, f64) {
        let d = self.image(method, size, builtin);
        let (lr, wd) = self.lr_and_decay(method, d.optimizer, d.batch);
        let mut augment = SimclrAugment::for_image(size, channels, d.strength);
        augment.crop_scale.0 = d.crop_min;
        let blocks = vec![1; d.widths.len()];
        let cfg = PretrainConfig {
            model: ResNetConfig {
                in_channels: channels,
                image_size: size,
                widths: d.widths,
                blocks,
                ..ResNetConfig::default()
            },
            batch: d.batch,
            tau: d.tau,
            optimizer: d.optimizer.config(wd),
            augment,
            ..PretrainConfig::for_images(method, channels, size)
        };
        (cfg, lr)
    }

    /// The peak learning rate and weight decay for `optimizer` at `global_batch` images
    /// per step (all processes): the recipe's own when `optimizer` is the recipe's,
    /// else the optimizer's generic defaults ([`OptimizerKind`]).
    pub fn lr_and_decay(
        self,
        method: ImageMethod,
        optimizer: OptimizerKind,
        global_batch: usize,
    ) -> (f64, f32) {
        let b = global_batch as f64;
        match (self, method, optimizer) {
            // LARS's trust ratio sets each layer's step against its weights' norm; the
            // rate was measured best at batch 32 and is not scaled with the batch.
            (Recipe::Quick, ImageMethod::SimClr, OptimizerKind::Lars) => (2.0, 1e-6),
            (Recipe::Quick, ImageMethod::RotNet, OptimizerKind::Sgd) => (0.2 * b / 32.0, 5e-4),
            (Recipe::Paper, ImageMethod::SimClr, OptimizerKind::Lars) => (0.3 * b / 256.0, 1e-6),
            (Recipe::Paper, ImageMethod::RotNet, OptimizerKind::Sgd) => (0.1 * b / 128.0, 5e-4),
            (_, _, o) => o.generic(global_batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_configuration_carries_the_recipe() {
        let (c, lr) = Recipe::Quick.pretrain_config(ImageMethod::SimClr, 1, 28, false);
        assert_eq!(lr, 2.0);
        assert_eq!((c.batch, c.tau), (32, 0.2));
        assert_eq!(c.model.widths, [8, 16, 32, 256]);
        assert_eq!(c.model.blocks, [1, 1, 1, 1]);
        assert_eq!((c.model.in_channels, c.model.image_size), (1, 28));
        assert_eq!(c.augment.crop_scale.0, 0.3);
        assert!(matches!(c.optimizer, OptimizerConfig::Lars(l) if l.weight_decay == 1e-6));
        let (c, lr) = Recipe::Paper.pretrain_config(ImageMethod::RotNet, 3, 96, true);
        assert_eq!((c.batch, lr), (128, 0.1));
        assert_eq!(c.model.widths, [32, 64, 128]);
        assert!(matches!(c.optimizer, OptimizerConfig::Sgd(s) if s.weight_decay == 5e-4));
    }

    #[test]
    fn a_recipe_s_own_optimizer_takes_its_rate_and_another_takes_the_generic_one() {
        let q = Recipe::Quick;
        assert_eq!(
            q.lr_and_decay(ImageMethod::SimClr, OptimizerKind::Lars, 64),
            (2.0, 1e-6)
        );
        assert_eq!(
            q.lr_and_decay(ImageMethod::SimClr, OptimizerKind::Sgd, 512),
            (0.12, 5e-4)
        );
        assert_eq!(
            Recipe::Paper.lr_and_decay(ImageMethod::SimClr, OptimizerKind::Lars, 512),
            (0.6, 1e-6)
        );
        assert_eq!(
            q.lr_and_decay(ImageMethod::RotNet, OptimizerKind::Sgd, 64),
            (0.4, 5e-4)
        );
    }
}
