//! The f64 CPU reference of a Llama decoder from GGUF (`models::llama::cpu`) against
//! transformers: tests/data/tiny-llama.gguf (2 layers, grouped-query attention, rope theta
//! 500, attn_v Q8_0, attn_output and ffn_gate Q4_1, ffn_up Q4_0, the rest f32; from
//! scripts/make_tiny_llama_golden.py), whose logits transformers computed in float64 after
//! loading the same file with `gguf_file=` (the same dequantized weights, except that
//! transformers rounds each dequantized weight to f32: ~1e-7 relative, measured 1.4e-7):
//! every position's logits within 1e-6 of the largest; and configuration errors that name
//! the key.

mod common;

use capaboost::models::llama::{LlamaConfig, cpu};
use capaboost::runtime::gguf::write::Writer;
use capaboost::runtime::gguf::{Gguf, Value};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn tiny_llama_logits_match_transformers() {
    let g = Gguf::open(std::path::Path::new(&data("tiny-llama.gguf"))).unwrap();
    let c = LlamaConfig::from_gguf(&g).unwrap();
    assert_eq!(
        (c.layers, c.hidden, c.ffn, c.heads, c.kv_heads, c.head_dim),
        (2, 64, 96, 4, 2, 16)
    );
    assert_eq!((c.vocab, c.rope_theta, c.tied), (96, 500.0, false));
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("tiny-llama-golden.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = gold["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<f64> = gold["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got = cpu::logits(&g, &ids).unwrap();
    assert_eq!(got.len(), ids.len() * 96);
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(scale > 0.5, "degenerate logits");
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()))
        / scale;
    assert!(err < 1e-6, "max error {err} relative to {scale}");
}

#[test]
fn configuration_errors_name_the_key() {
    let bytes = std::fs::read(data("tiny-llama.gguf")).unwrap();
    let g = Gguf::from_bytes("tiny.gguf", bytes).unwrap();
    let edit = |key: &str, v: Option<Value>| {
        let mut w = Writer::new();
        for (k, val) in &g.metadata {
            if k != key {
                w.kv(k, val.clone());
            }
        }
        if let Some(v) = v {
            w.kv(key, v);
        }
        for t in &g.tensors {
            w.tensor(&t.name, &t.shape(), t.ty, g.raw(&t.name).unwrap())
                .unwrap();
        }
        let g2 = Gguf::from_bytes("edited.gguf", w.to_bytes()).unwrap();
        LlamaConfig::from_gguf(&g2)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(edit("general.alignment", None), Ok(()));
    let e = edit("general.architecture", Some(Value::String("qwen2".into()))).unwrap_err();
    assert!(
        e.contains("edited.gguf") && e.contains("general.architecture 'qwen2'"),
        "{e}"
    );
    let e = edit("llama.attention.head_count_kv", Some(Value::U32(3))).unwrap_err();
    assert!(e.contains("head_count_kv 3"), "{e}");
    let e = edit(
        "llama.rope.scaling.type",
        Some(Value::String("yarn".into())),
    )
    .unwrap_err();
    assert!(e.contains("llama.rope.scaling.type"), "{e}");
    let e = edit("llama.block_count", None).unwrap_err();
    assert!(e.contains("'llama.block_count' is missing"), "{e}");
    let e = cpu::logits(&g, &[96]).unwrap_err().to_string();
    assert!(e.contains("token id 96"), "{e}");
}

/// SmolLM2 (30 layers, 9/3 heads, tied Q8_0 head) on one prompt: the last position's 20
/// largest logits and 64 probes against transformers (tests/data/smollm2-logits-golden.json
/// from scripts/make_smollm2_logits_golden.py), within 1e-5 of the largest: the same
/// dequantized weights, f64 against transformers' f32-rounded weights over 30 layers.
#[test]
fn smollm2_last_logits_match_transformers() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    let c = LlamaConfig::from_gguf(&g).unwrap();
    assert_eq!(
        (c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab, c.tied),
        (30, 9, 3, 64, 49152, true)
    );
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("smollm2-logits-golden.json")).unwrap())
            .unwrap();
    let list = |k: &str| -> Vec<f64> {
        gold[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let ids: Vec<u32> = list("ids").iter().map(|&v| v as u32).collect();
    let start = std::time::Instant::now();
    let logits = cpu::logits(&g, &ids).unwrap();
    eprintln!(
        "f64 reference: {} tokens in {:.1} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    let last = &logits[(ids.len() - 1) * c.vocab..];
    let scale = list("top_logits")[0].abs();
    for (idk, valk) in [("top_ids", "top_logits"), ("probe_ids", "probe_logits")] {
        for (id, want) in list(idk).iter().zip(list(valk)) {
            let err = (last[*id as usize] - want).abs() / scale;
            assert!(err < 1e-5, "{idk} {id}: {} vs {want}", last[*id as usize]);
        }
    }
    let argmax = (0..c.vocab)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    assert_eq!(argmax as f64, list("top_ids")[0]);
}
