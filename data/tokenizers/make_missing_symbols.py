"""make_missing_symbols.py — golden ids for a vocabulary that lacks some symbols.

A BPE model with no unk_token and no byte_fallback cannot encode a character its
vocabulary lacks; the tokenizers library then leaves that piece out of the ids (the
neighbours stay neighbours and may still merge). This script makes such a tokenizer from
the byte-level GPT-2 family of data/tokenizers: the vocabulary loses every token that
holds one of MISSING ("z", "!", "Ã" = the byte 0xC3 that starts most accented Latin
letters, "Ċ" = the newline), the merges lose every pair that makes or uses one; the
remaining ids keep their numbers. It then records the library's ids and decoded text for
the strings of data/tokenizers/cases.json and a few more:

    python3 data/tokenizers/make_missing_symbols.py OUTDIR

Writes OUTDIR/tokenizer.json and OUTDIR/cases.json:
    {"strings": [...], "tokenizers_version": "...", "missing_symbols": {"ids": [[...]...], "decoded": [...]}}
"""
import json, os, sys

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MISSING = ["z", "!", "\u00c3", "\u010a"]
EXTRA = ["zzz", "!!! z!", "Zürich zoo! café", "line\nbreak\n", "jazz pizza buzz", "a z b"]


def lacks(token):
    return any(c in token for c in MISSING)


def main(out):
    t = json.load(open(os.path.join(HERE, "gpt2", "tokenizer.json"), encoding="utf-8"))
    model = t["model"]
    model["vocab"] = {tok: i for tok, i in model["vocab"].items() if not lacks(tok)}
    model["merges"] = [m for m in model["merges"] if not (lacks(m[0]) or lacks(m[1]) or lacks(m[0] + m[1]))]
    assert model.get("unk_token") is None and not model.get("byte_fallback")
    os.makedirs(out, exist_ok=True)
    text = json.dumps(t, ensure_ascii=False, indent=1)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    tok = Tokenizer.from_str(text)
    strings = json.load(open(os.path.join(HERE, "cases.json"), encoding="utf-8"))["strings"] + EXTRA
    ids = [tok.encode(s).ids for s in strings]
    decoded = [tok.decode(i, skip_special_tokens=False) for i in ids]
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"strings": strings, "tokenizers_version": tokenizers.__version__,
                   "missing_symbols": {"ids": ids, "decoded": decoded}}, f, ensure_ascii=False)
    dropped = sum(len(s.encode()) for s in strings)
    print(f"vocab {len(model['vocab'])}, merges {len(model['merges'])}, {len(strings)} strings, tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
