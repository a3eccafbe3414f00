//! The tokenizer built from GGUF metadata (`models::llama::LlamaTokenizer`): a hand-built
//! byte-level vocabulary with merges and a control token, errors naming the key, and the
//! SmolLM2 file of scripts/fetch-smollm2.sh against transformers' ids
//! (tests/data/smollm2-tokens-golden.json, from scripts/make_smollm2_tokens_golden.py);
//! skipped when the file is absent unless `CAPABOOST_REQUIRE_MODEL=1` and `CAPABOOST_GGUF`
//! is set.

mod common;

use capaboost::models::llama::LlamaTokenizer;
use capaboost::runtime::gguf::write::Writer;
use capaboost::runtime::gguf::{Gguf, Value, ValueType};

/// GPT-2's byte alphabet, written out independently of the crate's.
fn alphabet() -> Vec<String> {
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            if printable {
                char::from_u32(b).unwrap().to_string()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap().to_string()
            }
        })
        .collect()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(
        ValueType::String,
        v.iter().map(|s| Value::String(s.to_string())).collect(),
    )
}

/// 256 byte tokens, then `ab`, `Ġa`, `Ġab`, and the control token `<|end|>` (id 259).
fn tiny(edit: impl Fn(&mut Writer)) -> capaboost::Result<LlamaTokenizer> {
    let mut tokens = alphabet();
    tokens.extend(["ab", "Ġa", "Ġab", "<|end|>"].map(String::from));
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i == 259 { 3 } else { 1 }))
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut w = Writer::new();
    w.kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::String("smollm".into()))
        .kv("tokenizer.ggml.tokens", strings(&refs))
        .kv(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types),
        )
        .kv("tokenizer.ggml.merges", strings(&["Ġ a", "a b", "Ġa b"]))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(259))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(259));
    edit(&mut w);
    let g = Gguf::from_bytes("tiny.gguf", w.to_bytes())?;
    LlamaTokenizer::from_gguf(&g)
}

fn set(w: &mut Writer, key: &str, v: Value) {
    let slot = w.metadata.iter_mut().find(|(k, _)| k == key).unwrap();
    slot.1 = v;
}

#[test]
fn tiny_vocabulary_merges_and_control_tokens() {
    let t = tiny(|_| {}).unwrap();
    assert_eq!(
        (t.vocab_size(), t.bos, t.eos, t.add_bos),
        (260, Some(259), Some(259), false)
    );
    let ids = t.encode("ab ab<|end|>b").unwrap();
    assert_eq!(ids, [256, 258, 259, b'b' as u32]);
    assert_eq!(t.decode(&ids, false).unwrap(), "ab ab<|end|>b");
    assert_eq!(t.decode(&ids, true).unwrap(), "ab abb");
    // Bytes outside ASCII go through the byte alphabet: é is C3 A9.
    let e = t.encode("é").unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(t.decode(&e, false).unwrap(), "é");
    let t = tiny(|w| {
        w.kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    })
    .unwrap();
    assert_eq!(t.encode("ab").unwrap(), [259, 256]);
}

#[test]
fn unsupported_or_malformed_metadata_names_the_key() {
    let err = |f: &dyn Fn(&mut Writer)| tiny(f).unwrap_err().to_string();
    let e = err(&|w| set(w, "tokenizer.ggml.model", Value::String("llama".into())));
    assert!(e.contains("tokenizer.ggml.model 'llama'"), "{e}");
    let e = err(&|w| set(w, "tokenizer.ggml.pre", Value::String("llama-bpe".into())));
    assert!(
        e.contains("tokenizer.ggml.pre 'llama-bpe'") && e.contains("smollm"),
        "{e}"
    );
    let e = err(&|w| set(w, "tokenizer.ggml.merges", strings(&["ab"])));
    assert!(e.contains("tokenizer.ggml.merges[0]"), "{e}");
    let e = err(&|w| set(w, "tokenizer.ggml.eos_token_id", Value::U32(9999)));
    assert!(e.contains("tokenizer.ggml.eos_token_id = 9999"), "{e}");
    let e = err(&|w| {
        set(
            w,
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, vec![]),
        )
    });
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
    let e = err(&|w| set(w, "tokenizer.ggml.tokens", Value::U8(1)));
    assert!(e.contains("'tokenizer.ggml.tokens'"), "{e}");
    let e = err(&|w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.model"));
    assert!(e.contains("'tokenizer.ggml.model' is missing"), "{e}");
}

#[test]
fn smollm2_ids_match_transformers() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    let t = LlamaTokenizer::from_gguf(&g).unwrap();
    let gold: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/smollm2-tokens-golden.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(t.vocab_size() as u64, gold["vocab_size"].as_u64().unwrap());
    assert_eq!(t.bos.map(u64::from), gold["bos_token_id"].as_u64());
    assert_eq!(t.eos.map(u64::from), gold["eos_token_id"].as_u64());
    assert_eq!(t.token_id("<|im_end|>"), Some(2));
    let cases = gold["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let prompt = c["prompt"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = t.encode(prompt).unwrap();
        assert_eq!(ids, want, "{prompt:?}");
        assert_eq!(
            t.decode(&ids, false).unwrap(),
            c["decoded"].as_str().unwrap(),
            "{prompt:?}"
        );
    }
}
