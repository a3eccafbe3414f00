#!/usr/bin/env python3
"""Writes tests/data/tiny-llama.gguf, a tiny random Llama (2 layers, hidden 64, 4 query
heads / 2 key-value heads, SwiGLU width 96, rope theta 500) in llama.cpp's layout (q/k rows
permuted for its rotary pairing, as convert_hf_to_gguf.py does; some weights Q8_0, Q4_0,
Q4_1), and tests/data/tiny-llama-golden.json: the logits transformers computes in float64
after loading that file with `gguf_file=` (run once; needs torch, transformers, gguf):

    python3 scripts/make_tiny_llama_golden.py
"""
import json
import os

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

CONFIG = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
              max_position_embeddings=128, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 500.0})
IDS = [5, 17, 42, 3, 90, 61, 0, 33, 17]
QUANT = {"attn_v": Q.Q8_0, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q4_0, "attn_output": Q.Q4_1}
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF's rotate_half halves -> adjacent pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors(model, cfg):
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    yield "token_embd.weight", sd["model.embed_tokens.weight"]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        yield f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]
        yield f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads)
        yield f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads)
        yield f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]
        yield f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]
        yield f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]
        yield f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]
        yield f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]
        yield f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]
    yield "output_norm.weight", sd["model.norm.weight"]
    yield "output.weight", sd["lm_head.weight"]


def write_gguf(model, cfg, path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(CONFIG["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for name, t in tensors(model, cfg):
        qtype = next((q for k, q in QUANT.items() if f".{k}." in name), None)
        if qtype is None:
            w.add_tensor(name, t)
        else:
            w.add_tensor(name, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    torch.manual_seed(16)
    cfg = LlamaConfig(**CONFIG)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape))
            else:
                p.copy_(0.15 * torch.randn(p.shape))
    path = os.path.join(HERE, "tiny-llama.gguf")
    write_gguf(model, cfg, path)
    loaded = AutoModelForCausalLM.from_pretrained(HERE, gguf_file="tiny-llama.gguf").double().eval()
    with torch.no_grad():
        logits = loaded(torch.tensor([IDS])).logits[0]
        orig = model.double()(torch.tensor([IDS])).logits[0]
    print("max |gguf-loaded - original| (quantization):", (logits - orig).abs().max().item())
    out = {"ids": IDS, "vocab_size": cfg.vocab_size, "logits": logits.flatten().tolist(),
           "config": CONFIG, "quantized": {k: v.name for k, v in QUANT.items()}}
    with open(os.path.join(HERE, "tiny-llama-golden.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
