"""make_golden_hidden.py — the residual stream layer by layer, from Hugging Face transformers.

For `kvlora dump --activations` (test `golden_hidden`): loads each float32 golden model of
this directory (and the built-in model, data/model) in float32 with eager attention, runs
the golden's own 40 tokens (golden.safetensors' `tokens`; for the built-in model the first
40 ids of builtin_model/golden.safetensors) and writes hidden.safetensors beside it:

  tokens       I32 [T]
  hidden.0     F32 [T, D]  the embedding output, entering layer 0
  hidden.l     F32 [T, D]  the residual stream after layer l (l = 1 .. L)
  hidden.norm  F32 [T, D]  after the final RMSNorm (what lm_head reads)

transformers' output_hidden_states gives hidden.0 .. hidden.(L-1) and, as its last entry,
the stream after the final norm, not after the last layer; so hidden.L is taken with a
forward hook on the last decoder layer. The script checks that hidden.norm through
lm_head gives the golden logits, and records the float32-vs-float64 noise of each
tensor (max|h32 - h64| / max|h64|) in HIDDEN_VERSIONS.txt.

    CUDA_VISIBLE_DEVICES= python3 data/golden/make_golden_hidden.py data/golden data/model
"""
import os, sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

MODELS = ["llama_gqa_f32", "llama_tied_f32", "llama3_rope_f32", "mistral_f32", "mistral_window_f32", "qwen2_f32", "qwen3_f32"]
T = 40


def hidden_of(model, tokens):
    last = {}
    hook = model.model.layers[-1].register_forward_hook(
        lambda mod, inp, out: last.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        o = model(torch.tensor([tokens]), use_cache=False, output_hidden_states=True)
    hook.remove()
    hs = o.hidden_states
    L = model.config.num_hidden_layers
    assert len(hs) == L + 1
    out = {f"hidden.{l}": hs[l][0] for l in range(L)}
    out[f"hidden.{L}"] = last["h"].reshape(-1, hs[0].shape[-1])
    out["hidden.norm"] = hs[L][0]
    return out, o.logits[0]


def main(golden_dir, builtin_dir):
    meta = {"generator": "make_golden_hidden.py", "transformers": transformers.__version__, "torch": torch.__version__}
    report = [f"torch {torch.__version__}", f"transformers {transformers.__version__}", ""]
    jobs = [(os.path.join(golden_dir, m), os.path.join(golden_dir, m, "golden.safetensors"), os.path.join(golden_dir, m)) for m in MODELS]
    jobs.append((builtin_dir, os.path.join(golden_dir, "builtin_model", "golden.safetensors"), os.path.join(golden_dir, "builtin_model")))
    for model_dir, golden_file, out_dir in jobs:
        g = load_file(golden_file)
        tokens = g["tokens"][:T].tolist()
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        h32, logits = hidden_of(model, tokens)
        if g["logits"].shape[0] == len(tokens):
            d = (logits - g["logits"]).abs().max().item() / g["logits"].abs().max().item()
            assert d < 1e-5, (model_dir, d)
        h64, _ = hidden_of(model.double(), tokens)
        noise = max((h32[k].double() - h64[k]).abs().max().item() / h64[k].abs().max().item() for k in h32)
        tensors = {"tokens": torch.tensor(tokens, dtype=torch.int32)}
        tensors.update({k: v.float().contiguous() for k, v in h32.items()})
        save_file(tensors, os.path.join(out_dir, "hidden.safetensors"), metadata=meta)
        line = (f"{os.path.basename(out_dir)}: {len(h32) - 2} layers, max|hidden| "
                f"{max(v.abs().max().item() for v in h32.values()):.3f}, f32-vs-f64 worst max|d|/max|h| {noise:.2e}")
        report.append(line)
        print(line, flush=True)
    with open(os.path.join(golden_dir, "HIDDEN_VERSIONS.txt"), "w") as f:
        f.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
