//! CapaBoost masks (`shaders/masks.wgsl`): generation into packed bits on the GPU with a
//! bit-exact CPU twin, and the masked sums that fold stacked gradients onto shared factors.
//!
//! Masks are stored as packed bits (1 bit per entry, written once when a layer is built)
//! rather than regenerated inside the GEMMs: exact masks need a cycle-walking Feistel
//! permutation per entry, which costs far more than one cached word load per entry.

use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::pool::{BufferKind, PooledBuffer};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::MASKS;
use crate::runtime::tensor::Tensor;

/// How mask entries are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum MaskKind {
    /// Exactly `floor(numel * p)` ones, positions uniform without replacement (the
    /// reference code's default).
    Exact,
    /// Each entry independently 1 with probability `p`.
    Bernoulli,
    /// Exactly 2 ones in each aligned group of 4 along the reduction dimension (the last
    /// dimension); density 0.5.
    #[serde(rename = "2:4", alias = "two-of-four")]
    #[cfg_attr(feature = "tasks", value(name = "2:4", alias = "two-of-four"))]
    TwoOfFour,
}

impl std::fmt::Display for MaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exact => "exact",
            Self::Bernoulli => "bernoulli",
            Self::TwoOfFour => "2:4",
        })
    }
}

/// The masks of one adapter: draw rule, branch count d, density p and seed. Together with
/// a module id and a factor's shape it fixes every bit (see [`MaskSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskConfig {
    /// Draw rule.
    pub kind: MaskKind,
    /// Number of branches d (1 with density 1 is plain LoRA).
    pub d: u32,
    /// Density p in (0, 1] (2:4 masks are 0.5 whatever it says).
    pub density: f64,
    /// User seed.
    pub seed: u64,
}

impl MaskConfig {
    /// `d` branches of `kind` masks at `density`, keyed by `seed`.
    pub fn new(kind: MaskKind, d: u32, density: f64, seed: u64) -> Self {
        Self {
            kind,
            d,
            density,
            seed,
        }
    }

    /// No masking: one branch at density 1 (plain LoRA).
    pub fn dense() -> Self {
        Self::new(MaskKind::Exact, 1, 1.0, 0)
    }

    /// Checks d >= 1 and a finite density in (0, 1]; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if self.d == 0 {
            return Err(Error::InvalidArgument("d must be at least 1".into()));
        }
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "density {} is outside (0, 1]",
                self.density
            )));
        }
        Ok(())
    }

    /// The spec of one factor's masks.
    pub fn spec(&self, module: u32, factor: Factor, rows: usize, cols: usize) -> MaskSpec {
        MaskSpec {
            kind: self.kind,
            density: self.density,
            seed: self.seed,
            module,
            factor,
            branches: self.d,
            rows,
            cols,
        }
    }
}

impl MaskKind {
    /// Parses `exact`, `bernoulli` or `2:4` (`two-of-four`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Self::Exact),
            "bernoulli" => Ok(Self::Bernoulli),
            "2:4" | "two-of-four" => Ok(Self::TwoOfFour),
            _ => Err(Error::InvalidArgument(format!(
                "unknown mask kind {s:?}: expected exact, bernoulli or 2:4"
            ))),
        }
    }

    fn code(self) -> u32 {
        match self {
            Self::Exact => 0,
            Self::Bernoulli => 1,
            Self::TwoOfFour => 2,
        }
    }
}

/// Which shared factor a mask applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Factor {
    /// `lora_A [r, in]`, masks `M_i`.
    A = 0,
    /// `lora_B [out, r]`, masks `N_i`.
    B = 1,
}

/// Everything that determines the masks of one factor: kind, density, key, branch count
/// and the factor's shape `[rows, cols]` (cols is the reduction dimension).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskSpec {
    /// Draw rule.
    pub kind: MaskKind,
    /// Density `p` in (0, 1] (ignored for 2:4, which is 0.5).
    pub density: f64,
    /// User seed.
    pub seed: u64,
    /// Layer / module id, so every adapted matrix gets its own masks.
    pub module: u32,
    /// Factor A or B.
    pub factor: Factor,
    /// Number of branches `d`.
    pub branches: u32,
    /// Rows of the factor.
    pub rows: usize,
    /// Columns of the factor (reduction dimension).
    pub cols: usize,
}

/// Chris Wellons' lowbias32 (the same function as `mix32` in shaders/common/hash.wgsl).
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

fn hash3(k: [u32; 2], x: u32) -> u32 {
    mix32(mix32(x ^ k[0]).wrapping_add(k[1]))
}

/// The per-branch key: a hash chain over (seed, module, factor, branch).
pub fn branch_key(seed: u64, module: u32, factor: Factor, branch: u32) -> [u32; 2] {
    let mut h: u32 = 0x243f_6a88;
    for w in [
        seed as u32,
        (seed >> 32) as u32,
        module,
        factor as u32,
        branch,
    ] {
        h = mix32(h ^ w).wrapping_add(0x9e37_79b9);
    }
    [h, mix32(h ^ 0x5bd1_e995)]
}

fn feistel(x: u32, k: [u32; 2], h: u32) -> u32 {
    let m = (1u32 << h) - 1;
    let (mut l, mut r) = ((x >> h) & m, x & m);
    for round in 0..4u32 {
        let f = hash3(
            [k[0].wrapping_add(round.wrapping_mul(0x9e37_79b9)), k[1]],
            r,
        ) & m;
        (l, r) = (r, l ^ f);
    }
    (l << h) | r
}

/// The keyed bijection of `[0, numel)` used by exact masks.
pub fn permute(e: u32, k: [u32; 2], numel: u32, half_bits: u32) -> u32 {
    let mut x = feistel(e, k, half_bits);
    while x >= numel {
        x = feistel(x, k, half_bits);
    }
    x
}

const TWO_OF_FOUR: [u32; 6] = [3, 5, 9, 6, 10, 12];

/// Kernel parameters derived from a spec, shared by the GPU path and the CPU twin.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GenParams {
    numel: u32,
    branches: u32,
    kind: u32,
    half_bits: u32,
    keep: u32,
    words: u32,
    grid_x: u32,
    _pad: u32,
}

impl MaskSpec {
    /// Entries per branch.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }

    /// Bits in all branches.
    pub fn total_bits(&self) -> usize {
        self.numel() * self.branches as usize
    }

    /// Packed words in all branches.
    pub fn words(&self) -> usize {
        self.total_bits().div_ceil(32)
    }

    /// Checks density, shape and sizes; errors name what is wrong.
    pub fn validate(&self) -> Result<()> {
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "density {} is outside (0, 1]",
                self.density
            )));
        }
        if self.branches == 0 {
            return Err(Error::InvalidArgument("d must be at least 1".into()));
        }
        if self.numel() == 0 {
            return Err(Error::shape(format!(
                "mask shape [{}, {}] is empty",
                self.rows, self.cols
            )));
        }
        if self.total_bits() > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{} mask bits exceed the u32 indexing of the mask kernels",
                self.total_bits()
            )));
        }
        if self.kind == MaskKind::TwoOfFour && !self.cols.is_multiple_of(4) {
            return Err(Error::shape(format!(
                "2:4 masks need the reduction dimension to be a multiple of 4; factor {:?} \
                 has shape [{}, {}]",
                self.factor, self.rows, self.cols
            )));
        }
        Ok(())
    }

    /// Number of ones per branch for exact masks: `floor(numel * p)`.
    pub fn exact_count(&self) -> u32 {
        (self.numel() as f64 * self.density).floor() as u32
    }

    fn params(&self) -> GenParams {
        let numel = self.numel() as u32;
        let mut half_bits = 1;
        while (1u64 << (2 * half_bits)) < numel as u64 {
            half_bits += 1;
        }
        let keep = match self.kind {
            MaskKind::Exact => self.exact_count(),
            MaskKind::Bernoulli => (self.density * (1u32 << 24) as f64).round() as u32,
            MaskKind::TwoOfFour => 0,
        };
        GenParams {
            numel,
            branches: self.branches,
            kind: self.kind.code(),
            half_bits,
            keep,
            words: self.words() as u32,
            grid_x: 0,
            _pad: 0,
        }
    }

    fn keys(&self) -> Vec<[u32; 2]> {
        (0..self.branches)
            .map(|i| branch_key(self.seed, self.module, self.factor, i))
            .collect()
    }

    /// The CPU twin of the GPU generator: the same packed words, bit for bit.
    pub fn generate_cpu(&self) -> Result<Vec<u32>> {
        self.validate()?;
        let p = self.params();
        let keys = self.keys();
        let mut words = vec![0u32; p.words as usize];
        for i in 0..p.branches {
            let k = keys[i as usize];
            for e in 0..p.numel {
                let bit = match self.kind {
                    MaskKind::Exact => permute(e, k, p.numel, p.half_bits) < p.keep,
                    MaskKind::Bernoulli => (hash3(k, e) >> 8) < p.keep,
                    MaskKind::TwoOfFour => {
                        (TWO_OF_FOUR[(hash3(k, e >> 2) % 6) as usize] >> (e & 3)) & 1 == 1
                    }
                };
                if bit {
                    let g = i as usize * p.numel as usize + e as usize;
                    words[g / 32] |= 1 << (g % 32);
                }
            }
        }
        Ok(words)
    }
}

/// Packed mask bits of all d branches of one factor, on the GPU.
#[derive(Clone, Debug)]
pub struct MaskBits {
    gpu: Gpu,
    buffer: Arc<PooledBuffer>,
    words: usize,
    /// Branches.
    pub branches: u32,
    /// Rows of the factor.
    pub rows: usize,
    /// Columns of the factor.
    pub cols: usize,
}

impl MaskBits {
    /// Generates the masks of `spec` on the GPU (one dispatch, recorded into `rec`).
    pub fn generate(rec: &mut Recorder, spec: &MaskSpec) -> Result<Self> {
        spec.validate()?;
        // The per-branch keys are built on the host: check their size before that.
        rec.gpu().check_binding_size(u64::from(spec.branches) * 8)?;
        let mut p = spec.params();
        let groups = (p.words as u64).div_ceil(64);
        let grid = rec.grid_1d(groups);
        p.grid_x = grid[0];
        let out = Self::alloc(rec.gpu(), spec.branches, spec.rows, spec.cols)?;
        let keys: Vec<u32> = spec.keys().into_iter().flatten().collect();
        let keys = crate::runtime::tensor::upload_bytes(rec.gpu(), bytemuck::cast_slice(&keys))?;
        let keys = Binding::new(keys, spec.branches as u64 * 8);
        let uniform = rec.uniform(bytemuck::bytes_of(&p));
        let bits = out.binding();
        rec.dispatch(
            &MASKS,
            "generate",
            &[],
            &[(0, &uniform), (1, &keys), (2, &bits)],
            grid,
        )?;
        Ok(out)
    }

    fn alloc(gpu: &Gpu, branches: u32, rows: usize, cols: usize) -> Result<Self> {
        let words = (rows * cols * branches as usize).div_ceil(32);
        let bytes = words as u64 * 4;
        gpu.check_binding_size(bytes)?;
        let buffer =
            gpu.pool()
                .acquire_checked(BufferKind::Storage, bytes, "allocating mask bits")?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            words,
            branches,
            rows,
            cols,
        })
    }

    /// Uploads packed words (e.g. from [`MaskSpec::generate_cpu`] or [`pack`]).
    pub fn from_words(
        gpu: &Gpu,
        words: &[u32],
        branches: u32,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let out = Self::alloc(gpu, branches, rows, cols)?;
        if words.len() != out.words {
            return Err(Error::shape(format!(
                "{} mask words given for {branches} x [{rows}, {cols}] bits ({} words)",
                words.len(),
                out.words
            )));
        }
        gpu.write_buffer(out.buffer.buffer(), 0, bytemuck::cast_slice(words));
        Ok(out)
    }

    /// The words as a dispatch binding.
    pub fn binding(&self) -> Binding {
        Binding::new(self.buffer.clone(), self.words as u64 * 4)
    }

    /// Reads the packed words back (blocking).
    pub fn to_words(&self) -> Result<Vec<u32>> {
        let raw = crate::runtime::tensor::read_buffer(
            &self.gpu,
            self.buffer.buffer(),
            self.words as u64 * 4,
        )?;
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }
}

/// Packs per-branch 0/1 masks (each `numel` entries, nonzero = 1) into words.
pub fn pack(branches: &[Vec<u8>]) -> Vec<u32> {
    let numel = branches.first().map_or(0, |b| b.len());
    let mut words = vec![0u32; (numel * branches.len()).div_ceil(32)];
    for (i, m) in branches.iter().enumerate() {
        for (e, &v) in m.iter().enumerate() {
            if v != 0 {
                let g = i * numel + e;
                words[g / 32] |= 1 << (g % 32);
            }
        }
    }
    words
}

/// Unpacks words into `branches` masks of `numel` 0/1 entries each.
pub fn unpack(words: &[u32], branches: usize, numel: usize) -> Vec<Vec<u8>> {
    (0..branches)
        .map(|i| {
            (0..numel)
                .map(|e| {
                    let g = i * numel + e;
                    ((words[g / 32] >> (g % 32)) & 1) as u8
                })
                .collect()
        })
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    rows: u32,
    cols: u32,
    branches: u32,
    factor_b: u32,
    grid_x: u32,
    _pad: [u32; 3],
}

/// `sum_i mask_i * stacked_i`: folds a stacked gradient (`[d r, in]` for factor A,
/// `[out, d r]` for factor B) onto the shared factor's shape.
pub fn masked_sum(
    rec: &mut Recorder,
    masks: &MaskBits,
    factor: Factor,
    stacked: &Tensor,
) -> Result<Tensor> {
    let (rows, cols, d) = (masks.rows, masks.cols, masks.branches as usize);
    let want = match factor {
        Factor::A => [d * rows, cols],
        Factor::B => [rows, d * cols],
    };
    if stacked.shape() != want {
        return Err(Error::shape(format!(
            "masked_sum over factor {factor:?}: stacked gradient has shape {:?}, expected {want:?}",
            stacked.shape()
        )));
    }
    let out = Tensor::empty(rec.gpu(), &[rows, cols])?;
    let grid = rec.grid_1d(((rows * cols) as u64).div_ceil(256));
    let p = SumParams {
        rows: rows as u32,
        cols: cols as u32,
        branches: d as u32,
        factor_b: (factor == Factor::B) as u32,
        grid_x: grid[0],
        _pad: [0; 3],
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    rec.dispatch(
        &MASKS,
        "masked_sum",
        &[],
        &[
            (3, &uniform),
            (4, &masks.binding()),
            (5, &stacked.binding()),
            (6, &out.binding()),
        ],
        grid,
    )?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ApplyParams {
    numel: u32,
    branch: u32,
    grid_x: u32,
    _pad: u32,
}

/// `factor * mask_branch`, a materialized masked copy of one branch. Only the naive
/// reference path uses it; the fused GEMMs never materialize masked factors.
pub fn apply_mask(
    rec: &mut Recorder,
    masks: &MaskBits,
    factor: &Tensor,
    branch: u32,
) -> Result<Tensor> {
    if factor.shape() != [masks.rows, masks.cols] || branch >= masks.branches {
        return Err(Error::shape(format!(
            "apply_mask: factor {:?}, branch {branch}, masks {} x [{}, {}]",
            factor.shape(),
            masks.branches,
            masks.rows,
            masks.cols
        )));
    }
    let out = Tensor::empty(rec.gpu(), factor.shape())?;
    let numel = factor.numel();
    let grid = rec.grid_1d((numel as u64).div_ceil(256));
    let p = ApplyParams {
        numel: numel as u32,
        branch,
        grid_x: grid[0],
        _pad: 0,
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    rec.dispatch(
        &MASKS,
        "apply_mask",
        &[],
        &[
            (7, &uniform),
            (4, &masks.binding()),
            (5, &factor.binding()),
            (6, &out.binding()),
        ],
        grid,
    )?;
    Ok(out)
}

/// f64 CPU references.
pub mod cpu {
    use super::Factor;

    /// `sum_i mask_i * stacked_i` with masks as 0/1 per branch (`[rows, cols]` each).
    pub fn masked_sum(
        masks: &[Vec<u8>],
        factor: Factor,
        stacked: &[f32],
        rows: usize,
        cols: usize,
    ) -> Vec<f64> {
        let d = masks.len();
        let mut out = vec![0.0; rows * cols];
        for (i, m) in masks.iter().enumerate() {
            for row in 0..rows {
                for col in 0..cols {
                    let src = match factor {
                        Factor::A => (i * rows + row) * cols + col,
                        Factor::B => row * d * cols + i * cols + col,
                    };
                    if m[row * cols + col] != 0 {
                        out[row * cols + col] += stacked[src] as f64;
                    }
                }
            }
        }
        out
    }
}
