"""Evaluation prompts of the demo model, shared by evaluate.py (torch, at training time) and
the end-to-end tests (through glassboxd, without torch).

Each prompt is a text without BOS and its expected next token with its leading space; the
streams are seeded apart from the training corpus's.
"""

from __future__ import annotations

import random
from typing import List, Tuple

import corpus


def ioi(seed: int, count: int, held_out: bool) -> List[Tuple[str, str, str]]:
    """(prompt, " IO", " S") triples from a stream disjoint from training's."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        template = rng.choice(corpus.ioi_templates(held_out))
        text, io, s = corpus.ioi_sentence(rng, template)
        prompt = text[: text.rindex(" " + io)]
        out.append((prompt, " " + io, " " + s))
    return out


def sequences(seed: int, count: int) -> List[Tuple[str, str]]:
    """(prompt, " next item"): four consecutive items of a list, bare and space-separated."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        _, run = corpus.sequence_items(rng, 5)
        if len(run) == 5:
            out.append((" ".join(run[:4]), " " + run[4]))
    return out


def counting(seed: int, count: int) -> List[Tuple[str, str]]:
    """(prompt, " next"): four numbers counted in a step of 2, 3, 5 or 10."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        run = corpus.counting_items(rng, 5)
        if len(run) == 5:
            out.append((" ".join(run[:4]), " " + run[4]))
    return out


def facts(held_out: bool) -> List[Tuple[str, str]]:
    """(prompt, " object") for every fact in its training templates or its held-out one."""
    return [(sentence[: sentence.rindex(" " + obj)], " " + obj)
            for sentence, obj in corpus.fact_sentences(held_out)]
