"""GPU forward pass: Glassbox's CUDA backend beside HF transformers (sdpa), same weights, one run.

For each model shape, the same random weights (written by transformers in bf16 with
save_pretrained) run through both sides over batch x sequence {1x512, 1x2048, 8x512}:

  (a) plain: the forward pass with last-token logits, nothing captured. HF: the base model then
      lm_head on the last position (what logits_to_keep=1 does); Glassbox: forward_bench
      --logits last.
  (b) resid: every block's output (hook_resid_post) delivered to host memory. HF: forward hooks
      that copy each block's output to the CPU, as a researcher writes them; Glassbox:
      forward_bench --capture_resid (the engine's capture, copied to host memory).

Shapes: gpt2-small (GPT2Config with n_positions 2048) and llama-7b (LlamaConfig at Llama-2-7B's
widths with --llama-layers blocks, default 4: per-layer time is the pass divided by the blocks,
and the 32-block figure is that times 32, since embedding, final norm and one row of logits are
negligible beside a block at this width).

MFU is model FLOPs per second over the bf16 GEMM peak measured first in the same run (an 8192^3
torch.matmul, the mean of 10 after 3 warm-ups). Model FLOPs per token, PaLM's convention for a
forward pass: 2 x (weights of the blocks' matrix products) + 4 x layers x seq x d_model
(attention scores and their product with V, causal half not discounted).

Prints a table and writes every figure as JSON (--json-out). Needs torch, transformers and a CUDA
device; the Glassbox side is the forward_bench binary (--bench-bin). --device cpu --tiny runs the
same path on tiny shapes on the CPU (a dry run of this script, not a benchmark).

  python3 bench/torch_gpu_forward.py --bench-bin build/bench/forward_bench --work-dir /tmp/gb-bench
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(1, 512), (1, 2048), (8, 512)]
TINY_SHAPES = [(1, 16), (2, 8)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench-bin", required=True, help="Glassbox's forward_bench binary")
    p.add_argument("--work-dir", required=True, help="where the random models are written")
    p.add_argument("--models", default="gpt2-small,llama-7b", help="comma-separated: gpt2-small, llama-7b")
    p.add_argument("--llama-layers", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny widths and shapes (dry run of this script)")
    p.add_argument("--json-out", help="write every figure here as JSON")
    return p.parse_args(argv)


def make_config(name: str, args):
    from transformers import GPT2Config, LlamaConfig

    if name == "gpt2-small":
        if args.tiny:
            return GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64)
        return GPT2Config(n_positions=2048)
    if name == "llama-7b":
        if args.tiny:
            return LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                               num_key_value_heads=4, num_hidden_layers=2, vocab_size=512,
                               max_position_embeddings=64)
        return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                           num_key_value_heads=32, num_hidden_layers=args.llama_layers,
                           vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
    raise SystemExit(f"unknown model {name!r}: gpt2-small or llama-7b")


def build_model(name: str, args, dtype):
    """The random model on the device, saved once to work-dir/name (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = make_config(name, args)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = model.to(dtype).eval()
    path = os.path.join(args.work_dir, name)
    if not os.path.exists(os.path.join(path, "config.json")):
        model.save_pretrained(path, safe_serialization=True, max_shard_size="50GB")
    return model, path


def block_list(model):
    import torch

    for attr in ("h", "layers"):
        blocks = getattr(model.base_model, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise RuntimeError(f"cannot find the blocks of {type(model).__name__}")


def matmul_weights(model) -> int:
    """Parameters of the blocks' matrix products (embeddings and the unembedding excluded)."""
    total = 0
    for block in block_list(model):
        total += sum(p.numel() for p in block.parameters() if p.dim() == 2)
    return total


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_hf(model, batch: int, seq: int, resid: bool, args) -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen).to(args.device)
    kept: list = []
    handles = []
    if resid:
        def to_host(_module, _inputs, output):
            kept.append((output[0] if isinstance(output, tuple) else output).to("cpu"))

        handles = [b.register_forward_hook(to_host) for b in block_list(model)]
    times = []
    try:
        with torch.inference_mode():
            for i in range(args.warmup + args.repeats):
                kept.clear()
                sync(args.device)
                t0 = time.perf_counter()
                hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
                logits = model.lm_head(hidden[:, -1]).float()
                sync(args.device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
    assert logits.shape == (batch, model.config.vocab_size)
    if resid:
        assert len(kept) == len(block_list(model))
    return {"tokens_per_s": batch * seq * len(times) / sum(times),
            "ms_per_forward_median": 1000 * statistics.median(times)}


def time_glassbox(path: str, batch: int, seq: int, resid: bool, args) -> dict:
    cmd = [args.bench_bin, f"--model={path}", f"--device={args.device}",
           f"--dtype={'bf16' if args.device == 'cuda' else 'f32'}", "--logits=last",
           f"--batch={batch}", f"--seq={seq}", f"--warmup={args.warmup}", f"--repeats={args.repeats}"]
    if resid:
        cmd.append("--capture_resid")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        return {"error": (run.stderr or run.stdout).strip()[-2000:]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def gemm_peak_tflops(args) -> float:
    import torch

    if args.device != "cuda":
        return float("nan")
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / 10
    return 2 * n**3 / seconds / 1e12


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_gpu_forward.py: torch sees no CUDA device", file=sys.stderr)
        return 2
    os.makedirs(args.work_dir, exist_ok=True)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    peak = gemm_peak_tflops(args)
    shapes = TINY_SHAPES if args.tiny else SHAPES
    report = {"gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "bf16_gemm_peak_tflops": peak, "rows": []}
    print(f"# {report['gpu']}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"bf16 GEMM peak measured: {peak:.0f} TFLOP/s", flush=True)
    header = (f"{'model':<11} {'batch':>5} {'seq':>5} {'mode':<6} {'hf_tok/s':>11} {'gb_tok/s':>11} "
              f"{'ratio':>7} {'hf_mfu':>7} {'gb_mfu':>7} {'gb_ms/layer':>11} {'gb_ms@32L':>9} "
              f"{'slow_paths':>10}")
    print(header, flush=True)
    for name in args.models.split(","):
        model, path = build_model(name, args, dtype)
        layers = len(block_list(model))
        d_model = model.config.hidden_size
        weights = matmul_weights(model)
        hf = {(b, s, r): time_hf(model, b, s, r, args) for b, s in shapes for r in (False, True)}
        del model
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        for (batch, seq, resid), theirs in hf.items():
            ours = time_glassbox(path, batch, seq, resid, args)
            flops_per_token = 2 * weights + 4 * layers * seq * d_model
            row = {"model": name, "layers": layers, "batch": batch, "seq": seq,
                   "mode": "resid" if resid else "plain", "hf": theirs, "glassbox": ours,
                   "flops_per_token": flops_per_token}
            mfu = lambda r: r["tokens_per_s"] * flops_per_token / (peak * 1e12)  # noqa: E731
            if "error" in ours:
                print(f"{name:<11} {batch:>5} {seq:>5} {row['mode']:<6} {theirs['tokens_per_s']:>11.0f} "
                      f"{'FAILED':>11}  {ours['error'].splitlines()[-1][:120]}", flush=True)
            else:
                row["ratio"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
                row["hf_mfu"], row["glassbox_mfu"] = mfu(theirs), mfu(ours)
                per_layer = ours["ms_per_forward_median"] / layers
                # Fallback GEMMs / materialised attentions over the run: both 0 on the fast path.
                slow = f"{ours.get('gemm_fallback', '?')}/{ours.get('attention_materialized', '?')}"
                print(f"{name:<11} {batch:>5} {seq:>5} {row['mode']:<6} {theirs['tokens_per_s']:>11.0f} "
                      f"{ours['tokens_per_s']:>11.0f} {row['ratio']:>6.2f}x {row['hf_mfu']:>7.1%} "
                      f"{row['glassbox_mfu']:>7.1%} {per_layer:>11.3f} {per_layer * 32:>9.1f} "
                      f"{slow:>10}", flush=True)
            report["rows"].append(row)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if any("error" in r["glassbox"] for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
