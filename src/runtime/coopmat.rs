//! Cooperative matrices (wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX`): which configurations an
//! adapter lists, which of them the crate may use (`CAPABOOST_COOP`), and what the device
//! request adds for them.
//!
//! A configuration is usable ([`usable`]) when it is square (`M = N = K`, 8 or 16: the
//! sizes WGSL's `coop_mat8x8` / `coop_mat16x16` name), accumulates in f32, takes f32 inputs
//! or f16 ones (then `SHADER_F16` is needed) and the device also has `SUBGROUP` (the kernel
//! assigns tiles by `subgroup_id`). The feature is experimental: it is requested, with
//! wgpu's [`wgpu::ExperimentalFeatures`] token, only where the adapter lists a usable
//! configuration and the policy allows one, so on every other device (lavapipe, GL, DX12,
//! a GPU without matrix units) the device request is what it was without this module.

use std::sync::OnceLock;

use crate::runtime::error::{Error, Result};

/// Environment variable: which cooperative-matrix kernels the crate may use.
pub const ENV_COOP: &str = "CAPABOOST_COOP";

/// What `CAPABOOST_COOP` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoopPolicy {
    /// Never: the experimental feature is not even requested.
    Off,
    /// Configurations with f32 inputs (Metal's 8x8x8 f32): as accurate as the f32 kernels.
    /// The default.
    F32,
    /// Also configurations with f16 inputs and f32 accumulation (the 16x16x16 tensor-core
    /// shape of NVIDIA, AMD and Intel on Vulkan). Opt-in: each operand is rounded to f16 while
    /// staged, so values under about 6e-8 become zero and values over 65504 become infinite,
    /// which the autotuner's check on synthetic data in [-1, 1] cannot see (gradients that
    /// small are common in training).
    F16,
}

/// Parses a `CAPABOOST_COOP` value (`None` or empty: [`CoopPolicy::F32`]).
pub fn parse_policy(v: Option<&str>) -> Result<CoopPolicy> {
    match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("f32") | Some("on") => Ok(CoopPolicy::F32),
        Some("off") | Some("0") => Ok(CoopPolicy::Off),
        Some("f16") => Ok(CoopPolicy::F16),
        Some(other) => Err(Error::BadEnv {
            name: ENV_COOP,
            value: other.to_string(),
            reason: "expected off, f32 or f16".into(),
        }),
    }
}

/// The policy in force: `CAPABOOST_COOP`, read once (an invalid value warns and means
/// [`CoopPolicy::F32`]).
pub fn policy() -> CoopPolicy {
    static P: OnceLock<CoopPolicy> = OnceLock::new();
    *P.get_or_init(|| {
        parse_policy(std::env::var(ENV_COOP).ok().as_deref()).unwrap_or_else(|e| {
            eprintln!("warning: {e}; cooperative matrices limited to f32 inputs");
            CoopPolicy::F32
        })
    })
}

/// Element type of the A and B tiles of a usable configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoopInput {
    /// f16 inputs (rounded from the f32 operands while staged), f32 accumulation.
    F16,
    /// f32 inputs and accumulation.
    F32,
}

/// A configuration the crate's cooperative-matrix GEMM can use: `size x size x size` tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopShape {
    /// M = N = K of one cooperative multiply-add: 8 or 16.
    pub size: u32,
    /// Element type of A and B (C is f32).
    pub input: CoopInput,
}

/// The usable shapes among `props` on a device with `features`, under `policy` (see the
/// module docs), each once, in the order listed.
pub fn usable(
    props: &[wgpu::CooperativeMatrixProperties],
    features: wgpu::Features,
    policy: CoopPolicy,
) -> Vec<CoopShape> {
    use wgpu::CooperativeScalarType as T;
    if policy == CoopPolicy::Off || !features.contains(wgpu::Features::SUBGROUP) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in props {
        let square = p.m_size == p.n_size && p.n_size == p.k_size;
        let input = match p.ab_type {
            T::F32 => CoopInput::F32,
            T::F16
                if policy == CoopPolicy::F16 && features.contains(wgpu::Features::SHADER_F16) =>
            {
                CoopInput::F16
            }
            _ => continue,
        };
        let shape = CoopShape {
            size: p.m_size,
            input,
        };
        if square
            && matches!(p.m_size, 8 | 16)
            && p.cr_type == T::F32
            && !p.saturating_accumulation
            && !out.contains(&shape)
        {
            out.push(shape);
        }
    }
    out
}

/// What the device request adds for cooperative matrices on `adapter`: the feature and the
/// experimental token where a usable configuration is listed (else nothing), and the
/// adapter's list (kept by the [`crate::Gpu`]).
pub(crate) fn request(
    adapter: &wgpu::Adapter,
    wanted: wgpu::Features,
) -> (
    wgpu::Features,
    wgpu::ExperimentalFeatures,
    Vec<wgpu::CooperativeMatrixProperties>,
) {
    let feature = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    if !adapter.features().contains(feature) {
        return (
            wgpu::Features::empty(),
            wgpu::ExperimentalFeatures::disabled(),
            Vec::new(),
        );
    }
    let props = adapter.cooperative_matrix_properties();
    if usable(&props, adapter.features() & wanted, policy()).is_empty() {
        return (
            wgpu::Features::empty(),
            wgpu::ExperimentalFeatures::disabled(),
            Vec::new(),
        );
    }
    // SAFETY: the token only allows requesting features named EXPERIMENTAL_*; this one is
    // requested alone, where the adapter lists a configuration the crate's kernel uses, and
    // `CAPABOOST_COOP=off` turns it off. Its kernel's results are checked against the
    // reference on the device before it is used (`kernels::gemm::tune`).
    let token = unsafe { wgpu::ExperimentalFeatures::enabled() };
    (feature, token, props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_policy() {
        assert_eq!(parse_policy(None).unwrap(), CoopPolicy::F32);
        assert_eq!(parse_policy(Some(" OFF ")).unwrap(), CoopPolicy::Off);
        assert_eq!(parse_policy(Some("f16")).unwrap(), CoopPolicy::F16);
        let e = parse_policy(Some("bf16")).unwrap_err().to_string();
        assert!(e.contains(ENV_COOP) && e.contains("bf16"), "{e}");
    }
}
