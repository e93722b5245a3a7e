"""make_unicode_tables.py — prints the Unicode range tables of kvlora.c's tokenizer.

The pre-tokenizer regexes of GPT-2, Llama 3 and Qwen2 use \\p{L} (letters: Lu Ll Lt Lm Lo),
\\p{N} (numbers: Nd Nl No) and \\s (the White_Space property). kvlora matches them by hand
with these tables of [first, last] code point ranges, made from Python's unicodedata:

    python3 data/tokenizers/make_unicode_tables.py > tables.txt   (then paste into kvlora.c)
"""
import sys, unicodedata

WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]


def ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def emit(name, rs):
    print(f"static const uint32_t {name}[][2] = {{   /* {len(rs)} ranges */")
    for i in range(0, len(rs), 6):
        print("    " + " ".join(f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs[i:i + 6]))
    print("};")


print(f"/* Unicode {unicodedata.unidata_version}, from data/tokenizers/make_unicode_tables.py */")
emit("unicode_letters", ranges(lambda c: unicodedata.category(chr(c)).startswith("L")))
emit("unicode_numbers", ranges(lambda c: unicodedata.category(chr(c)).startswith("N")))
emit("unicode_spaces", ranges(lambda c: c in WHITE_SPACE))
