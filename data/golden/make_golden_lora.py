"""make_golden_lora.py — golden LoRA numbers from PEFT and PyTorch autograd.

For several of the random models of make_golden.py (GQA, q/k/v biases, q/k norms, a
sliding window), builds a PEFT LoRA adapter on all seven linear layers (r = 4,
lora_alpha = 8, dropout 0) with random A *and* B (PEFT starts B at zero, which would make
every gradient of A vanish), saves it with PEFT's own save_pretrained, and records:

  tokens, prefix, context   I32   the probe, the shared prefix, the context
  logits                    F32 [T, V]  the student: model + adapter on prefix ++ tokens
  teacher_logits            F32 [T, V]  the model alone on prefix ++ context ++ tokens
  loss_kl, loss_mse         F32 [1]     kl = mean_t KL(p_teacher || p_student), mse = mean (z_s - z_t)^2
  grad_kl.<name>, grad_mse.<name>       autograd's gradient of each loss for every LoRA tensor

Then loads the adapter kvlora wrote (data/golden/kvlora_adapter, made by `kvlora distill`)
into PEFT on llama_gqa_f32 and records PEFT's logits for it (peft_logits_of_kvlora_adapter.safetensors).

    python3 data/golden/make_golden_lora.py data/golden OUTDIR
"""
import os, shutil, sys

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PREFIX = [1]
CONTEXT = [(i * 37 + 5) % 128 for i in range(12)]
TOKENS = [(i * 53 + 7) % 128 for i in range(10)]


def main():
    golden, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    meta = {"generator": "make_golden_lora.py", "transformers": transformers.__version__, "torch": torch.__version__, "peft": peft.__version__}
    for seed, name in enumerate(["llama_gqa_f32", "qwen2_f32", "qwen3_f32", "mistral_window_f32"]):
        base = AutoModelForCausalLM.from_pretrained(os.path.join(golden, name), torch_dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            teacher = base(torch.tensor([PREFIX + CONTEXT + TOKENS])).logits[0, -len(TOKENS):].float()
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(base, cfg)
        g = torch.Generator().manual_seed(3000 + seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_A" in n:
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[1] ** 0.5)
                elif "lora_B" in n:
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)
        adir = os.path.join(out, f"lora_{name}")
        shutil.rmtree(adir, ignore_errors=True)
        model.save_pretrained(adir)
        tensors = {"tokens": torch.tensor(TOKENS, dtype=torch.int32), "prefix": torch.tensor(PREFIX, dtype=torch.int32),
                   "context": torch.tensor(CONTEXT, dtype=torch.int32), "teacher_logits": teacher.contiguous()}
        for loss_name in ("kl", "mse"):
            model.zero_grad()
            zs = model(torch.tensor([PREFIX + TOKENS])).logits[0, len(PREFIX):].float()
            if loss_name == "kl":
                pt = F.log_softmax(teacher, -1)
                loss = (pt.exp() * (pt - F.log_softmax(zs, -1))).sum(-1).mean()
            else:
                loss = ((zs - teacher) ** 2).mean()
            loss.backward()
            tensors["logits"] = zs.detach().contiguous()
            tensors[f"loss_{loss_name}"] = loss.detach().reshape(1)
            for n, p in model.named_parameters():
                if "lora_" in n:
                    key = n.replace(".default", "")
                    tensors[f"grad_{loss_name}.{key}"] = p.grad.detach().clone().contiguous()
            print(f"{name}: {loss_name} loss {loss.item():.6f}", flush=True)
        save_file(tensors, os.path.join(adir, "golden_lora.safetensors"), metadata=meta)
        print(sorted(os.listdir(adir)), flush=True)

    # PEFT reads the adapter kvlora wrote
    base = AutoModelForCausalLM.from_pretrained(os.path.join(golden, "llama_gqa_f32"), torch_dtype=torch.float32, attn_implementation="eager").eval()
    model = PeftModel.from_pretrained(base, os.path.join(golden, "kvlora_adapter")).eval()
    with torch.no_grad():
        z = model(torch.tensor([PREFIX + TOKENS])).logits[0].float()
    save_file({"tokens": torch.tensor(PREFIX + TOKENS, dtype=torch.int32), "logits": z.contiguous()},
              os.path.join(out, "peft_logits_of_kvlora_adapter.safetensors"), metadata=meta)
    print("kvlora adapter through PEFT: logits", tuple(z.shape), flush=True)
    with open(os.path.join(out, "VERSIONS_LORA.txt"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\npeft {peft.__version__}\n")


if __name__ == "__main__":
    main()
