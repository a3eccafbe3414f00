//! Shared helpers for the GPU tests: one device per test binary, fresh random inputs,
//! and comparison against f64 references.
#![allow(dead_code)]

use std::sync::OnceLock;

use capaboost::Gpu;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Whether a missing adapter must fail the test (CI) instead of skipping it.
pub fn adapter_required() -> bool {
    std::env::var("CAPABOOST_REQUIRE_ADAPTER").is_ok_and(|v| v == "1")
}

fn make_gpu() -> Option<Gpu> {
    // The suite runs the GEMM variants `fixed` picks (by shape, without measuring or
    // caching) unless CAPABOOST_AUTOTUNE says otherwise, so that it is deterministic, fast
    // on lavapipe and no test pays for tuning; tests/gemm_variants.rs covers every variant,
    // the reference and the tuned path explicitly.
    if std::env::var_os("CAPABOOST_AUTOTUNE").is_none() {
        capaboost::kernels::gemm::tune::set_mode(Some(capaboost::kernels::gemm::tune::Mode::Fixed));
    }
    match Gpu::new() {
        Ok(g) => Some(g),
        Err(e) if adapter_required() => panic!("CAPABOOST_REQUIRE_ADAPTER=1 but: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// The GPU shared by the tests of one binary, or `None` (test skipped) where there is none.
pub fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(make_gpu).clone()
}

/// A wgpu instance limited to the backend `CAPABOOST_BACKEND` names (all backends when
/// unset), for tests that create their own device as a host program would: on the GL pass
/// of CI they then run on GL too.
pub fn host_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    let chosen = std::env::var(capaboost::runtime::gpu::ENV_BACKEND)
        .ok()
        .and_then(|b| capaboost::runtime::gpu::parse_backend(&b));
    if let Some(b) = chosen {
        desc.backends = wgpu::Backends::from(b);
    }
    wgpu::Instance::new(desc)
}

/// A device of its own, for tests that read pool or cache statistics.
pub fn fresh_gpu() -> Option<Gpu> {
    make_gpu()
}

/// A freshly seeded RNG; the seed is printed so a failure can be replayed with
/// `CAPABOOST_TEST_SEED`.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CAPABOOST_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("{test}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Largest elementwise relative error `|got - want| / max(|want|, floor)`.
pub fn max_rel_err(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(floor))
        .fold(0.0, f64::max)
}

/// Relative Frobenius error `||got - want|| / ||want||`.
pub fn rel_frobenius(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// A GEMM's f64 inputs: logical op(A), op(B), the old C, the bias.
pub type GemmInputs<'a> = (&'a [f64], &'a [f64], &'a [f64], Option<&'a [f64]>);

/// `got` against the f64 reference `alpha op(A) op(B) + beta C + bias` of `[m, k, n]`
/// (logical operands `a`, `b`, old `c`, `bias`), relative to the size of the terms summed:
/// `||got - want|| / ||scale||` with `scale` the reference over absolute values
/// (`|alpha| |A| |B| + |beta| |C| + |bias|`). Rounding error follows the terms' size; for an
/// output that cancels to near zero (likely enough with fresh random inputs on a 1x1x1
/// problem) `||want||` would be a bar no f32 kernel meets.
pub fn gemm_rel_err(
    got: &[f32],
    (a, b, c, bias): GemmInputs,
    mkn: [usize; 3],
    (alpha, beta): (f64, f64),
) -> f64 {
    use capaboost::kernels::gemm::cpu::gemm;
    let want = gemm(a, b, c, bias, mkn, alpha, beta);
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let abs_bias = bias.map(abs);
    let scale = gemm(
        &abs(a),
        &abs(b),
        &abs(c),
        abs_bias.as_deref(),
        mkn,
        alpha.abs(),
        beta.abs(),
    );
    let num: f64 = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = scale.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// `v` widened to f64.
pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// Central finite differences (step 1e-5) of `f` at `x`, one coordinate at a time.
pub fn fd_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    const H: f64 = 1e-5;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + H;
            let up = f(&xp);
            xp[i] = orig - H;
            let down = f(&xp);
            xp[i] = orig;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Largest absolute difference over the largest magnitude of `want`.
pub fn rel_max_abs(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The BERT model folder (`CAPABOOST_MODEL_DIR`, else where `scripts/fetch-minilm.sh`
/// puts it), or `None` with the reason printed; a panic under `CAPABOOST_REQUIRE_MODEL=1`.
pub fn model_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CAPABOOST_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(capaboost::models::bert::default_model_dir);
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    if std::env::var("CAPABOOST_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!(
            "CAPABOOST_REQUIRE_MODEL=1 but no model at {}: run scripts/fetch-minilm.sh",
            dir.display()
        );
    }
    eprintln!(
        "skipping: no model at {} (run scripts/fetch-minilm.sh)",
        dir.display()
    );
    None
}

/// The `capaboost` binary as the CLI tests run it: with the `fixed` GEMM choice unless
/// `CAPABOOST_AUTOTUNE` is set (deterministic, no tuning cache under the user's home).
pub fn capaboost_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_capaboost"));
    let tune = std::env::var("CAPABOOST_AUTOTUNE").unwrap_or_else(|_| "fixed".into());
    c.env("CAPABOOST_AUTOTUNE", tune);
    c
}

/// The SmolLM2-135M GGUF of scripts/fetch-smollm2.sh: `$CAPABOOST_GGUF`, else where the
/// script puts it. `None` (skip) when absent, unless `CAPABOOST_REQUIRE_MODEL=1` and
/// `CAPABOOST_GGUF` are set (as CI does): then a missing file fails the test.
pub fn smollm2_gguf() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("CAPABOOST_GGUF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("CAPABOOST_CACHE_DIR")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(|x| std::path::PathBuf::from(x).join("capaboost"))
                })
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/capaboost")
                });
            cache.join("SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("CAPABOOST_REQUIRE_MODEL").is_ok_and(|v| v == "1");
    if required && std::env::var_os("CAPABOOST_GGUF").is_some() {
        panic!(
            "CAPABOOST_REQUIRE_MODEL=1 but {} is missing",
            path.display()
        );
    }
    eprintln!("skipping: no {} (scripts/fetch-smollm2.sh)", path.display());
    None
}

/// Checks analytic gradients of GPU parameters against central differences of a GPU loss:
/// for every `stride`-th of `params` (name, tensor) with its gradient `grads[k]`, the entry
/// with the largest |gradient| (the most signal over the f32 loss's rounding) is moved by
/// `±h` (and put back) and `loss()` re-evaluated. Returns `(analytic, finite differences)`.
pub fn fd_at_largest(
    params: &[(String, capaboost::Tensor)],
    grads: &[Vec<f32>],
    (stride, h): (usize, f32),
    mut loss: impl FnMut() -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (k, (name, t)) in params.iter().enumerate().step_by(stride) {
        let g = &grads[k];
        let e = (0..g.len())
            .max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs()))
            .unwrap();
        let mut v = t.to_vec().unwrap();
        let x0 = v[e];
        let mut at = |x: f32| {
            v[e] = x;
            t.write(&v).unwrap();
            loss()
        };
        let fd = (at(x0 + h) - at(x0 - h)) / (2.0 * h as f64);
        at(x0);
        eprintln!("{name}[{e}]: {} vs {fd}", g[e]);
        got.push(g[e] as f64);
        want.push(fd);
    }
    (got, want)
}
