"""Trains the demo model: a small GPT-2 on the synthetic corpus of corpus.py.

    python tools/demo_model/train.py --out models/demo

writes an HF model directory (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) with save_pretrained, training.json (arguments and the loss curve with
quick measurements every --log_every steps) and evaluation.json (evaluate.py's numbers).
Everything is seeded; on the CPU with the same torch build the run repeats bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402
import evaluate  # noqa: E402

BOS = "<|endoftext|>"


def fit_tokenizer(seed: int, vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2's scheme) fitted to the corpus; id 0 is <|endoftext|>.

    Unlike GPT-2's, the post-processor puts <|endoftext|> in front of every text (as Llama's
    tokenizers do with <s>), because every training row starts with it: HF `tokenizer(text)`,
    TransformerLens `to_tokens` and Glassbox text inputs then all give the model what it saw.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus.tokenizer_training_text(seed, 20000), trainer)
    return tokenizer


class Batches:
    """Rows of BOS + documents separated by BOS, cut to seq_len + 1 tokens."""

    def __init__(self, tokenizer: Tokenizer, seed: int, seq_len: int, mixture: Dict[str, float],
                 repeat_share: float, repeat_len: tuple):
        self.rng = random.Random(seed)
        self.tokenizer = tokenizer
        self.bos = tokenizer.token_to_id(BOS)
        self.vocab = tokenizer.get_vocab_size()
        self.seq_len = seq_len
        self.sample_text = corpus.documents(self.rng, mixture)
        self.repeat_share = repeat_share
        self.repeat_len = repeat_len

    def _repeat(self) -> List[int]:
        n = self.rng.randint(*self.repeat_len)
        span = [self.rng.randrange(1, self.vocab) for _ in range(n)]
        return span * self.rng.choice([2, 2, 3])

    def _document(self) -> List[int]:
        if self.rng.random() < self.repeat_share:
            return self._repeat()
        return self.tokenizer.encode(self.sample_text(), add_special_tokens=False).ids

    def row(self) -> List[int]:
        ids = [self.bos]
        while len(ids) < self.seq_len + 1:
            ids += self._document() + [self.bos]
        return ids[: self.seq_len + 1]

    def batch(self, rows: int) -> torch.Tensor:
        return torch.tensor([self.row() for _ in range(rows)])


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--weight_decay", type=float, default=0.1)
    parser.add_argument("--repeat_share", type=float, default=0.25,
                        help="fraction of documents that are repeated random token spans")
    parser.add_argument("--repeat_min", type=int, default=5)
    parser.add_argument("--repeat_max", type=int, default=30)
    parser.add_argument("--mixture", default="story=3,ioi=2,sequence=2,fact=2")
    parser.add_argument("--log_every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    tokenizer = fit_tokenizer(args.seed, args.vocab)
    bos = tokenizer.token_to_id(BOS)
    mixture = {k: float(v) for k, v in (kv.split("=") for kv in args.mixture.split(","))}
    batches = Batches(tokenizer, args.seed + 1, args.seq_len, mixture, args.repeat_share,
                      (args.repeat_min, args.repeat_max))

    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=args.seq_len, n_embd=args.d_model,
        n_layer=args.layers, n_head=args.heads, n_inner=4 * args.d_model,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=bos, eos_token_id=bos, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"  # evaluate.py reads attention patterns

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "wpe" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    log: List[Dict[str, object]] = []
    start = time.time()
    running = None
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        batch = batches.batch(args.batch)
        logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry = {"step": step + 1, "loss": round(running, 4),
                     "seconds": round(time.time() - start, 1)}
            entry.update(evaluate.evaluate_model(model, tokenizer, bos, full=False))
            log.append(entry)
            print(f"step {entry['step']} loss {entry['loss']} ({entry['seconds']} s): repeat "
                  f"loss {entry['repeat_loss_first']} -> {entry['repeat_loss_second']}, top-1 "
                  f"ioi {entry['ioi_top1']:.2f} sequence {entry['sequence_top1']:.2f} counting "
                  f"{entry['counting_top1']:.2f} facts {entry['fact_top1']:.2f}\n"
                  f"  previous-token scores {entry['previous_token_score']}\n"
                  f"  induction scores {entry['induction_score']}", flush=True)

    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS,
                      model_max_length=args.seq_len).save_pretrained(args.out)
    record = {"arguments": {k: str(v) for k, v in vars(args).items()},
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "seconds": round(time.time() - start, 1), "log": log}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    evaluation = evaluate.evaluate_model(model, tokenizer, bos, full=True)
    (args.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    print(json.dumps(evaluation, indent=1))


if __name__ == "__main__":
    main()
