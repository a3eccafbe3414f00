//! `capaboost layer`: one CapaBoost-LoRA layer forward and backward on the GPU, from and to
//! safetensors files (f32, PEFT layout), so anyone can check it against PyTorch or numpy.

use std::path::{Path, PathBuf};

use crate::kernels::capaboost::{Adapter, Layer, LayerMasks, RankScaling};
use crate::kernels::masks::MaskConfig;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter};
use crate::runtime::tensor::Tensor;

/// `capaboost layer` arguments.
#[derive(clap::Args)]
pub struct LayerArgs {
    /// Input safetensors file.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file (written atomically).
    #[arg(long)]
    pub output: PathBuf,
    /// The layer's settings.
    #[command(flatten)]
    pub config: LayerConfig,
}

/// Settings of one `capaboost layer` run.
#[derive(Clone, Debug, clap::Args)]
pub struct LayerConfig {
    /// Masks: kind, branches d, density p and seed (used when the input has no masks).
    #[command(flatten)]
    pub mask: MaskConfig,
    /// LoRA alpha (s = alpha / r, or alpha / sqrt(r) with rslora).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// How the update is scaled.
    #[arg(long, value_enum, default_value_t = RankScaling::Lora)]
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

/// The `capaboost layer` command: validates, runs and prints a summary line.
pub fn command(args: LayerArgs) -> Result<()> {
    let cfg = &args.config;
    crate::tasks::config::validate_mask(&cfg.mask)?;
    if !(cfg.alpha.is_finite() && cfg.alpha > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "--alpha {} must be finite and positive",
            cfg.alpha
        )));
    }
    crate::tasks::run::refuse_overwriting_inputs(
        "--output",
        &args.output,
        &[("--input file", &args.input)],
    )?;
    crate::tasks::run::check_finite_file(&args.input)?;
    let gpu = Gpu::new()?;
    let s = run(&gpu, &args.input, &args.output, cfg)?;
    println!(
        "layer T={} in={} out={} r={} d={} s={} masks={} on {}: wrote {}",
        s.t,
        s.in_features,
        s.out_features,
        s.r,
        cfg.mask.d,
        s.scale,
        if s.masks_from_file {
            "from input"
        } else {
            "generated"
        },
        gpu.adapter_info().name,
        args.output.display()
    );
    Ok(())
}

/// The input tensors, shapes checked.
struct Inputs {
    t: usize,
    in_f: usize,
    out_f: usize,
    r: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    a: Vec<f32>,
    b: Vec<f32>,
    gy: Vec<f32>,
}

impl Inputs {
    fn read(file: &TensorFile) -> Result<Inputs> {
        let (t, in_f, x) = expect_2d(file, "x")?;
        let (out_f, w_in, w) = expect_2d(file, "weight")?;
        let (r, a_in, a) = expect_2d(file, "lora_A")?;
        let (b_out, b_r, b) = expect_2d(file, "lora_B")?;
        let (g_t, g_out, gy) = expect_2d(file, "grad_y")?;
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
        Ok(Inputs {
            t,
            in_f,
            out_f,
            r,
            x,
            w,
            bias,
            a,
            b,
            gy,
        })
    }
}

type UserMasks = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The `mask_A.i` / `mask_B.i` tensors of the input, when it has any.
fn user_masks(file: &TensorFile, d: usize, i: &Inputs) -> Result<Option<UserMasks>> {
    let is_mask = |n: &str| n.starts_with("mask_A.") || n.starts_with("mask_B.");
    if !file.names().any(is_mask) {
        return Ok(None);
    }
    let ma = (0..d)
        .map(|k| file.mask(&format!("mask_A.{k}"), &[i.r, i.in_f]))
        .collect::<Result<Vec<_>>>()?;
    let mb = (0..d)
        .map(|k| file.mask(&format!("mask_B.{k}"), &[i.out_f, i.r]))
        .collect::<Result<Vec<_>>>()?;
    if let Some(extra) = file
        .names()
        .find(|n| is_mask(n) && n[7..].parse::<usize>().map_or(true, |k| k >= d))
    {
        return Err(Error::InvalidArgument(format!(
            "tensor '{extra}' does not fit --d {d} (masks are mask_A.0..{} and mask_B.0..{})",
            d - 1,
            d - 1
        )));
    }
    Ok(Some((ma, mb)))
}

/// What the layer computes: `y`, the gradients, `delta_W`, and the masks used.
struct Outputs {
    y: Tensor,
    dx: Tensor,
    da: Tensor,
    db: Tensor,
    dw: Tensor,
    masks: LayerMasks,
}

/// The layer's forward, backward and update on the GPU: the command's one call site of
/// the CapaBoost layer kernels.
fn compute(gpu: &Gpu, i: &Inputs, cfg: &LayerConfig, user: Option<UserMasks>) -> Result<Outputs> {
    let up = |data: &[f32], shape: &[usize]| Tensor::from_slice(gpu, data, shape);
    let (t, in_f, out_f, r) = (i.t, i.in_f, i.out_f, i.r);
    let x = up(&i.x, &[t, in_f])?;
    let w0 = up(&i.w, &[out_f, in_f])?;
    let la = up(&i.a, &[r, in_f])?;
    let lb = up(&i.b, &[out_f, r])?;
    let gy = up(&i.gy, &[t, out_f])?;
    let b0 = i.bias.as_ref().map(|bv| up(bv, &[out_f])).transpose()?;
    let s = cfg.rank_scaling.scale(cfg.alpha, r);
    let masks = match user {
        Some((ma, mb)) => LayerMasks::from_u8(gpu, &ma, &mb, r, in_f, out_f)?,
        None => gpu
            .run(|rec| LayerMasks::generate(rec, &cfg.mask, 0, r, in_f, out_f))
            .map_err(|e| match e {
                Error::TooLarge { .. } | Error::InvalidArgument(_) => Error::InvalidArgument(
                    format!("--d {}: the generated masks do not fit: {e}", cfg.mask.d),
                ),
                e => e,
            })?,
    };
    let (fwd, grads, dw) = gpu.run(|rec| {
        let layer = Layer::new(&w0, b0.as_ref(), Adapter::new(&la, &lb, &masks, s));
        let fwd = layer.forward(rec, &x)?;
        let grads = layer.backward(rec, &x, &fwd.h, &gy, true)?;
        let dw = layer.adapter.delta_weight(rec)?;
        Ok((fwd, grads, dw))
    })?;
    Ok(Outputs {
        y: fwd.y,
        dx: grads.dx.expect("dx was requested"),
        da: grads.da,
        db: grads.db,
        dw,
        masks,
    })
}

/// Reads `input`, runs the layer forward and backward, writes `output` atomically.
pub fn run(gpu: &Gpu, input: &Path, output: &Path, cfg: &LayerConfig) -> Result<LayerSummary> {
    crate::tasks::config::validate_mask(&cfg.mask)?;
    let file = TensorFile::read(input)?;
    let i = Inputs::read(&file)?;
    let d = cfg.mask.d as usize;
    let user = user_masks(&file, d, &i)?;
    let masks_from_file = user.is_some();
    let o = compute(gpu, &i, cfg, user)?;
    let (t, in_f, out_f, r) = (i.t, i.in_f, i.out_f, i.r);
    let mut out = TensorWriter::default();
    out.f32("y", &[t, out_f], &o.y.to_vec()?);
    out.f32("grad_x", &[t, in_f], &o.dx.to_vec()?);
    out.f32("grad_lora_A", &[r, in_f], &o.da.to_vec()?);
    out.f32("grad_lora_B", &[out_f, r], &o.db.to_vec()?);
    out.f32("delta_weight", &[out_f, in_f], &o.dw.to_vec()?);
    let (ma, mb) = o.masks.to_u8()?;
    for k in 0..d {
        out.u8(format!("mask_A.{k}"), &[r, in_f], &ma[k]);
        out.u8(format!("mask_B.{k}"), &[out_f, r], &mb[k]);
    }
    out.write(output)?;
    Ok(LayerSummary {
        t,
        in_features: in_f,
        out_features: out_f,
        r,
        scale: cfg.rank_scaling.scale(cfg.alpha, r),
        masks_from_file,
    })
}
