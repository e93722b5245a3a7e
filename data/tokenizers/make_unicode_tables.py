"""make_unicode_tables.py — prints the Unicode tables of kvlora.c's Appendix B.

The pre-tokenizer regexes of GPT-2, Llama 3 and Qwen2 use \\p{L} (letters: Lu Ll Lt Lm Lo),
\\p{N} (numbers: Nd Nl No) and \\s (the White_Space property). kvlora matches them by hand
with tables of [first, last] code point ranges, made from Python's unicodedata.

The NFC normalizer (section 4) needs four more, also from unicodedata:
  nfc_classes         [first, last, class]: the canonical combining class, where it is not 0
  nfc_decompositions  [code point, first, second]: each canonical decomposition mapping
                      (second = 0 for a singleton), sorted by code point; Hangul syllables
                      are left out (they decompose algorithmically)
  nfc_compositions    indices into nfc_decompositions of the primary composites (the pairs
                      that NFC composes: not singletons, not composition exclusions, not
                      starting with a non-starter), sorted by (first, second)
  nfc_unstable        [first, last]: the code points whose NFC_Quick_Check is No or Maybe
                      (a decomposition NFC does not keep, or a mark that may compose with
                      what precedes it), for the quick check that lets text already in NFC
                      through untouched
NFC follows the tokenizers library, whose normalizer (the Rust crate
unicode-normalization-alignments 0.1.12) has the tables of Unicode 9.0.0: a character
assigned later is, to it, an unassigned one (class 0, no decomposition). Canonical classes,
decompositions and composition exclusions never change once a character is assigned, so
the tables are this Python's (Unicode 14.0.0) restricted, with DerivedAge.txt, to the
characters of Unicode 9.0.0. DerivedAge.txt is in Debian's unicode-data package:

    apt-get install unicode-data
    python3 data/tokenizers/make_unicode_tables.py [/usr/share/unicode/DerivedAge.txt] > tables.txt

then paste tables.txt over Appendix B's tables.
"""
import sys, unicodedata

WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
NFC_UNICODE = (9, 0)
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


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


def emit(name, rows, per_line, ctype="uint32_t", width=2):
    dims = f"[{width}]" if width > 1 else ""
    print(f"static const {ctype} {name}[]{dims} = {{   /* {len(rows)} {'ranges' if width == 2 else 'entries'} */")
    cell = (lambda r: "{" + ", ".join(f"0x{v:X}" for v in r) + "},") if width > 1 else (lambda r: f"{r},")
    for i in range(0, len(rows), per_line):
        print("    " + " ".join(cell(r) for r in rows[i:i + per_line]))
    print("};")


def ages(path):
    age = {}
    for line in open(path):
        line = line.split("#")[0].strip()
        if line:
            span, version = (f.strip() for f in line.split(";"))
            first, last = (span.split("..") + [span])[:2]
            for cp in range(int(first, 16), int(last, 16) + 1):
                age[cp] = tuple(int(v) for v in version.split("."))
    return age


def nfc_tables(age_path):
    age = ages(age_path)
    known = lambda cp: age.get(cp, (99,)) <= NFC_UNICODE
    ccc = lambda cp: unicodedata.combining(chr(cp)) if known(cp) else 0
    classes = []
    for cp in range(0x110000):
        c = ccc(cp)
        if c and classes and classes[-1][1] == cp - 1 and classes[-1][2] == c:
            classes[-1][1] = cp
        elif c:
            classes.append([cp, cp, c])
    decomp = []
    for cp in range(0x110000):
        d = unicodedata.decomposition(chr(cp))
        if known(cp) and d and not d.startswith("<") and not HANGUL_FIRST <= cp <= HANGUL_LAST:
            parts = [int(x, 16) for x in d.split()]
            decomp.append((cp, parts[0], parts[1] if len(parts) > 1 else 0))
    # a pair is a primary composite when NFC puts it back together (Unicode's own rule:
    # not excluded, not a singleton, first not a non-starter)
    composite = [i for i, (cp, a, b) in enumerate(decomp) if b and unicodedata.normalize("NFC", chr(a) + chr(b)) == chr(cp)]
    composite.sort(key=lambda i: (decomp[i][1], decomp[i][2]))
    seconds = {decomp[i][2] for i in composite} | set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    not_kept = {d[0] for d in decomp} - {decomp[i][0] for i in composite}
    unstable = ranges(lambda cp: cp in seconds or cp in not_kept)
    return classes, decomp, composite, unstable


print(f"/* Unicode {unicodedata.unidata_version}, from data/tokenizers/make_unicode_tables.py */")
emit("unicode_letters", ranges(lambda c: unicodedata.category(chr(c)).startswith("L")), 6)
emit("unicode_numbers", ranges(lambda c: unicodedata.category(chr(c)).startswith("N")), 6)
emit("unicode_spaces", ranges(lambda c: c in WHITE_SPACE), 6)
classes, decomp, composite, unstable = nfc_tables(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode/DerivedAge.txt")
print(f"\n/* Unicode {unicodedata.unidata_version} restricted to the characters of Unicode "
      f"{NFC_UNICODE[0]}.{NFC_UNICODE[1]}.0, from data/tokenizers/make_unicode_tables.py */")
emit("nfc_classes", classes, 5, width=3)
emit("nfc_decompositions", decomp, 5, width=3)
emit("nfc_compositions", composite, 16, ctype="uint16_t", width=1)
emit("nfc_unstable", unstable, 6)
