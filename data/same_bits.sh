#!/usr/bin/env bash
# data/same_bits.sh — prove that two versions of kvlora.c write the same bits.
#
#   bash data/same_bits.sh OLD_COMMIT [NEW_COMMIT]
#
# e.g. `bash data/same_bits.sh HEAD` before committing a refactor (the working tree against
# HEAD), or `bash data/same_bits.sh HEAD~1` before landing one that is already committed.
# Run it from the repository root (it finds the root from its own path anyway).
#
# What it proves: the command-line tool built from OLD_COMMIT and the one built from NEW
# (default: the working tree, uncommitted changes included; or NEW_COMMIT) write the same
# bytes, file for file and stdout for stdout, on a fixed set of commands:
#   info      data/model and three golden models (F32, BF16, sharded)
#   dump      every golden model in data/golden (logits, teacher logits and loss with
#             --context-tokens); the four PEFT adapters lora_* and kvlora_adapter on their
#             base models with --context-tokens and --adapter (kl, and mse for two:
#             logits, teacher logits, loss and the gradient of every LoRA tensor); the
#             adapter distilled below on data/model, the same way
#   corpus    a seeded needle document; its first line is the context, its questions the
#             queries of the distillation below
#   record    that context's KV cache on data/model (f32 and bf16), and a golden model's (f16)
#   distill   data/model from the f32 cache and the questions, seed 7, 24 steps
#             (adapter_model.safetensors, adapter_config.json); a golden model with --loss
#             mse --rslora, 10 steps; data/model from the context as text, --init from the
#             first adapter, 6 steps
#   generate  data/model: sampled (--temperature 0.8 --seed 1, also --top-p 0.9), greedy
#             from a text prompt, greedy with the distilled adapter; the merged model below
#   merge     the distilled adapter into data/model (a model directory); two golden adapters
#             combined into one with --weights 0.5,2 --combine
#   needle    data/model --json --seed 3, 2 trials of 2 needles at 64 and 128 tokens, 20
#             steps, probes both (and its --svg)
#   tokenize  the 31 test strings of data/tokenizers/cases.json (embedded below) through the
#             8 tokenizers of data/tokenizers and data/model's, one call per string with the
#             BOS/EOS template, and all of them at once from standard input with --no-special
#   detokenize  ids 0..599 of each tokenizer, with and without --skip-special, and the ids
#             of that standard-input encoding back to text
# Both builds read the same inputs (this checkout's data/, by absolute path, so the paths
# that outputs record are the same) and write into their own directory under a temporary
# directory (removed on exit; SAME_BITS_KEEP=1 keeps it, to look into a DIFF), with
# OMP_NUM_THREADS=2 (and OMP_WAIT_POLICY=passive, which changes no result but keeps the run
# from crawling when other jobs share the cores).
#
# Compared: every file the commands write and every command's stdout (one .stdout file per
# family of commands, their outputs in order), byte for byte with cmp. Not compared: stderr,
# which carries progress and timings. One line of stdout carries timings: needle --json's
# "distill_seconds", "probe_seconds" and each run's "seconds": N.NNN, each replaced by
# "(timing removed)" before the comparison (only those fields; everything else in the JSON is
# compared as written).
#
# Output: one line per compared file, "same  NAME" or "DIFF  NAME", then
# "same bits: N files identical" (exit 0) or "DIFFERENT: K of N files differ" (exit 1).
# A command that fails, in either build, is reported ("FAIL  ...") and makes the exit 1 too:
# every command of the set must succeed. About 35 s on 2 cores, both builds included.
#
# The builds: kvlora.c, kvlora.h and the Makefile of each version, `make kvlora` (so the
# flags are each version's own: -O3, -march=native if accepted, -fopenmp if available,
# -ffp-contract=off). A refactor that adds source files must add them to SOURCES.

set -euo pipefail

SOURCES="kvlora.c kvlora.h Makefile"

usage() { echo "usage: bash data/same_bits.sh OLD_COMMIT [NEW_COMMIT]   (NEW default: the working tree)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in -h|--help) usage ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA="$ROOT/data"
OLD=$(git -C "$ROOT" rev-parse --verify "$1^{commit}")
NEW=""
if [ $# -eq 2 ]; then NEW=$(git -C "$ROOT" rev-parse --verify "$2^{commit}"); fi

export OMP_NUM_THREADS=2
export OMP_WAIT_POLICY=passive
export LC_ALL=C
tmp=$(mktemp -d "${TMPDIR:-/tmp}/same_bits.XXXXXX")
if [ -n "${SAME_BITS_KEEP:-}" ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
start=$SECONDS

# ---- build --------------------------------------------------------------------------------
# build DIR [COMMIT]: the sources of COMMIT (or of the working tree) into DIR, then make kvlora
build() {
    mkdir -p "$1"
    if [ -n "${2:-}" ]; then
        git -C "$ROOT" archive "$2" $SOURCES | tar -x -C "$1"
    else
        (cd "$ROOT" && cp $SOURCES "$1/")
    fi
    make -B -C "$1" kvlora > "$1/build.log" 2>&1
}

echo "old: $OLD"
echo "new: ${NEW:-the working tree of $ROOT}"
build "$tmp/old" "$OLD" & old_pid=$!
build "$tmp/new" "$NEW" & new_pid=$!
built=1
wait $old_pid || { echo "FAIL  build of old:"; tail -n 20 "$tmp/old/build.log"; built=0; }
wait $new_pid || { echo "FAIL  build of new:"; tail -n 20 "$tmp/new/build.log"; built=0; }
[ $built = 1 ] || exit 1
echo "built both in $((SECONDS - start)) s"

# ---- the fixed set of commands ------------------------------------------------------------
# The 31 strings of data/tokenizers/cases.json, in its order, as bash $'...' strings:
# invisible characters (U+00A0, U+2003, U+3000, the zero-width joiner) written as \x bytes.
STRINGS=(
    $'Hello world'
    $'The quick brown fox jumps over the lazy dog.'
    $'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.'
    $'  leading spaces and trailing spaces   '
    $'multiple    spaces\tand\ttabs'
    $'line one\nline two\n\nline four'
    $'\n\n\n'
    $'She\'s here, they\'re gone, I\'m fine, we\'ll see, you\'d know, it\'s HE\'S THEY\'RE.'
    $'def add(a, b):\n    return a + b  # comment\n'
    $'for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }'
    $'x = {"key": [1, 2, 3], \'other\': None}'
    $'café naïve résumé Zürich São Paulo'
    $'東京は日本の首都です。北京是中国的首都。'
    $'한국어 텍스트와 English mixed'
    $'Привет, мир! Γειά σου κόσμε.'
    $'emoji: 😀 🎉 👩\xe2\x80\x8d💻 🇯🇵 and ♥ ★'
    $'numbers 1 12 123 1234 12345 123456789 3.14159 -42 1,000,000'
    $'phone 555-0123 and year 2024'
    $'The secret code of Alice is 48213.'
    $'Q: What is the secret code of Alice? A: 48213'
    $'special <|endoftext|> inside <|im_start|>user text<|im_end|> and <s> or </s>'
    $'<|begin_of_text|>Hello<|end_of_text|>'
    $'a'
    $' '
    $''
    $'ÀÉÎÕÜ àéîõü ßø œ æ ñ'
    $'tabs\t\tand\r\ncarriage returns\r'
    $'mixed123numbers456and789letters'
    $'!!!???...,,,;;;:::'
    $'\xc2\xa0non-breaking\xe2\x80\x83em space\xe3\x80\x80ideographic'
    $'𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛 and ①②③ and Ⅻ'
)
TOKENIZERS="big50k gpt2 gpt2_string_merges llama3 metaspace qwen2 smollm sp_bpe"

failed=0
# run NAME COMMAND...: COMMAND's stdout is appended to NAME.stdout, its stderr to NAME.stderr
run() {
    local name=$1; shift
    if ! "$@" >> "$name.stdout" 2>> "$name.stderr"; then
        echo "FAIL  $name, in the $label build: $*"
        tail -n 3 "$name.stderr" | sed 's/^/        /'
        failed=$((failed + 1))
    fi
}

# suite BUILD: all the commands with $tmp/BUILD/kvlora, in the directory $tmp/out/BUILD
suite() {
    label=$1
    local K="$tmp/$1/kvlora" G="$DATA/golden" M="$DATA/model"
    mkdir -p "$tmp/out/$1" && cd "$tmp/out/$1"

    # info
    for m in "$M" "$G/qwen3_f32" "$G/mistral_window_bf16" "$G/llama_gqa_sharded"; do
        run info "$K" info "$m"
    done

    # dump: every golden model, logits and (with --context-tokens) teacher logits and loss
    local prefix=1 context=5,6,7,8,9,10,11,12,13,14,15,16 tokens=20,31,42,53,64,75,86,97,108,119,127,3
    for d in "$G"/*/config.json; do
        d=$(basename "$(dirname "$d")")
        run dump "$K" dump "$G/$d" --prefix-tokens $prefix --context-tokens $context --tokens $tokens -o "dump.$d.safetensors"
    done
    # ... and the adapters on their base models: student logits and the gradient of the loss
    for a in lora_llama_gqa_f32 lora_mistral_window_f32 lora_qwen2_f32 lora_qwen3_f32; do
        run dump "$K" dump "$G/${a#lora_}" --prefix-tokens $prefix --context-tokens $context --tokens $tokens \
            --adapter "$G/$a" -o "dump.$a.kl.safetensors"
    done
    run dump "$K" dump "$G/qwen3_f32" --prefix-tokens $prefix --context-tokens $context --tokens $tokens \
        --adapter "$G/lora_qwen3_f32" --loss mse -o "dump.lora_qwen3_f32.mse.safetensors"
    run dump "$K" dump "$G/llama_gqa_f32" --context-tokens $context --tokens $tokens \
        --adapter "$G/kvlora_adapter" --loss mse -o "dump.kvlora_adapter.mse.safetensors"

    # corpus: a needle document (line 1) and its questions (the lines "Q: ... A: DDDDD")
    run corpus "$K" corpus --needles 3 --sentences 16 --seed 5
    head -n 1 corpus.stdout > context.txt
    grep '^Q:' corpus.stdout | sed 's/ A: .*/ A:/' > queries.txt || true

    # record: the KV cache of that context on data/model; a golden model's from ids
    run record "$K" record "$M" --context context.txt -o cache.f32.safetensors
    run record "$K" record "$M" --context context.txt --prefix "Q:" --dtype bf16 -o cache.bf16.safetensors
    run record "$K" record "$G/qwen2_f32" --context-ids $context --dtype f16 -o cache.qwen2.f16.safetensors

    # distill: seeded, short
    run distill "$K" distill "$M" --cache cache.f32.safetensors --queries queries.txt --context-chunks \
        --self-study 8 --self-study-len 16 --steps 24 --batch 4 --rank 2 --lr 1e-2 --seed 7 -o adapter.model
    run distill "$K" distill "$G/llama_gqa_f32" --context-ids $context --prefix-ids 1 --self-study 4 --self-study-len 8 \
        --loss mse --rslora --rank 3 --targets q_proj,v_proj,down_proj --weight-decay 0.01 --steps 10 --seed 2 -o adapter.golden
    run distill "$K" distill "$M" --context context.txt --prefix "Q:" --init adapter.model --self-study 4 --self-study-len 12 \
        --steps 6 --batch 2 --seed 8 -o adapter.init
    # ... and the distilled adapter's gradient on data/model
    run dump "$K" dump "$M" --prefix-tokens 0 --context-tokens "$(seq -s, 100 140)" --tokens "$(seq -s, 300 7 450)" \
        --adapter adapter.model -o dump.model.adapter.safetensors

    # generate: sampled, greedy from text, with the distilled adapter
    run generate "$K" generate "$M" --ids 0,5,6,7,8 -n 16 --seed 1 --temperature 0.8
    run generate "$K" generate "$M" --ids 0,5,6,7,8 -n 16 --seed 1 --temperature 0.8 --top-p 0.9
    run generate "$K" generate "$M" --prompt "Once upon a time" -n 24
    run generate "$K" generate "$M" --prompt "$(head -n 1 queries.txt)" -n 8 --adapter adapter.model

    # merge: an adapter into the weights; two adapters into one
    run merge "$K" merge "$M" --adapter adapter.model -o merged.model
    run merge "$K" merge "$G/llama_gqa_f32" --adapter "$G/lora_llama_gqa_f32" --adapter "$G/kvlora_adapter" \
        --weights 0.5,2 --combine -o adapter.combined
    run generate "$K" generate merged.model --ids 0,5,6,7,8 -n 16

    # needle: the whole test, small; its timings are taken out of the JSON
    run needle "$K" needle "$M" --json --seed 3 --needles 2 --trials 2 --context-len 64,128 --steps 20 \
        --self-study 12 --self-study-len 16 --batch 4 --probes both --svg needle.svg
    sed -E 's/"(distill_seconds|probe_seconds|seconds)": [0-9.]+/"\1": "(timing removed)"/g' needle.stdout > needle.json
    rm needle.stdout

    # tokenize and detokenize through every tokenizer
    local ids s t tj
    ids=$(seq -s, 0 599)
    printf '%s\n' "${STRINGS[@]}" > all_strings.txt
    for t in $TOKENIZERS model; do
        if [ $t = model ]; then tj="$M/tokenizer.json"; else tj="$DATA/tokenizers/$t/tokenizer.json"; fi
        for s in "${STRINGS[@]}"; do
            run "tokenize.$t" "$K" tokenize "$tj" --text "$s"
        done
        run "tokenize.$t.stdin" "$K" tokenize "$tj" --no-special < all_strings.txt
        run "detokenize.$t" "$K" detokenize "$tj" --ids "$(tail -n 1 "tokenize.$t.stdin.stdout")"
        run "detokenize.$t" "$K" detokenize "$tj" --ids "$ids"
        run "detokenize.$t" "$K" detokenize "$tj" --ids "$ids" --skip-special
    done
    cd "$ROOT"
}

t0=$SECONDS; suite old; echo "ran the commands with old in $((SECONDS - t0)) s"
t0=$SECONDS; suite new; echo "ran the commands with new in $((SECONDS - t0)) s"

# ---- compare ------------------------------------------------------------------------------
n=0; differ=0
for f in $( (cd "$tmp/out/old" && find . -type f ! -name '*.stderr'; cd "$tmp/out/new" && find . -type f ! -name '*.stderr') | sed 's|^\./||' | sort -u); do
    n=$((n + 1))
    if cmp -s "$tmp/out/old/$f" "$tmp/out/new/$f"; then
        echo "same  $f"
    else
        echo "DIFF  $f"
        differ=$((differ + 1))
    fi
done

echo "($((SECONDS - start)) s in all)"
if [ $differ -gt 0 ]; then
    echo "DIFFERENT: $differ of $n files differ"
    [ $failed -eq 0 ] || echo "and $failed commands failed"
    exit 1
fi
if [ $failed -gt 0 ]; then
    echo "FAILED: $failed commands failed (in the old or the new build); the $n files written are identical"
    exit 1
fi
echo "same bits: $n files identical"
