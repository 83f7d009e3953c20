"""Greedy generations by HF transformers for the engine's generation tests.

Writes tests/fixtures/expected/generation.safetensors: for each model (tiny-gpt2, tiny-llama with
GQA, tiny-mistral with a sliding window shorter than the generated sequence, tiny-gemma2 with
soft caps, and the demo model),

  <model>.prompt.<r>      i64 prompt ids of row r (rows of different lengths)
  <model>.greedy.<r>      i64 HF generate(do_sample=False) continuation of the row alone, up to
                          and including the first eos_token_id (config.json's), at most 12 tokens
  <model>.steer           f32 [d_model] a steering vector
  <model>.steered.<r>     the same with `steer * COEFFICIENT` added to the input of decoder layer
                          STEER_LAYER (= blocks.STEER_LAYER.hook_resid_pre) at every position and
                          every step, by a forward pre-hook

Run (from the repository root, with the reference venv of tests/reference/requirements.txt):

    /work/venv-ref/bin/python tests/reference/make_generation_fixtures.py

Deterministic: fixed seeds, single-threaded torch, float32 models as the engine runs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

from transformers import AutoModelForCausalLM  # noqa: E402

MODELS = {
    "tiny-gpt2": mf.MODELS_DIR / "tiny-gpt2",
    "tiny-llama": mf.MODELS_DIR / "tiny-llama",
    "tiny-mistral": mf.MODELS_DIR / "tiny-mistral",
    "tiny-gemma2": mf.MODELS_DIR / "tiny-gemma2",
    "demo": mf.REPO / "models" / "demo",
}
PROMPT_LENGTHS = (5, 2, 8)
MAX_NEW_TOKENS = 12
STEER_LAYER = 1
COEFFICIENT = 4.0


def decoder_layers(model):
    base = model.base_model
    return base.h if hasattr(base, "h") else base.layers


@torch.inference_mode()
def generate(model, prompt: torch.Tensor, steer: torch.Tensor | None) -> torch.Tensor:
    handle = None
    if steer is not None:
        def add(_module, args, kwargs):
            return (args[0] + COEFFICIENT * steer, *args[1:]), kwargs
        handle = decoder_layers(model)[STEER_LAYER].register_forward_pre_hook(add, with_kwargs=True)
    try:
        out = model.generate(prompt[None], attention_mask=torch.ones_like(prompt)[None],
                             max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             eos_token_id=model.config.eos_token_id, pad_token_id=0)
    finally:
        if handle is not None:
            handle.remove()
    return out[0, prompt.numel():].clone()


def main() -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    tensors = {}
    for index, (name, path) in enumerate(MODELS.items()):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager").eval()
        vocab, d_model = model.config.vocab_size, model.config.hidden_size
        g = torch.Generator().manual_seed(4100 + index)
        steer = torch.randn(d_model, generator=g)
        tensors[f"{name}.steer"] = steer
        for r, length in enumerate(PROMPT_LENGTHS):
            prompt = torch.randint(3, vocab, (length,), generator=g, dtype=torch.int64)
            tensors[f"{name}.prompt.{r}"] = prompt
            greedy = generate(model, prompt, None)
            steered = generate(model, prompt, steer)
            tensors[f"{name}.greedy.{r}"] = greedy
            tensors[f"{name}.steered.{r}"] = steered
            print(f"[{name}] row {r}: greedy {greedy.tolist()}  steered {steered.tolist()}")
    path = mf.EXPECTED_DIR / "generation.safetensors"
    meta = {"versions": mf.versions(), "max_new_tokens": MAX_NEW_TOKENS, "steer_layer": STEER_LAYER,
            "coefficient": COEFFICIENT}
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path),
              metadata={"glassbox.reference": json.dumps(meta, sort_keys=True)})
    print(f"wrote {path.relative_to(mf.REPO)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
