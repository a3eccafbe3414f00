//! The causal-LM building blocks on tests/data/tiny-llama.gguf: packed sequences (one
//! sequence of several, block-diagonal causal mask, positions restarting) give each
//! sequence's own logits; `Graph::select_rows` forward and gradient; LoRA / CapaBoost on
//! the decoder's projections start at the base model and their gradients match finite
//! differences; the q/k row order of the PEFT export undoes the GGUF converter's
//! permutation; chat templates split conversations into learned and read text; the JSONL
//! reader names bad lines; the encoder marks learned tokens and truncates the prompt first.
//!
//! Tolerances: logits of packed vs single sequences are f32 computations of the same
//! products in a different order: 1e-5 of the largest logit. Adapter gradients against
//! central differences of the f32 GPU loss (step 2e-2) at each checked tensor's largest
//! gradient entry: 3e-3 of the largest checked entry (measured up to 4e-4 over 16 runs).

mod common;
#[path = "common/tiny_chat.rs"]
mod tiny_chat;

use capaboost::Tensor;
use capaboost::models::llama::gguf_rows_to_hf;
use capaboost::models::llama::{ChatTemplate, Llama, LlamaTarget, LlamaTokenizer, Message};
use capaboost::nn::Graph;
use capaboost::nn::modules::CapaBoostConfig;
use capaboost::runtime::gguf::Gguf;
use capaboost::tasks::causal_lm::data::{Encoder, LmExample, LmLine, read_jsonl};
use common::random_vec;
use rand::SeedableRng;

fn tiny() -> Gguf {
    let p = format!("{}/tests/data/tiny-llama.gguf", env!("CARGO_MANIFEST_DIR"));
    Gguf::open(std::path::Path::new(&p)).unwrap()
}

fn logits(gpu: &capaboost::Gpu, m: &Llama, ids: &[u32], lengths: &[usize]) -> Vec<f32> {
    let mut g = Graph::no_grad(gpu);
    let x = m.embed(&mut g, ids).unwrap();
    let h = m.packed_blocks(&mut g, &x, lengths).unwrap();
    let y = m.logits(&mut g, &h).unwrap();
    g.submit().unwrap();
    y.value().to_vec().unwrap()
}

#[test]
fn packed_sequences_give_each_sequence_its_own_logits() {
    let Some(gpu) = common::gpu() else { return };
    let m = Llama::load(&gpu, &tiny()).unwrap();
    let seqs: [&[u32]; 3] = [&[5, 17, 42, 3, 9], &[1, 2], &[60, 61, 62, 7]];
    let ids: Vec<u32> = seqs.concat();
    let packed = logits(&gpu, &m, &ids, &[5, 2, 4]);
    let mut alone = Vec::new();
    for s in seqs {
        alone.extend(logits(&gpu, &m, s, &[s.len()]));
    }
    let scale = alone.iter().fold(0f32, |a, v| a.max(v.abs()));
    let e = packed
        .iter()
        .zip(&alone)
        .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
    assert!(e <= 1e-5 * scale, "packed vs alone: {e} of {scale}");
    // A packing that does not cover the sequence is refused.
    let mut g = Graph::no_grad(&gpu);
    let x = m.embed(&mut g, &ids).unwrap();
    let err = m.packed_blocks(&mut g, &x, &[5, 2, 3]).unwrap_err();
    assert!(err.to_string().contains("sum to 11"), "{err}");
}

#[test]
fn select_rows_picks_rows_and_scatters_the_gradient_back() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("select_rows");
    let (t, h) = (7, 5);
    let xv = random_vec(&mut rng, t * h, 1.0);
    let rv = random_vec(&mut rng, 3 * h, 1.0);
    let rows = [4u32, 0, 6];
    let x = Tensor::from_slice(&gpu, &xv, &[t, h]).unwrap();
    let r = Tensor::from_slice(&gpu, &rv, &[3, h]).unwrap();
    let mut g = Graph::new(&gpu);
    let xp = g.param(&x);
    let y = g.select_rows(&xp, &rows).unwrap();
    let ri = g.input(&r);
    let yr = g.mul(&y, &ri).unwrap();
    let loss = g.sum(&yr).unwrap();
    let grads = g.backward(&loss).unwrap();
    g.submit().unwrap();
    let (y, dx) = (
        y.value().to_vec().unwrap(),
        grads.of(&x).unwrap().to_vec().unwrap(),
    );
    let mut want_dx = vec![0f32; t * h];
    for (i, &row) in rows.iter().enumerate() {
        let row = row as usize;
        assert_eq!(y[i * h..(i + 1) * h], xv[row * h..(row + 1) * h]);
        want_dx[row * h..(row + 1) * h].copy_from_slice(&rv[i * h..(i + 1) * h]);
    }
    // The loss is linear in x: its gradient is exactly r scattered to the picked rows.
    assert_eq!(dx, want_dx);
    let mut g = Graph::no_grad(&gpu);
    let xi = g.input(&x);
    for bad in [&[7u32][..], &[1, 1]] {
        let e = g.select_rows(&xi, bad).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.contains("twice"), "{e}");
    }
}

/// The mean cross-entropy of `targets` predicted from the first rows of the packed
/// sequence `ids` (packed as 3 + the rest); with `grad`, the gradients of every adapter
/// tensor too.
fn lm_loss(
    gpu: &capaboost::Gpu,
    m: &Llama,
    (ids, targets): (&[u32], &[u32]),
    grad: bool,
) -> (f64, Vec<Vec<f32>>) {
    let mut g = if grad {
        Graph::new(gpu)
    } else {
        Graph::no_grad(gpu)
    };
    let x = m.embed(&mut g, ids).unwrap();
    let h = m.packed_blocks(&mut g, &x, &[3, ids.len() - 3]).unwrap();
    let rows: Vec<u32> = (0..targets.len() as u32).collect();
    let picked = g.select_rows(&h, &rows).unwrap();
    let y = m.logits(&mut g, &picked).unwrap();
    let t = capaboost::runtime::tensor::Indices::from_slice(gpu, targets, &[targets.len()]);
    let loss = g.cross_entropy(&y, &t.unwrap()).unwrap();
    let grads = grad.then(|| g.backward(&loss).unwrap());
    g.submit().unwrap();
    let value = loss.value().to_vec().unwrap()[0] as f64;
    let Some(grads) = grads else {
        return (value, Vec::new());
    };
    let params = m.adapter_params();
    let gs = params
        .iter()
        .map(|(_, t)| grads.of(t).unwrap().to_vec().unwrap())
        .collect();
    (value, gs)
}

fn with_adapters(gpu: &capaboost::Gpu, d: u32) -> Llama {
    let mut m = Llama::load(gpu, &tiny()).unwrap();
    let cfg = match d {
        1 => CapaBoostConfig::lora(4, 8.0),
        d => CapaBoostConfig::capaboost(4, 8.0, d, 0.5, 3),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let targets = [LlamaTarget::Q, LlamaTarget::V, LlamaTarget::Down];
    m.add_adapters(gpu, &targets, &cfg, &mut rng).unwrap();
    m
}

#[test]
fn adapters_start_at_the_base_and_their_gradients_match_finite_differences() {
    let Some(gpu) = common::gpu() else { return };
    let data: (&[u32], &[u32]) = (&[5, 17, 42, 3, 9, 11, 30], &[17, 42]);
    let base = lm_loss(&gpu, &Llama::load(&gpu, &tiny()).unwrap(), data, false).0;
    let mut rng = common::rng("llama_adapters");
    for d in [1, 2] {
        let m = with_adapters(&gpu, d);
        let names: Vec<String> = m.adapter_params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 * 3 * 2, "{names:?}");
        assert!(names.contains(&"model.layers.1.mlp.down_proj.lora_B.weight".to_string()));
        // lora_B is zero at init: the adapted model is the base model, bit for bit.
        assert_eq!(lm_loss(&gpu, &m, data, false).0, base);
        for (_, b) in m
            .adapter_params()
            .iter()
            .filter(|(n, _)| n.contains("lora_B"))
        {
            let v = random_vec(&mut rng, b.numel(), 0.3);
            b.write(&v).unwrap();
        }
        let (_, grads) = lm_loss(&gpu, &m, data, true);
        let params = m.adapter_params();
        let (got, want) = common::fd_at_largest(&params, &grads, (5, 2e-2), || {
            lm_loss(&gpu, &m, data, false).0
        });
        let e = common::rel_max_abs(&got, &want);
        eprintln!("d={d}: adapter gradients vs finite differences {e:.2e}");
        assert!(
            e < 3e-3,
            "d={d}: adapter gradients vs finite differences {e}"
        );
        assert!(
            want.iter().any(|w| w.abs() > 1e-3),
            "degenerate check {want:?}"
        );
    }
}

#[test]
fn export_rows_undo_the_gguf_rotary_permutation() {
    // llama.cpp's convert script: reshape(heads, 2, d/2, ...).swapaxes(1, 2).
    let (heads, d, cols) = (3, 8, 2);
    let hf: Vec<f32> = (0..heads * d * cols).map(|i| i as f32).collect();
    let mut file = vec![0f32; hf.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..d / 2 {
                let (src, dst) = (h * d + s * d / 2 + j, h * d + 2 * j + s);
                file[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    assert_ne!(file, hf);
    assert_eq!(gguf_rows_to_hf(&file, (heads * d, cols), heads), hf);
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn chat_segments_mark_the_assistant_turns() {
    let t = ChatTemplate::new(tiny_chat::CHATML, "<s>", "<|im_end|>").unwrap();
    let conv = [
        msg("system", "be brief"),
        msg("user", "hi"),
        msg("assistant", "hello"),
        msg("user", "2+2?"),
        msg("assistant", "4"),
    ];
    let seg = t.segments(&conv).unwrap();
    let learned: Vec<&str> = seg.iter().filter(|s| s.1).map(|s| s.0.as_str()).collect();
    assert_eq!(learned, ["hello<|im_end|>\n", "4<|im_end|>\n"]);
    let all: String = seg.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(all, t.render(&conv, false).unwrap());
    assert!(seg[0].0.ends_with("<|im_start|>assistant\n") && !seg[0].1);
    // Python string methods work (minijinja's pycompat), errors name the template.
    let py = ChatTemplate::new("{{ messages[0]['content'].strip() }}", "", "").unwrap();
    assert_eq!(py.render(&[msg("user", "  x ")], false).unwrap(), "x");
    let e = ChatTemplate::new("{% for %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("chat template"), "{e}");
    let raise = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "");
    let e = raise.unwrap().render(&conv, false).unwrap_err().to_string();
    assert!(e.contains("roles must alternate"), "{e}");
}

fn temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("capaboost-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn jsonl_reader_takes_both_forms_and_names_bad_lines() {
    let good = "{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"r\"}]}\n";
    let l = read_jsonl(&temp("good.jsonl", good)).unwrap();
    assert_eq!((l.len(), l[0].line, l[1].line), (2, 1, 3));
    assert!(matches!(&l[1].example, LmExample::Chat(m) if m.len() == 2));
    for (text, want) in [
        (
            "{\"prompt\": \"a\", \"response\": \"b\"}\n[1, 2]\n",
            "line 2: not a JSON object",
        ),
        (
            "{\"prompt\": \"a\"}\n",
            "line 1: needs \"prompt\" and \"response\"",
        ),
        (
            "{\"prompt\": \"a\", \"response\": \"b\"}\n{oops\n",
            "line 2: not JSON",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n",
            "no assistant message",
        ),
        (
            "{\"messages\": [{\"role\": \"user\"}]}\n",
            "message 1 needs",
        ),
        ("\n\n", "holds no example"),
    ] {
        let p = temp("bad.jsonl", text);
        let e = read_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("bad.jsonl"), "{want}: {e}");
    }
}

#[test]
fn the_encoder_marks_learned_tokens_and_truncates_the_prompt_first() {
    let path = std::env::temp_dir().join(format!("capaboost-tinychat-{}.gguf", std::process::id()));
    tiny_chat::write(&path);
    let g = Gguf::open(&path).unwrap();
    let tok = LlamaTokenizer::from_gguf(&g).unwrap();
    let chat = ChatTemplate::from_gguf(&g, "<|im_start|>", "<|im_end|>")
        .unwrap()
        .unwrap();
    let enc = Encoder {
        tok: &tok,
        chat: Some(&chat),
        max_len: 64,
    };
    let line = |example| LmLine { line: 4, example };
    let c = LmExample::Completion {
        prompt: "ab c".into(),
        response: "xy".into(),
    };
    let (s, cut) = enc.encode(&line(c.clone())).unwrap();
    assert_eq!(s.ids.len(), 7);
    assert_eq!(s.ids[6], 2, "a completion ends in EOS");
    assert_eq!(s.learn, [false, false, false, false, true, true, true]);
    assert_eq!(
        (tok.decode(&s.ids[4..6], false).unwrap(), cut),
        ("xy".to_string(), false)
    );
    let short = Encoder { max_len: 4, ..enc };
    let (s, cut) = short.encode(&line(c)).unwrap();
    assert!(cut);
    assert_eq!(
        s.learn,
        [false, true, true, true],
        "the prompt lost its start, one token kept"
    );
    let chat_ex = LmExample::Chat(vec![msg("user", "hi"), msg("assistant", "ok")]);
    let (s, _) = enc.encode(&line(chat_ex)).unwrap();
    let learned: Vec<u32> = s.targets().map(|i| s.ids[i]).collect();
    assert_eq!(tok.decode(&learned, false).unwrap(), "ok<|im_end|>\n");
    std::fs::remove_file(&path).ok();
}
