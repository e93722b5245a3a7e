"""make_golden.py — golden logits for kvlora's tests, from Hugging Face transformers.

Builds tiny random models of every architecture variant kvlora supports with the real
transformers classes (eager attention, float32, CPU), saves each with save_pretrained in
F32, F16 and BF16, loads each saved directory back in float32 (so the F16/BF16 goldens are
the rounded weights computed in float32, which is what kvlora does), and records the logits
of a fixed 40-token sequence. Also runs stories260K (if its directory is given) greedily.

    python3 data/golden/make_golden.py OUTDIR [STORIES260K_DIR]

Writes OUTDIR/<variant>_<dtype>/{config.json, model.safetensors, golden.safetensors},
OUTDIR/llama_gqa_sharded/ (three or more shards with model.safetensors.index.json),
OUTDIR/VERSIONS.txt, and, with stories260K, OUTDIR/stories260K_greedy.txt and
OUTDIR/stories260K_logits.safetensors. golden.safetensors holds `tokens` I32 [T] and
`logits` F32 [T, vocab]; its metadata names the versions used.

How the committed files were made: once, on the project's GPU machine but on its CPU, with
torch 2.11.0+cu130, transformers 5.17.0, tokenizers 0.23.2, safetensors (Python 3.12):

    CUDA_VISIBLE_DEVICES= PYTHONUNBUFFERED=1 python3 data/golden/make_golden.py OUTDIR .carry/stories260K

(stories260K copied into the git-ignored .carry/ so that it travels to that machine; it is
never committed). To rerun: `python3 data/golden/make_golden.py OUTDIR [STORIES260K_DIR]`.
Seeds are fixed (torch.manual_seed(i) per variant, weights from Generator(1000+i), tokens
from Generator(2000+i)), so the same versions give the same files; VERSIONS.txt records the
versions and, per variant, max|logit|, std and the float32-vs-float64 noise.
transformers 5.17 writes rope settings as a `rope_parameters` object, so llama3_rope_legacy_*
is the same model with config.json rewritten by hand in the old layout (top-level
`rope_theta` + `rope_scaling`); with an older transformers the script does the reverse.
"""
import json, math, os, shutil, sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

T = 40
COMMON = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
              rms_norm_eps=1e-5, hidden_act="silu", rope_theta=10000.0, bos_token_id=1,
              eos_token_id=2, tie_word_embeddings=False)
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=64)


def variants():
    v = {}
    v["llama_gqa"] = (LlamaConfig, LlamaForCausalLM, dict(COMMON))
    v["llama_tied"] = (LlamaConfig, LlamaForCausalLM, dict(COMMON, tie_word_embeddings=True, num_key_value_heads=4, rms_norm_eps=1e-6))
    v["llama3_rope"] = (LlamaConfig, LlamaForCausalLM, dict(COMMON, rope_theta=500000.0, rope_scaling=dict(LLAMA3)))
    v["mistral"] = (MistralConfig, MistralForCausalLM, dict(COMMON, sliding_window=None))
    v["mistral_window"] = (MistralConfig, MistralForCausalLM, dict(COMMON, sliding_window=8))
    v["qwen2"] = (Qwen2Config, Qwen2ForCausalLM, dict(COMMON))
    v["qwen3"] = (Qwen3Config, Qwen3ForCausalLM, dict(COMMON, head_dim=24))
    return v


def make_config(cls, kw):
    kw = dict(kw)
    cfg = cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def logits_of(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens]), use_cache=False).logits[0].float()


def main():
    out = sys.argv[1]
    stories = sys.argv[2] if len(sys.argv) > 2 else None
    os.makedirs(out, exist_ok=True)
    meta = {"generator": "make_golden.py", "transformers": transformers.__version__, "torch": torch.__version__}
    report = []
    for seed, (name, (ccls, mcls, kw)) in enumerate(variants().items()):
        torch.manual_seed(seed)
        model = mcls(make_config(ccls, kw)).eval()
        randomise(model, 1000 + seed)
        if model.config.tie_word_embeddings:
            model.tie_weights()
        g = torch.Generator().manual_seed(2000 + seed)
        tokens = [1] + torch.randint(0, kw["vocab_size"], (T - 1,), generator=g).tolist()
        ref64 = logits_of(model.double(), tokens)
        model.float()
        for dt_name, dt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
            d = os.path.join(out, f"{name}_{dt_name}")
            shutil.rmtree(d, ignore_errors=True)
            model.to(dt).save_pretrained(d, safe_serialization=True)
            model.float()
            if os.path.exists(os.path.join(d, "generation_config.json")):
                os.remove(os.path.join(d, "generation_config.json"))
            back = mcls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
            logits = logits_of(back, tokens)
            save_file({"tokens": torch.tensor(tokens, dtype=torch.int32), "logits": logits.contiguous()},
                      os.path.join(d, "golden.safetensors"), metadata=meta)
            line = f"{name}_{dt_name}: max|logit| {logits.abs().max():.3f} std {logits.std():.3f}"
            if dt_name == "f32":
                noise = (logits.double() - ref64).abs().max().item() / ref64.abs().max().item()
                line += f"  f32-vs-f64 max|d|/max|z| {noise:.2e}"
            report.append(line)
            print(line, flush=True)
            if name == "llama_gqa" and dt_name == "f32":
                ds = os.path.join(out, "llama_gqa_sharded")
                shutil.rmtree(ds, ignore_errors=True)
                model.save_pretrained(ds, safe_serialization=True, max_shard_size="100KB")
                if os.path.exists(os.path.join(ds, "generation_config.json")):
                    os.remove(os.path.join(ds, "generation_config.json"))
                shards = [f for f in os.listdir(ds) if f.endswith(".safetensors")]
                back = mcls.from_pretrained(ds, torch_dtype=torch.float32, attn_implementation="eager").eval()
                save_file({"tokens": torch.tensor(tokens, dtype=torch.int32), "logits": logits_of(back, tokens).contiguous()},
                          os.path.join(ds, "golden.safetensors"), metadata=meta)
                print(f"llama_gqa_sharded: {len(shards)} shards", flush=True)
            if name == "llama3_rope":
                # The same model with its config in the other layout of rope settings.
                dl = os.path.join(out, f"llama3_rope_legacy_{dt_name}")
                shutil.copytree(d, dl, dirs_exist_ok=True)
                cfg = json.load(open(os.path.join(d, "config.json")))
                rp = cfg.pop("rope_parameters", None)
                if rp is not None:      # written as rope_parameters: rewrite as the old layout
                    cfg["rope_theta"] = rp["rope_theta"]
                    cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
                    report.append(f"{dl}: rope_parameters rewritten as rope_theta + rope_scaling")
                else:                   # written in the old layout: rewrite as rope_parameters
                    rp = dict(cfg.pop("rope_scaling"))
                    rp["rope_theta"] = cfg.pop("rope_theta")
                    cfg["rope_parameters"] = rp
                    report.append(f"{dl}: rope_theta + rope_scaling rewritten as rope_parameters")
                json.dump(cfg, open(os.path.join(dl, "config.json"), "w"), indent=2)
    if stories:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(stories, "tokenizer.json"))
        prompt = tok.encode("Once upon a time").ids
        model = LlamaForCausalLM.from_pretrained(stories, torch_dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            seq = model.generate(torch.tensor([prompt]), max_new_tokens=60, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0].tolist()
        text = tok.decode(seq)
        with open(os.path.join(out, "stories260K_greedy.txt"), "w") as f:
            f.write(",".join(map(str, prompt)) + "\n" + ",".join(map(str, seq)) + "\n" + text + "\n")
        first = seq[:32]
        save_file({"tokens": torch.tensor(first, dtype=torch.int32), "logits": logits_of(model, first).contiguous()},
                  os.path.join(out, "stories260K_logits.safetensors"), metadata=meta)
        report.append(f"stories260K: {text}")
        print(text, flush=True)
    with open(os.path.join(out, "VERSIONS.txt"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n\n" + "\n".join(report) + "\n")


if __name__ == "__main__":
    main()
