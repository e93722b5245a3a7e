"""pretrain_search.py — kvlora's pretraining recipe, replayed in PyTorch on GPUs to search it fast.

kvlora trains its built-in model itself (`kvlora pretrain`, about 3 200 tokens/s on 2 cores);
one run of the default recipe is hours there and a few minutes here on a GPU, so recipes are
searched here and only the chosen one is run by kvlora. To make the search mean something
for kvlora, everything but the arithmetic is kvlora's own:

- the texts are kvlora's: `kvl_pretrain_text` and `kvl_encode` called through ctypes from
  libkvlora.so (`make libkvlora.so`), with a tokenizer.json that `kvlora pretrain` learnt;
- the model is the same Llama (RMSNorm, rotate-half RoPE, SwiGLU, tied embeddings), with
  kvlora's initialisation (`init: "kvlora"`: uniform of variance 1/fan-in, embeddings
  uniform in [-1, 1] times emb_scale (1 now; 0.05 before round 7) plus emb_shift (kvlora
  adds 0.5 since the session after round 15; 0 here unless set), o_proj and down_proj
  x1/sqrt(2L)) or Hugging Face's (`"hf"`: normal(0, 0.02)); a "start" directory written
  by `kvlora pretrain --steps 0` holds kvlora's own initial weights, shift included;
  `check` below shows its logits equal kvlora's on kvlora's weights;
- the batches (texts until batch_tokens tokens, cut at seq_len), the curriculum (short
  texts for short_steps, then the filler grows over ramp_steps), the loss (summed over the
  batch's tokens / their count), the clipping and AdamW's schedule (linear warmup, cosine
  to a tenth) are kvlora_pretrain's.

Every eval_every steps each run logs, on 64 held-out texts of test seeds, short (<= 3 filler
sentences) and long (up to seq_len): the answers' loss (1.919 = guessing the digits), the
share of answers right token for token, the wrong answer tokens by position (0 = the space,
1 = the first digit ...), and the answers right by the text's number of needles K. The last
is the telling one: a model that does not match names but answers, in turn, with a needle
not yet asked about gets (1/K) H_K right (H_K = 1 + 1/2 + ... + 1/K): 75% at K = 2, 52% at
4, 34% at 8.

    make libkvlora.so && ./kvlora pretrain -o /tmp/tok --steps 1      # a tokenizer.json
    python3 data/pretrain_search.py run libkvlora.so /tmp/tok/tokenizer.json configs.jsonl OUTDIR 500
    python3 data/pretrain_search.py check /tmp/tok DUMP.safetensors   # after kvlora dump

configs.jsonl holds one JSON object per run, overriding DEFAULTS, e.g.
    {"name": "h8_s2", "seed": 2, "heads": 8, "kv_heads": 8, "wd": 0.1}
All runs start at once, spread over the GPUs (one process each; 16 per H200 is fine), and
stop at the deadline (seconds). Each writes OUTDIR/NAME.log, one JSON line per evaluation,
as it goes (on a machine whose results come back only from one folder, make OUTDIR that
folder, so that a run cut short still reports). Needs PyTorch (a GPU for speed; the CPU
works, slowly).

A run can also replay kvlora's own run of a seed: "start" names a directory that
`./kvlora pretrain -o DIR --seed S --steps 0 [shape]` wrote (the untrained weights and the
tokenizer kvlora learnt for that seed); with the same seed, shape and recipe, the batches,
the loss and AdamW's steps are kvlora's, and only the rounding differs (seed 5, the
default recipe: the first four steps' losses 56.2010 55.9806 55.1260 54.7485 in kvlora
and in a plain loop over this script's model, weights and texts, one text at a time):
    {"name": "kv_s5", "seed": 5, "heads": 8, "kv_heads": 8, "wd": 0.1, "start": "/tmp/s5"}

data/pretrain_search_runs.jsonl holds 303 runs (rounds 1-4: 104 runs on 2-4 H200s; rounds
5-7, 39 runs, and 8-9, 32 runs, on one H200; rounds 12-18, 128 runs, on two; 3600 steps
unless the config says otherwise, later rounds cut by the call's deadline (the last
evaluation says where); the config and the evaluations every 500 steps). Some of its
settings are not in this script; those runs used a copy of kvlora.c whose generator read
them from the environment:
  "min_needles"  texts of min_needles..8 needles instead of 1..8;
  "qmode"        1: each text's questions drawn with replacement; 2: twice as many, so drawn;
  "qfmt"         the answer line: 1 "Q: What is the secret code of N? A: The secret code of
                 N is D", 2 "Q: The secret code of N is D", 3 "Q: ... of N? A: N is D",
                 4 "Q: The secret code of N D";
  "nfmt"         1: the needle without "is": "The secret code of N D.";
  "tok"          "space_digit": the tokenizer with " 0" .. " 9" merged (so " 04217" is 5 tokens);
  "rep"          each filler sentence after the first is, with this percent chance, a copy of
                 an earlier one of the text (repeated passages, which reward induction heads);
  "copy"         this percent of the training texts are instead a list read twice, "N1 D1,
                 N2 D2, ... Nn Dn." then again, in the same order (copy_order 0) or shuffled
                 (1): 4-16 distinct names with new codes, associative recall without filler.
What they found: the format changes did not help (the name-matching step was as rare as
before); the embeddings' scale did. At x0.05, 28 of 104 runs never even copied a code;
at x0.25, x0.5 and x1 every run copied codes by step 2000, and 2 of 15 (emb_scale 0.25 and
1, seed 1) matched names: 98-99% of the answers right on long texts, at every K.
Rounds 8-9, all at full-scale embeddings, 8 heads, weight decay 0.1 (kvlora's recipe): none
of 32 runs matched names. Four more seeds of the recipe itself, questions drawn with
replacement (qmode 1 and 2: the model then picks a code at random, 1/K, instead of the
elimination plateau), answers' loss x4, lr 2e-3 and 5e-4, no filler in the short phase, 4
heads, the adjacent formats with the space-digit tokenizer, the recited and cloze answers,
and repeated filler (rep 30 and 60, alone and with those formats): every one ended on the
plateau ((1/K) H_K) or below. So matching names is a rare event of a run's first 2000 steps
(about 2 in 47 runs at full scale), not a setting.
Rounds 12-15, kvlora's recipe replayed from kvlora's own untrained models ("start"): none of
72 runs matched names. Seeds 10-17 at vocab 1024 (the 8 of 16 logs that came back; round
12's other 24 were lost to the 8-file limit on what comes back) and seeds 5-20 at vocab 640
(names in two frequent pieces): a slightly higher plateau (44-51% right at step 3600, by
K up to 15 points over elimination at K = 4-6, so some partial use of the name) and 4 of
16 runs slow to copy codes at all. Rope theta 1e5 and 1e6 (more of each head's dims keep
a token's identity over distance) at 8 heads, and 4 heads (head dim 32) at theta 1e4 and
1e6: all on the plateau at step 2700-2900. Half of the texts as lists read twice (copy
50, either order): slower to copy codes, and on the plateau or below it at step ~1850.
Two of kvlora's plateau models (seed 3 at step 1500; vocab 640, seed 4 at step 2500) have
no previous-token head: on 20 held-out short texts each head's mean weight on the token
before is at most 0.07 in every layer (a uniform head over ~50 tokens gives 0.02).
After round 15, in kvlora itself (a patched copy, seed 3): every embedding + 0.5 at the
start, a direction all tokens share, so that a head's query and key have a part that does
not depend on the token and RoPE can turn it into attention by position (layer 0's
shared part of |q|^2: 1-4% in the plateau models, 42% with the shift at step 0). Step
750: 52% right, above the elimination curve at every K > 1; step 1000: 96% right, by K
100 100 100 96 98 100 96 90%. kvlora now starts every run so ("emb_shift": 0.5 here).
Round 16, the recipe with the shift replayed from kvlora's untrained models of seeds 4-35
(32 runs on two H200s, cut at steps 2640-2681 by the call's deadline): every run matched
names. Short texts' answers >= 90% right at step 1000 in 22 runs, at 1500 in 31, at 2000
in all 32; at the last evaluation (during the growth to long texts) 94-100% right on
short texts and 91-99% on long ones.
Round 17, for the built-in model's weak spot (with 4 needles in a 512-token document,
93% right for the needle at the document's end, 97% in all): "eval_end": 512 adds an
evaluation on 64 such documents (4 needles at the needle test's depths; "end512" in the
runs file). Seeds 4-9, seq_len 768 (the recipe) against 1024 (documents up to ~760
tokens instead of ~560), all 3600 steps: at step 3600, 95-98% (mean 97.0%) against
97-98% (97.7%) of those answers right; short and long texts 95-100% in both. The longer
texts help little; the wrong answers have one or two wrong digits anywhere in the code
(kvlora's model: the right needle, a digit of another code), so what is missing seems
to be the precision of copying, more than the length trained.
Round 18, more training at full length, same seeds and evaluation: 1200 short steps and
800 of growth instead of 1800 and 1000 (1600 steps at full length instead of 800, the
same cost): 96.1-98.8% (mean 98.2%) of the 512-token answers right at step 3600; and
5400 steps instead of 3600 (2600 at full length; 1.5x the cost): 98.8-100% (mean 99.5%),
short and long texts 99-100%.
"""
import ctypes, json, math, os, sys, time, multiprocessing as mp

DEFAULTS = dict(name="base", seed=1, layers=4, dim=128, heads=4, kv_heads=4, ffn=384, steps=3600, batch_tokens=8192,
                seq_len=768, short_steps=1800, ramp_steps=1000, warmup=100, lr=1e-3, wd=0.0, clip=1.0, init="kvlora",
                eval_every=250, answer_weight=1.0, qk_scale=1.0, short_sentences=3, start="", emb_scale=1.0,
                rope_theta=10000.0, emb_shift=0.0, eval_end=0)


class Kvl:
    def __init__(self, lib, tok_path):
        self.L = ctypes.CDLL(lib)
        L = self.L
        L.kvl_tokenizer_load.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        L.kvl_pretrain_text.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_int, ctypes.c_uint64]
        L.kvl_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_int)), ctypes.POINTER(ctypes.c_int)]
        L.kvl_document_seed.restype = ctypes.c_uint64
        L.kvl_document_seed.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int]
        L.kvl_needle_document.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64]
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.tok = ctypes.c_void_p()
        assert L.kvl_tokenizer_load(ctypes.byref(self.tok), tok_path.encode()) == 0
        L.kvl_tokenizer_vocab_size.argtypes = [ctypes.c_void_p]
        self.vocab_size = L.kvl_tokenizer_vocab_size(self.tok)

    def text(self, max_sentences, seed):
        p, n = ctypes.c_char_p(), ctypes.c_size_t()
        assert self.L.kvl_pretrain_text(ctypes.byref(p), ctypes.byref(n), max_sentences, seed) == 0
        s = ctypes.string_at(p, n.value)
        self.libc.free(ctypes.cast(p, ctypes.c_void_p))
        return s

    def needle_text(self, n_sentences, depths, seed):
        """A test document of n_sentences filler sentences with a needle at each depth, then
        each needle's question and answer (in needle order), as kvl_pretrain_text lays them out."""
        class Needle(ctypes.Structure):
            _fields_ = [("name", ctypes.c_char * 32), ("code", ctypes.c_char * 8), ("depth", ctypes.c_float)]
        K = len(depths)
        needles, d = (Needle * K)(), (ctypes.c_float * K)(*depths)
        p, n = ctypes.c_char_p(), ctypes.c_size_t()
        assert self.L.kvl_needle_document(ctypes.byref(p), ctypes.byref(n), needles, K, n_sentences, d, seed) == 0
        s = ctypes.string_at(p, n.value)
        self.libc.free(ctypes.cast(p, ctypes.c_void_p))
        return s + b"\n" + b"".join(b"Q: What is the secret code of %s? A: %s\n" % (x.name, x.code) for x in needles)

    def filler_tokens_per_100(self, seed):
        p, n = ctypes.c_char_p(), ctypes.c_size_t()
        assert self.L.kvl_needle_document(ctypes.byref(p), ctypes.byref(n), None, 0, 100, None, seed) == 0
        s = ctypes.string_at(p, n.value)
        self.libc.free(ctypes.cast(p, ctypes.c_void_p))
        return len(self.encode(s, 0))

    def encode(self, b, special):
        ids, n = ctypes.POINTER(ctypes.c_int)(), ctypes.c_int()
        assert self.L.kvl_encode(self.tok, b, len(b), special, ctypes.byref(ids), ctypes.byref(n)) == 0
        out = ids[:n.value]
        self.libc.free(ctypes.cast(ids, ctypes.c_void_p))
        return out


def make_model(cfg, V):
    """A Llama (RMSNorm, RoPE rotate-half, SwiGLU, tied embeddings) initialised like kvlora."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    D, H, KV, L, Fd = cfg["dim"], cfg["heads"], cfg["kv_heads"], cfg["layers"], cfg["ffn"]
    hd = D // H

    class Norm(nn.Module):
        def __init__(s):
            super().__init__(); s.weight = nn.Parameter(torch.ones(D))
        def forward(s, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * s.weight

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.input_layernorm, s.post_attention_layernorm = Norm(), Norm()
            s.q_proj = nn.Linear(D, H * hd, bias=False); s.k_proj = nn.Linear(D, KV * hd, bias=False)
            s.v_proj = nn.Linear(D, KV * hd, bias=False); s.o_proj = nn.Linear(H * hd, D, bias=False)
            s.gate_proj = nn.Linear(D, Fd, bias=False); s.up_proj = nn.Linear(D, Fd, bias=False)
            s.down_proj = nn.Linear(Fd, D, bias=False)
        def forward(s, x, cos, sin):
            B, T, _ = x.shape
            h = s.input_layernorm(x)
            q = s.q_proj(h).view(B, T, H, hd).transpose(1, 2)
            k = s.k_proj(h).view(B, T, KV, hd).transpose(1, 2)
            v = s.v_proj(h).view(B, T, KV, hd).transpose(1, 2)
            def rot(t):
                t1, t2 = t[..., :hd // 2], t[..., hd // 2:]
                return t * cos + torch.cat((-t2, t1), -1) * sin
            q, k = rot(q), rot(k)
            if KV != H:
                k = k.repeat_interleave(H // KV, 1); v = v.repeat_interleave(H // KV, 1)
            if hasattr(F, "scaled_dot_product_attention"):
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:                                   # old PyTorch (the local CPU check)
                sc = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
                sc = sc.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
                a = torch.softmax(sc, -1) @ v
            x = x + s.o_proj(a.transpose(1, 2).reshape(B, T, H * hd))
            h = s.post_attention_layernorm(x)
            return x + s.down_proj(F.silu(s.gate_proj(h)) * s.up_proj(h))

    class Model(nn.Module):
        def __init__(s):
            super().__init__()
            s.embed_tokens = nn.Embedding(V, D)
            s.layers = nn.ModuleList([Block() for _ in range(L)])
            s.norm = Norm()
            inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
            s.register_buffer("inv", inv, persistent=False)
        def forward(s, ids):
            T = ids.shape[1]
            f = torch.outer(torch.arange(T, device=ids.device).float(), s.inv)
            f = torch.cat((f, f), -1)
            cos, sin = f.cos()[None, None], f.sin()[None, None]
            x = s.embed_tokens(ids)
            for b in s.layers:
                x = b(x, cos, sin)
            return s.norm(x) @ s.embed_tokens.weight.t()

    m = Model()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.fill_(1.0)
            elif cfg["init"] == "kvlora":
                scale = 1.0 if "embed" in n else math.sqrt(3.0 / p.shape[1])
                p.uniform_(-scale, scale)
                if "embed" in n: p.mul_(cfg["emb_scale"]).add_(cfg["emb_shift"])
                if "o_proj" in n or "down_proj" in n: p.mul_(1.0 / math.sqrt(2 * L))
                if "q_proj" in n or "k_proj" in n: p.mul_(cfg["qk_scale"])
            else:                                   # "hf": normal(0, 0.02) everywhere
                p.normal_(0, 0.02)
                if cfg["init"] == "hf_scaled" and ("o_proj" in n or "down_proj" in n): p.mul_(1.0 / math.sqrt(2 * L))
    return m


def answer_marked(kvl, text):
    """ids (with <s>) and a 0/1 mask of answer tokens, cut like kvl_pretrain_eval."""
    ids, mask, at = [0], [0], 0
    while at < len(text):
        q = text.find(b"? A:", at)
        piece_end = q + 4 if q >= 0 else len(text)
        ans_end = piece_end
        while ans_end < len(text) and text[ans_end:ans_end + 1] != b"\n":
            ans_end += 1
        for part, (a, b) in enumerate(((at, piece_end), (piece_end, ans_end))):
            if b > a:
                t = kvl.encode(text[a:b], 0)
                ids += t
                mask += [part] * len(t)
        at = ans_end
    return ids, mask


def read_safetensors(path):
    """{name: numpy array} of a safetensors file (F32 and I32 tensors)."""
    import struct
    import numpy as np
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k != "__metadata__":
            a, e = v["data_offsets"]
            dt = {"F32": np.float32, "I32": np.int32}[v["dtype"]]
            out[k] = np.frombuffer(b[8 + n + a:8 + n + e], dtype=dt).reshape(v["shape"])
    return out


def load_kvlora_weights(m, model_dir):
    """Every weight of the model here from a model directory that kvlora wrote."""
    import torch
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd = {k.replace("model.", "", 1).replace("self_attn.", "").replace("mlp.", ""): torch.tensor(v.copy()) for k, v in w.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError("%s: missing %s, unexpected %s" % (model_dir, missing, unexpected))


def run(cfg, gpu, lib, tok_path, outdir, deadline):
    import torch
    torch.set_num_threads(1)
    if cfg["start"]: tok_path = os.path.join(cfg["start"], "tokenizer.json")
    kvl = Kvl(lib, tok_path)
    dev = torch.device("cuda", gpu) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(cfg["seed"])
    V = kvl.vocab_size
    model = make_model(cfg, V)
    if cfg["start"]: load_kvlora_weights(model, cfg["start"])     # kvlora's own initial weights
    model = model.to(dev)
    decay = [p for n, p in model.named_parameters()]
    opt = torch.optim.AdamW(decay, lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg["wd"])
    per100 = kvl.filler_tokens_per_100(cfg["seed"])
    full_sentences = max(0, int((cfg["seq_len"] - 8 * 33) * 100 / per100))
    eval_sets = {}
    for label, ms in (("short", 3), ("long", full_sentences)):
        eval_sets[label] = [answer_marked(kvl, kvl.text(ms, kvl.L.kvl_document_seed(cfg["seed"], i, 1))) for i in range(64)]
    if cfg["eval_end"]:     # 64 documents of about eval_end tokens, 4 needles at the needle test's depths
        n_s = max(0, int((cfg["eval_end"] - 4 * 13) * 100 / per100))
        D = (0.0, 0.25, 0.5, 0.75, 1.0)
        eval_sets["end"] = [answer_marked(kvl, kvl.needle_text(n_s, [D[(4 * i + k) % 5] for k in range(4)],
                                                               kvl.L.kvl_document_seed(cfg["seed"], 100000 + i, 1))) for i in range(64)]

    def evaluate():
        model.eval()
        res = {}
        pos_err = {label: [0] * 6 for label in eval_sets}
        byk = {label: [[0, 0] for _ in range(9)] for label in eval_sets}
        with torch.no_grad():
            for label, items in eval_sets.items():
                tot, ntok, right, nans = 0.0, 0, 0, 0
                for ids, mask in items:
                    kk = sum(1 for j in range(1, len(mask)) if mask[j] and not mask[j - 1])
                    x = torch.tensor([ids], device=dev)
                    logits = model(x)[0].float()
                    lp = torch.log_softmax(logits[:-1], -1)
                    tgt = x[0, 1:]
                    m = torch.tensor(mask[1:], device=dev, dtype=torch.bool)
                    nll = -lp.gather(1, tgt[:, None])[:, 0]
                    tot += nll[m].sum().item(); ntok += int(m.sum().item())
                    ok = (lp.argmax(-1) == tgt)
                    # answers: runs of mask
                    mk = mask[1:]; okl = ok.tolist(); t = 0
                    while t < len(mk):
                        if mk[t]:
                            s = t
                            while t < len(mk) and mk[t]: t += 1
                            nans += 1; right += all(okl[s:t])
                            byk[label][kk][0] += all(okl[s:t]); byk[label][kk][1] += 1
                            for j in range(s, t):
                                if not okl[j]: pos_err[label][min(j - s, 5)] += 1
                        else:
                            t += 1
                res[label] = (tot / max(ntok, 1), right / max(nans, 1), pos_err[label], nans, byk[label])
        model.train()
        return res

    n_texts, t0 = 0, time.time()
    log = open(os.path.join(outdir, cfg["name"] + ".log"), "w")
    steps = cfg["steps"]
    for step in range(steps):
        if step % cfg["eval_every"] == 0 and step > 0:
            r = evaluate()
            line = dict(name=cfg["name"], step=step, **r, loss=lossv, secs=round(time.time() - t0, 1))
            print(json.dumps(line), file=log, flush=True)
        if time.time() > deadline:
            step -= 1                                   # the steps done: 0 .. step
            break
        ms = full_sentences
        if step < cfg["short_steps"] + cfg["ramp_steps"]:
            grown = 0.0 if step < cfg["short_steps"] else (step - cfg["short_steps"]) / cfg["ramp_steps"]
            ms = min(full_sentences, cfg["short_sentences"] + int(grown * (full_sentences - cfg["short_sentences"])))
        seqs, n_total = [], 0
        while n_total < cfg["batch_tokens"]:
            text = kvl.text(ms, kvl.L.kvl_document_seed(cfg["seed"], n_texts, 0))
            n_texts += 1
            if cfg["answer_weight"] != 1.0:
                ids, mask = answer_marked(kvl, text)
            else:
                ids = kvl.encode(text, 1); mask = [0] * len(ids)
            if len(ids) <= cfg["seq_len"]: ids.append(1); mask.append(0)
            ids, mask = ids[:cfg["seq_len"] + 1], mask[:cfg["seq_len"] + 1]
            seqs.append((ids, mask)); n_total += len(ids) - 1
        Tm = max(len(s) for s, _ in seqs)
        x = torch.zeros((len(seqs), Tm), dtype=torch.long)
        w = torch.zeros((len(seqs), Tm - 1))
        for b, (s, mk) in enumerate(seqs):         # target t + 1 weighs answer_weight if an answer token
            x[b, :len(s)] = torch.tensor(s)
            w[b, :len(s) - 1] = torch.tensor([cfg["answer_weight"] if a else 1.0 for a in mk[1:]])
        x, w = x.to(dev), w.to(dev)
        logits = model(x[:, :-1]).float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1), reduction="none").view_as(w)
        loss = (nll * w).sum() / n_total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["clip"] > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        progress = step / (steps - 1) if steps > 1 else 1.0
        lr = cfg["lr"] * (step + 1) / cfg["warmup"] if step < cfg["warmup"] else cfg["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups: g["lr"] = lr
        opt.step()
        lossv = round(loss.item(), 4) if step % 50 == 0 else None if step == 0 else lossv
    r = evaluate()
    print(json.dumps(dict(name=cfg["name"], step=step + 1, **r, final=True,
                          secs=round(time.time() - t0, 1))), file=log, flush=True)


def check(model_dir, dump_path):
    """The model here against kvlora's forward: `kvlora dump MODEL_DIR --prefix-tokens 0
    --tokens ... -o DUMP` on a model that `kvlora pretrain` wrote (default shape)."""
    import numpy as np
    import torch

    d = read_safetensors(dump_path)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    c = dict(DEFAULTS, layers=cfg["num_hidden_layers"], dim=cfg["hidden_size"], heads=cfg["num_attention_heads"],
             kv_heads=cfg["num_key_value_heads"], ffn=cfg["intermediate_size"])
    m = make_model(c, cfg["vocab_size"])
    load_kvlora_weights(m, model_dir)
    with torch.no_grad():
        z = m(torch.tensor([[0] + list(d["tokens"])]))[0, 1:].numpy()
    print("max |logit difference| %.3g (largest logit %.3g)" % (np.abs(z - d["logits"]).max(), np.abs(z).max()))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) != 7 or sys.argv[1] != "run":
        sys.exit(__doc__)
    lib, tok_path, cfg_path, outdir, budget = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
    deadline = time.time() + budget
    cfgs = [dict(DEFAULTS, **json.loads(l)) for l in open(cfg_path) if l.strip()]
    import torch
    ngpu = max(1, torch.cuda.device_count())
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=run, args=(c, i % ngpu, lib, tok_path, outdir, deadline)) for i, c in enumerate(cfgs)]
    for p in ps: p.start()
    for p in ps: p.join()
