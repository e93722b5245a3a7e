"""make_golden_builtin.py — the built-in model (data/model) read by Hugging Face.

kvlora trains data/model itself and writes it in Hugging Face layout; this script checks
that the real libraries read it as kvlora does: `tokenizers` encodes a needle document
with data/model/tokenizer.json, `transformers` loads data/model with LlamaForCausalLM
(eager attention, float32) and gives the logits of <s> ++ the document ++ its questions
and answers, and greedy decoding answers every question after the document.

    python3 data/golden/make_golden_builtin.py MODEL_DIR TEXT_FILE OUTDIR

TEXT_FILE is `./kvlora corpus --needles 4 --sentences 16 --seed 11` (a document, then a
line "Q: What is the secret code of NAME? A: DDDDD" per needle), read as the pretraining
texts are laid out: the document, a newline, the question-answer lines. Writes
OUTDIR/golden.safetensors (`tokens` I32 [T]: <s> then tokenizers' ids of the text;
`logits` F32 [T, vocab]) and OUTDIR/greedy.txt (per question: the name, the generator's
code, transformers' greedy 6-token answer after <s> ++ document ++ "\\nQ: ... A:", the two
parts encoded apart as in `kvlora needle`), and
OUTDIR/VERSIONS.txt (versions, max|logit|, the float32-vs-float64 noise).
"""
import os, sys

import torch
import tokenizers
import transformers
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

model_dir, text_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)
# the pretraining texts' layout: the document, "\n", then the question-answer lines
doc, *qa = [line for line in open(text_file).read().split("\n") if line]
text = doc + "\n" + "\n".join(qa)
tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
ids = [0] + tok.encode(text, add_special_tokens=False).ids
assert tok.decode(ids[1:]) == text, "the tokenizer does not round-trip the text"

model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
    logits64 = model.double()(torch.tensor([ids])).logits[0]
    model.float()
noise = ((logits.double() - logits64).abs().max() / logits64.abs().max()).item()
save_file({"tokens": torch.tensor(ids, dtype=torch.int32), "logits": logits.contiguous()},
          os.path.join(out, "golden.safetensors"),
          metadata={"made_by": "make_golden_builtin.py", "torch": torch.__version__,
                    "transformers": transformers.__version__, "tokenizers": tokenizers.__version__})

# greedy answers: <s> ++ document ++ "\nQ: What is the secret code of NAME? A:"
lines = []
for line in qa:
    question, code = line.rsplit(" ", 1)
    # encoded in two parts, as the needle test does: the cached document, then the question
    prompt = [0] + tok.encode(doc, add_special_tokens=False).ids + tok.encode("\n" + question, add_special_tokens=False).ids
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                             pad_token_id=1, eos_token_id=None)[0, len(prompt):].tolist()
    name = question[len("Q: What is the secret code of "):-len("? A:")]
    lines.append("%s %s %r %s" % (name, code, tok.decode(gen), ",".join(map(str, gen))))
open(os.path.join(out, "greedy.txt"), "w").write("\n".join(lines) + "\n")
open(os.path.join(out, "VERSIONS.txt"), "w").write(
    "torch %s\ntransformers %s\ntokenizers %s\nT %d, vocab %d, max|logit| %.3f, f32-vs-f64 max|d|/max|z| %.2e\n"
    % (torch.__version__, transformers.__version__, tokenizers.__version__, len(ids), logits.shape[1],
       logits.abs().max().item(), noise))
print(open(os.path.join(out, "VERSIONS.txt")).read() + "\n".join(lines))
