"""make_tokenizers.py — tokenizer goldens from the Hugging Face tokenizers library.

Trains small tokenizers of each family kvlora implements, with the tokenizers library
itself, and records the ids it produces (and the text it decodes back) for every string
of CASES below. kvlora's test.c must reproduce them exactly.

    python3 data/tokenizers/make_tokenizers.py OUTDIR [STORIES260K_DIR]

Families (OUTDIR/<family>/tokenizer.json):
  gpt2      byte-level BPE, ByteLevel pre-tokenizer with GPT-2's regex, ByteLevel decoder
  llama3    Split with Llama 3's regex + ByteLevel(use_regex=False), ignore_merges,
            TemplateProcessing BOS <|begin_of_text|>, special tokens in the text
  qwen2     NFC normalizer, Split with Qwen2's regex + ByteLevel(use_regex=False),
            <|endoftext|>, <|im_start|>, <|im_end|>
  smollm    Digits(individual) + ByteLevel(use_regex=True)
  sp_bpe    SentencePiece-style BPE: Prepend + Replace normalizer, byte_fallback with
            <0xNN> tokens, unk, TemplateProcessing <s>; decoder Replace, ByteFallback, Fuse, Strip
  metaspace Metaspace pre-tokenizer (prepend_scheme first), byte_fallback, decoder Metaspace
  big50k    byte-level BPE with a 50k vocabulary (the speed benchmark's), GPT-2 regex
Writes OUTDIR/cases.json: {"strings": [...], "<family>": {"ids": [[...]...], "decoded": [...]}}.
"""
import json, os, random, sys

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    "  leading spaces and trailing spaces   ",
    "multiple    spaces\tand\ttabs",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "She's here, they're gone, I'm fine, we'll see, you'd know, it's HE'S THEY'RE.",
    "def add(a, b):\n    return a + b  # comment\n",
    "for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }",
    "x = {\"key\": [1, 2, 3], 'other': None}",
    "café naïve résumé Zürich São Paulo",
    "東京は日本の首都です。北京是中国的首都。",
    "한국어 텍스트와 English mixed",
    "Привет, мир! Γειά σου κόσμε.",
    "emoji: 😀 🎉 👩\u200d💻 🇯🇵 and ♥ ★",
    "numbers 1 12 123 1234 12345 123456789 3.14159 -42 1,000,000",
    "phone 555-0123 and year 2024",
    "The secret code of Alice is 48213.",
    "Q: What is the secret code of Alice? A: 48213",
    "special <|endoftext|> inside <|im_start|>user text<|im_end|> and <s> or </s>",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "a",
    " ",
    "",
    "ÀÉÎÕÜ àéîõü ßø œ æ ñ",
    "tabs\t\tand\r\ncarriage returns\r",
    "mixed123numbers456and789letters",
    "!!!???...,,,;;;:::",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛 and ①②③ and Ⅻ",
]


def training_text(cases):
    rnd = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog secret code of is what a an and to in it that was "
             "he she they we you said little girl named lily loved play outside park one day saw big red ball "
             "def return import class self print for while if else elif try except with as lambda yield "
             "café naïve résumé Zürich São Paulo 東京 北京 日本語 中文 한국어 Привет мир γειά σου").split()
    lines = []
    for _ in range(4000):
        n = rnd.randint(3, 14)
        line = " ".join(rnd.choice(words) for _ in range(n))
        if rnd.random() < 0.3:
            line += " " + str(rnd.randint(0, 10 ** rnd.randint(1, 7)))
        if rnd.random() < 0.2:
            line = line.capitalize() + rnd.choice([".", "!", "?", ",", ";", ":"])
        lines.append(line)
    return lines + cases * 5


def big_corpus():
    rnd = random.Random(1)
    syl = [a + b for a in "bcdfghjklmnprstvwz" for b in ["a", "e", "i", "o", "u", "ai", "ou", "ee"]]
    vocab = ["".join(rnd.choice(syl) for _ in range(rnd.randint(1, 4))) for _ in range(60000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    for _ in range(200):
        yield " ".join(rnd.choices(vocab, weights, k=20000))


def bpe_trainer(vocab, special, byte_level=True):
    return trainers.BpeTrainer(vocab_size=vocab, special_tokens=special, show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [])


def with_byte_fallback(tok):
    """Adds <0x00>..<0xFF> as ordinary vocabulary entries (as Llama's tokenizer has them)."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for b in range(256):
        name = f"<0x{b:02X}>"
        if name not in vocab:
            vocab[name] = len(vocab)
    return Tokenizer.from_str(json.dumps(j))


def build(family, lines):
    if family in ("gpt2", "big50k"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        special = ["<|endoftext|>"]
        if family == "gpt2":
            tok.train_from_iterator(lines, bpe_trainer(600, special))
        else:
            tok.train_from_iterator(big_corpus(), bpe_trainer(50000, special))
    elif family in ("llama3", "qwen2"):
        tok = Tokenizer(models.BPE(ignore_merges=(family == "llama3")))
        if family == "qwen2":
            tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3 if family == "llama3" else QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        special = ["<|begin_of_text|>", "<|end_of_text|>"] if family == "llama3" else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok.train_from_iterator(lines, bpe_trainer(700, special))
        if family == "llama3":
            tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                               special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
        else:
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif family == "smollm":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(lines, bpe_trainer(600, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    elif family in ("sp_bpe", "metaspace"):
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        if family == "sp_bpe":
            tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        else:
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.train_from_iterator(lines, bpe_trainer(500, ["<unk>", "<s>", "</s>"], byte_level=False))
        tok = with_byte_fallback(tok)
        if family == "sp_bpe":
            tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        else:
            tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def main():
    out = sys.argv[1]
    stories = sys.argv[2] if len(sys.argv) > 2 else None
    cases = CASES
    lines = training_text(cases)
    result = {"strings": cases, "tokenizers_version": tokenizers.__version__}
    families = ["gpt2", "llama3", "qwen2", "smollm", "sp_bpe", "metaspace", "big50k"]
    for family in families:
        tok = build(family, lines)
        os.makedirs(os.path.join(out, family), exist_ok=True)
        tok.save(os.path.join(out, family, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(out, family, "tokenizer.json"))
        ids = [tok.encode(s).ids for s in cases]
        result[family] = {"ids": ids, "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]}
        rt = sum(d == s for d, s in zip(result[family]["decoded"], cases))
        print(f"{family}: vocab {tok.get_vocab_size()}, {sum(map(len, ids))} ids, decode(encode(s)) == s for {rt}/{len(cases)}", flush=True)
    if stories:
        tok = Tokenizer.from_file(os.path.join(stories, "tokenizer.json"))
        ids = [tok.encode(s).ids for s in cases]
        result["stories260K"] = {"ids": ids, "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]}
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
