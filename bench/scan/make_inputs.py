"""Inputs of bench/scan.sh, written once: a random SAE of width 16,384 on the GPT-2-small-shaped
model's blocks.5.hook_resid_post (sae_lens's directory format: cfg.json + sae_weights.safetensors)
and a corpus of random token contexts (.npy int32 [contexts, 128], BOS first).

    python bench/scan/make_inputs.py --out DIR --contexts 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--contexts", type=int, default=64)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--bos", type=int, default=50256)
    args = p.parse_args()
    out = Path(args.out)
    rng = np.random.default_rng(0)
    sae_dir = out / "sae"
    sae_dir.mkdir(parents=True, exist_ok=True)
    w_dec = rng.standard_normal((args.d_sae, args.d_in)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    save_file(
        {
            "W_enc": np.ascontiguousarray(w_dec.T * 0.5),
            "W_dec": w_dec,
            # Biases that leave a few percent of features firing, as a trained SAE's do.
            "b_enc": np.full(args.d_sae, -1.5, np.float32)
            + rng.standard_normal(args.d_sae).astype(np.float32) * 0.3,
            "b_dec": rng.standard_normal(args.d_in).astype(np.float32) * 0.01,
        },
        str(sae_dir / "sae_weights.safetensors"),
    )
    (sae_dir / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": args.d_in, "d_sae": args.d_sae, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "hook_name": "blocks.5.hook_resid_post", "hook_head_index": None,
        "model_name": "gpt2", "context_size": args.context_length, "prepend_bos": True,
    }, indent=1))
    corpus = out / "corpus"
    corpus.mkdir(exist_ok=True)
    tokens = rng.integers(0, args.vocab - 1, (args.contexts, args.context_length), dtype=np.int32)
    tokens[:, 0] = args.bos
    np.save(corpus / "tokens.npy", tokens)
    print(f"wrote {sae_dir} and {corpus / 'tokens.npy'} ({args.contexts} x {args.context_length})")


if __name__ == "__main__":
    main()
