//! Rotary position embeddings (`shaders/rope.wgsl`) in llama.cpp's layout: within each head
//! the adjacent pair `(2i, 2i + 1)` at position `pos` turns by `pos theta^(-2i/D)`. The angle
//! table is computed on the host in f64 ([`RopeTable`]); forward and backward (the
//! transpose) with their f64 twins in [`cpu`].

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::ROPE;
use crate::runtime::tensor::Tensor;

const WORKGROUP: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pairs: u32,
    grid_x: u32,
    seq: u32,
    heads: u32,
    half: u32,
    _pad: [u32; 3],
}

/// cos and sin of every (position, pair) angle, `[T, D/2]` each, on the GPU.
#[derive(Clone, Debug)]
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    seq: usize,
    dim: usize,
}

impl RopeTable {
    /// The table for head width `dim` (even), base `theta` and the given positions.
    pub fn new(gpu: &Gpu, theta: f64, dim: usize, positions: &[usize]) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(2) || positions.is_empty() || theta <= 1.0 {
            return Err(Error::InvalidArgument(format!(
                "rope table: head width {dim} must be even and positive, theta {theta} above 1, \
                 and positions ({}) non-empty",
                positions.len()
            )));
        }
        let (cos, sin) = cpu::table(theta, dim, positions);
        let shape = [positions.len(), dim / 2];
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
        Ok(Self {
            cos: Tensor::from_slice(gpu, &to32(cos), &shape)?,
            sin: Tensor::from_slice(gpu, &to32(sin), &shape)?,
            seq: positions.len(),
            dim,
        })
    }
}

/// Which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Rotate by `+angle` (the forward).
    Forward,
    /// Rotate by `-angle` (the gradient of the forward).
    Backward,
}

/// `x [..., T, H, D]` rotated (forward) or its gradient `dy` rotated back (backward).
pub fn rope(rec: &mut Recorder, x: &Tensor, table: &RopeTable, dir: Direction) -> Result<Tensor> {
    let s = x.shape();
    let n = s.len();
    if n < 3 || s[n - 1] != table.dim || s[n - 3] != table.seq {
        return Err(Error::shape(format!(
            "rope: x {s:?} must be [..., T = {}, H, D = {}] to meet its table",
            table.seq, table.dim
        )));
    }
    let out = Tensor::empty(rec.gpu(), s)?;
    let pairs = x.numel() / 2;
    let p = Params {
        pairs: crate::runtime::error::index_u32("rope pairs", pairs)?,
        seq: table.seq as u32,
        heads: s[n - 2] as u32,
        half: (table.dim / 2) as u32,
        ..Default::default()
    };
    let entry = match dir {
        Direction::Forward => "forward",
        Direction::Backward => "backward",
    };
    let (bx, bc, bs, bo) = (
        x.binding(),
        table.cos.binding(),
        table.sin.binding(),
        out.binding(),
    );
    let groups = (pairs as u64).div_ceil(WORKGROUP);
    let bindings = [(1, &bx), (2, &bc), (3, &bs), (4, &bo)];
    rec.dispatch_groups(
        &ROPE,
        entry,
        groups,
        |grid_x| Params { grid_x, ..p },
        &bindings,
    )?;
    Ok(out)
}

/// f64 CPU references.
pub mod cpu {
    use super::Direction;

    /// cos and sin `[T, D/2]` of `pos theta^(-2i/D)`.
    pub fn table(theta: f64, dim: usize, positions: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let angles: Vec<f64> = positions
            .iter()
            .flat_map(|&pos| {
                (0..dim / 2).map(move |i| pos as f64 * theta.powf(-2.0 * i as f64 / dim as f64))
            })
            .collect();
        (
            angles.iter().map(|a| a.cos()).collect(),
            angles.iter().map(|a| a.sin()).collect(),
        )
    }

    /// `x [..., T, H, D]` (row-major, shape `[T, H, D]` innermost) rotated by the table.
    pub fn rope(
        x: &[f32],
        [seq, heads, dim]: [usize; 3],
        (cos, sin): (&[f64], &[f64]),
        dir: Direction,
    ) -> Vec<f64> {
        let sign = match dir {
            Direction::Forward => 1.0,
            Direction::Backward => -1.0,
        };
        let mut out = vec![0.0; x.len()];
        for (k, (o, xp)) in out.chunks_exact_mut(2).zip(x.chunks_exact(2)).enumerate() {
            let i = k % (dim / 2);
            let t = (k / (dim / 2 * heads)) % seq;
            let (c, s) = (cos[t * dim / 2 + i], sign * sin[t * dim / 2 + i]);
            let (a, b) = (xp[0] as f64, xp[1] as f64);
            o[0] = a * c - b * s;
            o[1] = a * s + b * c;
        }
        out
    }
}
