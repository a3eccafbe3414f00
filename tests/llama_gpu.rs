//! The Llama decoder on the GPU tape (`models::llama::Llama`) against the f64 reference
//! (`models::llama::cpu`) and the committed transformers goldens: tests/data/tiny-llama.gguf
//! (2 layers, grouped-query attention 4/2 heads, Q8_0/Q4_0/Q4_1 and f32 weights) for every
//! logit of every position; decoding with a KV cache against the full forward; the gradient
//! with respect to the embeddings through the frozen quantized layers against finite
//! differences of the f64 reference; and SmolLM2 (scripts/fetch-smollm2.sh) on the logits
//! golden's prompt, skipped when the file is absent unless `CAPABOOST_REQUIRE_MODEL=1` and
//! `CAPABOOST_GGUF` are set.
//!
//! Tolerances: the GPU computes in f32 from the same decoded weights, so the differences
//! are f32 roundings through the layers: below 1e-4 of the largest logit on tiny-llama
//! (measured ~1e-6), 1e-3 absolute on SmolLM2's top-20 logits (30 layers; measured in the
//! README), gradients within 1e-3 of the largest.

mod common;

use capaboost::Tensor;
use capaboost::models::llama::{KvCache, Llama, cpu};
use capaboost::nn::Graph;
use capaboost::runtime::gguf::Gguf;
use common::{random_vec, rel_max_abs, to64};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> Gguf {
    Gguf::from_bytes(
        "tiny-llama.gguf",
        std::fs::read(data("tiny-llama.gguf")).unwrap(),
    )
    .unwrap()
}

fn golden(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

fn list(v: &serde_json::Value, k: &str) -> Vec<f64> {
    v[k].as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn gpu_logits(gpu: &capaboost::Gpu, m: &Llama, ids: &[u32]) -> Vec<f64> {
    let mut g = Graph::no_grad(gpu);
    let y = m.forward(&mut g, ids).unwrap();
    g.submit().unwrap();
    to64(&y.value().to_vec().unwrap())
}

#[test]
fn tiny_llama_gpu_logits_match_the_reference_and_transformers() {
    let Some(gpu) = common::gpu() else { return };
    let gg = tiny();
    let m = Llama::load(&gpu, &gg).unwrap();
    let gold = golden("tiny-llama-golden.json");
    let ids: Vec<u32> = list(&gold, "ids").iter().map(|&v| v as u32).collect();
    let got = gpu_logits(&gpu, &m, &ids);
    let want = cpu::logits(&gg, &ids).unwrap();
    assert_eq!(got.len(), ids.len() * 96);
    let e_ref = rel_max_abs(&got, &want);
    let e_hf = rel_max_abs(&got, &list(&gold, "logits"));
    eprintln!("tiny-llama GPU vs f64 reference {e_ref:.2e}, vs transformers {e_hf:.2e}");
    assert!(e_ref < 1e-4 && e_hf < 1e-4, "{e_ref} {e_hf}");
    // Bad input names the culprit instead of panicking.
    let mut g = Graph::no_grad(&gpu);
    let e = m.forward(&mut g, &[1, 96]).unwrap_err().to_string();
    assert!(e.contains("96"), "{e}");
    assert!(m.forward(&mut g, &[]).is_err());
}

#[test]
fn kv_cache_decoding_matches_the_full_forward() {
    let Some(gpu) = common::gpu() else { return };
    let gg = tiny();
    let m = Llama::load(&gpu, &gg).unwrap();
    let ids: Vec<u32> = vec![5, 17, 42, 3, 90, 11, 64, 8, 33, 71, 2];
    let full = gpu_logits(&gpu, &m, &ids);
    let mut cache = KvCache::new(m.config.layers);
    // A prompt of 4, a chunk of 3 (a causal mask with an offset), then one at a time.
    let mut at = 0;
    for len in [4, 3, 1, 1, 1, 1] {
        let chunk = &ids[at..at + len];
        let mut g = Graph::no_grad(&gpu);
        let x = m.embed(&mut g, chunk).unwrap();
        let h = m.blocks(&mut g, &x, at, Some(&mut cache)).unwrap();
        let y = m.logits(&mut g, &h).unwrap();
        g.submit().unwrap();
        let got = to64(&y.value().to_vec().unwrap());
        let want = &full[at * 96..(at + len) * 96];
        let e = rel_max_abs(&got, want);
        assert!(e < 1e-5, "positions {at}..{}: {e}", at + len);
        at += len;
        assert_eq!(cache.len(), at);
    }
    let mut g = Graph::no_grad(&gpu);
    let x = m.embed(&mut g, &[1]).unwrap();
    let e = m.blocks(&mut g, &x, 3, Some(&mut cache)).unwrap_err();
    assert!(e.to_string().contains("KV cache of 11 positions"), "{e}");
}

#[test]
fn gradient_through_the_frozen_layers_matches_finite_differences() {
    let Some(gpu) = common::gpu() else { return };
    let gg = tiny();
    let m = Llama::load(&gpu, &gg).unwrap();
    let (t, h, v) = (5, 64, 96);
    let mut rng = common::rng("llama_gpu_grad");
    let xv = random_vec(&mut rng, t * h, 1.0);
    let rv = random_vec(&mut rng, t * v, 1.0);
    let x = Tensor::from_slice(&gpu, &xv, &[t, h]).unwrap();
    let r = Tensor::from_slice(&gpu, &rv, &[t, v]).unwrap();
    let mut g = Graph::new(&gpu);
    let xp = g.param(&x);
    let hid = m.blocks(&mut g, &xp, 0, None).unwrap();
    let y = m.logits(&mut g, &hid).unwrap();
    let ri = g.input(&r);
    let yr = g.mul(&y, &ri).unwrap();
    let loss = g.sum(&yr).unwrap();
    let grads = g.backward(&loss).unwrap();
    g.submit().unwrap();
    let got = to64(&grads.of(&x).unwrap().to_vec().unwrap());
    let (x64, r64) = (to64(&xv), to64(&rv));
    let f = |x: &[f64]| -> f64 {
        let l = cpu::logits_of_embeddings(&gg, x.to_vec()).unwrap();
        l.iter().zip(&r64).map(|(a, b)| a * b).sum()
    };
    let want = common::fd_grad(&x64, f);
    let e = rel_max_abs(&got, &want);
    eprintln!("d loss / d x: GPU vs f64 finite differences {e:.2e}");
    assert!(e < 1e-3, "{e}");
}

#[test]
fn smollm2_gpu_top_logits_match_transformers() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let gg = Gguf::open(&path).unwrap();
    let m = Llama::load(&gpu, &gg).unwrap();
    eprintln!("SmolLM2 base on the GPU: {} bytes", m.base_bytes());
    let gold = golden("smollm2-logits-golden.json");
    let ids: Vec<u32> = list(&gold, "ids").iter().map(|&v| v as u32).collect();
    let start = std::time::Instant::now();
    let logits = gpu_logits(&gpu, &m, &ids);
    eprintln!(
        "GPU forward of {} tokens: {:.2} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    let vocab = m.config.vocab;
    let last = &logits[(ids.len() - 1) * vocab..];
    let mut worst = (0.0f64, 0.0f64);
    for (idk, valk) in [("top_ids", "top_logits"), ("probe_ids", "probe_logits")] {
        for (id, want) in list(&gold, idk).iter().zip(list(&gold, valk)) {
            let err = (last[*id as usize] - want).abs();
            let w = if idk == "top_ids" {
                &mut worst.0
            } else {
                &mut worst.1
            };
            *w = w.max(err);
        }
    }
    eprintln!(
        "SmolLM2 GPU vs transformers: top-20 {:.2e}, probes {:.2e}",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-3 && worst.1 < 1e-3, "{worst:?}");
    let argmax = (0..vocab)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    assert_eq!(argmax as f64, list(&gold, "top_ids")[0]);
}
