//! The shortest path from adapter to readback: upload two tensors, add them on the GPU,
//! read the sum back. Run with `cargo run --example quickstart`.

use capaboost::{Gpu, Tensor, kernels::elementwise};

fn main() -> capaboost::Result<()> {
    let gpu = Gpu::new()?;
    println!(
        "adapter: {} ({})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend.to_str()
    );
    let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0], &[5])?;
    let b = Tensor::from_slice(&gpu, &[0.5, 0.25, -1.0, 2.0, 8.0], &[5])?;
    // Both dispatches go into one command encoder and one submit.
    let scaled = gpu.run(|rec| {
        let sum = elementwise::add(rec, &a, &b)?;
        elementwise::scale(rec, &sum, 2.0)
    })?;
    println!("2 * (a + b) = {:?}", scaled.to_vec()?);
    Ok(())
}
