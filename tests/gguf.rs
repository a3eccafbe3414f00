//! The GGUF reader (`runtime::gguf`): hand-built files in memory with every value type and
//! tensor type, every failure path (each names the key or tensor), truncation at every
//! length and random corruption (errors, never panics), and the SmolLM2 file of
//! scripts/fetch-smollm2.sh when present (`$CAPABOOST_GGUF`, default
//! ~/.cache/capaboost/SmolLM2-135M-Instruct.Q4_1.gguf; skipped when absent unless
//! `CAPABOOST_REQUIRE_MODEL=1` and `CAPABOOST_GGUF` is set).

mod common;

use capaboost::runtime::gguf::write::Writer;
use capaboost::runtime::gguf::{Gguf, TensorType, Value, ValueType};
use capaboost::runtime::half::f16_bits;
use capaboost::runtime::kquant::{self, KQuant};
use capaboost::runtime::quant::{self, BlockFormat};
use rand::Rng;

fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(1.5e-5)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo <|im_start|>".into())),
        ("t.u64", Value::U64(u64::MAX - 3)),
        ("t.i64", Value::I64(i64::MIN + 5)),
        ("t.f64", Value::F64(-2.25e100)),
        (
            "t.strings",
            Value::Array(
                ValueType::String,
                vec![Value::String("a".into()), Value::String("".into())],
            ),
        ),
        (
            "t.i32s",
            Value::Array(ValueType::I32, vec![Value::I32(-1), Value::I32(7)]),
        ),
        (
            "t.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)]),
                    Value::Array(ValueType::F64, vec![]),
                ],
            ),
        ),
    ]
}

/// A file with every value type, and one tensor of each type: `[3, 64]` weights (quantized
/// from `w`), an f32 `[5]` and an f16 `[2, 3]`.
fn sample(w: &[f32], alignment: Option<u32>) -> (Writer, Vec<f32>) {
    let mut wr = Writer::new();
    wr.kv("general.architecture", Value::String("llama".into()));
    if let Some(a) = alignment {
        wr.kv("general.alignment", Value::U32(a));
    }
    for (k, v) in all_values() {
        wr.kv(k, v);
    }
    let f32s = [1.0f32, -2.5, 3.25, 0.0, 7.0];
    let f16s = [0.5f32, -1.0, 2.0, 65504.0, -0.25, 1.0 / 1024.0];
    wr.tensor(
        "f32",
        &[5],
        TensorType::F32,
        bytemuck::cast_slice(&f32s).to_vec(),
    )
    .unwrap();
    let half: Vec<u8> = f16s
        .iter()
        .flat_map(|&x| f16_bits(x).to_le_bytes())
        .collect();
    wr.tensor("f16", &[2, 3], TensorType::F16, half).unwrap();
    for f in BlockFormat::ALL {
        let q = quant::quantize(f, w).unwrap();
        wr.tensor(f.name(), &[3, 64], TensorType::Quant(f), q)
            .unwrap();
    }
    (wr, f16s.to_vec())
}

fn parse(wr: &Writer) -> capaboost::Result<Gguf> {
    Gguf::from_bytes("mem.gguf", wr.to_bytes())
}

fn err_of(bytes: Vec<u8>) -> String {
    match Gguf::from_bytes("mem.gguf", bytes) {
        Ok(_) => panic!("corrupt file accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trip_every_value_and_tensor_type() {
    let mut rng = common::rng("gguf round trip");
    let w = common::random_vec(&mut rng, 3 * 64, 2.0);
    for alignment in [None, Some(64), Some(8)] {
        let (wr, f16s) = sample(&w, alignment);
        let g = parse(&wr).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, alignment.unwrap_or(32) as u64);
        for (k, v) in all_values() {
            assert_eq!(g.get(k), Some(&v), "{k}");
        }
        assert_eq!(g.strings("t.strings").unwrap(), ["a", ""]);
        assert_eq!(g.usize("t.u32").unwrap(), 4_000_000_000);
        assert_eq!(g.str("general.architecture").unwrap(), "llama");
        assert_eq!(g.tensor_f32("f32").unwrap(), [1.0, -2.5, 3.25, 0.0, 7.0]);
        assert_eq!(g.tensor_f32("f16").unwrap(), f16s);
        assert_eq!(g.tensor("f16").unwrap().shape(), [2, 3]);
        for t in &g.tensors {
            assert_eq!(t.offset % g.alignment, 0, "{}", t.name);
            assert!(t.offset >= g.data_offset);
        }
        for f in BlockFormat::ALL {
            let info = g.tensor(f.name()).unwrap();
            assert_eq!(
                (info.dims.as_slice(), info.ty),
                (&[64u64, 3][..], TensorType::Quant(f))
            );
            let raw = g.raw(f.name()).unwrap();
            assert_eq!(raw, quant::quantize(f, &w).unwrap());
            let want = quant::dequantize_f64(f, "w", &raw, w.len()).unwrap();
            let got = g.tensor_f32(f.name()).unwrap();
            let step = if f == BlockFormat::Q8_0 {
                2.0 / 127.0
            } else {
                4.0 / 15.0 * 1.01
            };
            for ((a, b), x) in got.iter().zip(&want).zip(&w) {
                assert_eq!(*a, *b as f32);
                assert!((*b - *x as f64).abs() <= step, "{f}: {b} vs {x}");
            }
        }
    }
}

#[test]
fn typed_getters_name_the_key() {
    let (wr, _) = sample(&[0.5; 192], None);
    let g = parse(&wr).unwrap();
    let e = g.usize("llama.block_count").unwrap_err().to_string();
    assert!(e.contains("'llama.block_count' is missing"), "{e}");
    let e = g.usize("t.i8").unwrap_err().to_string();
    assert!(e.contains("'t.i8'") && e.contains("non-negative"), "{e}");
    let e = g.str("t.u8").unwrap_err().to_string();
    assert!(e.contains("'t.u8'") && e.contains("U8"), "{e}");
    let e = g.strings("t.i32s").unwrap_err().to_string();
    assert!(e.contains("'t.i32s'"), "{e}");
    let e = g.tensor("nope").unwrap_err().to_string();
    assert!(e.contains("mem.gguf") && e.contains("'nope'"), "{e}");
}

#[test]
fn header_errors_name_what_is_wrong() {
    let (wr, _) = sample(&[0.5; 192], None);
    let good = wr.to_bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert!(err_of(b).contains("not a GGUF file"));
    for (v, msg) in [
        (1u32, "version 1"),
        (3u32 << 24, "big-endian"),
        (9, "unknown GGUF version 9"),
    ] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let e = err_of(b);
        assert!(e.contains(msg), "{e}");
    }
    for (at, what) in [(8, "tensor count"), (16, "metadata count")] {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = err_of(b);
        assert!(e.contains(what) && e.contains("cannot fit"), "{e}");
    }
}

fn one_kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(value);
    b
}

#[test]
fn metadata_errors_name_the_key() {
    let cases: Vec<(u32, Vec<u8>, &str)> = vec![
        (13, vec![], "unknown value type 13"),
        (7, vec![2], "bool byte 2"),
        (8, u64::MAX.to_le_bytes().to_vec(), "truncated"),
        (
            8,
            [3u64.to_le_bytes().to_vec(), vec![0xff, 0xfe, 0x41]].concat(),
            "not UTF-8",
        ),
        (
            9,
            [4u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat(),
            "cannot fit",
        ),
        (
            9,
            [99u32.to_le_bytes(), [0; 4]].concat(),
            "unknown value type 99",
        ),
        (4, vec![1, 2], "truncated"),
    ];
    for (ty, value, msg) in cases {
        let e = err_of(one_kv("my.key", ty, &value));
        assert!(e.contains("'my.key'") && e.contains(msg), "{msg}: {e}");
    }
    // Arrays of arrays of arrays of arrays: deeper than accepted.
    let mut deep = Vec::new();
    for _ in 0..4 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    deep.extend_from_slice(&[0; 16]);
    let e = err_of(one_kv("deep", 9, &deep));
    assert!(e.contains("'deep'") && e.contains("nested"), "{e}");
    let mut wr = Writer::new();
    wr.kv("k", Value::U8(1)).kv("k", Value::U8(2));
    assert!(err_of(wr.to_bytes()).contains("'k' appears twice"));
    let mut wr = Writer::new();
    wr.kv("general.alignment", Value::U32(24));
    assert!(err_of(wr.to_bytes()).contains("'general.alignment'"));
}

#[test]
fn tensor_errors_name_the_tensor() {
    let (wr, _) = sample(&[0.25; 192], None);
    let with = |f: &dyn Fn(&mut Writer)| {
        let mut w = wr.clone();
        f(&mut w);
        err_of(w.to_bytes())
    };
    let e = with(&|w| w.tensors[2].type_id = 13);
    assert!(
        e.contains("'Q4_0'") && e.contains("Q5_K (id 13)") && e.contains("not supported"),
        "{e}"
    );
    let e = with(&|w| w.tensors[2].type_id = 12);
    assert!(
        e.contains("'Q4_0'") && e.contains("Q4_K") && e.contains("256"),
        "{e}"
    );
    let e = with(&|w| w.tensors[0].type_id = 77);
    assert!(e.contains("'f32'") && e.contains("unknown (id 77)"), "{e}");
    let e = with(&|w| w.tensors[1].dims = vec![1, 1, 1, 1, 6]);
    assert!(e.contains("'f16'") && e.contains("5 dimensions"), "{e}");
    let e = with(&|w| w.tensors[3].dims = vec![48, 4]);
    assert!(e.contains("'Q4_1'") && e.contains("whole blocks"), "{e}");
    let e = with(&|w| w.tensors[1].dims = vec![u64::MAX, 3]);
    assert!(e.contains("'f16'") && e.contains("no valid size"), "{e}");
    let e = with(&|w| w.tensors[4].offset = Some(1 << 40));
    assert!(e.contains("'Q8_0'") && e.contains("past the end"), "{e}");
    let e = with(&|w| w.tensors[4].offset = Some(u64::MAX - 31));
    assert!(e.contains("'Q8_0'") && e.contains("past the end"), "{e}");
    let e = with(&|w| w.tensors[2].offset = Some(4));
    assert!(e.contains("'Q4_0'") && e.contains("alignment 32"), "{e}");
    let e = with(&|w| w.tensors[1].name = "f32".into());
    assert!(e.contains("'f32' appears twice"), "{e}");
    let mut b = wr.to_bytes();
    b.truncate(b.len() - 1);
    let e = err_of(b);
    assert!(e.contains("'Q8_0'") && e.contains("past the end"), "{e}");
}

#[test]
fn every_truncation_and_random_corruption_is_an_error_not_a_panic() {
    let mut rng = common::rng("gguf corruption");
    let (wr, _) = sample(&common::random_vec(&mut rng, 192, 1.0), Some(16));
    let good = wr.to_bytes();
    let data_offset = parse(&wr).unwrap().data_offset as usize;
    for n in 0..data_offset {
        let e = err_of(good[..n].to_vec());
        assert!(
            e.contains("truncated") || e.contains("past the end") || e.contains("cannot fit"),
            "{n}: {e}"
        );
    }
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..data_offset);
            b[i] = rng.random();
        }
        if let Ok(g) = Gguf::from_bytes("mem.gguf", b) {
            for t in &g.tensors {
                let _ = g.tensor_f32(&t.name);
            }
        }
    }
}

/// Q4_K and Q6_K super-blocks of random bytes against the `gguf` package's numpy
/// dequantization (tests/data/kquant-golden.json, scripts/make_kquant_golden.py), which
/// computes in f32: within 1e-6 relative.
#[test]
fn k_quants_match_the_gguf_package() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kquant-golden.json");
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut wr = Writer::new();
    for (name, k) in [("Q4_K", KQuant::Q4K), ("Q6_K", KQuant::Q6K)] {
        let bytes: Vec<u8> = gold[name]["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        wr.tensor(name, &[2, 256], TensorType::KQuant(k), bytes)
            .unwrap();
    }
    let g = parse(&wr).unwrap();
    for name in ["Q4_K", "Q6_K"] {
        let want: Vec<f64> = gold[name]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = g.tensor_f32(name).unwrap();
        assert_eq!(got.len(), 512);
        assert!(want.iter().any(|v| v.abs() > 0.5), "{name}: degenerate");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*a as f64 - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: {a} vs {b}"
            );
        }
    }
    let e = kquant::dequantize_f64(KQuant::Q6K, "w", &[0; 209], 256)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'w'") && e.contains("210 bytes each"), "{e}");
}

#[test]
fn smollm2_header_tensors_and_metadata() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    assert_eq!((g.version, g.alignment, g.tensors.len()), (3, 32, 272));
    assert_eq!(g.str("general.architecture").unwrap(), "llama");
    assert_eq!(g.usize("llama.block_count").unwrap(), 30);
    assert_eq!(g.usize("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.usize("llama.attention.head_count").unwrap(), 9);
    assert_eq!(g.usize("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(g.usize("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(g.f64("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(g.strings("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(g.strings("tokenizer.ggml.merges").unwrap().len(), 48900);
    assert_eq!(g.str("tokenizer.ggml.pre").unwrap(), "smollm");
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.shape(), emb.ty),
        (vec![49152, 576], TensorType::Quant(BlockFormat::Q8_0))
    );
    let q = g.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.shape(), q.ty),
        (vec![576, 576], TensorType::Quant(BlockFormat::Q4_1))
    );
    assert_eq!(
        g.tensor("blk.29.ffn_down.weight").unwrap().shape(),
        [576, 1536]
    );
    assert_eq!(g.tensor("blk.0.attn_k.weight").unwrap().shape(), [192, 576]);
    assert_eq!(g.tensor("output_norm.weight").unwrap().ty, TensorType::F32);
    let mut counts = std::collections::BTreeMap::new();
    for t in &g.tensors {
        *counts.entry(t.ty.name()).or_insert(0) += 1;
    }
    assert_eq!(counts, [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)].into());
    let last = g.tensors.iter().map(|t| t.offset + t.bytes).max().unwrap();
    assert!(last <= g.file_len && g.file_len - last < 32);
    // Decoded values are finite and of a plausible scale.
    let w = g.tensor_f32("blk.0.attn_q.weight").unwrap();
    let rms = (w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64).sqrt();
    assert!(
        w.iter().all(|x| x.is_finite()) && rms > 1e-3 && rms < 1.0,
        "rms {rms}"
    );
    let norm = g.tensor_f32("blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm.len(), 576);
}
