#!/usr/bin/env python3
"""Records HF `tokenizers` outputs for the tokenizer differential test.

Builds a deterministic corpus (seeded) and writes, under tests/tokenizer/fixtures/:
  corpus.json.gz     {"seed", "strings": [...]}
  <name>.json.gz     one per tokenizer (gpt2, llama2, llama3, models/demo's, and the family
                     tokenizers pythia, qwen2, gemma2, gemma3 written under families/): for every
                     corpus string the ids with and without special tokens, decode() of the ids with special tokens
                     (and with skip_special_tokens where that differs), ids with split_special_tokens for strings holding '<',
                     and decode([id]) for every id that occurs (TransformerLens's to_str_tokens).

The committed fixtures let CI run the test without PyPI `tokenizers`. Regenerate with the
reference environment (tests/reference/requirements.txt: transformers, which brings tokenizers
and builds the family tokenizers):
  /work/venv-ref/bin/python tests/tokenizer/make_tokenizer_fixtures.py
"""

import argparse
import gzip
import json
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared"))

# ---------------------------------------------------------------------------------------------
# Corpus.

BASE = [
    "",
    " ",
    "Hello world",
    "Hello, world!",
    " Hello world",
    "hello  world",
    "The quick brown fox jumps over the lazy dog.",
    "Mr. O'Neil's dog isn't here; they'll be back, we've seen it, I'm sure, he'd know.",
    "IT'S HERE. YOU'LL SEE. THEY'RE BACK. WE'VE GONE. I'M OK. HE'D GO. DON'T.",
    "It'S mIxEd: iT'lL, We'Re, yOu'Ve, i'M, sHe'D, dOn'T",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
    "''s '''ll ' 's",
    "Ünïcödé façade naïve coöperate résumé",
    "Straße ß ẞ İstanbul ıi",
    "日本語のテキストです。東京は大きい都市です。",
    "中文文本：你好，世界！这是一个测试。",
    "한국어 텍스트 안녕하세요 세계",
    "العربية: مرحبا بالعالم، هذا اختبار.",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया, यह एक परीक्षण है।",
    "ไทย: สวัสดีชาวโลก นี่คือการทดสอบ",
    "Русский: Привет, мир! Это тест.",
    "Ελληνικά: Γειά σου Κόσμε",
    "Tiếng Việt: Xin chào thế giới",
    "አማርኛ ሰላም ዓለም",
    "ქართული გამარჯობა",
    "தமிழ் வணக்கம் உலகம்",
    "😀😃😄😁 emoji 🎉🎊",
    "👨‍👩‍👧‍👦 family ZWJ, 👩🏽‍💻 coder, 🏳️‍🌈 flag, 🧑🏿‍🤝‍🧑🏻",
    "🇺🇸🇬🇧🇯🇵🇩🇪🇫🇷 flags",
    "👍🏻👍🏼👍🏽👍🏾👍🏿 skin tones",
    "❤️ ♥ ☺️ ✌🏽 ⚽",
    "e\u0301 a\u0300 o\u0308 n\u0303 combining",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space\u3000here",
    "zero\u200bwidth\u200bspace\u200c\u200d\ufeff",
    "thin\u2009space en\u2002space em\u2003space\u205fmath\u202fnarrow",
    "line\u2028separator\u2029paragraph",
    "\u0085next line\u000bvt\u000cff",
    "1234567890",
    "12345678901234567890123456789012345678901234567890",
    "3.14159265358979323846264338327950288419716939937510",
    "Phone: +1 (555) 123-4567, Date: 2024-06-11",
    "١٢٣٤٥٦٧٨٩٠ Arabic-Indic digits, ०१२३४५ Devanagari, ５６７ fullwidth",
    "½ ¼ ¾ ² ³ Ⅻ ⅻ ①②③",
    "def foo(x):\n    return x ** 2\n",
    "int main() {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (let i = 0; i < 10; i++) { console.log(`i=${i}`); }",
    "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
    "SELECT * FROM users WHERE id = 1 AND name LIKE '%bob%';",
    "x = [1, 2, 3]\r\ny = {'a': 1}\r\n",
    "    indented\n        more\n\t\ttabs\n",
    "\n\n\n",
    "a\n\nb\n\n\nc",
    "   leading and trailing   ",
    "\t\t\t",
    "\r\n\r\n",
    "word\r\nword\rword\nword",
    "     ",
    "a  b   c    d     e",
    "!!!???...,,,;;;:::",
    "@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "http://example.com/path?query=1&x=y#frag",
    "user@example.com",
    "<s>",
    "</s>",
    "<unk>",
    "<s>Hello</s>",
    "Hello <s> world </s>",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|endoftext|>",
    "Text<|endoftext|>More text",
    "<|reserved_special_token_5|> x <|reserved_special_token_250|>",
    "<s><s><s>",
    "< s> <s > <|begin_of_text| > <|endoftext",
    "▁already▁has▁metaspace",
    "<0x0A> <0xFF> byte token strings",
    "\x00\x01\x02\x7f control chars",
    "\u00ad soft hyphen",
    "A" * 300,
    "ab" * 150,
    " " * 64,
    "\n" * 40,
    "😀" * 50,
    "9" * 200,
    # Case-folding corners of (?i:'s|...): long s, Kelvin sign, dotted capital I.
    "it'\u017f it'\u212a I'\u0130 'ſ 'K",
    "x's's's''s'''s",
    "\u2581\u2581 double metaspace",
    "\U0010FFFF\U000E0001\uFFFE\uFFFF noncharacters",
    "\u0600\u061c\u200e\u200f\u202a\u202e bidi marks",
    "a\u0308\u0301\u0323 stacked marks",
    "\u1100\u1161\u11a8 conjoining jamo",
    "\u0e01\u0e34\u0e4a Thai marks",
    "\u0915\u094d\u0937 virama",
    "\U0001F469\u200D\u2764\uFE0F\u200D\U0001F48B\u200D\U0001F468 kiss",
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F Scotland tag flag",
    "1\uFE0F\u20E3 keycap #\uFE0F\u20E3",
    # Unicode normalization (NFC / NFKC families): composed and decomposed forms, reordering
    # of marks, Hangul jamo, compatibility characters, and marks assigned after Unicode 9.0
    # (HF's tables), which HF leaves in place where current tables would reorder them.
    "e\u0301 \u00e9 a\u030a \u00e5 o\u0308\u0304 \u022b A\u0323\u0302 \u1eac",
    "q\u0307\u0323 q\u0323\u0307 \u1e0b\u0323 d\u0307\u0323 \u0344 \u0958 \u2126 \u212b",
    "\u1100\u1161 \u1100\u1161\u11a8 \uac00\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "\ufb01 \u2460 \u33cf \uff21 \u210c \u00bd \u2075 \u00aa \u1e9b\u0323 \u3300 \ufe30 \u0149",
    "a\u1df6\u0316 a\u09fe\u0316 a\U00010d24\u0316 a\u0316\u0d3b b\U0001e130\u0316 c\u1ac1\u0316",
    "\U00011935\U00011930 \U00011938 \u0b47\u0b3e \u0b4b \U0001109a \U00011099\U000110ba",
    "x\u0301\u0301\u0301\u0316\u0316 \u0300\u0301 leading marks \u05b0\u05b1\u05b2",
]

WORDS_EN = ("the of and to in is was for on that with as by at from his her they have not be are "
            "this which or had but an were been one their all would there what so up out if about "
            "who get can like time no just him know take people into year your good some could them "
            "see other than then now look only come its over think also back after use two how our "
            "work first well way even new want because any these give day most us").split()

FRAGMENTS = [
    "Hello", "world", "don't", "I'LL", "We'Re", "it's", "naïve", "東京", "你好", "안녕",
    "مرحبا", "नमस्ते", "สวัสดี", "Привет", "😀", "👨‍👩‍👧", "🇯🇵", "👍🏽", "e\u0301", "\u00a0", "\u3000",
    "\u200b", "\u2009", "123", "4567", "89012345", "3.14", "x=1;", "if (a) {", "}", "\t", "\n",
    "\r\n", "  ", "   ", "...", "!?", "'s", "'LL", "<s>", "</s>", "<|begin_of_text|>",
    "<|endoftext|>", "<|eot_id|>", "<unk>", "▁", "ﬁ", "Ａ", "ℌ", "ⓐ", "𝔘𝔫𝔦", "\U0001F9D1\u200d\U0001F680",
]

UNICODE_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
    (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2070, 0x2BFF), (0x3000, 0x30FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF), (0xFB00, 0xFFFD), (0x10000, 0x1FFFF),
    (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0xF0000, 0x10FFFF),
]

SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u200b", "\u2002", "\u2009",
          "\u202f", "\u205f", "\u1680", "\u0085", "\u000b", "\u000c", "\u2028", "\ufeff"]


def random_codepoint(rng):
    lo, hi = rng.choice(UNICODE_RANGES)
    while True:
        cp = rng.randint(lo, hi)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def build_corpus(rng, decoders_for_corpus):
    out = list(BASE)
    # Fragment soups: the categories mixed, joined by assorted whitespace.
    for _ in range(700):
        n = rng.randint(1, 12)
        parts = []
        for _ in range(n):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(FRAGMENTS))
            elif r < 0.8:
                parts.append(rng.choice(WORDS_EN))
            else:
                parts.append(rng.choice(SPACES))
            if rng.random() < 0.6:
                parts.append(rng.choice([" ", " ", " ", "", "\n", "  "]))
        out.append("".join(parts))
    # Random code points from many blocks, including unassigned and private-use ones.
    for _ in range(400):
        out.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 40))))
    # Random byte strings, made valid text the way Python users would.
    for i in range(300):
        raw = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 60)))
        out.append(raw.decode("utf-8", errors="replace") if i % 2 == 0 else raw.decode("latin-1"))
    # Whitespace-heavy strings.
    for _ in range(250):
        parts = []
        for _ in range(rng.randint(1, 10)):
            parts.append("".join(rng.choice(SPACES) for _ in range(rng.randint(1, 6))))
            if rng.random() < 0.7:
                parts.append(rng.choice(WORDS_EN + FRAGMENTS))
        out.append("".join(parts))
    # Digit runs of every length, alone and in text.
    for _ in range(120):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 60)))
        out.append(rng.choice(["{}", "x{}", " {}", "{} apples", "a{}b", "${}.00", "{}\n"]).format(digits))
    # Contractions in random case.
    for _ in range(150):
        word = rng.choice(WORDS_EN)
        suffix = rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"])
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in word + suffix)
        out.append(rng.choice(["{}", "{} x", " {}", "{}{}", "I said {}!"]).format(text, text))
    # Special-token strings embedded in text.
    specials = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                "<|endoftext|>", "<|start_header_id|>", "<|reserved_special_token_0|>"]
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(specials) if rng.random() < 0.4 else rng.choice(WORDS_EN))
            parts.append(rng.choice(["", " ", "  ", "\n"]))
        out.append("".join(parts))
    # Code-like lines.
    code_bits = ["def", "return", "if", "else", "for", "while", "(", ")", "{", "}", "[", "]", ";",
                 ":", "=", "==", "+=", "->", "::", "//", "#", "\"str\"", "'c'", "0x1F", "1e-9",
                 "self.x", "foo_bar", "FooBar", "    ", "\t", "\n"]
    for _ in range(150):
        out.append("".join(rng.choice(code_bits) + rng.choice(["", " "])
                           for _ in range(rng.randint(3, 30))))
    # Text made of random vocabulary pieces (decoded ids).
    for tok in decoders_for_corpus:
        size = tok.get_vocab_size(with_added_tokens=False)
        for _ in range(200):
            ids = [rng.randrange(size) for _ in range(rng.randint(1, 15))]
            out.append(tok.decode(ids, skip_special_tokens=True))
    # A few long texts.
    for _ in range(10):
        out.append(" ".join(rng.choice(WORDS_EN + FRAGMENTS) for _ in range(rng.randint(300, 800))))
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizers.

def load_gpt2(shared):
    # What HF's gpt2 tokenizer.json holds: byte-level BPE, <|endoftext|> as a special added token.
    d = os.path.join(shared, "data", "tokenizers", "gpt2")
    tok = Tokenizer(models.BPE.from_file(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    return tok


def load_json(shared, name):
    return Tokenizer.from_file(os.path.join(shared, "data", "tokenizers", name, "tokenizer.json"))


def load_demo():
    # The shipped demo model's tokenizer (byte-level BPE fitted to its corpus, BOS template).
    return Tokenizer.from_file(os.path.join(HERE, "..", "..", "models", "demo", "tokenizer.json"))


# ---------------------------------------------------------------------------------------------
# Family tokenizers. No published Pythia, Qwen or Gemma vocabulary can be had here, so each is
# built by transformers' own tokenizer class for that family (its exact normalizer,
# pre-tokenizer, BPE options, decoder, post-processor and added tokens) over a small vocabulary
# that HF `tokenizers` trains with the same pipeline on a seeded text sample, and saved with
# save_pretrained: what a checkpoint of the family ships, only with fewer merges. Mistral and
# Phi-3 ship Llama-2's SentencePiece pipeline and GPT-J GPT-2's, which the real vocabularies
# above cover.

FAMILY_VOCAB_SIZE = 1200


def training_texts(seed):
    rng = random.Random(seed)
    texts = []
    for _ in range(3000):
        words = [rng.choice(WORDS_EN + FRAGMENTS) for _ in range(rng.randint(3, 25))]
        texts.append(rng.choice([" ", " ", " ", "  ", "\n", ", "]).join(words))
    for _ in range(300):
        texts.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8))))
    return texts


def train_bpe(pre_tokenizer, normalizer, special_tokens, byte_level, limit_alphabet=None):
    """Vocab and merges learned by HF's BpeTrainer with a family's pipeline."""
    from tokenizers import trainers
    tok = Tokenizer(models.BPE(byte_fallback=not byte_level))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    options = {"limit_alphabet": limit_alphabet} if limit_alphabet else {}
    trainer = trainers.BpeTrainer(
        vocab_size=FAMILY_VOCAB_SIZE, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [], **options)
    tok.train_from_iterator(training_texts(SEED), trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                            for m in model["merges"]]


def save_family(tok, name, out):
    directory = os.path.join(out, "families", name)
    os.makedirs(directory, exist_ok=True)
    tok.save_pretrained(directory)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        path = os.path.join(directory, extra)
        if os.path.exists(path):
            os.remove(path)
    return Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))


def build_pythia(out):
    # GPT-NeoX-20B's tokenizer (Pythia): NFC, byte-level BPE, <|endoftext|> and <|padding|>, and
    # runs of 2..24 spaces as normalized, non-special added tokens, as the real one has.
    from tokenizers import normalizers as tn
    from transformers import GPTNeoXTokenizer
    vocab, merges = train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), tn.NFC(),
                              ["<|endoftext|>", "<|padding|>"], byte_level=True)
    tok = GPTNeoXTokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(" " * n, normalized=True, special=False, lstrip=False, rstrip=False)
                    for n in range(24, 1, -1)])
    return save_family(tok, "pythia", out)


def build_qwen2(out):
    # Qwen2 / Qwen2.5 / Qwen3: NFC, Qwen's split regex then byte-level BPE, no BOS, chat tokens.
    from tokenizers import normalizers as tn
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from tokenizers import Regex
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab, merges = train_bpe(pre, tn.NFC(), ["<|endoftext|>"], byte_level=True)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(t, special=True) for t in
                    ("<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_start|>")])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in
                    ("<tool_call>", "</tool_call>", "<think>", "</think>")])
    return save_family(tok, "qwen2", out)


def gemma_vocab(specials):
    # SentencePiece layout: the special tokens, the 256 byte tokens, then learned pieces over a
    # small alphabet, so most non-Latin text falls back to bytes.
    from tokenizers import normalizers as tn
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    vocab, merges = train_bpe(pre_tokenizers.Split("\u2581", "merged_with_next"),
                              tn.Replace(" ", "\u2581"), specials + byte_tokens,
                              byte_level=False, limit_alphabet=120)
    return vocab, merges


def build_gemma2(out, name="gemma2", pre_tokenizer_none=True):
    # Gemma / Gemma-2: spaces replaced by U+2581 by the normalizer, BPE with byte fallback and
    # fused unknowns, a <bos> template, Replace + ByteFallback + Fuse decoding; Gemma-2's
    # published tokenizer.json has no pre-tokenizer, Gemma-3's splits on " " (merged with the
    # previous piece), which transformers 5 builds for both.
    from transformers import GemmaTokenizer
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab, merges = gemma_vocab(specials)
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    extra = ["<start_of_turn>", "<end_of_turn>"]
    if name == "gemma3":
        extra += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok.add_tokens([AddedToken(t, special=True) for t in extra])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in
                    ("<table>", "</table>", "<h1>", "\n\n\n", "\t\t")])
    if pre_tokenizer_none:
        tok.backend_tokenizer.pre_tokenizer = None
    return save_family(tok, name, out)


def random_id_decodes(tok, rng, count=300):
    """Decoding arbitrary id sequences exercises partial UTF-8 and byte-fallback runs."""
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    out = []
    for _ in range(count):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))]
        out.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return out


def record(tok, corpus):
    entries = []
    seen_ids = set()
    for text in corpus:
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True).ids
        entry = {
            "ids": ids,
            "ids_special": ids_special,
            "decoded": tok.decode(ids_special, skip_special_tokens=False),
        }
        decoded_skip = tok.decode(ids_special, skip_special_tokens=True)
        if decoded_skip != entry["decoded"]:  # Stored only where it differs, to keep files small.
            entry["decoded_skip"] = decoded_skip
        if "<" in text:
            tok.encode_special_tokens = True
            entry["ids_split_special"] = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = False
        seen_ids.update(ids_special)
        entries.append(entry)
    # decode([id]) for every id seen, plus a spread of the whole vocabulary.
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    seen_ids.update(range(0, vocab_size, 97))
    seen_ids.update(range(max(0, vocab_size - 300), vocab_size))
    seen_ids.update(range(0, min(vocab_size, 300)))
    token_strings = {str(i): tok.decode([i], skip_special_tokens=False) for i in sorted(seen_ids)}
    return {"vocab_size": vocab_size, "entries": entries, "token_strings": token_strings,
            "random_decodes": random_id_decodes(tok, random.Random(SEED + vocab_size))}


def write_json_gz(path, data):
    # gzip without a timestamp, so that regenerating gives byte-identical files.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                 filename="", compresslevel=9) as f:
        f.write(text.encode("utf-8"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.environ.get("GLASSBOX_SHARED_DIR", DEFAULT_SHARED))
    parser.add_argument("--out", default=os.path.join(HERE, "fixtures"))
    parser.add_argument("--only", nargs="*", help="record only these tokenizers (default: all)")
    args = parser.parse_args()

    corpus = build_corpus(random.Random(SEED),
                          [load_gpt2(args.shared), load_json(args.shared, "llama3")])
    os.makedirs(args.out, exist_ok=True)
    write_json_gz(os.path.join(args.out, "corpus.json.gz"),
                  {"seed": SEED, "tokenizers_version": tokenizers.__version__, "strings": corpus})
    loaders = {
        "gpt2": lambda: load_gpt2(args.shared),
        "llama2": lambda: load_json(args.shared, "llama2"),
        "llama3": lambda: load_json(args.shared, "llama3"),
        "demo": load_demo,
        "pythia": lambda: build_pythia(args.out),
        "qwen2": lambda: build_qwen2(args.out),
        "gemma2": lambda: build_gemma2(args.out),
        "gemma3": lambda: build_gemma2(args.out, "gemma3", pre_tokenizer_none=False),
    }
    for name, load in loaders.items():
        if args.only and name not in args.only:
            continue
        data = record(load(), corpus)
        data["tokenizers_version"] = tokenizers.__version__
        write_json_gz(os.path.join(args.out, name + ".json.gz"), data)
        print(f"{name}: {len(corpus)} strings, {len(data['token_strings'])} token strings",
              file=sys.stderr)


if __name__ == "__main__":
    main()
