"""Measurements of the demo model, in torch on the HF model: what training logs and the model
card reports. The end-to-end tests (client/python/tests/test_demo_model.py) measure the same
things through glassboxd, on their own random draws.

    python tools/demo_model/evaluate.py models/demo     # writes models/demo/evaluation.json

Head scores follow docs/methods.md (and the client's ``Model.detect_heads``): on BOS + r + r with
r random of length n, the induction score of a head is its mean attention from second-copy
position i to i - n + 1, the previous-token score its mean attention from i to i - 1. Copy
losses are over tokens 2..n of each copy (a copying model cannot know the first).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402
import prompts  # noqa: E402

INDUCTION_HEAD_THRESHOLD = 0.4  # heads scoring above this are "the induction heads"


def random_repeats(vocab_size: int, bos: int, n: int, count: int, seed: int) -> torch.Tensor:
    """[count, 1 + 2n]: BOS, then n uniformly random non-BOS ids, then the same n again."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size - 1, (count, n), generator=g)
    first += (first >= bos).long()  # skip the BOS id
    return torch.cat([torch.full((count, 1), bos), first, first], dim=1)


def copy_losses(logits: torch.Tensor, tokens: torch.Tensor, n: int) -> Tuple[float, float]:
    """Mean loss of tokens 2..n of the first and of the second copy (BOS at position 0)."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                             reduction="none").view(tokens.shape[0], -1)
    # losses[:, t] is the loss of token t + 1; the copies start at positions 1 and 1 + n.
    return losses[:, 1:n].mean().item(), losses[:, n + 1:2 * n].mean().item()


@dataclass
class HeadScores:
    previous_token: torch.Tensor  # [layers, heads]
    induction: torch.Tensor  # [layers, heads]
    loss_first: float
    loss_second: float


@torch.no_grad()
def head_scores(model, tokens: torch.Tensor, n: int) -> HeadScores:
    out = model(tokens, output_attentions=True)
    pattern = torch.stack(out.attentions, dim=1)  # [batch, layer, head, q, k]
    q = torch.arange(1 + n, 1 + 2 * n)
    induction = pattern[:, :, :, q, q - n + 1].mean(dim=(0, -1))
    p = torch.arange(1, 1 + 2 * n)
    previous = pattern[:, :, :, p, p - 1].mean(dim=(0, -1))
    return HeadScores(previous, induction, *copy_losses(out.logits, tokens, n))


@torch.no_grad()
def copy_losses_with_heads_ablated(model, tokens: torch.Tensor, n: int,
                                   heads: Sequence[Tuple[int, int]]) -> Tuple[float, float]:
    """Copy losses with the heads' hook_z (the input of c_proj) zeroed: TL zero ablation."""
    d_head = model.config.n_embd // model.config.n_head
    by_layer: Dict[int, List[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def zero_heads(hs: List[int]):
        def pre_hook(module, args):
            z = args[0].clone()
            for h in hs:
                z[..., h * d_head:(h + 1) * d_head] = 0
            return (z,)
        return pre_hook

    handles = [model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero_heads(hs))
               for layer, hs in by_layer.items()]
    try:
        return copy_losses(model(tokens).logits, tokens, n)
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def top1_accuracy(model, tokenizer, bos: int, cases: List[Tuple[str, str]]) -> float:
    """Share of (prompt, answer) cases whose most likely next token is the answer's first."""
    correct = 0
    for prompt, answer in cases:
        ids = [bos] + tokenizer.encode(prompt, add_special_tokens=False).ids
        logits = model(torch.tensor([ids])).logits[0, -1]
        correct += int(logits.argmax()) == tokenizer.encode(answer, add_special_tokens=False).ids[0]
    return correct / len(cases)


@torch.no_grad()
def ioi_accuracy(model, tokenizer, bos: int, seed: int, count: int, held_out: bool
                 ) -> Tuple[float, float, float]:
    """(top-1 accuracy, P(logit IO > logit S), mean logit difference IO - S)."""
    top1 = wins = 0
    diff = 0.0
    for prompt, io, s in prompts.ioi(seed, count, held_out):
        ids = [bos] + tokenizer.encode(prompt, add_special_tokens=False).ids
        logits = model(torch.tensor([ids])).logits[0, -1]
        io_id = tokenizer.encode(io, add_special_tokens=False).ids[0]
        s_id = tokenizer.encode(s, add_special_tokens=False).ids[0]
        top1 += int(logits.argmax()) == io_id
        wins += bool(logits[io_id] > logits[s_id])
        diff += float(logits[io_id] - logits[s_id])
    return top1 / count, wins / count, diff / count


@torch.no_grad()
def text_losses(model, tokenizer, bos: int, seed: int, count: int) -> Dict[str, float]:
    """Mean next-token loss (nats) per kind of text document, over fresh documents."""
    out = {}
    for kind in corpus.GENERATORS:
        sample = corpus.documents(random.Random(seed), {kind: 1.0})
        total = tokens = 0.0
        for _ in range(count):
            ids = torch.tensor([[bos] + tokenizer.encode(sample(), add_special_tokens=False).ids])
            logits = model(ids).logits
            total += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
            tokens += ids.shape[1] - 1
        out[kind] = round(total / tokens, 4)
    return out


def _rounded(matrix: torch.Tensor) -> List[List[float]]:
    return [[round(x, 3) for x in row] for row in matrix.tolist()]


def evaluate_model(model, tokenizer, bos: int, full: bool) -> Dict[str, object]:
    """The model card's numbers (``full``) or a quick subset for the training log."""
    was_training = model.training
    model.eval()
    n = 20
    tokens = random_repeats(model.config.vocab_size, bos, n, 128 if full else 32, seed=1234)
    scores = head_scores(model, tokens, n)
    result: Dict[str, object] = {
        "repeat_loss_first": round(scores.loss_first, 4),
        "repeat_loss_second": round(scores.loss_second, 4),
        "previous_token_score": _rounded(scores.previous_token),
        "induction_score": _rounded(scores.induction),
    }
    count = 400 if full else 50
    top1 = functools.partial(top1_accuracy, model, tokenizer, bos)
    for held_out, label in ((False, "ioi"), (True, "ioi_held_out")):
        if held_out and not full:
            continue
        accuracy, wins, diff = ioi_accuracy(model, tokenizer, bos, 99, count, held_out)
        result.update({f"{label}_top1": accuracy, f"{label}_io_over_s": wins,
                       f"{label}_logit_diff": round(diff, 3)})
    result["sequence_top1"] = top1(prompts.sequences(77, count))
    result["counting_top1"] = top1(prompts.counting(76, count))
    result["fact_top1"] = top1(prompts.facts(held_out=False))
    if full:
        result["text_loss"] = text_losses(model, tokenizer, bos, 4242, 200)
        result["fact_held_out_top1"] = top1(prompts.facts(held_out=True))
        ranked = sorted(((float(s), l, h) for l, row in enumerate(scores.induction)
                         for h, s in enumerate(row)), reverse=True)
        heads = [(l, h) for s, l, h in ranked if s > INDUCTION_HEAD_THRESHOLD]
        first, second = copy_losses_with_heads_ablated(model, tokens, n, heads)
        result["induction_heads"] = [f"L{l}H{h}" for l, h in heads]
        result["repeat_loss_second_induction_heads_ablated"] = round(second, 4)
        result["repeat_gap_closed_by_ablation"] = round(
            (second - scores.loss_second) / (scores.loss_first - scores.loss_second), 4)
    model.train(was_training)
    return result


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args()
    model = GPT2LMHeadModel.from_pretrained(args.model_dir, attn_implementation="eager")
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    result = evaluate_model(model, tokenizer, model.config.bos_token_id, full=True)
    (args.model_dir / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
