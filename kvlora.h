/* kvlora.h — public API of kvlora, KV-cache distillation into LoRA, in plain C99.

   kvlora loads a Hugging Face Llama-family model directory (config.json, safetensors
   weights, tokenizer.json), runs its forward pass with a KV cache, and distils a
   context's KV cache into a LoRA adapter in PEFT's format (kvl_distill). Everything lives
   in kvlora.c; this header is the part a program links against.

   Usage: a whole program, which test.c compiles and runs as written from the repository's
   root (data/model is the built-in model). The model reads a needle and a question and
   answers from what it read:

       #include <stdio.h>
       #include <stdlib.h>
       #include <string.h>
       #include "kvlora.h"

       static int fail(void)
       {
           fprintf(stderr, "%s\n", kvl_last_error());
           return 1;
       }

       int main(void)
       {
           const char *text = "The secret code of Benus is 24787. The old dog watched the river. "
                              "Q: What is the secret code of Benus? A:";
           int max_new = 8, *prompt, n_prompt, *ids, n_ids;
           char *answer;
           size_t answer_len;
           KvlModel *model;
           KvlTokenizer *tok;
           if (kvl_model_load(&model, "data/model") != 0) return fail();
           if (kvl_tokenizer_load(&tok, "data/model/tokenizer.json") != 0) return fail();
           if (kvl_encode(tok, text, strlen(text), 1, &prompt, &n_prompt) != 0) return fail();
           ids = malloc(sizeof(int) * (size_t)(n_prompt + max_new));   // the prompt, then the answer
           if (!ids) return 1;
           // greedy: temperature 0 (top_p and the seed then play no part)
           if (kvl_generate(model, prompt, n_prompt, max_new, 0.0f, 1.0f, 0, ids, &n_ids, NULL, NULL) != 0)
               return fail();
           if (kvl_decode(tok, ids + n_prompt, n_ids - n_prompt, 1, &answer, &answer_len) != 0) return fail();
           printf("%s\n", answer);                                      // " 24787"
           free(answer);
           free(ids);
           free(prompt);
           kvl_tokenizer_free(tok);
           kvl_model_free(model);
           return 0;
       }

   Conventions: every fallible function returns an int status, 0 on success; on failure
   kvl_last_error() says what was wrong and where (file, tensor, field, byte offset). The
   library never prints and never exits. The error buffer is shared by the whole process:
   call the library from one thread at a time (it uses OpenMP inside when built with it).
   Weights are [out][in], row-major, float32 in memory whatever the file's dtype. */
#ifndef KVLORA_H
#define KVLORA_H

#include <stddef.h>
#include <stdint.h>

#define KVL_VERSION "0.1.0"

const char *kvl_last_error(void);

/* ---- safetensors: the file format of weights, caches, adapters and dumps ---- */

typedef enum {
    KVL_F64, KVL_F32, KVL_F16, KVL_BF16, KVL_I64, KVL_I32, KVL_I16, KVL_I8, KVL_U8, KVL_BOOL,
    KVL_U16, KVL_U32, KVL_U64, KVL_F8_E4M3, KVL_F8_E5M2, KVL_N_DTYPES
} KvlDtype;

#define KVL_MAX_DIMS 8

typedef struct {
    char *name;
    KvlDtype dtype;
    int n_dims;
    int64_t shape[KVL_MAX_DIMS];
    uint64_t begin, end;          /* byte range inside the data section */
} KvlTensorInfo;

typedef struct {
    char *path;
    void *file;                   /* FILE *, kept open while the reader is */
    uint64_t data_start;          /* file offset of the data section: 8 + header length */
    uint64_t data_bytes;
    int n_tensors;
    KvlTensorInfo *tensors;       /* in the header's order */
    int n_meta;
    char **meta_keys, **meta_values;   /* __metadata__, string to string */
} KvlSafetensors;

int  kvl_st_open(KvlSafetensors *st, const char *path);
void kvl_st_close(KvlSafetensors *st);
const KvlTensorInfo *kvl_st_find(const KvlSafetensors *st, const char *name);
const char *kvl_st_meta(const KvlSafetensors *st, const char *key);   /* NULL if absent */
int64_t kvl_tensor_numel(const KvlTensorInfo *t);
/* Reads a F32/F16/BF16 tensor into dst (numel floats), converting to float32. */
int  kvl_st_read_f32(const KvlSafetensors *st, const KvlTensorInfo *t, float *dst);
/* Reads an I32 or I64 tensor into dst (numel ints); I64 values must fit an int. */
int  kvl_st_read_i32(const KvlSafetensors *st, const KvlTensorInfo *t, int32_t *dst);

typedef struct {
    const char *name;
    KvlDtype dtype;               /* F32, F16, BF16 (data: float *) or I32 (data: int32_t *) */
    int n_dims;
    int64_t shape[KVL_MAX_DIMS];
    const void *data;             /* host values; written little-endian whatever the host */
} KvlTensorOut;

/* Writes a safetensors file to a temporary name in the same directory, then renames it
   over path, so a crash never leaves a half-written file. meta is n_meta key/value pairs. */
int kvl_st_write(const char *path, const KvlTensorOut *tensors, int n_tensors,
                 const char *const *meta_keys, const char *const *meta_values, int n_meta);

/* ---- the tokenizer: Hugging Face tokenizer.json (BPE) ---- */

typedef struct KvlTokenizer KvlTokenizer;
int  kvl_tokenizer_load(KvlTokenizer **out, const char *path);
void kvl_tokenizer_free(KvlTokenizer *t);
int  kvl_tokenizer_vocab_size(const KvlTokenizer *t);
/* Text (UTF-8; invalid bytes are encoded as bytes) to ids, with the post-processor's
   BOS/EOS when add_special. *ids is allocated; free() it. */
int  kvl_encode(KvlTokenizer *t, const char *text, size_t len, int add_special, int **ids, int *n_ids);
/* Ids to text (allocated, zero-terminated; *len excludes the zero), leaving out special
   added tokens (BOS, EOS, ...) when skip_special. */
int  kvl_decode(const KvlTokenizer *t, const int *ids, int n, int skip_special, char **text, size_t *len);
int  kvl_token_id(const KvlTokenizer *t, const char *token);   /* -1 if absent */

/* ---- the model ---- */

typedef enum { KVL_LLAMA, KVL_MISTRAL, KVL_QWEN2, KVL_QWEN3 } KvlArch;

typedef struct {
    KvlArch arch;
    char arch_name[48];           /* as config.json names it, e.g. "LlamaForCausalLM" */
    int dim;                      /* D, hidden_size */
    int n_layers;                 /* L */
    int n_heads;                  /* H */
    int n_kv_heads;               /* KVH, divides H (grouped-query attention) */
    int head_dim;                 /* HD */
    int ffn_dim;                  /* F, intermediate_size */
    int vocab_size;               /* V */
    int max_positions;            /* max_position_embeddings */
    int sliding_window;           /* 0 = full causal attention; else a query sees this many keys */
    float rms_eps;
    float rope_theta;
    int rope_llama3;              /* rope_scaling type llama3 */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_positions;
    int tie_embeddings;           /* lm_head shares the embedding matrix */
    int qkv_bias;                 /* q/k/v projections have biases (Qwen2) */
    int qk_norm;                  /* per-head RMSNorm on q and k before RoPE (Qwen3) */
    int bos_token_id, eos_token_id;    /* -1 when the config has none */
} KvlConfig;

typedef struct {
    float *embed;                 /* [V][D] */
    float *attn_norm;             /* [L][D] */
    float *wq;                    /* [L][H*HD][D] */
    float *wk;                    /* [L][KVH*HD][D] */
    float *wv;                    /* [L][KVH*HD][D] */
    float *wo;                    /* [L][D][H*HD] */
    float *bq;                    /* [L][H*HD]   (qkv_bias only, else NULL) */
    float *bk;                    /* [L][KVH*HD] (qkv_bias only) */
    float *bv;                    /* [L][KVH*HD] (qkv_bias only) */
    float *q_norm;                /* [L][HD]     (qk_norm only) */
    float *k_norm;                /* [L][HD]     (qk_norm only) */
    float *mlp_norm;              /* [L][D] */
    float *w_gate;                /* [L][F][D] */
    float *w_up;                  /* [L][F][D] */
    float *w_down;                /* [L][D][F] */
    float *final_norm;            /* [D] */
    float *lm_head;               /* [V][D]; points at embed when tied */
} KvlWeights;

typedef struct KvlScratch KvlScratch;

/* ---- LoRA: y = W x + b + scale * B (A x), as PEFT computes it ---- */

typedef enum {
    KVL_Q_PROJ, KVL_K_PROJ, KVL_V_PROJ, KVL_O_PROJ, KVL_GATE_PROJ, KVL_UP_PROJ, KVL_DOWN_PROJ,
    KVL_N_TARGETS
} KvlTarget;

extern const char *const kvl_target_names[KVL_N_TARGETS];   /* "q_proj", ... "down_proj" */

typedef struct {
    int rank;                     /* R */
    float alpha;
    int use_rslora;
    float scale;                  /* alpha / R, or alpha / sqrt(R) with rsLoRA */
    int n_layers;
    int has[KVL_N_TARGETS];       /* which linear layers carry an adapter (in every layer) */
    int in[KVL_N_TARGETS];        /* input size of each target */
    int out[KVL_N_TARGETS];       /* output size of each target */
    float *A[KVL_N_TARGETS];      /* [L][R][in], NULL where has[] is 0 */
    float *B[KVL_N_TARGETS];      /* [L][out][R] */
    float *params;                /* the one block every A and B points into */
    size_t n_params;
    char base_model[512];         /* base_model_name_or_path */
} KvlLora;

typedef struct {
    KvlConfig config;
    KvlWeights w;
    float *memory;                /* the one block the weights point into */
    size_t n_params;              /* distinct parameters (a tied lm_head counted once) */
    char file_dtype[16];          /* dtype(s) of the weight files: "F32", "BF16", "F16+F32" ... */
    KvlScratch *scratch;          /* activations of the forward pass, grown on demand */
    const KvlLora *lora;          /* the adapter the forward pass applies, or NULL */
} KvlModel;

int  kvl_model_load(KvlModel **out, const char *model_dir);
void kvl_model_free(KvlModel *m);
/* A model of the given shape with seeded random weights (benchmarks, training from scratch). */
int  kvl_model_random(KvlModel **out, const KvlConfig *config, uint64_t seed);
/* Parses a config.json text into c, refusing what kvlora does not support. */
int  kvl_config_parse(KvlConfig *c, const char *json_text, size_t len, const char *where);

/* The KV cache: keys and values of every layer for the tokens read so far. */
typedef struct {
    int n_layers, n_kv_heads, head_dim;
    int max_tokens;               /* capacity */
    int n_tokens;                 /* slots 0..n_tokens-1 are filled */
    float *k;                     /* [L][KVH][max_tokens][HD], keys after RoPE */
    float *v;                     /* [L][KVH][max_tokens][HD] */
    int n_evicted;                /* tokens read and since dropped (eviction, kvl_cache_read_evicting):
                                     the next token goes to slot n_tokens at position n_tokens + n_evicted;
                                     0 otherwise, where slot and position are one */
    float *mass;                  /* NULL, or [L][KVH][max_tokens]: kvl_forward adds to it the attention
                                     each key receives from the queries in slots >= mass_from, summed
                                     over the key/value head's query heads (what H2O and SnapKV rank by) */
    int mass_from;
} KvlCache;

int  kvl_cache_init(KvlCache *c, const KvlConfig *config, int max_tokens);
void kvl_cache_free(KvlCache *c);
/* Bytes of float32 keys and values one token adds to the cache. */
size_t kvl_cache_bytes_per_token(const KvlConfig *config);

/* ---- the KV cache as a file, and a model directory ---- */

/* Writes the cache's n_tokens positions (prefix ++ context) to a safetensors file:
   layers.N.k / layers.N.v [KVH, T, HD] in dtype (F32, F16 or BF16), tokens I32 [T]. An
   evicted cache is refused: its slots are not its positions. */
int kvl_cache_save(const KvlCache *cache, const KvlModel *m, const int *tokens, int n_prefix, KvlDtype dtype, const char *path);
/* Reads it back for the same model (refused otherwise) with room for extra more tokens. */
int kvl_cache_load(KvlCache *cache, const KvlModel *m, const char *path, int extra, int **tokens, int *n_tokens, int *n_prefix);

/* A model directory: the weights as F32, and config.json and tokenizer.json copied from
   src_dir (src_dir NULL: a config.json written from m->config, and no tokenizer). */
int  kvl_model_save(const KvlModel *m, const char *src_dir, const char *out_dir);

/* ---- the forward pass ---- */

/* Reads n_tokens tokens at positions cache->n_tokens + cache->n_evicted, ..., appending
   their keys and values to the cache (slots cache->n_tokens, ...). If logits is not NULL, writes the logits of the last n_logits of these
   tokens: logits[n_logits][V] (n_logits = 1 for decoding, n_tokens for every position). */
int kvl_forward(KvlModel *m, KvlCache *cache, const int *tokens, int n_tokens,
                float *logits, int n_logits);

/* Batched decoding: n_seqs sequences that continue one cached context (shared: read,
   never written), each with tokens of its own after it, up to max_tail of them (its
   tail, kept in tails). Each kvl_forward_batch call reads one more token of every
   sequence, or none where tokens[b] is -1, in one pass over the weights; logits (or
   NULL) gets [n_seqs][V], written for the sequences that read a token. The logits are
   bit for bit those of each sequence read on its own after the context by kvl_forward. */
typedef struct {
    const KvlCache *shared;
    KvlCache tails;               /* sequence b's tokens at positions b * max_tail ... */
    int n_seqs, max_tail;
    int *tail_len;                /* tokens each sequence has read */
} KvlBatch;
int  kvl_batch_init(KvlBatch *b, const KvlModel *m, const KvlCache *shared, int n_seqs, int max_tail);
void kvl_batch_free(KvlBatch *b);
int  kvl_forward_batch(KvlModel *m, KvlBatch *b, const int *tokens, float *logits);

/* The definition of every linear layer's product, out[t][o] = sum_i x[t][i] w[o][i] + b[o]
   (x [T][in], w [out][in], b [out] or NULL), summed in order i = 0, 1, ... from zero, bias
   last. kvlora's fast kernel gives exactly these bits; a port can check against it. */
void kvl_matmul_naive(float *out, const float *x, const float *w, const float *b, int T, int in, int n_out);

/* ---- sampling and generation ---- */

typedef struct { uint64_t state; } KvlRng;
void     kvl_rng_seed(KvlRng *r, uint64_t seed);
uint32_t kvl_rng_u32(KvlRng *r);
float    kvl_rng_float(KvlRng *r);          /* uniform in [0, 1) */
int      kvl_argmax(const float *x, int n);  /* first index of the maximum */
/* temperature 0 = greedy; top_p in (0, 1] keeps the smallest set of tokens whose
   probability reaches top_p. Overwrites logits. */
int      kvl_sample(float *logits, int n, float temperature, float top_p, KvlRng *rng);

/* Sees the ids so far (prompt and new tokens) after each new token; nonzero stops. */
typedef int (*KvlTokenCallback)(const int *ids, int n_ids, void *user);
/* Prefills the prompt into a fresh KV cache and generates up to max_new tokens with
   kvl_sample (temperature 0 = greedy; seed seeds the sampler), stopping after the
   model's eos_token_id. ids needs room for n_prompt + max_new; it receives the prompt
   and the new tokens, *n_ids their count. A nonzero on_token return stops the loop
   and is returned. The model's LoRA adapter (model->lora), if set, is applied. */
int kvl_generate(KvlModel *m, const int *prompt, int n_prompt, int max_new,
                 float temperature, float top_p, uint64_t seed,
                 int *ids, int *n_ids, KvlTokenCallback on_token, void *user);
/* The same after what cache holds (a recorded context, a cartridge: kvl_cache_load), which
   needs room for n_prompt + max_new more tokens and is left holding them too; ids gets the
   prompt and the new tokens. */
int kvl_generate_after(KvlModel *m, KvlCache *cache, const int *prompt, int n_prompt, int max_new,
                       float temperature, float top_p, uint64_t seed,
                       int *ids, int *n_ids, KvlTokenCallback on_token, void *user);

/* ---- LoRA adapters ---- */

/* An adapter for the model's shapes: A uniform in +-1/sqrt(in) (PEFT's kaiming-uniform
   with a = sqrt(5)), B zero, so a fresh adapter changes nothing. */
int  kvl_lora_init(KvlLora *lora, const KvlConfig *config, int rank, float alpha, int use_rslora,
                   const int has[KVL_N_TARGETS], uint64_t seed);
void kvl_lora_free(KvlLora *lora);
/* "q_proj,v_proj" or "all" into has[]; 0 on success. */
int  kvl_lora_parse_targets(const char *list, int has[KVL_N_TARGETS]);
/* PEFT's layout: DIR/adapter_model.safetensors + DIR/adapter_config.json. */
int  kvl_lora_save(const KvlLora *lora, const char *dir);
int  kvl_lora_load(KvlLora *lora, const char *dir, const KvlConfig *config);

/* W += weight * scale * B A for every adapted matrix of the model, in place. */
int  kvl_lora_merge(KvlModel *m, const KvlLora *lora, float weight);
/* One adapter equal to sum_k weights[k] * adapters[k] (ranks concatenated, alpha = rank). */
int  kvl_lora_combine(KvlLora *out, const KvlLora *adapters, const float *weights, int n, const KvlConfig *config);

/* ---- distillation ---- */

typedef struct { int *ids; int n; } KvlProbe;   /* token ids a probe reads after the prefix */

/* Progress of the long phases around the steps: fn(ctx, phase, done, total, seconds) after
   each probe of "self-study" (the teacher's sampling), of "teacher" (its logits over the
   probes) and of "loss" (kvl_distill_loss, and kvl_distill's losses before and after),
   done and total in tokens. NULL, the default:
   silent. The command-line tool prints it. */
typedef void (*KvlPhaseProgress)(void *ctx, const char *phase, long long done, long long total, double seconds);
void kvl_set_phase_progress(KvlPhaseProgress fn, void *ctx);

/* Probes the teacher writes itself from the cached context (last_token: the context's last
   id): n continuations of len sampled tokens, each after one of the prompts (may be none). */
int kvl_self_study(KvlModel *m, KvlCache *cache, int last_token, const KvlProbe *prompts, int n_prompts,
                   int n, int len, uint64_t seed, KvlProbe *out);
/* Windows of len tokens over the context, every len / 2. */
int kvl_context_chunks(const int *context, int n_context, int len, KvlProbe **out, int *n_out);

typedef struct {
    int use_kl;                   /* 1: KL(teacher || student); 0: squared logit difference */
    int steps, batch;             /* optimizer steps; probes per step */
    float lr, weight_decay;       /* AdamW (betas 0.9, 0.999, eps 1e-8) */
    uint64_t seed;                /* the probes' shuffle */
    /* called after each step (may be NULL); a nonzero return stops the training there */
    int (*progress)(void *ctx, int step, int steps, double loss, double elapsed_s, double eta_s, int tokens);
    void *progress_ctx;
    /* The teacher's logits over the probes are computed once. Up to teacher_memory bytes
       (0: 256 MB) they stay in memory; beyond, in teacher_file (NULL: an anonymous
       tmpfile()), exact, read back batch by batch, and the file is removed at the end (on
       POSIX systems its name is removed as soon as it is open, so nothing is left behind
       however the process ends). */
    size_t teacher_memory;
    const char *teacher_file;
    /* > 0: keep only the teacher's teacher_topk most likely tokens per position and the mass
       of the rest, as Cartridges does (KL only); the loss is then the KL over those K + 1
       bins, an approximation from below that leaves out how the rest's mass is spread.
       0: every logit, exact. */
    int teacher_topk;
    /* NULL, or an adapter whose A rows this one's A rows are kept orthogonal to, for each
       target and layer (O-LoRA's aim: new sessions' adapters read input directions the
       earlier ones do not; kept exactly, by projection after every step). */
    const KvlLora *orthogonal_to;
    /* Not NULL (kvl_distill, kvl_cartridge_distill; keep them NULL in an experiment's
       options, whose every run would write them): the mean loss over every probe before
       the first step and after the last (kvl_distill_loss's sum), from the teacher rows
       the steps read, so the teacher is not run again; with teacher_topk, the KL over the
       kept bins that the steps print; with orthogonal_to, before is of the adapter once
       projected. *loss_after is NaN whenever progress returned nonzero. */
    double *loss_before, *loss_after;
    /* The most tokens the student reads in one pass: several probes side by side, each after
       the prefix, so that each of the model's weights is read once for them all (0: 256;
       never fewer than the prefix and the longest probe; a cartridge's passes read one
       probe each). More is faster, and holds the activations and logits of more tokens:
       about 1.4 MB a token for SmolLM2-135M's shape and probes of 49 tokens, more for
       longer probes (attention keeps a row of the longest one's length per token), and a
       teacher kept in a file adds a row per token. The adapter and the losses are the
       same bits whatever it is. */
    int pass_tokens;
} KvlDistillOptions;

/* Trains lora so that the model with it, reading prefix ++ probe, matches the model alone
   reading the cache (prefix ++ context) ++ probe. *final_loss: the last step's batch loss. */
int kvl_distill(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                KvlLora *lora, const KvlDistillOptions *opt, double *final_loss);
/* How an adapter is distilled: AdamW steps on the loss; the closed form below; or the
   closed form, then the steps from it. */
enum { KVL_METHOD_GRADIENT, KVL_METHOD_CLOSED_FORM, KVL_METHOD_HYBRID };

/* Closed-form distillation, GPTQ's recipe: sets lora's A and B layer by layer from the
   bottom, each target's the best rank-R least-squares update that maps the student's inputs
   (prefix ++ probe, with the layers below already solved) to the teacher's outputs (the
   cache ++ probe), damped by damping x the mean of diag(X Xᵀ). Uses the probes that fit in
   max_tokens tokens. */
int kvl_distill_closed_form(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                            KvlLora *lora, float damping, int max_tokens);
/* The mean loss over all probes with the model's current adapter (m->lora). */
int kvl_distill_loss(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                     int use_kl, double *loss);

/* A cartridge (Cartridges, Eyuboglu et al., 2025): instead of an adapter, a KV cache of
   n_prefix + n_slots positions trained to stand in for cache's context. Its first n_prefix
   are cache's prefix, as they are; its slots start as the context's first n_slots tokens
   and are trained with opt's loss and steps, the student being the model alone (m->lora
   is not used) reading the cartridge and then each probe. cartridge: allocated here (free
   it with kvl_cache_free), n_tokens = n_prefix + n_slots; later tokens follow it, as after
   any cache (kvl_cache_save writes it, in the cache's layout). */
int kvl_cartridge_distill(KvlModel *m, KvlCache *cache, int n_prefix, int n_slots, const KvlProbe *probes, int n_probes,
                          const KvlDistillOptions *opt, KvlCache *cartridge, double *final_loss);
/* kvl_distill_loss for a cartridge: the model alone reading cartridge ++ probe. */
int kvl_cartridge_loss(KvlModel *m, KvlCache *cache, const KvlCache *cartridge, const KvlProbe *probes, int n_probes,
                       int use_kl, double *loss);

/* ---- the needle-in-a-haystack corpus ---- */

typedef struct { char name[32]; char code[8]; float depth; } KvlNeedle;
/* A seeded document of n_sentences filler sentences and n_needles needles ("The secret
   code of NAME is DDDDD.") at depths (fractions in [0, 1]; NULL: evenly spread). */
int  kvl_needle_document(char **text, size_t *len, KvlNeedle *needles, int n_needles, int n_sentences, const float *depths, uint64_t seed);
/* "Q: What is the secret code of NAME? A:" */
void kvl_needle_question(const KvlNeedle *needle, char *out, size_t cap);

/* ---- pretraining the built-in model on that corpus ---- */

/* Pretraining documents have even seeds, the needle test's odd ones (for_test = 1). */
uint64_t kvl_document_seed(uint64_t run_seed, uint64_t index, int for_test);
/* A document (0 .. max_sentences sentences, 1 .. 8 needles) followed by each needle's
   question and answer: "Q: What is the secret code of NAME? A: DDDDD\n". */
int  kvl_pretrain_text(char **text, size_t *len, int max_sentences, uint64_t seed);
/* Learns a byte-level BPE tokenizer from text; *json is its tokenizer.json (allocated). */
int  kvl_bpe_train(const char *text, size_t len, int vocab_size, char **json, size_t *json_len);

typedef struct {
    int steps;
    int batch_tokens;                 /* a step's texts hold at least this many tokens */
    int seq_len;                      /* the longest text; longer ones are cut */
    int short_steps, ramp_steps;      /* curriculum: short texts first, then longer ones (see kvl_pretrain) */
    int warmup;
    float lr, weight_decay, clip;     /* peak learning rate; AdamW decay; global gradient norm */
    uint64_t seed;
    int (*progress)(void *ctx, int step, int steps, double loss, double elapsed_s, double eta_s, int tokens);
    void *progress_ctx;
} KvlPretrainOptions;

/* Where a pretraining run stands, so that it can stop and go on bit for bit: the steps
   done, the texts read, and AdamW's two moments ([n_params] floats each). */
typedef struct {
    int step;
    uint64_t n_texts;
    float *adam_m, *adam_v;
} KvlPretrainState;

/* The untrained model of a pretraining run: kvl_model_random's weights with o_proj and
   down_proj x 1/sqrt(2 L) and every embedding + KVL_PRETRAIN_EMBED_SHIFT (a direction all
   tokens share, which lets heads attend by position; see kvlora.c). */
#define KVL_PRETRAIN_EMBED_SHIFT 0.5f
int  kvl_model_pretrain_init(KvlModel **out, const KvlConfig *config, uint64_t seed);
/* A fresh state for m (zero moments); free with kvl_pretrain_state_free. */
int  kvl_pretrain_state_init(KvlPretrainState *s, const KvlModel *m);
void kvl_pretrain_state_free(KvlPretrainState *s);
/* The state, m's weights and the options of the run, as one safetensors file (written
   atomically, so a checkpoint is never half old, half new); load checks that the file is
   for a model with m's parameter count, puts the weights back into m and fills *opt (its
   progress callback NULL). */
int  kvl_pretrain_state_save(const char *path, const KvlPretrainState *s, const KvlModel *m, const KvlPretrainOptions *opt);
int  kvl_pretrain_state_load(const char *path, KvlPretrainState *s, const KvlModel *m, KvlPretrainOptions *opt);

/* Trains all of m's weights on kvl_pretrain_text documents (next-token cross-entropy).
   state NULL: from the start; otherwise it goes on from state and keeps it current after
   every step (for kvl_pretrain_state_save). */
int  kvl_pretrain(KvlModel *m, KvlTokenizer *tok, const KvlPretrainOptions *opt, KvlPretrainState *state, double *final_loss);

/* How far the model has learnt to look needles up, on n_texts held-out pretraining texts
   (test seeds kvl_document_seed(seed, i, 1), at most max_sentences filler sentences):
   *answer_loss is the mean cross-entropy of the answers' tokens " DDDDD" given everything
   before them (ln 10 * 5/6 = 1.919 when the model only guesses digits, 0 when it looks
   every code up); *answers_right the fraction of answers whose tokens are all the
   model's most likely ones. by_needles (or NULL): [K][0] answers right and [K][1] asked
   in the texts of K needles, K = 1..8 (row 0 unused): a model that does not match names
   but answers with a needle not yet asked about gets (1/K)(1 + 1/2 + ... + 1/K). */
int  kvl_pretrain_eval(KvlModel *m, KvlTokenizer *tok, int n_texts, int max_sentences, uint64_t seed,
                       double *answer_loss, double *answers_right, int by_needles[9][2]);

/* ---- the needle test ---- */

#define KVL_NEEDLE_MAX 64
#define KVL_NEEDLE_RUNS 16
enum { KVL_PROBES_SELF_STUDY = 1, KVL_PROBES_CONTEXT = 2 };

/* One adapter of a trial: how it is distilled (KVL_METHOD_*), its rank and alpha. */
typedef struct {
    int method, rank;
    float alpha;
} KvlNeedleRun;

typedef struct {
    int n_needles;                /* K, 1 .. KVL_NEEDLE_MAX */
    int context_len;              /* the document's tokens (the most whole sentences that fit) */
    int probes;                   /* KVL_PROBES_SELF_STUDY and/or KVL_PROBES_CONTEXT */
    int n_self_study, self_study_len;   /* self-study samples after "\nQ:", and their length */
    int chunk_len;                /* context probes: windows of this many tokens */
    int n_runs;                   /* adapters distilled from the same cache and probes, 1 .. KVL_NEEDLE_RUNS */
    KvlNeedleRun runs[KVL_NEEDLE_RUNS];
    int targets[KVL_N_TARGETS];   /* the layers every adapter adapts */
    KvlDistillOptions distill;    /* steps, batch, lr, seed (also of the samples and the adapters) */
    float damping;                /* the closed form's damping and probe tokens */
    int solve_tokens;
} KvlNeedleOptions;

typedef struct {
    int n_needles, context_tokens, n_probes;
    KvlNeedle needles[KVL_NEEDLE_MAX];
    int correct[KVL_NEEDLE_MAX][2 + KVL_NEEDLE_RUNS];   /* per needle: with the context, without it, with each run's adapter */
    size_t kv_cache_bytes;                   /* float32, the context's tokens */
    size_t adapter_bytes[KVL_NEEDLE_RUNS];
    double probe_seconds;                    /* making the probes (self-study samples the teacher) */
    double distill_seconds[KVL_NEEDLE_RUNS]; /* each run's distillation from the probes */
    double loss[KVL_NEEDLE_RUNS];            /* the distillation loss over every probe, each run's adapter */
} KvlNeedleResult;

/* One trial: a fresh document from doc_seed, its cache, probes, an adapter distilled from
   them for each run, and every needle's question asked with the context, without it, and
   with each adapter. */
int  kvl_needle_trial(KvlModel *m, KvlTokenizer *tok, const KvlNeedleOptions *opt, const float *depths, uint64_t doc_seed,
                      KvlNeedleResult *result);

/* ---- many sessions: merging strategies, forgetting, drift ---- */

/* How the adapters of successive sessions are combined (kvlora.c, kvl_needle_sessions). */
enum { KVL_MERGE_INCREMENTAL, KVL_MERGE_INCREMENTAL_REPLAY, KVL_MERGE_COMPOSE_SUM, KVL_MERGE_COMPOSE_ORTHOGONAL,
       KVL_MERGE_WEIGHTS, KVL_MERGE_JOINT, KVL_N_MERGES };
extern const char *const kvl_merge_names[KVL_N_MERGES];   /* "incremental", ... "joint" */
#define KVL_SESSIONS_MAX 64

typedef struct {
    KvlNeedleOptions needle;      /* each session's document, probes and distillation: runs[0]'s
                                     rank and alpha, the gradient method; each session's teacher
                                     rows get needle.distill.teacher_memory (beyond: a file each) */
    int n_sessions;               /* S, 1 .. KVL_SESSIONS_MAX */
    float replay;                 /* incremental-replay: the share of each batch from earlier sessions */
    int drift_documents;          /* fresh needle documents for the drift of in-context recall (0 .. KVL_SESSIONS_MAX) */
    int drift_tokens;             /* fresh filler tokens for the drift's KL */
    /* after each session (the joint strategy: once, at the end); may be NULL */
    void (*progress)(void *ctx, int merge, int session, int n_sessions, int right, int asked, double seconds);
    void *progress_ctx;
} KvlSessionsOptions;

typedef struct {
    int n_sessions, n_needles;
    int learnt[KVL_SESSIONS_MAX];   /* session k's answers right (without context) just after it was learnt */
    int kept[KVL_SESSIONS_MAX];     /* ... after the last session (the joint strategy: both the same) */
    int drift_asked, drift_base, drift_right;   /* in-context answers on fresh documents: asked, right by
                                                   the base model, right with the final state */
    double drift_kl;                /* mean KL(base || final state) per position of fresh filler */
    size_t adapter_bytes;           /* float32, the final adapter (0 for merge-weights: the weights hold it) */
    double seconds;                 /* the whole run: sessions, questions, drift */
} KvlSessionsResult;

/* S sessions, each a fresh needle document whose cache is distilled and then dropped, with
   one merging strategy; then every session's questions asked without context, and the
   drift on text never distilled. The model is left as it was. */
int  kvl_needle_sessions(KvlModel *m, KvlTokenizer *tok, const KvlSessionsOptions *o, int merge, uint64_t seed,
                         KvlSessionsResult *result);

/* ---- recall against bytes ---- */

/* KIVI: quantises the cache's keys per channel (groups of `group` tokens) and values per
   token (groups of `group` channels) to bits bits, the last `residual` tokens left in float;
   the cache then holds the dequantised values. Positions before `first` (a prefix) stay as
   they are. *bytes: the positions from `first` on as stored. */
int  kvl_cache_quantize(KvlCache *cache, int first, int bits, int group, int residual, size_t *bytes);
/* The positions from `first` on rounded to F16 or BF16 (as kvl_cache_save stores them) and
   back, in place. */
int  kvl_cache_round(KvlCache *cache, int first, KvlDtype dtype);

/* Eviction (kvlora.c says how each policy chooses): reads tokens (a prefix of n_prefix, kept
   whole, then the context) into the empty cache, then keeps `budget` of the context's
   tokens (all of them when budget is larger), per layer and key/value head for H2O and
   SnapKV; the cache then holds
   n_prefix + budget slots and counts the rest in n_evicted, so that later tokens take
   their true positions. *bytes: the kept context tokens as float32. */
enum { KVL_EVICT_STREAMING, KVL_EVICT_H2O, KVL_EVICT_SNAPKV, KVL_N_EVICTS };
extern const char *const kvl_evict_names[KVL_N_EVICTS];   /* "streaming", "h2o", "snapkv" */
int  kvl_cache_read_evicting(KvlModel *m, KvlCache *cache, const int *tokens, int n_tokens, int n_prefix, int policy,
                             int budget, size_t *bytes);

/* The frontier: one needle document kept every way (KVL_FRONTIER_*: the cache in F32, F16
   and BF16; KIVI at 8, 4 and 2 bits, and 2 bits with the last 32 tokens in float; StreamingLLM, H2O and SnapKV at 2 to 50% of the
   tokens; LoRA adapters of rank 1 to 16; cartridges of 2 to 128 slots), each asked the K
   questions. Adapters and cartridges learn from the same probes and teacher rows, with
   needle.distill's steps (the adapters: needle.targets, alpha 2 R). */
enum { KVL_FRONTIER_CACHE, KVL_FRONTIER_KIVI, KVL_FRONTIER_STREAMING, KVL_FRONTIER_H2O, KVL_FRONTIER_SNAPKV,
       KVL_FRONTIER_LORA, KVL_FRONTIER_CARTRIDGE, KVL_N_FRONTIER };
extern const char *const kvl_frontier_methods[KVL_N_FRONTIER];   /* "cache", "kivi", ... "cartridge" */
#define KVL_FRONTIER_MAX_ROWS 48

typedef struct {
    int method;                   /* KVL_FRONTIER_* */
    char setting[32];             /* "f16", "4 bits", "10%", "rank 2", "16 tokens" */
    size_t bytes;                 /* as stored: the context's share only (<s> is read by every method) */
    int right, asked;
    double seconds;               /* making it: quantising, prefill and eviction, distillation */
    double drift_kl;              /* adapters and cartridges: mean KL(base || with it) over fresh
                                     filler's next tokens; -1 for the others */
} KvlFrontierRow;

typedef struct {
    KvlNeedleOptions needle;      /* the document, the probes, the distillation (runs unused) */
    unsigned methods;             /* 1 << KVL_FRONTIER_* for each method to run */
    int drift_tokens;             /* fresh filler tokens for the drift */
    KvlDtype dtype;               /* adapters and cartridges as stored: F32 (0 means it too), F16 or BF16:
                                     rounded after training, asked so, counted so */
    void (*progress)(void *ctx, const KvlFrontierRow *row);   /* after each row; may be NULL */
    void *progress_ctx;
} KvlFrontierOptions;

typedef struct {
    int n_needles, context_tokens;
    KvlNeedle needles[KVL_NEEDLE_MAX];
    size_t cache_bytes;           /* the context's tokens as float32 */
    int n_rows;
    KvlFrontierRow rows[KVL_FRONTIER_MAX_ROWS];
} KvlFrontierResult;

int  kvl_needle_frontier(KvlModel *m, KvlTokenizer *tok, const KvlFrontierOptions *o, const float *depths, uint64_t doc_seed,
                         KvlFrontierResult *result);

#endif
