//! The application's one door into the CapaBoost layer's API: reading an adapted layer's
//! factors and masks, its update `delta_W`, and merging it into the base weight. Export,
//! merge and the demo go through here, so a change of that API is a change of this file.

use crate::models::common::{AdaptedEncoder, Proj};
use crate::nn::modules::CapaBoostLinear;
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::export::{PeftLora, capaboost_as_lora};

/// Every adapted projection of the encoder with its module path as PEFT names it, in
/// layer order.
pub fn adapted_layers(encoder: &dyn AdaptedEncoder) -> Vec<(String, &CapaBoostLinear)> {
    let mut out = Vec::new();
    for (i, proj) in encoder.projections().into_iter().enumerate() {
        for (k, p) in proj.iter().enumerate() {
            if let Proj::Adapted(l) = p {
                out.push((encoder.peft_module_name(i, k), l.as_ref()));
            }
        }
    }
    out
}

/// The layer's update as the equal LoRA of rank `d r` (for PEFT), and its scale `s`.
pub fn as_peft_lora(module: &str, l: &CapaBoostLinear) -> Result<(PeftLora, f32)> {
    let (ma, mb) = l.masks.to_u8()?;
    let (in_f, out_f) = (l.base.in_features(), l.base.out_features());
    let lora = capaboost_as_lora(
        module,
        &l.lora_a.to_vec()?,
        &l.lora_b.to_vec()?,
        l.config.r,
        in_f,
        out_f,
        &ma,
        &mb,
    )?;
    Ok((lora, l.config.scale()))
}

/// `delta_W = s sum_i (B*N_i)(A*M_i)`, `[out, in]`.
pub fn delta_weight(gpu: &Gpu, l: &CapaBoostLinear) -> Result<Tensor> {
    gpu.run(|rec| l.adapter().delta_weight(rec))
}

/// Folds every adapter's update into its base weight (the projections stay adapted, with
/// the merged base).
pub fn merge_all(gpu: &Gpu, encoder: &mut dyn AdaptedEncoder) -> Result<()> {
    for proj in encoder.projections_mut() {
        for p in proj.iter_mut() {
            if let Proj::Adapted(l) = p {
                l.merge(gpu)?;
            }
        }
    }
    Ok(())
}
