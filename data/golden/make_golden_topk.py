"""make_golden_topk.py — golden numbers for the top-K teacher's loss (distill --teacher-topk).

The teacher is kept as its K most likely tokens per position plus the mass of the rest
(Cartridges' recipe); the loss is the KL between teacher and student seen through those
K + 1 bins:

    KL_K = sum_{k in top K} p_t,k (log p_t,k - log p_s,k) + r_t (log r_t - log r_s)

with r = the probability mass outside the teacher's top K. Written here with torch's own
operations (topk, log_softmax, logsumexp, autograd), in float64 from float32 logits.

Inputs: the teacher and student logits of data/golden/lora_llama_gqa_f32/golden_lora.safetensors
([10, 128] each, from make_golden_lora.py). Writes OUT/topk_kl.safetensors:

  student, teacher     F32 [10, 128]   the logits
  loss_k<K>            F32 [1]         mean over positions of KL_K
  grad_k<K>            F32 [10, 128]   d loss_k<K> / d student (autograd)
  ids_k<K>             I32 [10, K]     the teacher's top K ids at each position, ascending

for K = 1, 8, 32 and 128 (= V: the exact KL), and loss_exact, the exact KL.

    python3 data/golden/make_golden_topk.py data/golden OUTDIR
"""
import os, sys

import torch
from safetensors.torch import load_file, save_file


def topk_kl(zs, zt, K):
    lt, ls = torch.log_softmax(zt, -1), torch.log_softmax(zs, -1)
    top = torch.topk(lt, K, -1).indices.sort(-1).values
    in_top = torch.zeros_like(lt, dtype=torch.bool).scatter_(-1, top, True)
    lt_top, ls_top = lt.gather(-1, top), ls.gather(-1, top)
    kl = (lt_top.exp() * (lt_top - ls_top)).sum(-1)
    if K < lt.shape[-1]:
        log_rest_t = torch.logsumexp(lt.masked_fill(in_top, float("-inf")), -1)
        log_rest_s = torch.logsumexp(ls.masked_fill(in_top, float("-inf")), -1)
        kl = kl + log_rest_t.exp() * (log_rest_t - log_rest_s)
    return kl.mean(), top


def main():
    golden, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    src = load_file(os.path.join(golden, "lora_llama_gqa_f32", "golden_lora.safetensors"))
    zs32, zt32 = src["logits"].float(), src["teacher_logits"].float()
    zt = zt32.double()
    tensors = {"student": zs32.contiguous(), "teacher": zt32.contiguous()}
    lt = torch.log_softmax(zt, -1)
    exact = (lt.exp() * (lt - torch.log_softmax(zs32.double(), -1))).sum(-1).mean()
    tensors["loss_exact"] = exact.float().reshape(1)
    for K in (1, 8, 32, zt.shape[-1]):
        zs = zs32.double().requires_grad_(True)
        loss, top = topk_kl(zs, zt, K)
        loss.backward()
        tensors[f"loss_k{K}"] = loss.detach().float().reshape(1)
        tensors[f"grad_k{K}"] = zs.grad.float().contiguous()
        tensors[f"ids_k{K}"] = top.to(torch.int32).contiguous()
        print(f"K={K}: KL_K {loss.item():.8f} (exact {exact.item():.8f})", flush=True)
    save_file(tensors, os.path.join(out, "topk_kl.safetensors"), metadata={"generator": "make_golden_topk.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
