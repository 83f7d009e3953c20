#!/usr/bin/env bash
# Encode throughput of glassbox's tokenizer beside HF tokenizers, on the same text, in one run.
#   bench/tokenizer/run_tokenizer_bench.sh [BUILD_DIR] [MB]
# Needs a built tokenizer_bench (ninja -C BUILD_DIR tokenizer_bench) and a Python with PyPI
# `tokenizers` ($HF_PYTHON, default: the repo's .venv, else /work/venv-tok, else python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${1:-$repo/build}"
mb="${2:-4}"
shared="${GLASSBOX_SHARED_DIR:-$(cd "$repo/.." && pwd)/shared}"
py="${HF_PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in "$repo/.venv/bin/python" /work/venv-tok/bin/python python3; do
    if "$candidate" -c "import tokenizers" 2>/dev/null; then py="$candidate"; break; fi
  done
fi
bin="$build/bench/tokenizer/tokenizer_bench"
[ -x "$bin" ] || { echo "missing $bin: build the tokenizer_bench target" >&2; exit 1; }
text="$(mktemp /tmp/tokenizer_bench.XXXXXX.txt)"
trap 'rm -f "$text"' EXIT
"$py" "$here/hf_tokenizer_bench.py" --write-text "$text" "$mb"
threads="$(nproc)"
echo "text: $(du -h "$text" | cut -f1), threads: $threads, tokenizers $("$py" -c 'import tokenizers; print(tokenizers.__version__)')"
for name in gpt2 llama2 llama3; do
  echo "== $name"
  ours="$("$bin" "$shared/data/tokenizers/$name" "$text" "$threads")"
  hf="$("$py" "$here/hf_tokenizer_bench.py" "$shared/data/tokenizers/$name" "$text")"
  echo "$ours"
  echo "$hf"
  rate() { grep "$1" <<<"$2" | sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/'; }
  awk -v a="$(rate 'loop' "$ours")" -v b="$(rate 'loop' "$hf")" \
      -v c="$(rate 'threads' "$ours")" -v d="$(rate 'encode_batch' "$hf")" \
      'BEGIN { printf "ratio glassbox/hf: single thread %.2fx, all threads %.2fx\n", a / b, c / d }'
  tokens() { grep "$1" <<<"$2" | sed -E 's/.* ([0-9]+) tokens.*/\1/'; }
  if [ "$(tokens loop "$ours")" != "$(tokens loop "$hf")" ]; then
    echo "WARNING: token counts differ: $(tokens loop "$ours") vs $(tokens loop "$hf")"
  fi
done
