//! Training-time augmentation (`--augment none|flip|crop|flip,crop`) on the preprocessed
//! `[3, n, n]` bytes of an image: a horizontal flip with probability 1/2 (torchvision's
//! `RandomHorizontalFlip`) and a padded random crop (torchvision's
//! `RandomCrop(n, padding=n/8)`: zero padding of n/8 pixels on every side, then an n x n
//! window at a uniform offset). Crop first, then flip, as a torchvision `Compose` in that
//! order. Each image's draw depends only on (seed, epoch, example), so a resumed run sees
//! the same augmented images as an uninterrupted one. Evaluation never augments.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Which augmentations a training run applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Augment {
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
    /// Zero-padded random crop (padding n/8).
    pub crop: bool,
}

impl Augment {
    /// Whether any augmentation applies.
    pub fn any(self) -> bool {
        self.flip || self.crop
    }

    /// Parses `none`, `flip`, `crop` or `flip,crop` (either order, no repeats).
    pub fn parse(s: &str) -> std::result::Result<Augment, String> {
        let mut a = Augment::default();
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts == ["none"] {
            return Ok(a);
        }
        for p in parts {
            let slot = match p {
                "flip" => &mut a.flip,
                "crop" => &mut a.crop,
                other => {
                    return Err(format!(
                        "unknown augmentation {other:?} in {s:?} (none, flip, crop, flip,crop)"
                    ));
                }
            };
            if *slot {
                return Err(format!("{p:?} is given twice in {s:?}"));
            }
            *slot = true;
        }
        Ok(a)
    }

    /// The padding of the crop for side `n` (torchvision's `padding`): n/8, at least 1.
    pub fn padding(n: usize) -> usize {
        (n / 8).max(1)
    }

    /// `bytes` (`[3, n, n]`) augmented for `example` in `epoch` of a run seeded `seed`.
    pub fn apply(self, bytes: &[u8], n: usize, key: (u64, u64, u64)) -> Vec<u8> {
        if !self.any() {
            return bytes.to_vec();
        }
        let mut rng = StdRng::seed_from_u64(mix(key));
        let mut out = bytes.to_vec();
        if self.crop {
            let pad = Self::padding(n);
            let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
            let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
            out = shifted(&out, n, (dy, dx));
        }
        if self.flip && rng.random_bool(0.5) {
            for row in out.chunks_mut(n) {
                row.reverse();
            }
        }
        out
    }
}

/// The n x n window at offset (dy, dx) of the image padded with zeros:
/// `out[y][x] = in[y + dy][x + dx]`, 0 outside.
fn shifted(bytes: &[u8], n: usize, (dy, dx): (isize, isize)) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for (plane, dst) in bytes.chunks(n * n).zip(out.chunks_mut(n * n)) {
        for y in 0..n {
            let sy = y as isize + dy;
            if sy < 0 || sy >= n as isize {
                continue;
            }
            for x in 0..n {
                let sx = x as isize + dx;
                if sx >= 0 && sx < n as isize {
                    dst[y * n + x] = plane[sy as usize * n + sx as usize];
                }
            }
        }
    }
    out
}

/// One 64-bit seed from (seed, epoch, example): splitmix64 over the three in turn.
fn mix((seed, epoch, example): (u64, u64, u64)) -> u64 {
    let step = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    step(step(step(seed) ^ epoch) ^ example)
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.flip, self.crop) {
            (false, false) => "none",
            (true, false) => "flip",
            (false, true) => "crop",
            (true, true) => "flip,crop",
        })
    }
}

impl FromStr for Augment {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Augment::parse(s)
    }
}

impl TryFrom<String> for Augment {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        Augment::parse(&s)
    }
}

impl From<Augment> for String {
    fn from(a: Augment) -> String {
        a.to_string()
    }
}
