//! A batch of preprocessed images as the encoder takes it: patches unfolded on the host
//! into the rows of one GEMM, with a zero row in the CLS token's place.

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};

/// Images `[B, C, S, S]` as patch rows, with the ids and masks the encoder and its poolers
/// need.
pub struct PixelBatch {
    /// Images B.
    pub batch: usize,
    /// Tokens per image: 1 + patches.
    pub seq: usize,
    /// Patch grid side (`S / patch`).
    pub grid: usize,
    /// `[B * seq, C * p * p]`: row `b * seq` is zero (the CLS token's place), row
    /// `b * seq + 1 + y * grid + x` patch (y, x) in `(c, ky, kx)` order, as a Conv2d
    /// weight `[H, C, p, p]` flattens.
    pub patches: Tensor,
    /// `[B * seq]`: `0..seq` per image (rows of the position table).
    pub positions: Indices,
    /// `[B * seq]` zeros (broadcasts a `[1, H]` row over the tokens).
    pub zeros: Indices,
    /// `[B, seq]`: 1 at the CLS token.
    pub cls_mask: Tensor,
    /// `[B, seq]`: 1 at the patch tokens.
    pub patch_mask: Tensor,
}

impl PixelBatch {
    /// From `pixels` `[B, C, S, S]` (channel-major, preprocessed) and the patch side.
    pub fn new(
        gpu: &Gpu,
        pixels: &[f32],
        (channels, size): (usize, usize),
        patch: usize,
    ) -> Result<Self> {
        let per = channels * size * size;
        if per == 0 || !pixels.len().is_multiple_of(per) || patch == 0 || size < patch {
            return Err(Error::shape(format!(
                "{} pixel values are not whole {channels}x{size}x{size} images in {patch}-pixel patches",
                pixels.len()
            )));
        }
        let batch = pixels.len() / per;
        let grid = size / patch;
        let seq = 1 + grid * grid;
        let cols = channels * patch * patch;
        let mut rows = vec![0f32; batch * seq * cols];
        for b in 0..batch {
            let img = &pixels[b * per..(b + 1) * per];
            for (py, px) in (0..grid).flat_map(|y| (0..grid).map(move |x| (y, x))) {
                let r = b * seq + 1 + py * grid + px;
                let row = &mut rows[r * cols..(r + 1) * cols];
                for c in 0..channels {
                    for ky in 0..patch {
                        let src = c * size * size + (py * patch + ky) * size + px * patch;
                        let dst = (c * patch + ky) * patch;
                        row[dst..dst + patch].copy_from_slice(&img[src..src + patch]);
                    }
                }
            }
        }
        let pos: Vec<u32> = (0..batch).flat_map(|_| 0..seq as u32).collect();
        let cls: Vec<f32> = pos.iter().map(|&p| f32::from(p == 0)).collect();
        let patches: Vec<f32> = cls.iter().map(|c| 1.0 - c).collect();
        Ok(Self {
            batch,
            seq,
            grid,
            patches: Tensor::from_slice(gpu, &rows, &[batch * seq, cols])?,
            positions: Indices::from_slice(gpu, &pos, &[batch * seq])?,
            zeros: Indices::from_slice(gpu, &vec![0; batch * seq], &[batch * seq])?,
            cls_mask: Tensor::from_slice(gpu, &cls, &[batch, seq])?,
            patch_mask: Tensor::from_slice(gpu, &patches, &[batch, seq])?,
        })
    }
}
