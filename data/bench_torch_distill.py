"""bench_torch_distill.py — the distillation step of `kvlora bench`, in plain PyTorch.

Same model shape (random SmolLM2-135M: 30 layers, hidden 576, 9 heads, 3 KV heads, head
dim 64, ffn 1536, vocab 49152, tied embeddings), same LoRA (r 8, alpha 16, all seven
linear layers), same work per step: the student reads a 1-token prefix plus a 128-token
probe, KL(teacher || student) against teacher logits computed once beforehand (the teacher
read the probe after a 512-token cached context), backward to the LoRA matrices, one AdamW
step. kvlora's step also excludes the teacher (its logits are kept when they fit).

    OPENBLAS_NUM_THREADS=2 /usr/bin/python3 data/bench_torch_distill.py --threads 1
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 data/bench_torch_distill.py --threads 2

Prints the mean seconds per step after two warm-up steps.
"""
import argparse, math, os, time

import torch
import torch.nn.functional as F

D, L, H, KVH, HD, FF, V = 576, 30, 9, 3, 64, 1536, 49152
R, ALPHA = 8, 16.0


class LoRALinear(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(o, i) / math.sqrt(i), requires_grad=False)
        self.a = torch.nn.Parameter((torch.rand(R, i) * 2 - 1) / math.sqrt(i))
        self.b = torch.nn.Parameter(torch.zeros(o, R))

    def forward(self, x):
        return x @ self.w.t() + (x @ self.a.t()) @ self.b.t() * (ALPHA / R)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def rope(x, pos):
    inv = 1.0 / (100000.0 ** (torch.arange(0, HD, 2).float() / HD))
    ang = pos[:, None].float() * inv[None, :]
    c, s = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
    return x * c + torch.cat([-x2, x1], -1) * s


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Parameter(torch.rand(V, D) * 2 - 1, requires_grad=False)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            m = torch.nn.Module()
            m.q, m.k, m.v, m.o = LoRALinear(D, H * HD), LoRALinear(D, KVH * HD), LoRALinear(D, KVH * HD), LoRALinear(H * HD, D)
            m.g, m.u, m.d = LoRALinear(D, FF), LoRALinear(D, FF), LoRALinear(FF, D)
            m.n1 = torch.nn.Parameter(torch.ones(D), requires_grad=False)
            m.n2 = torch.nn.Parameter(torch.ones(D), requires_grad=False)
            self.layers.append(m)
        self.norm = torch.nn.Parameter(torch.ones(D), requires_grad=False)

    def forward(self, ids):
        T = ids.shape[0]
        pos = torch.arange(T)
        x = self.emb[ids]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for m in self.layers:
            h = rms(x, m.n1)
            q = rope(m.q(h).view(T, H, HD).transpose(0, 1), pos)
            k = rope(m.k(h).view(T, KVH, HD).transpose(0, 1), pos).repeat_interleave(H // KVH, 0)
            v = m.v(h).view(T, KVH, HD).transpose(0, 1).repeat_interleave(H // KVH, 0)
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HD) + mask, -1)
            x = x + m.o((att @ v).transpose(0, 1).reshape(T, H * HD))
            h = rms(x, m.n2)
            x = x + m.d(F.silu(m.g(h)) * m.u(h))
        return rms(x, self.norm) @ self.emb.t()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Model()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = torch.randint(0, V, (129,))
    with torch.no_grad():
        teacher = torch.log_softmax(model(ids)[1:] + 0.1 * torch.randn(128, V), -1)
    times = []
    for step in range(2 + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        logp = torch.log_softmax(model(ids)[1:], -1)
        loss = (teacher.exp() * (teacher - logp)).sum(-1).mean()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, torch threads {args.threads}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}: "
          f"{sum(times) / len(times):.3f} s per distillation step (mean of {len(times)})")


if __name__ == "__main__":
    main()
