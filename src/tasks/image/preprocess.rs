//! Preprocessing as the model's `preprocessor_config.json` says (transformers'
//! `ViTImageProcessor` / `BitImageProcessor` fields): convert to RGB (grey expanded to 3
//! channels), resize with the named filter (to `height`x`width`, or the shortest edge),
//! center crop, rescale, normalize. Deterministic; decoding and resizing by the `image`
//! crate.

use std::path::Path;

use image::imageops::FilterType;
use serde::Deserialize;

use crate::runtime::error::{Error, Result};

/// The resize target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resize {
    /// To exactly height x width.
    Exact(u32, u32),
    /// The shorter side to this, the other in proportion (truncated, as transformers).
    ShortestEdge(u32),
}

/// The preprocessing of one model.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    /// Resize (none when `do_resize` is false).
    pub resize: Option<Resize>,
    /// The resampling filter.
    pub filter: FilterType,
    /// Center crop to height x width.
    pub crop: Option<(u32, u32)>,
    /// Multiply the 0..255 values by this (1 when `do_rescale` is false).
    pub rescale: f32,
    /// Per-channel mean and std (0 and 1 when `do_normalize` is false).
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
}

#[derive(Deserialize, Default)]
struct Size {
    height: Option<u32>,
    width: Option<u32>,
    shortest_edge: Option<u32>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<Size>,
    #[serde(default)]
    resample: Option<u32>,
    #[serde(default)]
    do_center_crop: bool,
    #[serde(default)]
    crop_size: Option<Size>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default)]
    rescale_factor: Option<f32>,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default)]
    image_mean: Option<Vec<f32>>,
    #[serde(default)]
    image_std: Option<Vec<f32>>,
}

/// PIL's resampling codes as transformers stores them.
fn filter(code: u32) -> std::result::Result<FilterType, String> {
    match code {
        0 => Ok(FilterType::Nearest),
        1 => Ok(FilterType::Lanczos3),
        2 => Ok(FilterType::Triangle),
        3 => Ok(FilterType::CatmullRom),
        other => Err(format!(
            "resample {other} is not supported (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic)"
        )),
    }
}

fn three(v: Option<Vec<f32>>, default: f32, key: &str) -> std::result::Result<[f32; 3], String> {
    match v.as_deref() {
        None => Ok([default; 3]),
        Some(&[a]) => Ok([a; 3]),
        Some(&[a, b, c]) => Ok([a, b, c]),
        Some(other) => Err(format!("{key} has {} values, expected 3", other.len())),
    }
}

impl Preprocessor {
    /// Reads `dir/preprocessor_config.json`; without one, resize to the model's
    /// `image_size` (bilinear), rescale by 1/255 and normalize with mean = std = 0.5 (the
    /// `ViTImageProcessor` defaults). Errors name the file.
    pub fn read(dir: &Path, image_size: usize) -> Result<Preprocessor> {
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Self::parse("{}", image_size).map_err(Error::InvalidArgument);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&text, image_size).map_err(|message| Error::File {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a preprocessor_config.json text; `image_size` is the model's (the default
    /// size).
    pub fn parse(text: &str, image_size: usize) -> std::result::Result<Preprocessor, String> {
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| format!("not a preprocessor config: {e}"))?;
        let side = image_size as u32;
        let resize = match (raw.do_resize, raw.size.unwrap_or_default()) {
            (false, _) => None,
            (
                true,
                Size {
                    shortest_edge: Some(s),
                    ..
                },
            ) => Some(Resize::ShortestEdge(s)),
            (true, Size { height, width, .. }) => {
                Some(Resize::Exact(height.unwrap_or(side), width.unwrap_or(side)))
            }
        };
        let crop = match (raw.do_center_crop, raw.crop_size.unwrap_or_default()) {
            (false, _) => None,
            (true, c) => Some((c.height.unwrap_or(side), c.width.unwrap_or(side))),
        };
        let rescale = match raw.do_rescale {
            true => raw.rescale_factor.unwrap_or(1.0 / 255.0),
            false => 1.0,
        };
        let (mean, std) = match raw.do_normalize {
            true => (
                three(raw.image_mean, 0.5, "image_mean")?,
                three(raw.image_std, 0.5, "image_std")?,
            ),
            false => ([0.0; 3], [1.0; 3]),
        };
        if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err(format!("image_std {std:?} must be finite and non-zero"));
        }
        Ok(Preprocessor {
            resize,
            filter: filter(raw.resample.unwrap_or(2))?,
            crop,
            rescale,
            mean,
            std,
        })
    }

    /// The same pipeline ending at `n` x `n`: the crop becomes n (a shortest-edge resize
    /// scales with it), or without a crop the resize is to n x n.
    pub fn with_size(mut self, n: u32) -> Preprocessor {
        match (self.crop, self.resize) {
            (Some((ch, _)), Some(Resize::ShortestEdge(s))) => {
                let s = (s as f64 * n as f64 / ch as f64).round() as u32;
                self.resize = Some(Resize::ShortestEdge(s.max(n)));
                self.crop = Some((n, n));
            }
            (Some(_), _) => self.crop = Some((n, n)),
            (None, _) => self.resize = Some(Resize::Exact(n, n)),
        }
        self
    }

    /// The output side, when it is fixed (a crop or an exact square resize).
    pub fn output_size(&self) -> Option<u32> {
        match (self.crop, self.resize) {
            (Some((h, w)), _) if h == w => Some(h),
            (None, Some(Resize::Exact(h, w))) if h == w => Some(h),
            _ => None,
        }
    }

    /// Decoded image → RGB bytes `[3, n, n]` (channel-major) after resize and crop; an
    /// image that does not end square at `n` is an error.
    pub fn pixels(
        &self,
        img: &image::DynamicImage,
        n: u32,
    ) -> std::result::Result<Vec<u8>, String> {
        let mut rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        if let Some(r) = self.resize {
            let (th, tw) = match r {
                Resize::Exact(th, tw) => (th, tw),
                Resize::ShortestEdge(s) if w <= h => (((s as u64 * h as u64) / w as u64) as u32, s),
                Resize::ShortestEdge(s) => (s, ((s as u64 * w as u64) / h as u64) as u32),
            };
            if (tw, th) != (w, h) {
                rgb = image::imageops::resize(&rgb, tw, th, self.filter);
            }
        }
        let (w, h) = rgb.dimensions();
        let (ch, cw) = self.crop.unwrap_or((h, w));
        if (ch, cw) != (n, n) {
            return Err(format!("is {w}x{h} after resizing, not {n}x{n}"));
        }
        // transformers' center_crop: offsets (h - crop) // 2, zero padding when smaller.
        let offset = |full: u32, crop: u32| -> i64 {
            if full >= crop {
                ((full - crop) / 2) as i64
            } else {
                -(((crop - full) / 2) as i64)
            }
        };
        let (top, left) = (offset(h, ch), offset(w, cw));
        let n = n as usize;
        let mut out = vec![0u8; 3 * n * n];
        for y in 0..n {
            for x in 0..n {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                if sy < 0 || sx < 0 || sy >= h as i64 || sx >= w as i64 {
                    continue;
                }
                let p = rgb.get_pixel(sx as u32, sy as u32);
                for c in 0..3 {
                    out[c * n * n + y * n + x] = p[c];
                }
            }
        }
        Ok(out)
    }

    /// Bytes `[3, n, n]` → model input: `(v * rescale - mean) / std` per channel.
    pub fn normalize(&self, bytes: &[u8], out: &mut Vec<f32>) {
        let plane = bytes.len() / 3;
        for (i, &v) in bytes.iter().enumerate() {
            let c = (i / plane.max(1)).min(2);
            out.push((v as f32 * self.rescale - self.mean[c]) / self.std[c]);
        }
    }
}
