//! Data specs (`fashion-mnist`, `idx:DIR`, `cifar10:DIR`, `cifar100:DIR`, `folder:DIR`,
//! `builtin`, `builtin:S`) and their train/test splits.
//!
//! | spec | what it reads |
//! | --- | --- |
//! | `fashion-mnist` | Debian's `dataset-fashion-mnist` package, [`FASHION_MNIST_DIR`] |
//! | `fashion-mnist:DIR` | the same four files in `DIR` |
//! | `idx:DIR`, `mnist:DIR` | [`IDX_FILES`] in `DIR`, each raw or `.gz` |
//! | `cifar10:DIR` | see [`super::cifar::read_cifar10_dir`] |
//! | `cifar100:DIR` | see [`super::cifar::read_cifar100_dir`] |
//! | `folder:DIR` | `DIR/train` and `DIR/test` when both are folders, else `DIR` (train only); see [`super::folder`] |
//! | `builtin` | the built-in generated set, 32 x 32: the caller loads it, [`DataSpec::load`] does not |
//! | `builtin:S` | the same set at `S` x `S` pixels, `S` from [`MIN_SIDE`] to [`MAX_SIDE`] (see [`super::builtin`]) |
//!
//! Train and test stay apart in [`Splits`]; [`without_labels`] drops the labels of a set
//! that goes to pretraining.

use super::builtin::{MAX_SIDE, MIN_SIDE, SIDE};
use super::cifar::{cifar100_class_names, read_cifar100_dir, read_cifar10_dir, CIFAR10_CLASSES};
use super::folder::{
    is_labeled_layout, read_labeled_folder, read_unlabeled_folder, storage_side, Folder,
    FolderOptions,
};
use super::idx::read_idx_pair;
use super::{fmt_err, DataError, ImageSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four files of an IDX data set directory (train images, train labels, test images,
/// test labels); each may also be gzip-compressed with a `.gz` suffix.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The spec kinds, as a user types them (for error messages and help texts).
pub const SPEC_KINDS: &str =
    "fashion-mnist, fashion-mnist:DIR, idx:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR, builtin, builtin:S";

/// A data set: its format and its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    /// Fashion-MNIST's four IDX files in this directory ([`FASHION_MNIST_DIR`] for the bare
    /// `fashion-mnist`).
    FashionMnist(PathBuf),
    /// MNIST-style IDX files ([`IDX_FILES`], raw or `.gz`) in this directory, 10 classes.
    Idx(PathBuf),
    /// A CIFAR-10 binary directory.
    Cifar10(PathBuf),
    /// A CIFAR-100 binary directory.
    Cifar100(PathBuf),
    /// An image folder (with `train/` and `test/` splits, or train only).
    Folder(PathBuf),
    /// The built-in generated data set at `side` x `side` pixels (`builtin` is side
    /// [`SIDE`], `builtin:S` side `S`); [`DataSpec::load`] leaves it to the caller.
    Builtin {
        /// The side of the images, from [`MIN_SIDE`] to [`MAX_SIDE`].
        side: usize,
    },
}

/// Why a spec string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The kind before `:` is none of [`SPEC_KINDS`].
    #[error("unknown data spec '{0}': expected one of {SPEC_KINDS}")]
    UnknownKind(String),
    /// The kind needs a directory (`KIND:DIR`) and got none.
    #[error("data spec '{0}' needs a directory: '{0}:DIR'")]
    MissingDir(String),
    /// The kind takes no argument.
    #[error("data spec '{0}' takes no argument")]
    UnexpectedArg(String),
    /// `text:PATH`, a spec of the text method, given for images.
    #[error("'{0}' is text: it is the data of --method quickthought (and of `probe --tsv`, `embed --sentences`); images take {SPEC_KINDS}")]
    Text(String),
    /// `builtin:S` with an `S` that is not a whole number from [`MIN_SIDE`] to [`MAX_SIDE`].
    #[error("{0}: the side must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}")]
    BuiltinSide(String),
}

impl FromStr for DataSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let kind_lc = kind.to_ascii_lowercase();
        let dir = |arg: Option<&str>| -> Result<PathBuf, SpecError> {
            match arg {
                Some(a) if !a.is_empty() => Ok(PathBuf::from(a)),
                _ => Err(SpecError::MissingDir(kind_lc.clone())),
            }
        };
        match kind_lc.as_str() {
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => match arg {
                None => Ok(DataSpec::FashionMnist(PathBuf::from(FASHION_MNIST_DIR))),
                Some(_) => Ok(DataSpec::FashionMnist(dir(arg)?)),
            },
            "idx" | "mnist" => Ok(DataSpec::Idx(dir(arg)?)),
            "cifar10" | "cifar-10" => Ok(DataSpec::Cifar10(dir(arg)?)),
            "cifar100" | "cifar-100" => Ok(DataSpec::Cifar100(dir(arg)?)),
            "folder" => Ok(DataSpec::Folder(dir(arg)?)),
            "builtin" => match arg {
                None => Ok(DataSpec::Builtin { side: SIDE }),
                Some(a) => {
                    let a = a.trim();
                    let side = a
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| a.parse::<usize>().ok())
                        .flatten()
                        .filter(|side| (MIN_SIDE..=MAX_SIDE).contains(side));
                    match side {
                        Some(side) => Ok(DataSpec::Builtin { side }),
                        None => Err(SpecError::BuiltinSide(s.to_string())),
                    }
                }
            },
            "text" => Err(SpecError::Text(s.to_string())),
            _ => Err(SpecError::UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::FashionMnist(d) if d == Path::new(FASHION_MNIST_DIR) => {
                write!(f, "fashion-mnist")
            }
            DataSpec::FashionMnist(d) => write!(f, "fashion-mnist:{}", d.display()),
            DataSpec::Idx(d) => write!(f, "idx:{}", d.display()),
            DataSpec::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSpec::Cifar100(d) => write!(f, "cifar100:{}", d.display()),
            DataSpec::Folder(d) => write!(f, "folder:{}", d.display()),
            DataSpec::Builtin { side: SIDE } => write!(f, "builtin"),
            DataSpec::Builtin { side } => write!(f, "builtin:{side}"),
        }
    }
}

/// Options of [`DataSpec::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The size images will be shown to the model at; a folder's images are stored with
    /// their shorter side a little above it ([`super::folder::storage_side`]). Other formats
    /// keep their own size.
    pub image_size: usize,
    /// The most bytes a folder's images may take in memory (`None`: no limit).
    pub memory_limit: Option<u64>,
}

impl Default for LoadOptions {
    /// Folders stored for 32 x 32 inputs, no memory limit.
    fn default() -> Self {
        LoadOptions {
            image_size: 32,
            memory_limit: None,
        }
    }
}

/// A loaded data set: train and test kept apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// The training split (labeled when the format has labels).
    pub train: ImageSet,
    /// The test split, when the data set has one.
    pub test: Option<ImageSet>,
    /// The class names in label order, when known.
    pub class_names: Option<Vec<String>>,
    /// The file of each training image (folders), in the set's order.
    pub train_files: Option<Vec<PathBuf>>,
    /// The file of each test image (folders).
    pub test_files: Option<Vec<PathBuf>>,
}

/// The set without its labels (and class count): what pretraining gets.
pub fn without_labels(mut set: ImageSet) -> ImageSet {
    set.labels = None;
    set.classes = None;
    set
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `dir/name`, or `dir/name.gz` when only that exists; a missing file is an error naming it.
fn find_idx_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(fmt_err(
        &raw,
        format!(
            "missing (nor {name}.gz): an IDX directory holds {} (each raw or .gz)",
            IDX_FILES.join(", ")
        ),
    ))
}

/// Reads the four IDX files of `dir` into (train, test), labels `< 10`.
pub fn read_idx_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    if !dir.is_dir() {
        return Err(fmt_err(dir, "not a directory (IDX files expected here)"));
    }
    let p: Vec<PathBuf> = IDX_FILES
        .iter()
        .map(|n| find_idx_file(dir, n))
        .collect::<Result<_, _>>()?;
    let (train, test) = rayon::join(
        || read_idx_pair(&p[0], &p[1], 10),
        || read_idx_pair(&p[2], &p[3], 10),
    );
    let (train, test) = (train?, test?);
    let (tr, te) = (train.uniform_size(), test.uniform_size());
    if tr != te {
        let show = |s: Option<(usize, usize)>| s.map_or("?".into(), |(h, w)| format!("{h}x{w}"));
        return Err(fmt_err(
            &p[2],
            format!("test images are {}, train images {}", show(te), show(tr)),
        ));
    }
    Ok((train, test))
}

fn load_folder(dir: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(fmt_err(
            dir,
            "not a directory (an image folder expected here)",
        ));
    }
    let (tr, te) = (dir.join("train"), dir.join("test"));
    let folder_opts = FolderOptions {
        storage_side: storage_side(opts.image_size),
        memory_limit: opts.memory_limit,
    };
    let read = |d: &Path, opts: &FolderOptions| -> Result<Folder, DataError> {
        if is_labeled_layout(d)? {
            read_labeled_folder(d, opts)
        } else {
            read_unlabeled_folder(d, opts)
        }
    };
    if !(tr.is_dir() && te.is_dir()) {
        let f = read(dir, &folder_opts)?;
        return Ok(Splits {
            train: f.set,
            test: None,
            class_names: f.class_names,
            train_files: Some(f.files),
            test_files: None,
        });
    }
    let train = read(&tr, &folder_opts)?;
    // The two splits share the memory limit.
    let test_opts = FolderOptions {
        memory_limit: folder_opts
            .memory_limit
            .map(|l| l.saturating_sub(train.set.memory_bytes() as u64)),
        ..folder_opts
    };
    let mut test = read(&te, &test_opts)?;
    match (&train.class_names, &test.class_names) {
        (None, None) => {}
        (Some(names), Some(test_names)) => {
            // Test labels index the train classes, by name.
            let mut map = Vec::with_capacity(test_names.len());
            for name in test_names {
                match names.iter().position(|n| n == name) {
                    Some(i) => map.push(i as u32),
                    None => {
                        return Err(fmt_err(
                            &te.join(name),
                            format!("test class '{name}' is not a class of {}", tr.display()),
                        ))
                    }
                }
            }
            if let Some(labels) = test.set.labels.as_mut() {
                for l in labels.iter_mut() {
                    *l = map[*l as usize];
                }
            }
            test.set.classes = Some(names.len());
        }
        (Some(_), None) => {
            return Err(fmt_err(
                &te,
                "train/ is labeled (class subfolders) but test/ is not",
            ))
        }
        (None, Some(_)) => {
            return Err(fmt_err(
                &te,
                "test/ is labeled (class subfolders) but train/ is not",
            ))
        }
    }
    let (mut train_set, mut test_set) = (train.set, test.set);
    if train_set.channels != test_set.channels {
        train_set = train_set.to_rgb();
        test_set = test_set.to_rgb();
    }
    Ok(Splits {
        train: train_set,
        test: Some(test_set),
        class_names: train.class_names,
        train_files: Some(train.files),
        test_files: Some(test.files),
    })
}

impl DataSpec {
    /// Loads the data set. Every variant but [`DataSpec::Builtin`] is read here; the built-in
    /// set is generated by the caller (`data::builtin`), and `load` returns an error for it.
    pub fn load(&self, opts: &LoadOptions) -> Result<Splits, DataError> {
        match self {
            DataSpec::FashionMnist(dir) => {
                let have_all = IDX_FILES
                    .iter()
                    .all(|n| dir.join(n).is_file() || dir.join(format!("{n}.gz")).is_file());
                if !have_all {
                    return Err(fmt_err(
                        dir,
                        format!(
                            "Fashion-MNIST not found (needs {}, raw or .gz); on Debian or Ubuntu: apt-get install dataset-fashion-mnist",
                            IDX_FILES.join(", ")
                        ),
                    ));
                }
                let (train, test) = read_idx_dir(dir)?;
                Ok(Splits {
                    train,
                    test: Some(test),
                    class_names: Some(names(&FASHION_MNIST_CLASSES)),
                    train_files: None,
                    test_files: None,
                })
            }
            DataSpec::Idx(dir) => {
                let (train, test) = read_idx_dir(dir)?;
                Ok(Splits {
                    train,
                    test: Some(test),
                    class_names: None,
                    train_files: None,
                    test_files: None,
                })
            }
            DataSpec::Cifar10(dir) => {
                let (train, test) = read_cifar10_dir(dir)?;
                Ok(Splits {
                    train,
                    test: Some(test),
                    class_names: Some(names(&CIFAR10_CLASSES)),
                    train_files: None,
                    test_files: None,
                })
            }
            DataSpec::Cifar100(dir) => {
                let (train, test) = read_cifar100_dir(dir)?;
                Ok(Splits {
                    train,
                    test: Some(test),
                    class_names: cifar100_class_names(dir),
                    train_files: None,
                    test_files: None,
                })
            }
            DataSpec::Folder(dir) => load_folder(dir, opts),
            DataSpec::Builtin { .. } => Err(fmt_err(
                Path::new("builtin"),
                "the built-in data set is generated by the caller (data::builtin), not loaded by DataSpec::load",
            )),
        }
    }
}
