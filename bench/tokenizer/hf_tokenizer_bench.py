#!/usr/bin/env python3
"""HF `tokenizers` encode throughput over the same text file as tokenizer_bench.

  hf_tokenizer_bench.py TOKENIZER_DIR TEXT_FILE [ROUNDS]   prints MB/s for an encode loop and
                                                          encode_batch (HF's thread pool)
  hf_tokenizer_bench.py --write-text OUT [MB]             writes the benchmark text: the
                                                          tokenizer test corpus, repeated
"""

import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "..", "tests", "tokenizer", "fixtures", "corpus.json.gz")


def write_text(out, megabytes):
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        strings = json.load(f)["strings"]
    # One document per line; newlines inside documents become extra lines, which is fine.
    lines = [s.replace("\r", "") for s in strings if s.strip()]
    text, target = [], megabytes * 1_000_000
    size = 0
    while size < target:
        for line in lines:
            text.append(line)
            size += len(line.encode("utf-8")) + 1
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(text) + "\n")


def load(directory):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        return Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tok = Tokenizer(models.BPE.from_file(os.path.join(directory, "vocab.json"),
                                         os.path.join(directory, "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    return tok


def main():
    if sys.argv[1] == "--write-text":
        write_text(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 4)
        return
    tok = load(sys.argv[1])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with open(sys.argv[2], encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")[:-1]
    mb = sum(len(l.encode("utf-8")) for l in lines) / 1e6

    def best(fn):
        times, tokens = [], 0
        for _ in range(rounds):
            start = time.perf_counter()
            tokens = fn()
            times.append(time.perf_counter() - start)
        return min(times), tokens

    loop_s, loop_tokens = best(lambda: sum(len(tok.encode(l, add_special_tokens=False).ids)
                                           for l in lines))
    print(f"hf encode loop (1 thread): {mb / loop_s:.2f} MB/s, {loop_tokens} tokens, {mb:.2f} MB")
    batch_s, batch_tokens = best(lambda: sum(len(e.ids) for e in
                                             tok.encode_batch(lines, add_special_tokens=False)))
    print(f"hf encode_batch ({os.cpu_count()} cores): {mb / batch_s:.2f} MB/s, {batch_tokens} tokens")


if __name__ == "__main__":
    main()
