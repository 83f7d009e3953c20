"""Reference values for the shipped demo model (models/demo), from HF transformers in float64.

tests/fixtures/expected/demo.safetensors holds, for three rows of 24 tokens (an IOI sentence
and a sequence as the tokenizer gives them with BOS, padded by more text to one length, and BOS
+ 11 random ids + the same 11 again):
  input_ids [3, 24] (int64), logits [3, 24, 1024],
  blocks.{l}.attn.hook_pattern [3, 4, 24, 24] (HF attentions) and blocks.{l}.hook_resid_post
  [3, 24, 128] (each block's output, before ln_f for the last, as TransformerLens).

    /work/venv-ref/bin/python tests/reference/make_demo_fixtures.py
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "demo"
OUT = ROOT / "tests" / "fixtures" / "expected" / "demo.safetensors"
LENGTH = 24


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float64,
                                                 attn_implementation="eager").eval()
    texts = [
        "When Mary and John went to the store, John gave a drink to Mary. Then Tom and Lisa went "
        "to the park.",
        "Count the months: October November December January February March April May June July "
        "August. The capital of Norway is Oslo.",
    ]
    rows = [tokenizer(text).input_ids[:LENGTH] for text in texts]
    assert all(len(r) == LENGTH for r in rows), [len(r) for r in rows]
    g = torch.Generator().manual_seed(7)
    half = torch.randint(1, model.config.vocab_size, (LENGTH // 2 - 1,), generator=g).tolist()
    rows.append([tokenizer.bos_token_id] + half + half + [half[0]])
    ids = torch.tensor(rows)
    resid_post = {}  # each block's output: TransformerLens's blocks.{l}.hook_resid_post

    def keep(layer: int):
        return lambda module, args, output: resid_post.setdefault(layer, output[0] if isinstance(output, tuple) else output)

    handles = [block.register_forward_hook(keep(l)) for l, block in enumerate(model.transformer.h)]
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    for handle in handles:
        handle.remove()
    tensors = {"input_ids": ids, "logits": out.logits.float()}
    for layer, pattern in enumerate(out.attentions):
        tensors[f"blocks.{layer}.attn.hook_pattern"] = pattern.float()
        tensors[f"blocks.{layer}.hook_resid_post"] = resid_post[layer].float()
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): " + ", ".join(
        f"{k} {list(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
