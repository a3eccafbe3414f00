//! What d buys before training: the masks, their coverage 1-(1-p)^d, and the rank of the
//! merged update for a chosen r, d, p and mask kind.
//! `cargo run --example mask_explorer -- [r] [d] [p] [exact|bernoulli|2:4] [n]`.

use capaboost::kernels::capaboost::{Adapter, LayerMasks, cpu};
use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::{Gpu, Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--smoke")
        .collect();
    let r: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(4);
    let d: u32 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(4);
    let p: f64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(0.5);
    let kind = MaskKind::parse(args.get(3).map_or("exact", String::as_str))?;
    let n: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(64);
    let gpu = Gpu::new()?;
    let masks =
        gpu.run(|rec| LayerMasks::generate(rec, &MaskConfig::new(kind, d, p, 0), 0, r, n, n))?;
    let (ma, mb) = masks.to_u8()?;
    println!("r = {r}, d = {d}, p = {p}, {kind:?} masks on a {n}x{n} layer\n");
    for (i, m) in ma.iter().enumerate().take(4) {
        println!("M_{} (first 48 columns of lora_A's masks):", i + 1);
        for row in m.chunks(n) {
            println!(
                "  {}",
                row.iter()
                    .take(48)
                    .map(|&b| if b == 1 { '#' } else { '.' })
                    .collect::<String>()
            );
        }
    }
    let numel = r * n;
    let covered =
        (0..numel).filter(|&e| ma.iter().any(|m| m[e] == 1)).count() as f64 / numel as f64;
    let numel_b = n * r;
    let covered_b = (0..numel_b)
        .filter(|&e| mb.iter().any(|m| m[e] == 1))
        .count() as f64
        / numel_b as f64;
    println!(
        "\ncoverage: lora_A {covered:.4}, lora_B {covered_b:.4} (expected 1-(1-p)^d = {:.4})",
        1.0 - (1.0 - p).powi(d as i32)
    );
    let mut rng = StdRng::seed_from_u64(1);
    let a: Vec<f32> = (0..r * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..n * r).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ta = Tensor::from_slice(&gpu, &a, &[r, n])?;
    let tb = Tensor::from_slice(&gpu, &b, &[n, r])?;
    let dw = gpu
        .run(|rec| Adapter::new(&ta, &tb, &masks, 1.0).delta_weight(rec))?
        .to_vec()?;
    let dw: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
    println!(
        "rank of the merged update: {} (LoRA r = {r}; at most min(d r, n) = {})",
        cpu::rank(&dw, n, n, 1e-4),
        (d as usize * r).min(n)
    );
    Ok(())
}
