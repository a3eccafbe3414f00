//! `capaboost layer`: one CapaBoost-LoRA layer forward and backward on the GPU, from and to
//! safetensors files (f32, PEFT layout), so anyone can check it against PyTorch or numpy.

use std::path::Path;

use crate::kernels::capaboost::{Adapter, Layer, LayerMasks, RankScaling};
use crate::kernels::masks::{MaskConfig, MaskKind};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter};
use crate::runtime::tensor::Tensor;

/// Settings of one `capaboost layer` run.
#[derive(Clone, Debug)]
pub struct LayerConfig {
    /// Branches d.
    pub d: u32,
    /// Mask density p.
    pub density: f64,
    /// Mask kind.
    pub mask: MaskKind,
    /// Mask seed.
    pub seed: u64,
    /// LoRA alpha.
    pub alpha: f32,
    /// `alpha / r` or `alpha / sqrt(r)`.
    pub rank_scaling: RankScaling,
}

/// What a run did, for the command line to print.
#[derive(Clone, Debug)]
pub struct LayerSummary {
    /// Tokens T.
    pub t: usize,
    /// In features.
    pub in_features: usize,
    /// Out features.
    pub out_features: usize,
    /// Rank r.
    pub r: usize,
    /// Scale s.
    pub scale: f32,
    /// Whether masks came from the input file.
    pub masks_from_file: bool,
}

fn expect_2d(file: &TensorFile, name: &str) -> Result<(usize, usize, Vec<f32>)> {
    let (shape, data) = file.f32(name)?;
    match shape[..] {
        [a, b] => Ok((a, b, data)),
        _ => Err(Error::shape(format!(
            "tensor '{name}' must be 2-D, got {shape:?}"
        ))),
    }
}

/// Reads `input`, runs the layer forward and backward, writes `output` atomically.
pub fn run(gpu: &Gpu, input: &Path, output: &Path, cfg: &LayerConfig) -> Result<LayerSummary> {
    if !(cfg.density > 0.0 && cfg.density <= 1.0) {
        return Err(Error::InvalidArgument(format!(
            "--density {} is outside (0, 1]",
            cfg.density
        )));
    }
    if cfg.d == 0 {
        return Err(Error::InvalidArgument("--d must be at least 1".into()));
    }
    let file = TensorFile::read(input)?;
    let (t, in_f, x) = expect_2d(&file, "x")?;
    let (out_f, w_in, w) = expect_2d(&file, "weight")?;
    let (r, a_in, a) = expect_2d(&file, "lora_A")?;
    let (b_out, b_r, b) = expect_2d(&file, "lora_B")?;
    let (g_t, g_out, g) = expect_2d(&file, "grad_y")?;
    let bad = |name: &str, got: [usize; 2], want: [usize; 2]| {
        Err(Error::shape(format!(
            "tensor '{name}' has shape {got:?}, expected {want:?}"
        )))
    };
    if w_in != in_f {
        return bad("weight", [out_f, w_in], [out_f, in_f]);
    }
    if a_in != in_f || r == 0 {
        return bad("lora_A", [r, a_in], [r.max(1), in_f]);
    }
    if (b_out, b_r) != (out_f, r) {
        return bad("lora_B", [b_out, b_r], [out_f, r]);
    }
    if (g_t, g_out) != (t, out_f) {
        return bad("grad_y", [g_t, g_out], [t, out_f]);
    }
    let bias = if file.contains("bias") {
        let (shape, data) = file.f32("bias")?;
        if shape != [out_f] {
            return Err(Error::shape(format!(
                "tensor 'bias' has shape {shape:?}, expected [{out_f}]"
            )));
        }
        Some(data)
    } else {
        None
    };
    let d = cfg.d as usize;
    let masks_from_file = file
        .names()
        .any(|n| n.starts_with("mask_A.") || n.starts_with("mask_B."));
    let user_masks = if masks_from_file {
        let ma = (0..d)
            .map(|i| file.mask(&format!("mask_A.{i}"), &[r, in_f]))
            .collect::<Result<Vec<_>>>()?;
        let mb = (0..d)
            .map(|i| file.mask(&format!("mask_B.{i}"), &[out_f, r]))
            .collect::<Result<Vec<_>>>()?;
        if let Some(extra) = file.names().find(|n| {
            (n.starts_with("mask_A.") || n.starts_with("mask_B."))
                && n[7..].parse::<usize>().map_or(true, |i| i >= d)
        }) {
            return Err(Error::InvalidArgument(format!(
                "tensor '{extra}' does not fit --d {d} (masks are mask_A.0..{} and mask_B.0..{})",
                d - 1,
                d - 1
            )));
        }
        Some((ma, mb))
    } else {
        None
    };

    let up = |data: &[f32], shape: &[usize]| Tensor::from_slice(gpu, data, shape);
    let (x, w0, la, lb, gy) = (
        up(&x, &[t, in_f])?,
        up(&w, &[out_f, in_f])?,
        up(&a, &[r, in_f])?,
        up(&b, &[out_f, r])?,
        up(&g, &[t, out_f])?,
    );
    let b0 = bias.map(|bv| up(&bv, &[out_f])).transpose()?;
    let s = cfg.rank_scaling.scale(cfg.alpha, r);
    let masks = match user_masks {
        Some((ma, mb)) => LayerMasks::from_u8(gpu, &ma, &mb, r, in_f, out_f)?,
        None => gpu.run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(cfg.mask, cfg.d, cfg.density, cfg.seed),
                0,
                r,
                in_f,
                out_f,
            )
        })?,
    };
    let (fwd, grads, dw) = gpu.run(|rec| {
        let layer = Layer::new(&w0, b0.as_ref(), Adapter::new(&la, &lb, &masks, s));
        let fwd = layer.forward(rec, &x)?;
        let grads = layer.backward(rec, &x, &fwd.h, &gy, true)?;
        let dw = layer.adapter.delta_weight(rec)?;
        Ok((fwd, grads, dw))
    })?;
    let mut out = TensorWriter::default();
    out.f32("y", &[t, out_f], &fwd.y.to_vec()?);
    let dx = grads.dx.expect("dx was requested");
    out.f32("grad_x", &[t, in_f], &dx.to_vec()?);
    out.f32("grad_lora_A", &[r, in_f], &grads.da.to_vec()?);
    out.f32("grad_lora_B", &[out_f, r], &grads.db.to_vec()?);
    out.f32("delta_weight", &[out_f, in_f], &dw.to_vec()?);
    let (ma, mb) = masks.to_u8()?;
    for i in 0..d {
        out.u8(format!("mask_A.{i}"), &[r, in_f], &ma[i]);
        out.u8(format!("mask_B.{i}"), &[out_f, r], &mb[i]);
    }
    out.write(output)?;
    Ok(LayerSummary {
        t,
        in_features: in_f,
        out_features: out_f,
        r,
        scale: s,
        masks_from_file,
    })
}
