#!/usr/bin/env python3
"""The peer side of bench/load_memory.sh.

  hf_load.py --write DIR     writes a random ~1.1B-parameter Llama-shaped model in bf16 with
                             transformers (sharded into 1 GB safetensors files, as the Hub's are)
  hf_load.py --load DIR      loads it with AutoModelForCausalLM in float32 (what Glassbox's CPU
                             backend holds) and prints one JSON line: parameter bytes, RSS before,
                             peak RSS (ru_maxrss) and seconds
"""
import argparse
import json
import resource
import time


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def write(directory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # TinyLlama-1.1B's shape: 22 layers, d_model 2048, GQA 32:4, d_mlp 5632, vocab 32000.
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                      max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.save_pretrained(directory, max_shard_size="1GB")
    print(sum(p.numel() for p in model.parameters()), "parameters written to", directory)


def load(directory):
    import torch
    from transformers import AutoModelForCausalLM

    before = rss_bytes()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"weights_bytes": weights, "rss_before": before, "peak_rss": peak,
                      "rss_after": rss_bytes(), "load_seconds": round(seconds, 3),
                      "peak_over_weights": peak / weights,
                      "peak_growth_over_weights": (peak - before) / weights}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write")
    group.add_argument("--load")
    args = parser.parse_args()
    write(args.write) if args.write else load(args.load)
