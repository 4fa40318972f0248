//! The in-memory image set: every image as 8-bit channel planes (byte `v` is the value
//! `v / 255` in [0, 1]), all of one size (IDX, CIFAR, the built-in set) or each of its own
//! (photo folders, kept at their stored size with their aspect ratio), with optional labels.
//!
//! One byte per channel value is a quarter of the memory of f32: 100,000 RGB images of
//! 96 x 96 pixels hold 2.8 GB. The f32 values the models see are made per batch, by the
//! augmentations (a crop of each stored image) or by the evaluation view
//! ([`super::resize::eval_view`]: the shorter side resized, then the central square).

/// The f32 value of every byte: `v / 255`, as every reader has always defined it.
pub static BYTE_VALUES: [f32; 256] = byte_values();

const fn byte_values() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
}

/// The byte of a value in [0, 1]: `round(v * 255)` in f32 arithmetic (so a value within
/// an f32 rounding of a midpoint may go either way); values outside are clamped.
#[inline]
pub fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A sample type the resampling reads: f32 values in [0, 1] or bytes (`v / 255`).
pub trait Sample: Copy + Send + Sync + 'static {
    /// The value in [0, 1].
    fn value(self) -> f32;
}

impl Sample for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
}

impl Sample for u8 {
    #[inline(always)]
    fn value(self) -> f32 {
        BYTE_VALUES[self as usize]
    }
}

/// Where an image of a set of varied sizes lies in [`ImageSet::pixels`], and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First byte of the image.
    pub offset: usize,
    /// Height in pixels (at least 1).
    pub height: u32,
    /// Width in pixels (at least 1).
    pub width: u32,
}

/// The sizes of a set's images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// Every image `height x width`, image `i` at byte `i * channels * height * width`.
    Uniform {
        /// Height in pixels.
        height: usize,
        /// Width in pixels.
        width: usize,
    },
    /// Each image its own size and place.
    Varied(Vec<Extent>),
}

/// One image of a set: `channels` planes of `height x width` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// `channels * height * width` bytes, plane after plane, rows top to bottom.
    pub pixels: &'a [u8],
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageRef<'_> {
    /// The image's values as f32 in [0, 1], at its own size.
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&b| b.value()).collect()
    }
}

/// An in-memory set of images, 8 bits per channel value, with optional labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pixels: Vec<u8>,
    sizes: Sizes,
    /// One label per image, each `< classes`, or `None` for unlabeled data.
    pub labels: Option<Vec<u32>>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Number of classes, when labeled.
    pub classes: Option<usize>,
}

impl ImageSet {
    /// `n` unlabeled images of `channels x height x width`, image after image.
    ///
    /// # Panics
    /// If `pixels.len() != n * channels * height * width`.
    #[track_caller]
    pub fn uniform(
        pixels: Vec<u8>,
        n: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Self {
        assert_eq!(
            Some(pixels.len()),
            n.checked_mul(channels)
                .and_then(|x| x.checked_mul(height))
                .and_then(|x| x.checked_mul(width)),
            "ImageSet::uniform: {n} images of {channels}x{height}x{width}"
        );
        Self {
            pixels,
            sizes: Sizes::Uniform { height, width },
            labels: None,
            n,
            channels,
            classes: None,
        }
    }

    /// Unlabeled images of their own sizes: image `i` is `extents[i]` of `pixels`.
    ///
    /// # Panics
    /// If an extent is empty or does not lie inside `pixels`.
    #[track_caller]
    pub fn varied(pixels: Vec<u8>, channels: usize, extents: Vec<Extent>) -> Self {
        for e in &extents {
            let len = channels * e.height as usize * e.width as usize;
            assert!(
                len > 0
                    && e.offset
                        .checked_add(len)
                        .is_some_and(|end| end <= pixels.len()),
                "ImageSet::varied: extent {e:?} of {} bytes",
                pixels.len()
            );
        }
        Self {
            pixels,
            n: extents.len(),
            sizes: Sizes::Varied(extents),
            labels: None,
            channels,
            classes: None,
        }
    }

    /// Unlabeled images of the given `(height, width)` sizes stored back to back in
    /// `pixels` (a [`Sizes::Varied`] set).
    ///
    /// # Panics
    /// If the sizes do not add up to `pixels.len()` or one is empty.
    #[track_caller]
    pub fn packed(pixels: Vec<u8>, channels: usize, sizes: &[(usize, usize)]) -> Self {
        let mut offset = 0;
        let extents: Vec<Extent> = sizes
            .iter()
            .map(|&(h, w)| {
                let e = Extent {
                    offset,
                    height: h as u32,
                    width: w as u32,
                };
                offset += channels * h * w;
                e
            })
            .collect();
        assert_eq!(offset, pixels.len(), "ImageSet::packed: sizes and bytes");
        Self::varied(pixels, channels, extents)
    }

    /// The set with `labels` (one per image, each `< classes`).
    ///
    /// # Panics
    /// If the labels do not match the images.
    #[track_caller]
    pub fn with_labels(mut self, labels: Vec<u32>, classes: usize) -> Self {
        assert_eq!(labels.len(), self.n, "one label per image");
        assert!(
            labels.iter().all(|&l| (l as usize) < classes),
            "labels < classes"
        );
        self.labels = Some(labels);
        self.classes = Some(classes);
        self
    }

    /// Every image's bytes, back to back.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The images' sizes.
    pub fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// `(height, width)` when every image has it.
    pub fn uniform_size(&self) -> Option<(usize, usize)> {
        match self.sizes {
            Sizes::Uniform { height, width } => Some((height, width)),
            Sizes::Varied(_) => None,
        }
    }

    /// The `i`-th image. Panics if `i >= n`.
    #[track_caller]
    pub fn image(&self, i: usize) -> ImageRef<'_> {
        assert!(i < self.n, "image {i} of a set of {}", self.n);
        let c = self.channels;
        let (offset, height, width) = match &self.sizes {
            Sizes::Uniform { height, width } => (i * c * height * width, *height, *width),
            Sizes::Varied(e) => (e[i].offset, e[i].height as usize, e[i].width as usize),
        };
        ImageRef {
            pixels: &self.pixels[offset..offset + c * height * width],
            channels: c,
            height,
            width,
        }
    }

    /// The label of the `i`-th image, if the set is labeled.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// The smallest and largest side over the images (`(0, 0)` for an empty set).
    pub fn side_range(&self) -> (usize, usize) {
        match &self.sizes {
            Sizes::Uniform { height, width } if self.n > 0 => {
                (*height.min(width), *height.max(width))
            }
            Sizes::Uniform { .. } => (0, 0),
            Sizes::Varied(e) if e.is_empty() => (0, 0),
            Sizes::Varied(e) => e.iter().fold((usize::MAX, 0), |(lo, hi), e| {
                let (a, b) = (
                    e.height.min(e.width) as usize,
                    e.height.max(e.width) as usize,
                );
                (lo.min(a), hi.max(b))
            }),
        }
    }

    /// Bytes the images and their table take in memory.
    pub fn memory_bytes(&self) -> usize {
        let table = match &self.sizes {
            Sizes::Uniform { .. } => 0,
            Sizes::Varied(e) => e.len() * std::mem::size_of::<Extent>(),
        };
        self.pixels.len() + table
    }

    /// Three channels from one (R = G = B); a 3-channel set is returned unchanged.
    pub fn to_rgb(self) -> ImageSet {
        if self.channels != 1 {
            return self;
        }
        let mut pixels = Vec::with_capacity(self.pixels.len() * 3);
        let mut extents = Vec::new();
        for i in 0..self.n {
            let img = self.image(i);
            if matches!(self.sizes, Sizes::Varied(_)) {
                extents.push(Extent {
                    offset: pixels.len(),
                    height: img.height as u32,
                    width: img.width as u32,
                });
            }
            for _ in 0..3 {
                pixels.extend_from_slice(img.pixels);
            }
        }
        let sizes = match self.sizes {
            Sizes::Uniform { .. } => self.sizes,
            Sizes::Varied(_) => Sizes::Varied(extents),
        };
        ImageSet {
            pixels,
            sizes,
            channels: 3,
            ..self
        }
    }

    /// The sets one after the other (labels concatenated when every set has them).
    ///
    /// # Panics
    /// If the sets differ in channels, or `sets` is empty.
    #[track_caller]
    pub fn concat(sets: Vec<ImageSet>) -> ImageSet {
        let channels = sets.first().expect("at least one set").channels;
        assert!(
            sets.iter().all(|s| s.channels == channels),
            "one channel count"
        );
        let uniform = sets
            .first()
            .and_then(ImageSet::uniform_size)
            .filter(|&hw| sets.iter().all(|s| s.uniform_size() == Some(hw)));
        let labels: Option<Vec<u32>> = sets
            .iter()
            .map(|s| s.labels.clone())
            .collect::<Option<Vec<_>>>()
            .map(|l| l.concat());
        let classes = labels
            .as_ref()
            .and_then(|_| sets.iter().filter_map(|s| s.classes).max());
        let n: usize = sets.iter().map(|s| s.n).sum();
        let mut pixels = Vec::with_capacity(sets.iter().map(|s| s.pixels.len()).sum());
        let mut extents = Vec::new();
        for s in &sets {
            for i in 0..s.n {
                let img = s.image(i);
                if uniform.is_none() {
                    extents.push(Extent {
                        offset: pixels.len(),
                        height: img.height as u32,
                        width: img.width as u32,
                    });
                }
                pixels.extend_from_slice(img.pixels);
            }
        }
        let sizes = match uniform {
            Some((height, width)) => Sizes::Uniform { height, width },
            None => Sizes::Varied(extents),
        };
        ImageSet {
            pixels,
            sizes,
            labels,
            n,
            channels,
            classes,
        }
    }
}
