//! GEMMs through a frozen base weight kept in a ggml block format on the GPU
//! (`shaders/qgemm.wgsl`, [`QuantTensor`]): the forward `Y = X W^T` and the backward
//! `dX = dY W` of a linear layer whose weight `W [out, in]` stays quantized (Q4_0, Q4_1,
//! Q8_0), decoded while loading tiles and accumulated in f32, with their f64 CPU twins.

use crate::runtime::error::{Error, Result};
use crate::runtime::quant::QuantTensor;
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::QGEMM;
use crate::runtime::tensor::Tensor;

/// Output tile edge of the tiled entry points.
const TILE: usize = 16;

/// Invocations per workgroup of the register forms.
const REG_GROUP: usize = 64;

/// How the product is spread over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QForm {
    /// 16 x 16 output tiles staged through workgroup memory (GPUs).
    Tiled,
    /// Each invocation an 8 x 4 block of outputs (8 x 8 backward; 1 x 4 forward for one
    /// row) decoded straight from the weight buffer: no workgroup memory, no barriers
    /// (CPU devices).
    Register,
}

impl QForm {
    /// The form for `gpu`: the register form on CPU devices (llvmpipe, WARP), where the
    /// tiled form's barriers dominate (a SmolLM2 token took 10 s with it on lavapipe), the
    /// tiled form elsewhere.
    pub fn for_device(gpu: &crate::Gpu) -> Self {
        if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu {
            QForm::Register
        } else {
            QForm::Tiled
        }
    }

    /// The entry point and workgroup grid of `product` with `m` rows, `cols` outputs
    /// per row and a weight of `k` columns.
    fn plan(self, product: Product, m: usize, cols: usize, k: usize) -> (&'static str, [u32; 3]) {
        match (self, product) {
            (QForm::Tiled, Product::Forward) => ("forward", tiles(cols, m)),
            (QForm::Tiled, Product::Backward) => ("backward", tiles(cols, m)),
            (QForm::Register, Product::Forward) => {
                let groups = cols.div_ceil(4).div_ceil(REG_GROUP) as u32;
                match m {
                    1 => ("forward_row", [groups, 1, 1]),
                    _ => ("forward_reg", [groups, m.div_ceil(8) as u32, 1]),
                }
            }
            (QForm::Register, Product::Backward) => {
                let groups = (k / 32 * 4).div_ceil(REG_GROUP);
                ("backward_reg", [groups as u32, m.div_ceil(8) as u32, 1])
            }
        }
    }
}

fn tiles(cols: usize, m: usize) -> [u32; 3] {
    [cols.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1]
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    format: u32,
    blocks: u32,
    _pad: [u32; 3],
}

/// Which product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    /// `X W^T`: reads the last dim `in`, writes `out`.
    Forward,
    /// `dY W`: reads `out`, writes `in`.
    Backward,
}

fn run(
    rec: &mut Recorder,
    (a, w): (&Tensor, &QuantTensor),
    product: Product,
    form: QForm,
) -> Result<Tensor> {
    let [n, k] = [w.shape()[0], w.shape()[1]];
    let (name, inner, outer) = match product {
        Product::Forward => ("forward", k, n),
        Product::Backward => ("backward", n, k),
    };
    let s = a.shape();
    if s.last() != Some(&inner) {
        return Err(Error::shape(format!(
            "qgemm {name}: input {s:?} must end in {inner} to meet the {} weight [{n}, {k}]",
            w.format()
        )));
    }
    let m = a.numel() / inner;
    let mut shape = s.to_vec();
    *shape.last_mut().expect("non-empty") = outer;
    let out = Tensor::empty(rec.gpu(), &shape)?;
    let u32_of = |what, v| crate::runtime::error::index_u32(what, v);
    let p = Params {
        m: u32_of("qgemm rows", m)?,
        n: u32_of("qgemm weight rows", n)?,
        k: u32_of("qgemm weight columns", k)?,
        format: w.format().code(),
        blocks: u32_of("qgemm blocks", w.blocks())?,
        _pad: [0; 3],
    };
    let (entry, groups) = form.plan(product, m, outer, k);
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let (ba, bw, bo) = (a.binding(), w.binding(), out.binding());
    let bindings = [(0, &uniform), (1, &ba), (2, &bw), (3, &bo)];
    rec.dispatch(&QGEMM, entry, &[], &bindings, groups)?;
    Ok(out)
}

/// `x W^T` for `x [.., in]` and a quantized `W [out, in]`: `[.., out]`.
pub fn forward(rec: &mut Recorder, x: &Tensor, w: &QuantTensor) -> Result<Tensor> {
    let form = QForm::for_device(rec.gpu());
    run(rec, (x, w), Product::Forward, form)
}

/// [`forward`] in the given form.
pub fn forward_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &QuantTensor,
    form: QForm,
) -> Result<Tensor> {
    run(rec, (x, w), Product::Forward, form)
}

/// `dy W` for `dy [.., out]` and a quantized `W [out, in]`: the gradient `[.., in]` through
/// the frozen layer.
pub fn backward(rec: &mut Recorder, dy: &Tensor, w: &QuantTensor) -> Result<Tensor> {
    let form = QForm::for_device(rec.gpu());
    run(rec, (dy, w), Product::Backward, form)
}

/// [`backward`] in the given form.
pub fn backward_with(
    rec: &mut Recorder,
    dy: &Tensor,
    w: &QuantTensor,
    form: QForm,
) -> Result<Tensor> {
    run(rec, (dy, w), Product::Backward, form)
}

/// f64 CPU references on the weight's GGUF blocks.
pub mod cpu {
    use crate::runtime::error::Result;
    use crate::runtime::quant::{BlockFormat, dequantize_f64};

    /// A quantized weight on the host: GGUF block bytes of `[rows, cols]`.
    #[derive(Clone, Copy, Debug)]
    pub struct QuantWeight<'a> {
        /// Block format.
        pub format: BlockFormat,
        /// The blocks, as in the file.
        pub bytes: &'a [u8],
        /// `[out, in]`.
        pub shape: [usize; 2],
    }

    fn dense(w: &QuantWeight) -> Result<Vec<f64>> {
        dequantize_f64(w.format, "weight", w.bytes, w.shape[0] * w.shape[1])
    }

    /// `x W^T` for `x [m, in]` (row-major), in f64 on the dequantized weight.
    pub fn forward(x: &[f32], w: &QuantWeight) -> Result<Vec<f64>> {
        let [n, k] = w.shape;
        let wd = dense(w)?;
        Ok(x.chunks_exact(k)
            .flat_map(|xr| {
                let wd = &wd;
                (0..n).map(move |j| {
                    xr.iter()
                        .zip(&wd[j * k..(j + 1) * k])
                        .map(|(&a, &b)| a as f64 * b)
                        .sum()
                })
            })
            .collect())
    }

    /// `dy W` for `dy [m, out]`, in f64 on the dequantized weight.
    pub fn backward(dy: &[f32], w: &QuantWeight) -> Result<Vec<f64>> {
        let [n, k] = w.shape;
        let wd = dense(w)?;
        let mut out = vec![0.0; dy.len() / n * k];
        for (gr, orow) in dy.chunks_exact(n).zip(out.chunks_exact_mut(k)) {
            for (j, &g) in gr.iter().enumerate() {
                for (o, &v) in orow.iter_mut().zip(&wd[j * k..(j + 1) * k]) {
                    *o += g as f64 * v;
                }
            }
        }
        Ok(out)
    }
}
