//! Generation with the GPU Llama (`Llama::generate`, `capaboost generate`): greedy
//! continuations of 20 tokens identical to transformers' (`generate(do_sample=False)` in
//! float32 on the same dequantized weights, tests/data/smollm2-generate-golden.json from
//! scripts/make_smollm2_generate_golden.py) on tests/data/tiny-llama.gguf and on two SmolLM2
//! prompts (skipped when the file is absent unless `CAPABOOST_REQUIRE_MODEL=1` and
//! `CAPABOOST_GGUF` are set); sampling is reproducible by seed, a top-p small enough to
//! keep one token is greedy; bad arguments name the culprit.

mod common;

use capaboost::models::llama::{Llama, Sampling, sample};
use capaboost::runtime::gguf::Gguf;
use rand::SeedableRng;

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> serde_json::Value {
    let s = std::fs::read_to_string(data("smollm2-generate-golden.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn tiny(gpu: &capaboost::Gpu) -> Llama {
    let g = Gguf::open(std::path::Path::new(&data("tiny-llama.gguf"))).unwrap();
    Llama::load(gpu, &g).unwrap()
}

#[test]
fn tiny_llama_greedy_continuation_matches_transformers() {
    let Some(gpu) = common::gpu() else { return };
    let m = tiny(&gpu);
    let gold = golden();
    let (prompt, want) = (ids(&gold["tiny"]["ids"]), ids(&gold["tiny"]["new_ids"]));
    let mut seen = Vec::new();
    let r = m
        .generate(&prompt, (20, None), &Sampling::greedy(), |id| {
            seen.push(id);
            Ok(())
        })
        .unwrap();
    assert_eq!(r.ids, want);
    assert_eq!(seen, want);
    // Stops after EOS (here: the third token), and at max-new-tokens.
    let r = m
        .generate(
            &prompt,
            (20, Some(want[3])),
            &Sampling::greedy(),
            |_| Ok(()),
        )
        .unwrap();
    assert_eq!(r.ids, want[..4]);
    let r = m.generate(&prompt, (2, None), &Sampling::greedy(), |_| Ok(()));
    assert_eq!(r.unwrap().ids, want[..2]);
}

#[test]
fn sampling_is_seeded_and_validated() {
    let Some(gpu) = common::gpu() else { return };
    let m = tiny(&gpu);
    let prompt = [5, 17, 42, 3];
    let run = |s: &Sampling| m.generate(&prompt, (8, None), s, |_| Ok(())).map(|r| r.ids);
    let s = |t: Option<f32>, p: f32, seed: u64| Sampling {
        temperature: t,
        top_p: p,
        seed,
    };
    let a = run(&s(Some(1.5), 0.9, 7)).unwrap();
    assert_eq!(a, run(&s(Some(1.5), 0.9, 7)).unwrap());
    let greedy = run(&Sampling::greedy()).unwrap();
    assert_eq!(run(&s(Some(1.0), 1e-6, 3)).unwrap(), greedy);
    for bad in [s(Some(0.0), 1.0, 0), s(Some(1.0), 0.0, 0), s(None, 1.5, 0)] {
        let e = run(&bad).unwrap_err().to_string();
        assert!(e.contains("temperature") && e.contains("top-p"), "{e}");
    }
    let e = m.generate(&[], (3, None), &Sampling::greedy(), |_| Ok(()));
    assert!(e.unwrap_err().to_string().contains("prompt of 0 tokens"));
    let long = vec![1u32; m.config.context];
    let e = m.generate(&long, (3, None), &Sampling::greedy(), |_| Ok(()));
    assert!(e.unwrap_err().to_string().contains("context of 128"));
    // The sampler alone: a peaked distribution at high temperature still varies by seed,
    // and always returns an index in range.
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let draws: Vec<usize> = (0..40)
        .map(|_| sample(&logits, 4.0, 1.0, &mut rng))
        .collect();
    assert!(draws.iter().all(|&i| i < 50));
    assert!(draws.iter().any(|&i| i != draws[0]));
}

#[test]
fn smollm2_greedy_continuations_match_transformers() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let g = Gguf::open(&path).unwrap();
    let tok = capaboost::models::llama::LlamaTokenizer::from_gguf(&g).unwrap();
    let m = Llama::load(&gpu, &g).unwrap();
    for case in golden()["smollm2"].as_array().unwrap() {
        let prompt = tok.encode(case["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(prompt, ids(&case["ids"]));
        let r = m
            .generate(&prompt, (20, None), &Sampling::greedy(), |_| Ok(()))
            .unwrap();
        eprintln!(
            "{:?}: prompt {:.2} s, {:.2} tokens/s after the first",
            case["prompt"],
            r.prompt_secs,
            19.0 / r.decode_secs
        );
        assert_eq!(r.ids, ids(&case["new_ids"]), "{}", case["prompt"]);
        assert_eq!(
            tok.decode(&r.ids, false).unwrap(),
            case["text"].as_str().unwrap()
        );
    }
}

#[test]
fn generate_command_prints_the_continuation_and_names_bad_input() {
    let out = common::capaboost_cmd()
        .args([
            "generate",
            "--model",
            "/nonexistent/m.gguf",
            "--prompt",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/m.gguf"), "{err}");
    let tiny = data("tiny-llama.gguf");
    let args = [
        "generate", "--model", &tiny, "--prompt", "x", "--top-p", "0.5",
    ];
    let out = common::capaboost_cmd().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--top-p needs --temperature"),
        "{err}"
    );
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    if common::gpu().is_none() {
        return;
    }
    let model = path.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
    ];
    let out = common::capaboost_cmd()
        .args(args)
        .args(["--max-new-tokens", "2", "--seed", "1"])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{se}");
    assert_eq!(so, "The capital of France is Paris.\n");
    assert!(
        se.contains("2 new tokens") && se.contains("tokens/s"),
        "{se}"
    );
}
