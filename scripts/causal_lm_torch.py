#!/usr/bin/env python3
"""The causal-LM recipe of README ("Decoder LLMs: a learning check") in PyTorch + peft, for
comparison with `capaboost finetune --task causal-lm`.

The GGUF base is loaded with transformers (`gguf_file=`, dequantized to float32), LoRA on
q_proj,v_proj (r, alpha, no dropout), AdamW (weight decay 0.01) with linear warmup (6%) and
linear decay, batches of prompt/response examples drawn in a seeded random order, loss = mean
cross-entropy over the learned tokens (response + EOS) of the batch. Evaluation as
scripts/check_hf_causal_lm.py (and `capaboost eval`): loss, perplexity, exact match, first
learned token accuracy. Prints one JSON line with the metrics before and after, and the
training examples per second.

    python scripts/causal_lm_torch.py --gguf FILE.gguf --train T.jsonl --eval E.jsonl \
        --steps 40 --batch-size 8 --lr 1e-3 --r 8 --threads 2
"""
import argparse
import json
import math
import os
import random
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def encode(tok, ex, max_len):
    p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
    r = tok(ex["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[-max_len:]
    return ids, len(ids) - len(r)


def read(path, tok, max_len):
    return [encode(tok, json.loads(l), max_len) for l in open(path, encoding="utf-8") if l.strip()]


def batch_loss(model, batch, pad):
    """Mean NLL over the learned tokens of a right-padded batch."""
    t = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), t), pad)
    att = torch.zeros((len(batch), t), dtype=torch.long)
    labels = torch.full((len(batch), t), -100)
    for i, (x, start) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
        labels[i, start : len(x)] = torch.tensor(x[start:])
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


@torch.no_grad()
def evaluate(model, data):
    model.eval()
    nll, tokens, exact, first = 0.0, 0, 0, 0
    for ids, start in data:
        logits = model(torch.tensor([ids])).logits[0].double()
        rows, tgt = logits[start - 1 : len(ids) - 1], torch.tensor(ids[start:])
        nll += -torch.log_softmax(rows, -1)[torch.arange(len(tgt)), tgt].sum().item()
        hits = rows.argmax(-1) == tgt
        exact, first, tokens = exact + int(hits.all()), first + int(hits[0]), tokens + len(tgt)
    model.train()
    loss = nll / tokens
    n = len(data)
    return {"loss": loss, "perplexity": math.exp(loss), "exact_match": exact / n,
            "first_token_accuracy": first / n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    train, dev = read(a.train, tok, a.max_len), read(a.eval, tok, a.max_len)
    before = evaluate(model, dev)
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=["q_proj", "v_proj"],
                     lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    warm = max(1, round(0.06 * a.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (a.steps - s) / (a.steps - warm)))
    rng = random.Random(a.seed)
    order = []
    start = time.time()
    for step in range(a.steps):
        if len(order) < a.batch_size:
            order += rng.sample(range(len(train)), len(train))
        batch, order = [train[i] for i in order[: a.batch_size]], order[a.batch_size :]
        loss = batch_loss(model, batch, tok.eos_token_id)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 10 == 0 or step == a.steps - 1:
            print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
    secs = time.time() - start
    after = evaluate(model, dev)
    print(json.dumps({"before": before, "after": after,
                      "examples_per_s": a.steps * a.batch_size / secs}))


if __name__ == "__main__":
    main()
