//! `capaboost generate`: text from a Llama-family GGUF model on the GPU (greedy, or
//! temperature / top-p sampling with a seed), streamed to stdout, with tokens/s on stderr.

use std::io::Write;
use std::path::PathBuf;

use crate::models::llama::{ChatTemplate, Llama, LlamaTokenizer, Message, Sampling};
use crate::runtime::gguf::Gguf;
use crate::runtime::gpu::Gpu;

/// `capaboost generate` arguments.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The GGUF file (Llama architecture).
    #[arg(long)]
    model: PathBuf,
    /// A causal-lm run folder: generate with its adapters (its checkpoint) on --model.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Text to continue (as it is, unless --chat).
    #[arg(long)]
    prompt: String,
    /// Send --prompt as a user message through the model's chat template (with the
    /// generation prompt that opens the assistant's turn) and print the reply alone.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate (fewer when EOS comes first or the context fills).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; greedy decoding when absent.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Loads the model, generates, and prints the text and the speed.
pub fn run(args: GenerateArgs) -> crate::Result<()> {
    if args.temperature.is_none() && args.top_p != 1.0 {
        return Err(crate::Error::InvalidArgument(
            "--top-p needs --temperature (without it decoding is greedy)".into(),
        ));
    }
    let g = Gguf::open(&args.model)?;
    let tok = LlamaTokenizer::from_gguf(&g)?;
    let gpu = Gpu::new()?;
    let model = match &args.run {
        Some(run) => {
            let lm = crate::tasks::causal_lm::run::load_run_model(&gpu, run, Some(&args.model))?;
            lm.1.llama
        }
        None => Llama::load(&gpu, &g)?,
    };
    let text = match args.chat {
        true => chat_prompt(&g, &tok, &args.prompt)?,
        false => args.prompt.clone(),
    };
    let prompt = tok.encode(&text)?;
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    let (mut ids, mut printed) = (Vec::new(), String::new());
    let mut out = std::io::stdout();
    if !args.chat {
        print!("{}", args.prompt);
    }
    let limits = (args.max_new_tokens, tok.eos);
    let r = model.generate(&prompt, limits, &sampling, |id| {
        ids.push(id);
        let text = tok.decode(&ids, true)?;
        // Print what is new once it is valid text (a byte-level token may end mid-char).
        if let Some(new) = text.strip_prefix(printed.as_str()) {
            if !new.ends_with('\u{fffd}') {
                print!("{new}");
                out.flush().ok();
                printed = text;
            }
        }
        Ok(())
    })?;
    println!();
    let n = r.ids.len();
    let rate = (n.saturating_sub(1)) as f64 / r.decode_secs.max(1e-9);
    eprintln!(
        "{} prompt tokens in {:.2} s; {n} new tokens, {:.2} tokens/s after the first",
        prompt.len(),
        r.prompt_secs,
        rate
    );
    Ok(())
}

/// `prompt` as a user turn rendered with the file's chat template, the assistant's turn
/// opened.
fn chat_prompt(g: &Gguf, tok: &LlamaTokenizer, prompt: &str) -> crate::Result<String> {
    let text = |id: Option<u32>| id.map_or(Ok(String::new()), |id| tok.decode(&[id], false));
    let template =
        ChatTemplate::from_gguf(g, &text(tok.bos)?, &text(tok.eos)?)?.ok_or_else(|| {
            crate::Error::InvalidArgument(format!(
                "--chat: {} has no chat template (tokenizer.chat_template)",
                g.name()
            ))
        })?;
    let user = Message {
        role: "user".into(),
        content: prompt.to_string(),
    };
    template.render(&[user], true)
}
