//! tests/data/tiny-llama.gguf with a usable tokenizer: its 96 token rows renamed to
//! `<unk>`, the ChatML specials `<|im_start|>` (BOS) and `<|im_end|>` (EOS), space, newline
//! and 91 printable ASCII characters (not `` ` ``, `^`, `~`), no merges (one token per
//! character), and a ChatML chat template. The weights are the original's, so logits
//! are meaningless but deterministic: enough to drive the causal-LM pipeline end to end.

use capaboost::runtime::gguf::write::Writer;
use capaboost::runtime::gguf::{Gguf, Value, ValueType};

/// The ChatML template of the tiny chat model (SmolLM2's, without its default system
/// turn).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn tokens() -> (Vec<Value>, Vec<Value>) {
    let mut t: Vec<String> = ["<unk>", "<|im_start|>", "<|im_end|>", "\u{120}", "\u{10a}"]
        .map(String::from)
        .to_vec();
    t.extend(
        ('!'..='~')
            .filter(|c| !"`^~".contains(*c))
            .map(|c| c.to_string()),
    );
    assert_eq!(t.len(), 96);
    let types = (0..96)
        .map(|i| {
            Value::I32(match i {
                0 => 2,
                1 | 2 => 3,
                _ => 1,
            })
        })
        .collect();
    (t.into_iter().map(Value::String).collect(), types)
}

/// Writes the model to `path`.
pub fn write(path: &std::path::Path) {
    let src = format!("{}/tests/data/tiny-llama.gguf", env!("CARGO_MANIFEST_DIR"));
    let g = Gguf::open(std::path::Path::new(&src)).unwrap();
    let mut w = Writer::new();
    for (k, v) in &g.metadata {
        if !k.starts_with("tokenizer.") {
            w.kv(k, v.clone());
        }
    }
    let (tok, types) = tokens();
    w.kv("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, tok),
    );
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    );
    w.kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.kv("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.kv("tokenizer.chat_template", Value::String(CHATML.into()));
    for t in &g.tensors {
        w.tensor(&t.name, &t.shape(), t.ty, g.raw(&t.name).unwrap())
            .unwrap();
    }
    w.write(path).unwrap();
}
