//! A bounded, deterministic mutation fuzzer for the file readers a user's input reaches:
//! GLUE TSVs, SQuAD JSON, safetensors files, a BERT folder's `config.json` (and the whole
//! tiny BERT folder, on the GPU), a run's `config.json`, and causal-LM JSONL (read, then
//! tokenized with a tiny chat model's tokenizer and chat template).
//!
//! Each seed of `tests/fuzz_corpus/` is read as is and after `CAPABOOST_FUZZ_ITERS`
//! (default 150) mutations drawn from a fixed seed (`CAPABOOST_FUZZ_SEED` replays another
//! stream). The property: the reader never panics, and an error names the file it read
//! (the run config reader, given a value rather than a file, must give a message). A
//! failing input is written to the temp folder and its path printed.

mod common;
#[path = "common/tiny_chat.rs"]
mod tiny_chat;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use capaboost::models::bert::{Bert, BertConfig};
use capaboost::runtime::io::TensorFile;
use capaboost::tasks::config::TrainConfig;
use capaboost::tasks::glue::{self, ReadOptions};
use capaboost::tasks::squad::data::read_squad;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Bytes a mutation inserts or substitutes: separators, quotes, JSON punctuation, numbers
/// at and past the edges of every integer and float type, invalid UTF-8.
const TOKENS: &[&[u8]] = &[
    b"\t",
    b"\n",
    b"\r\n",
    b"\"",
    b"\\",
    b",",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"0",
    b"-1",
    b"1e400",
    b"NaN",
    b"-0.0",
    b"4294967296",
    b"18446744073709551615",
    b"99999999999999999999999",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\0",
];

fn iterations() -> usize {
    std::env::var("CAPABOOST_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

fn rng(name: &str) -> StdRng {
    let base: u64 = std::env::var("CAPABOOST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee);
    let h = name
        .bytes()
        .fold(base, |h, b| h.rotate_left(5) ^ u64::from(b));
    StdRng::seed_from_u64(h)
}

/// One random edit of `v`.
fn mutate(rng: &mut StdRng, v: &mut Vec<u8>) {
    let at = |rng: &mut StdRng, v: &Vec<u8>| rng.random_range(0..=v.len());
    match rng.random_range(0..8) {
        0 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            v[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = at(rng, v);
            let t = TOKENS[rng.random_range(0..TOKENS.len())];
            v.splice(i..i, t.iter().copied());
        }
        2 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            let j = (i + rng.random_range(1..16)).min(v.len());
            v.drain(i..j);
        }
        3 => {
            let i = at(rng, v);
            v.truncate(i);
        }
        4 if !v.is_empty() => {
            // Duplicate a range (a repeated line, key or tensor).
            let i = rng.random_range(0..v.len());
            let j = (i + rng.random_range(1..64)).min(v.len());
            let copy = v[i..j].to_vec();
            let k = at(rng, v);
            v.splice(k..k, copy);
        }
        5 => {
            // Replace a run of digits (a shape, an offset, a label) by an edge number.
            let digits: Vec<usize> = (0..v.len()).filter(|&i| v[i].is_ascii_digit()).collect();
            if let Some(&i) = digits.get(rng.random_range(0..digits.len().max(1))) {
                let j = (i..v.len())
                    .find(|&j| !v[j].is_ascii_digit())
                    .unwrap_or(v.len());
                let t = TOKENS[rng.random_range(12..20)];
                v.splice(i..j, t.iter().copied());
            }
        }
        6 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            v[i] = rng.random();
        }
        _ => {
            let i = at(rng, v);
            v.splice(i..i, std::iter::repeat_n(b'a', rng.random_range(1..300)));
        }
    }
}

/// Runs `read` on `seed` and on mutations of it, each written to `file` first. `read`
/// returns `Err(message)` for an error; the message must name `file` when `names_file`.
fn fuzz(
    name: &str,
    seed: &[u8],
    file: &Path,
    names_file: bool,
    read: impl Fn() -> Result<(), String>,
) {
    let mut rng = rng(name);
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    for i in 0..=iterations() {
        let mut input = seed.to_vec();
        if i > 0 {
            for _ in 0..rng.random_range(1..4) {
                mutate(&mut rng, &mut input);
            }
        }
        std::fs::write(file, &input).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(&read));
        let failure = match outcome {
            Err(_) => Some("panicked".to_string()),
            Ok(Err(m)) if m.trim().is_empty() => Some("an empty error message".into()),
            Ok(Err(m)) if names_file && !m.contains(&file_name) => {
                Some(format!("an error that does not name {file_name}: {m}"))
            }
            _ => None,
        };
        if let Some(f) = failure {
            let keep = std::env::temp_dir().join(format!("capaboost-fuzz-failure-{name}"));
            std::fs::write(&keep, &input).unwrap();
            panic!(
                "{name}, mutation {i}: {f}; input saved to {}",
                keep.display()
            );
        }
    }
}

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(kind);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", dir.display());
    v
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn glue_reader_never_panics() {
    let dir = scratch("glue");
    for (name, seed) in corpus("glue") {
        let task: glue::Task = name.split('-').next().unwrap().parse().unwrap();
        let file = dir.join("input.tsv");
        for (k, opts) in [
            ReadOptions::default(),
            ReadOptions {
                allow_unlabelled: true,
                limit: Some(2),
                ..ReadOptions::default()
            },
        ]
        .into_iter()
        .enumerate()
        {
            fuzz(&format!("glue-{name}-{k}"), &seed, &file, true, || {
                glue::read_split(&file, task, &opts)
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
        }
    }
}

#[test]
fn squad_reader_never_panics() {
    let dir = scratch("squad");
    for (name, seed) in corpus("squad") {
        let file = dir.join("input.json");
        fuzz(&format!("squad-{name}"), &seed, &file, true, || {
            read_squad(&file).map(drop).map_err(|e| e.to_string())
        });
    }
}

#[test]
fn safetensors_reader_never_panics() {
    let dir = scratch("st");
    for (name, seed) in corpus("safetensors") {
        let file = dir.join("input.safetensors");
        fuzz(&format!("st-{name}"), &seed, &file, true, || {
            let f = TensorFile::read(&file).map_err(|e| e.to_string())?;
            let names: Vec<String> = f.names().map(str::to_string).collect();
            for n in &names {
                // Every accessor on every tensor: Ok or an error naming the file.
                let shape = f.raw(n).map(|t| t.shape.clone()).unwrap_or_default();
                for r in [f.f32(n).map(drop), f.mask(n, &shape).map(drop)] {
                    r.map_err(|e| e.to_string()).or_else(|m| {
                        if m.contains("input.safetensors") {
                            Ok(())
                        } else {
                            Err(m)
                        }
                    })?;
                }
            }
            Ok(())
        });
    }
}

#[test]
fn bert_config_reader_never_panics() {
    let dir = scratch("bert-config");
    for (name, seed) in corpus("bert_config") {
        let file = dir.join("config.json");
        fuzz(&format!("bert-config-{name}"), &seed, &file, true, || {
            BertConfig::read(&dir).map(drop).map_err(|e| e.to_string())
        });
    }
}

#[test]
fn run_config_reader_never_panics() {
    let dir = scratch("run-config");
    for (name, seed) in corpus("run_config") {
        let file = dir.join("config.json");
        // from_json gets a parsed value; a file that is not JSON is the caller's error.
        fuzz(&format!("run-config-{name}"), &seed, &file, false, || {
            let Ok(v) = serde_json::from_slice(&std::fs::read(&file).unwrap()) else {
                return Ok(());
            };
            TrainConfig::from_json(v, &file)
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }
}

/// The whole loader on a tiny BERT folder: mutated weights and config, uploaded to the GPU.
#[test]
fn bert_loader_never_panics() {
    let Some(gpu) = common::gpu() else { return };
    let dir = scratch("bert-model");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/bert_model");
    let config = std::fs::read(seeds.join("config.json")).unwrap();
    let weights = std::fs::read(seeds.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let st = dir.join("model.safetensors");
    fuzz("bert-weights", &weights, &st, false, || {
        Bert::load(&gpu, &dir).map(drop).map_err(|e| e.to_string())
    });
    std::fs::write(&st, &weights).unwrap();
    fuzz(
        "bert-folder-config",
        &config,
        &dir.join("config.json"),
        false,
        || Bert::load(&gpu, &dir).map(drop).map_err(|e| e.to_string()),
    );
}

#[test]
fn causal_lm_jsonl_reader_and_encoder_never_panic() {
    use capaboost::models::llama::{ChatTemplate, LlamaTokenizer};
    use capaboost::runtime::gguf::Gguf;
    use capaboost::tasks::causal_lm::data::{Encoder, read_jsonl};
    let dir = scratch("jsonl");
    let model = dir.join("tiny-chat.gguf");
    tiny_chat::write(&model);
    let g = Gguf::open(&model).unwrap();
    let tok = LlamaTokenizer::from_gguf(&g).unwrap();
    let chat = ChatTemplate::from_gguf(&g, "<|im_start|>", "<|im_end|>").unwrap();
    let enc = Encoder {
        tok: &tok,
        chat: chat.as_ref(),
        max_len: 24,
    };
    for (name, seed) in corpus("jsonl") {
        let file = dir.join("input.jsonl");
        fuzz(&format!("jsonl-{name}"), &seed, &file, true, || {
            read_jsonl(&file).map(drop).map_err(|e| e.to_string())
        });
        // Encoding errors name the line, not the file; they must not panic.
        fuzz(&format!("jsonl-encode-{name}"), &seed, &file, false, || {
            let lines = read_jsonl(&file).map_err(|e| e.to_string())?;
            enc.encode_all(&lines, "training")
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }
}
