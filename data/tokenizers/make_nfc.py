"""make_nfc.py — goldens for kvlora's NFC normalizer, from the tokenizers library.

Qwen2-style tokenizers declare the `NFC` normalizer: text is put in Unicode canonical
normalisation form C before it is pre-tokenized. This script records what the tokenizers
library makes of strings that need it, in two ways:

  "nfc"         normalizers.NFC().normalize_str(s) for every string: the normalizer alone.
                The strings are the hand-written CASES below, then, for every code point
                with a canonical decomposition in Unicode 14.0.0, the code point itself,
                a space and its full decomposition (NFD); then random Hangul syllables in conjoining jamo; then FUZZ random strings
                of bases, combining marks (in random order: canonical ordering must sort
                them), precomposed letters, singletons, composition exclusions and jamo.
  "qwen2"       ids and decoded text of the CASES through data/tokenizers/qwen2 (whose
                normalizer is NFC), as make_tokenizers.py records them.

The code point lists come from Python's unicodedata on the machine that makes the list
(its Unicode version is checked to be 14.0.0); the library then normalizes them. Its NFC
is the Rust crate unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0.0:
characters assigned in 10.0 to 14.0 (Dives Akuru's composite U+11938, the marks of
U+1AC1..U+1ACE, ...) are unassigned to it, so it neither composes nor reorders them. These
goldens pin that behaviour: NFC by Python's unicodedata differs from them on 73 strings.
kvlora's tables are restricted to Unicode 9.0.0 for this reason (make_unicode_tables.py).
The list is made here and normalized on a machine with the tokenizers library:

    python3 data/tokenizers/make_nfc.py list LIST.json       (here: Python with Unicode 14.0.0)
    python3 data/tokenizers/make_nfc.py golden LIST.json OUTDIR   (with the tokenizers library)

Writes OUTDIR/cases.json: {"strings": [the CASES], "tokenizers_version": "...", "unicode": "...",
    "qwen2": {"ids": [[...]...], "decoded": [...]},
    "nfc": {"strings": [all the strings], "normalized": [...]}}
"""
import json, os, random, sys, unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = 1500

NFD = lambda s: unicodedata.normalize("NFD", s)
CASES = [
    # text already in NFC: unchanged
    "Hello world, plain ASCII.",
    "café naïve résumé Zürich São Paulo",
    "Tiếng Việt có dấu: Người ta thường nói",
    "한국어 텍스트와 English mixed",
    "Ω Å K are the NFC forms; 東京 😀",
    # Latin in decomposed form (macOS file names, many PDFs)
    NFD("café naïve résumé Zürich São Paulo"),
    NFD("ÀÉÎÕÜ àéîõü ñ ç ÿ Ǻ ǻ"),
    # stacked combining marks, in canonical order and reordered (ccc 220 below, 230 above)
    "a\u0323\u0302 a\u0302\u0323 o\u031b\u0301 o\u0301\u031b e\u0327\u0306 q\u0307\u0323 u\u0308\u0304",
    "x\u0301\u0316\u0300\u0317 \u0345\u0313\u03b1 \u03b9\u0308\u0301",
    # Vietnamese, fully decomposed
    NFD("Tiếng Việt có dấu: Người ta thường nói, Hà Nội, Huế, Đà Nẵng"),
    # conjoining Hangul jamo: L V, L V T, and a precomposed LV syllable + T
    NFD("한국어 텍스트와 English mixed"),
    "\u1100\u1161\u11a8 \uac00\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    # singletons: Angstrom sign, Ohm sign, Kelvin sign, en quad, CJK compatibility ideograph
    "\u212b \u2126 \u212a \u2000 \uf900 \u0340\u0341 \u1fef",
    # composition exclusions: Devanagari QA, Hebrew yod with hiriq, a musical symbol,
    # a non-starter decomposition, Tibetan vowel signs
    "\u0958 \u0915\u093c \ufb1d \U0001d15e \u0344 \u0f73 \u2adc",
    # blocked: a mark of the same class stands between the starter and the mark that would
    # compose with it (U+0350 and U+0301 are both 230; U+0316 and U+0323 both 220)
    "a\u0350\u0301 a\u0301\u0350 e\u0316\u0323\u0301 o\u0323\u0316 u\u0331\u0324\u0308",
    # combining marks with nothing to attach to, and after a Hangul syllable
    "\u0301a \u0301\u0300 \uac00\u0301 \u3099\u304b",
    # Greek and Cyrillic, decomposed
    NFD("ἄλφα ὦ ῷ Ἀθῆναι й ё Ї"),
    # special tokens around decomposed text
    "<|im_start|>user cafe\u0301<|im_end|> re\u0301sume\u0301<|endoftext|>",
    "",
]


def build_list():
    assert unicodedata.unidata_version == "14.0.0", unicodedata.unidata_version
    strings = list(CASES)
    composable, bases, marks = [], set(), set()
    for cp in range(0x110000):
        c = chr(cp)
        if 0xAC00 <= cp <= 0xD7A3:
            continue
        d = unicodedata.decomposition(c)
        if d and not d.startswith("<"):
            strings.append(c + " " + NFD(c))
            composable.append(c)
            parts = [int(x, 16) for x in d.split()]
            bases.add(chr(parts[0]))
            for p in parts[1:]:
                marks.add(chr(p))
        if unicodedata.combining(c):
            marks.add(c)
    rnd = random.Random(14)
    for _ in range(20):
        strings.append(" ".join(NFD(chr(rnd.randint(0xAC00, 0xD7A3))) for _ in range(25)))
    bases, marks = sorted(bases), sorted(marks)
    jamo = [chr(c) for c in list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11a7, 0x11c3))]
    syllables = [chr(rnd.randint(0xAC00, 0xD7A3)) for _ in range(50)]
    for _ in range(FUZZ):
        s = []
        for _ in range(rnd.randint(1, 10)):
            k = rnd.random()
            pool = (bases if k < 0.3 else marks if k < 0.7 else composable if k < 0.85 else jamo if k < 0.95 else syllables + [" ", "a"])
            s.append(rnd.choice(pool))
        strings.append("".join(s))
    return {"strings": strings, "n_cases": len(CASES), "unicode": unicodedata.unidata_version}


def golden(listing, out):
    import tokenizers
    from tokenizers import Tokenizer, normalizers
    nfc = normalizers.NFC()
    strings = listing["strings"]
    tok = Tokenizer.from_file(os.path.join(HERE, "qwen2", "tokenizer.json"))
    cases = strings[:listing["n_cases"]]
    ids = [tok.encode(s).ids for s in cases]
    result = {"strings": cases, "tokenizers_version": tokenizers.__version__, "unicode": listing["unicode"],
              "qwen2": {"ids": ids, "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]},
              "nfc": {"strings": strings, "normalized": [nfc.normalize_str(s) for s in strings]}}
    changed = sum(a != b for a, b in zip(strings, result["nfc"]["normalized"]))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=0)
    print(f"{len(strings)} strings ({changed} changed by NFC), tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    if sys.argv[1] == "list":
        json.dump(build_list(), open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
    else:
        golden(json.load(open(sys.argv[2], encoding="utf-8")), sys.argv[3])
