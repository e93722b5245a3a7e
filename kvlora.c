/* kvlora.c — distil a language model's KV cache into a LoRA adapter, in plain C99.

   A model that reads a context builds a KV cache: the keys and values of every layer for
   every token. The cache is large, so it is thrown away when the session ends. kvlora
   keeps what the context taught instead, as a small low-rank update dW = B A of the
   model's linear layers, trained so that the model *without* the context answers like
   the model *with* its cache:

       min_{A,B}  E_x [ D( f_{W + dW}(P ++ x), f_W(P ++ C ++ x) ) ]   over the positions of x

   This file is the whole implementation, and it reads top to bottom in the order the
   data flows:
       1 utilities                        7 the forward pass and generation
       2 JSON                             8 the student: forward with activations, backward
       3 safetensors                      9 LoRA adapters
       4 the tokenizer                   10 distillation
       5 the model and its KV cache      11 experiments: needle corpus, pretraining, needle test
       6 layers: forward and backward    12 the command-line tool
       Appendix A: fast kernels (the same sums as section 6, faster)
       Appendix B: Unicode tables
   A reader who stops after section 7 has read a complete inference engine for Llama,
   Mistral, Qwen2 and Qwen3 and met no intrinsics on the way: matmul's definition is
   kvl_matmul_naive (section 6), attention's is attention_forward (section 6); Appendix A
   computes the same sums fast.

   Non-goals: speed at any price (the kernels are plain C that a compiler vectorises; the
   fast paths, Appendix A's packed matmul with its AVX tile and its attention in blocks,
   compute the very sums of the plain loops they replace),
   quantised weights, batching of unrelated sequences (batched decoding continues one
   shared context), and any architecture other than the Llama family.

   Shapes in comments use this legend:
       T tokens of the current chunk   P positions in the cache (keys attended to)
       D hidden size                   L layers
       H query heads                   KVH key/value heads (H = KVH * group)
       HD head dimension               F feed-forward (intermediate) size
       V vocabulary size
   Weights are [out][in], row-major, as PyTorch's nn.Linear stores them; y = W x + b.

   Rules of the house: the library never prints and never exits; every fallible call
   returns 0 or an error whose message (kvl_last_error) names the file, tensor, field or
   byte offset. Every byte read from disk is untrusted. All arithmetic is float32, and
   the result does not depend on the number of OpenMP threads: threads split independent
   outputs (rows), never one sum. */

#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, fsync, fileno, mkdir: used where present */
#endif

#include "kvlora.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#if defined(_POSIX_VERSION) || defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#define KVL_POSIX 1
#elif defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>                /* QueryPerformanceCounter, MoveFileExA */
#include <direct.h>                 /* _mkdir */
#include <io.h>                     /* _commit, _fileno */
#include <process.h>                /* _getpid */
#endif
/* No fused multiply-adds unless asked for: a*b+c rounded once instead of twice would give
   other bits than the plain C the tests compare against. GCC in ISO C mode (-std=c99)
   already keeps them apart; clang needs to be told. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#ifdef _OPENMP
#include <omp.h>
/* Loops over independent outputs are split across threads with this macro; the only other
   parallel loop is pretraining's lanes (section 11). Without OpenMP the macro is empty and
   the code is the same. */
#define PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
/* Jobs of unequal size (attention's query blocks: later queries see more keys) are handed
   out one at a time instead; which thread computes a job never changes its result. */
#define PARALLEL_FOR_DYNAMIC _Pragma("omp parallel for schedule(dynamic)")
static int max_threads(void) { return omp_get_max_threads(); }
static int thread_index(void) { return omp_get_thread_num(); }
#else
#define PARALLEL_FOR
#define PARALLEL_FOR_DYNAMIC
static int max_threads(void) { return 1; }
static int thread_index(void) { return 0; }
#endif

/* ------------------------------------------------------------------------------------ */
/* 1. Utilities: errors, allocation, a seeded PRNG, timing, bytes, atomic files         */
/*                                                                                      */
/* The error message lives in one buffer; a failing function writes it and returns -1.  */
/* Callers that add context (which file, which tensor) prepend to it with error_wrap.   */

static char kvl_error[1024];

const char *kvl_last_error(void) { return kvl_error; }

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kvl_error, sizeof kvl_error, fmt, ap);
    va_end(ap);
    return -1;
}

/* "where: <message already in the buffer>" */
static int error_wrap(const char *fmt, ...)
{
    char prefix[512], old[sizeof kvl_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, kvl_error, sizeof old);
    kvl_error[0] = 0;
    strncat(kvl_error, prefix, sizeof kvl_error - 1);
    strncat(kvl_error, ": ", sizeof kvl_error - 1 - strlen(kvl_error));
    strncat(kvl_error, old, sizeof kvl_error - 1 - strlen(kvl_error));
    return -1;
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fail("out of memory (asked for %zu bytes)", bytes);
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fail("out of memory (asked for %zu x %zu bytes)", n, size);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* a * b for sizes, or 0 with an error when it would overflow */
static int mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return fail("size overflow: %zu x %zu", a, b);
    *out = a * b;
    return 0;
}

/* The PRNG is xorshift64* (Vigna): tiny, fast, and identical on every platform, so a
   seed names the same stream everywhere. Seed 0 is mapped to a fixed nonzero state. */
void kvl_rng_seed(KvlRng *r, uint64_t seed)
{
    r->state = seed ^ 0x9E3779B97F4A7C15ull;
    if (r->state == 0) r->state = 0x9E3779B97F4A7C15ull;
}

uint32_t kvl_rng_u32(KvlRng *r)
{
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}

float kvl_rng_float(KvlRng *r) { return (kvl_rng_u32(r) >> 8) / 16777216.0f; }

/* ---- the platform: what C99 lacks, for POSIX and Windows ---- */

/* A monotonic clock, the process id (for temporary names), flushing a file to the disk,
   replacing a file in one step, creating a directory, the peak memory. Elsewhere they
   degrade (the clock to whole seconds, the flush to nothing) without changing a result. */

static double now_seconds(void)
{
#if defined(KVL_POSIX) && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
#elif defined(_WIN32)
    LARGE_INTEGER count, frequency;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&frequency);
    return (double)count.QuadPart / (double)frequency.QuadPart;
#elif defined(_OPENMP)
    return omp_get_wtime();
#else
    return (double)time(NULL);
#endif
}

static long process_id(void)
{
#if defined(KVL_POSIX)
    return (long)getpid();
#elif defined(_WIN32)
    return (long)_getpid();
#else
    return 0;
#endif
}

static int flush_to_disk(FILE *f)
{
#if defined(KVL_POSIX)
    return fsync(fileno(f));
#elif defined(_WIN32)
    return _commit(_fileno(f));
#else
    (void)f;
    return 0;
#endif
}

/* Renames from to to, replacing to if it exists: POSIX's rename() does; Windows' refuses
   an existing file, and MoveFileEx is the call that replaces. */
static int replace_file(const char *from, const char *to)
{
#if defined(_WIN32)
    if (MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) return 0;
    errno = GetLastError() == ERROR_ACCESS_DENIED ? EACCES : EIO;
    return -1;
#else
    return rename(from, to);
#endif
}

/* fseek to a byte offset that may pass 2 GB where long, fseek's offset, has 32 bits
   (Windows); elsewhere without large-file offsets, offsets past LONG_MAX are refused. */
static int file_seek(FILE *f, uint64_t offset)
{
#if defined(_WIN32)
    return _fseeki64(f, (__int64)offset, SEEK_SET);
#elif defined(KVL_POSIX)
    if ((uint64_t)(off_t)offset != offset) return -1;
    return fseeko(f, (off_t)offset, SEEK_SET);
#else
    if (offset > LONG_MAX) return -1;
    return fseek(f, (long)offset, SEEK_SET);
#endif
}

/* 0 when the directory exists afterwards; without a platform call, assumes it does. */
static int create_dir(const char *dir)
{
#if defined(KVL_POSIX)
    return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
#elif defined(_WIN32)
    return _mkdir(dir) != 0 && errno != EEXIST ? -1 : 0;
#else
    (void)dir;
    return 0;
#endif
}

#ifdef KVLORA_MAIN
/* The process's peak resident memory in MB, or -1 where it is not known (kvlora bench). */
static double peak_memory_mb(void)
{
#if defined(KVL_POSIX)
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return ru.ru_maxrss / 1024.0;
#endif
    return -1.0;
}
#endif

/* Files are little-endian. These read and write bytes one at a time, so they are right
   on a big-endian host too; no pointer casts, no alignment assumptions. */
static uint16_t read_u16_le(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t read_u32_le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t read_u64_le(const unsigned char *p)
{
    return (uint64_t)read_u32_le(p) | (uint64_t)read_u32_le(p + 4) << 32;
}

static void write_u16_le(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }

static void write_u32_le(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void write_u64_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits_from_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* IEEE half (1 sign, 5 exponent, 10 mantissa bits) to float, exactly: every half is a float. */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000 | mant << 13);   /* inf, NaN */
    if (exp == 0) {                                     /* zero or subnormal: mant * 2^-24 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);   /* rebias 15 -> 127 */
}

/* bfloat16 is the top half of a float. */
static float bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

/* float to bfloat16, rounding to nearest even; NaN stays NaN (quiet). */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u = bits_from_f32(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* float to IEEE half, rounding to nearest even, overflow to inf, subnormals kept. */
static uint16_t f32_to_f16(float f)
{
    uint32_t u = bits_from_f32(f), sign = (u >> 16) & 0x8000;
    uint32_t absu = u & 0x7FFFFFFF;
    if (absu > 0x7F800000) return (uint16_t)(sign | 0x7E00);          /* NaN */
    if (absu >= 0x477FF000) return (uint16_t)(sign | 0x7C00);         /* rounds to >= 65520: inf */
    if (absu < 0x38800000) {                                          /* below 2^-14: subnormal */
        /* value = absf; the half subnormal unit is 2^-24: round absf * 2^24 to an integer */
        float absf = f32_from_bits(absu);
        float scaled = absf * 16777216.0f;             /* exact: a power-of-two scale */
        uint32_t q = (uint32_t)scaled;
        float rem = scaled - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return (uint16_t)(sign | q);                   /* q = 1024 carries into the exponent */
    }
    uint32_t mant = absu & 0x7FFFFF, exp = (absu >> 23) - 112;        /* rebias 127 -> 15 */
    uint32_t h = exp << 10 | mant >> 13, rest = mant & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;            /* may carry: still right */
    return (uint16_t)(sign | h);
}

/* x as a tensor of dtype stores it: rounded to F16 or BF16 and back, or as it is (F32). */
static float round_to(float x, KvlDtype dtype)
{
    return dtype == KVL_F16 ? f16_to_f32(f32_to_f16(x)) : dtype == KVL_BF16 ? bf16_to_f32(f32_to_bf16(x)) : x;
}

/* A list of token ids, "5,9,12" (spaces allowed around the commas), into a fresh array. */
static int parse_ids(const char *s, int **out, int *n)
{
    int cap = 16, count = 0;
    int *ids = malloc(sizeof(int) * cap);
    if (!ids) return fail("out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT_MAX) { free(ids); return fail("'%s' is not a comma-separated list of token ids", s); }
        if (count == cap) {
            int *bigger = realloc(ids, sizeof(int) * (cap *= 2));
            if (!bigger) { free(ids); return fail("out of memory"); }
            ids = bigger;
        }
        ids[count++] = (int)v;
        p = end;
        while (*p == ' ') p++;
        if (*p == 0) break;
        if (*p != ',') { free(ids); return fail("'%s' is not a comma-separated list of token ids", s); }
        p++;
    }
    *out = ids;
    *n = count;
    return 0;
}

/* Reads a whole file; adds a terminating zero that is not counted in *len. */
static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    if (!buf) { fclose(f); return error_wrap("%s", path); }
    for (;;) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) { free(buf); fclose(f); return fail("%s: out of memory", path); }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return fail("%s: read error", path); }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static void path_join(char *out, size_t cap, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    snprintf(out, cap, "%s%s%s", dir, (n && dir[n - 1] == '/') ? "" : "/", name);
}

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The directory part of path ("." if none), for temporary files next to their target. */
static void dir_of(char *out, size_t cap, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(out, cap, "."); return; }
    size_t n = (size_t)(slash - path);
    if (n == 0) n = 1;
    if (n >= cap) n = cap - 1;
    memcpy(out, path, n);
    out[n] = 0;
}

/* Atomic replacement: write to "<path>.tmp.<pid>", flush, fsync, rename over path. A
   crash at any moment leaves either the old file or the new one, never half of one. */
typedef struct { FILE *f; char tmp[4200]; const char *path; } AtomicFile;

static int atomic_open(AtomicFile *a, const char *path)
{
    a->path = path;
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, process_id());
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        char dir[4096];
        dir_of(dir, sizeof dir, path);
        return fail("%s: cannot create a file in directory '%s': %s", path, dir, strerror(errno));
    }
    return 0;
}

static void atomic_abort(AtomicFile *a)
{
    if (a->f) fclose(a->f);
    a->f = NULL;
    remove(a->tmp);
}

static int atomic_commit(AtomicFile *a)
{
    int bad = fflush(a->f) != 0 || ferror(a->f);
    if (!bad) bad = flush_to_disk(a->f) != 0;
    int err = errno;
    if (fclose(a->f) != 0) { bad = 1; err = errno; }
    a->f = NULL;
    if (bad) { remove(a->tmp); return fail("%s: write failed: %s", a->path, strerror(err)); }
    if (replace_file(a->tmp, a->path) != 0) {
        err = errno;
        remove(a->tmp);
        return fail("%s: cannot rename the temporary file into place: %s", a->path, strerror(err));
    }
    return 0;
}

/* For the tests: KVLORA_TEST_DISK_BYTES=N makes writes fail once N bytes have been written,
   as a full disk does, so that the path a real ENOSPC takes can be checked. */
static long long *disk_budget(void)
{
    static long long left = -2;
    if (left == -2) {
        const char *e = getenv("KVLORA_TEST_DISK_BYTES");
        left = e ? strtoll(e, NULL, 10) : -1;
    }
    return &left;
}

static int atomic_write(AtomicFile *a, const void *data, size_t bytes)
{
    long long *left = disk_budget();
    if (*left >= 0) {
        if ((long long)bytes > *left) { *left = 0; return fail("%s: write failed: No space left on device (KVLORA_TEST_DISK_BYTES)", a->path); }
        *left -= (long long)bytes;
    }
    if (bytes && fwrite(data, 1, bytes, a->f) != bytes)
        return fail("%s: write failed: %s", a->path, strerror(errno));
    return 0;
}

/* Writes a small text file atomically. */
static int write_text_file(const char *path, const char *text)
{
    AtomicFile a;
    if (atomic_open(&a, path)) return -1;
    if (atomic_write(&a, text, strlen(text))) { atomic_abort(&a); return -1; }
    return atomic_commit(&a);
}

static int make_dir(const char *dir)
{
    if (create_dir(dir) != 0) return fail("%s: cannot create the directory: %s", dir, strerror(errno));
    return 0;
}

/* Copies a small file (config.json, tokenizer.json) atomically. */
static int copy_file(const char *from, const char *to)
{
    char *text;
    size_t len;
    if (read_file(from, &text, &len)) return -1;
    AtomicFile a;
    int r = atomic_open(&a, to);
    if (!r) {
        r = atomic_write(&a, text, len);
        if (r) atomic_abort(&a); else r = atomic_commit(&a);
    }
    free(text);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* 2. JSON: a small strict parser                                                       */
/*                                                                                      */
/* Enough for config.json, tokenizer.json and safetensors headers, and strict about     */
/* what RFC 8259 allows: no comments, no trailing commas, no NaN, no leading zeros, no  */
/* raw control characters in strings, valid UTF-8, \uXXXX escapes with surrogate pairs  */
/* (a lone surrogate is an error). Nesting deeper than JSON_MAX_DEPTH is refused, so a  */
/* hostile file cannot overflow the stack. A key repeated in one object keeps its last  */
/* value, as Python's json module does (Hugging Face reads these files with it). Errors */
/* give the byte offset.                                                                */

#define JSON_MAX_DEPTH 128

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct Json Json;
struct Json {
    JsonType type;
    int boolean;
    double number;
    char *string;        /* JSON_STRING: UTF-8, zero-terminated; may hold \u0000, see length */
    size_t length;       /* bytes of string, or number of children */
    size_t capacity;     /* room in children (and keys) */
    char **keys;         /* JSON_OBJECT: keys[i] names children[i] */
    Json **children;     /* JSON_ARRAY and JSON_OBJECT */
};

typedef struct {
    const char *text;
    size_t len, pos;
    const char *where;   /* file name for messages */
} JsonParser;

static void json_free(Json *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->length && (j->type == JSON_ARRAY || j->type == JSON_OBJECT); i++) {
        json_free(j->children[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->children);
    free(j->keys);
    free(j->string);
    free(j);
}

static int json_fail(JsonParser *p, const char *what)
{
    return fail("%s: invalid JSON at byte %zu: %s", p->where, p->pos, what);
}

static void json_skip_ws(JsonParser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Growable byte buffer for decoded strings. */
typedef struct { char *data; size_t len, cap; } Buf;

/* Room for extra more bytes and a terminating NUL. */
static int buf_reserve(Buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + extra + 1) cap *= 2;
        char *bigger = realloc(b->data, cap);
        if (!bigger) return fail("out of memory");
        b->data = bigger;
        b->cap = cap;
    }
    return 0;
}

static int buf_push(Buf *b, const void *bytes, size_t n)
{
    if (buf_reserve(b, n)) return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static int buf_puts(Buf *b, const char *s) { return buf_push(b, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid:
   no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;        /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    if ((size_t)len > n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

static int utf8_encode(unsigned cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int json_hex4(JsonParser *p, unsigned *out)
{
    if (p->pos + 4 > p->len) return json_fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return json_fail(p, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return 0;
}

/* Parses a string at p->pos (which is at the opening quote) into a fresh buffer. */
static int json_parse_string(JsonParser *p, char **out, size_t *out_len)
{
    Buf b = {0};
    p->pos++;                                   /* opening quote */
    if (buf_puts(&b, "")) return -1;
    for (;;) {
        if (p->pos >= p->len) { free(b.data); return json_fail(p, "unterminated string"); }
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { free(b.data); return json_fail(p, "control character in string"); }
        if (c == '\\') {
            if (p->pos + 1 >= p->len) { free(b.data); return json_fail(p, "unterminated escape"); }
            char e = p->text[p->pos + 1], ch;
            p->pos += 2;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (json_hex4(p, &cp)) { free(b.data); return -1; }
                if (cp >= 0xDC00 && cp <= 0xDFFF) { free(b.data); return json_fail(p, "lone low surrogate"); }
                if (cp >= 0xD800 && cp <= 0xDBFF) {    /* a high surrogate needs a low one */
                    if (p->pos + 2 > p->len || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
                        free(b.data);
                        return json_fail(p, "high surrogate without a low surrogate");
                    }
                    p->pos += 2;
                    if (json_hex4(p, &lo)) { free(b.data); return -1; }
                    if (lo < 0xDC00 || lo > 0xDFFF) { free(b.data); return json_fail(p, "high surrogate without a low surrogate"); }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                char enc[4];
                if (buf_push(&b, enc, (size_t)utf8_encode(cp, enc))) { free(b.data); return -1; }
                continue;
            }
            default: free(b.data); return json_fail(p, "unknown escape");
            }
            if (buf_push(&b, &ch, 1)) { free(b.data); return -1; }
            continue;
        }
        int n = utf8_valid_len((const unsigned char *)p->text + p->pos, p->len - p->pos);
        if (n == 0) { free(b.data); return json_fail(p, "invalid UTF-8 in string"); }
        if (buf_push(&b, p->text + p->pos, (size_t)n)) { free(b.data); return -1; }
        p->pos += (size_t)n;
    }
    *out = b.data;
    *out_len = b.len;
    return 0;
}

/* Checks the JSON number grammar, then converts with strtod (correctly rounded in every
   libc we know). strtod reads the locale's decimal point, so a '.' is swapped for it:
   the parser gives the same numbers whatever setlocale the host program called. */
static int json_parse_number(JsonParser *p, double *out)
{
    size_t start = p->pos, i = p->pos;
    const char *s = p->text;
    if (i < p->len && s[i] == '-') i++;
    if (i >= p->len || !isdigit((unsigned char)s[i])) { p->pos = i; return json_fail(p, "bad number"); }
    if (s[i] == '0') i++;
    else while (i < p->len && isdigit((unsigned char)s[i])) i++;
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || !isdigit((unsigned char)s[i])) { p->pos = i; return json_fail(p, "bad number: no digit after '.'"); }
        while (i < p->len && isdigit((unsigned char)s[i])) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !isdigit((unsigned char)s[i])) { p->pos = i; return json_fail(p, "bad number: no digit in exponent"); }
        while (i < p->len && isdigit((unsigned char)s[i])) i++;
    }
    char local[64];
    size_t n = i - start;
    if (n >= sizeof local) { p->pos = start; return json_fail(p, "number too long"); }
    memcpy(local, s + start, n);
    local[n] = 0;
    char point = localeconv()->decimal_point[0];
    for (size_t k = 0; k < n; k++)
        if (local[k] == '.') local[k] = point;
    *out = strtod(local, NULL);
    if (!isfinite(*out)) { p->pos = start; return json_fail(p, "number out of range"); }
    p->pos = i;
    return 0;
}

static Json *json_new(JsonType type)
{
    Json *j = xcalloc(1, sizeof *j);
    if (j) j->type = type;
    return j;
}

/* Arrays grow by doubling: a tokenizer's vocabulary and merges are objects and arrays of
   tens of thousands of entries, and growing them one slot at a time would copy them
   n^2/2 times. */
static int json_append(Json *parent, char *key, Json *child)
{
    if (parent->length == parent->capacity) {
        size_t cap = parent->capacity ? 2 * parent->capacity : 4;
        Json **children = realloc(parent->children, cap * sizeof *children);
        if (!children) return fail("out of memory");
        parent->children = children;
        if (parent->type == JSON_OBJECT) {
            char **keys = realloc(parent->keys, cap * sizeof *keys);
            if (!keys) return fail("out of memory");
            parent->keys = keys;
        }
        parent->capacity = cap;
    }
    if (parent->type == JSON_OBJECT) parent->keys[parent->length] = key;
    parent->children[parent->length++] = child;
    return 0;
}

static int json_parse_value(JsonParser *p, Json **out, int depth);

static int json_parse_container(JsonParser *p, Json *j, int depth)
{
    char close = j->type == JSON_OBJECT ? '}' : ']';
    p->pos++;                                           /* '{' or '[' */
    json_skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == close) { p->pos++; return 0; }
    for (;;) {
        char *key = NULL;
        size_t key_len;
        json_skip_ws(p);
        if (j->type == JSON_OBJECT) {
            if (p->pos >= p->len || p->text[p->pos] != '"') return json_fail(p, "expected a string key");
            if (json_parse_string(p, &key, &key_len)) return -1;
            json_skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != ':') { free(key); return json_fail(p, "expected ':'"); }
            p->pos++;
        }
        Json *child;
        if (json_parse_value(p, &child, depth + 1)) { free(key); return -1; }
        if (json_append(j, key, child)) { free(key); json_free(child); return -1; }
        json_skip_ws(p);
        if (p->pos >= p->len) return json_fail(p, "unexpected end of input");
        char c = p->text[p->pos++];
        if (c == close) return 0;
        if (c != ',') { p->pos--; return json_fail(p, j->type == JSON_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'"); }
    }
}

static int json_parse_value(JsonParser *p, Json **out, int depth)
{
    *out = NULL;
    if (depth > JSON_MAX_DEPTH) return json_fail(p, "nesting too deep");
    json_skip_ws(p);
    if (p->pos >= p->len) return json_fail(p, "unexpected end of input");
    char c = p->text[p->pos];
    Json *j = NULL;
    if (c == '{' || c == '[') {
        j = json_new(c == '{' ? JSON_OBJECT : JSON_ARRAY);
        if (!j) return -1;
        if (json_parse_container(p, j, depth)) { json_free(j); return -1; }
    } else if (c == '"') {
        j = json_new(JSON_STRING);
        if (!j) return -1;
        if (json_parse_string(p, &j->string, &j->length)) { json_free(j); return -1; }
    } else if (c == '-' || isdigit((unsigned char)c)) {
        j = json_new(JSON_NUMBER);
        if (!j) return -1;
        if (json_parse_number(p, &j->number)) { json_free(j); return -1; }
    } else {
        static const char *const words[3] = {"null", "true", "false"};
        int k;
        for (k = 0; k < 3; k++) {
            size_t n = strlen(words[k]);
            if (p->len - p->pos >= n && memcmp(p->text + p->pos, words[k], n) == 0) break;
        }
        if (k == 3) return json_fail(p, "unexpected character");
        j = json_new(k == 0 ? JSON_NULL : JSON_BOOL);
        if (!j) return -1;
        j->boolean = k == 1;
        p->pos += strlen(words[k]);
    }
    *out = j;
    return 0;
}

/* Parses a whole document: one value, surrounded only by whitespace. */
static int json_parse(Json **out, const char *text, size_t len, const char *where)
{
    JsonParser p = {text, len, 0, where};
    if (json_parse_value(&p, out, 0)) return -1;
    json_skip_ws(&p);
    if (p.pos != p.len) {
        json_free(*out);
        *out = NULL;
        return json_fail(&p, "trailing characters after the value");
    }
    return 0;
}

/* A JSON file, read whole and parsed; errors name the file. */
static int json_load(Json **out, const char *path)
{
    char *text;
    size_t len;
    if (read_file(path, &text, &len)) return -1;
    int r = json_parse(out, text, len, path);
    free(text);
    return r;
}

/* Member of an object by key; the last one wins when a key repeats. NULL if absent. */
static const Json *json_get(const Json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = obj->length; i-- > 0;)
        if (strcmp(obj->keys[i], key) == 0) return obj->children[i];
    return NULL;
}

/* A number that is an exact integer in [lo, hi]. */
static int json_int(const Json *j, long long lo, long long hi, long long *out)
{
    if (!j || j->type != JSON_NUMBER) return -1;
    double d = j->number;
    if (d != floor(d) || d < (double)lo || d > (double)hi) return -1;
    *out = (long long)d;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* 3. safetensors: read (validated, sharded) and write                                  */
/*                                                                                      */
/* The format: 8 bytes, little-endian, N = the header's length; N bytes of JSON mapping */
/* each tensor name to {dtype, shape, data_offsets: [begin, end]} (and an optional      */
/* "__metadata__" of strings); then the data section, which the byte ranges index. We   */
/* check everything the format's own reference implementation checks before any byte of */
/* data is used: the header fits in the file and is at most 100 MB, the dtype is known, */
/* shape x dtype size (overflow-checked) equals the range's length, and the ranges,     */
/* sorted, tile the data section exactly, with no gap, overlap or slack at the end.     */

#define ST_MAX_HEADER_BYTES (100u * 1024 * 1024)

static const struct { const char *name; int bytes; } dtype_table[KVL_N_DTYPES] = {
    [KVL_F64] = {"F64", 8}, [KVL_F32] = {"F32", 4}, [KVL_F16] = {"F16", 2}, [KVL_BF16] = {"BF16", 2},
    [KVL_I64] = {"I64", 8}, [KVL_I32] = {"I32", 4}, [KVL_I16] = {"I16", 2}, [KVL_I8] = {"I8", 1},
    [KVL_U8] = {"U8", 1}, [KVL_BOOL] = {"BOOL", 1}, [KVL_U16] = {"U16", 2}, [KVL_U32] = {"U32", 4},
    [KVL_U64] = {"U64", 8}, [KVL_F8_E4M3] = {"F8_E4M3", 1}, [KVL_F8_E5M2] = {"F8_E5M2", 1},
};

static int dtype_from_name(const char *name, KvlDtype *out)
{
    for (int i = 0; i < KVL_N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0) { *out = (KvlDtype)i; return 0; }
    return -1;
}

int64_t kvl_tensor_numel(const KvlTensorInfo *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];   /* validated not to overflow */
    return n;
}

void kvl_st_close(KvlSafetensors *st)
{
    if (st->file) fclose((FILE *)st->file);
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_meta; i++) { free(st->meta_keys[i]); free(st->meta_values[i]); }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->path);
    memset(st, 0, sizeof *st);
}

static int seek_to(FILE *f, uint64_t offset, const char *path)
{
    if (file_seek(f, offset) != 0) return fail("%s: cannot seek to byte %llu", path, (unsigned long long)offset);
    return 0;
}

static int compare_begin(const void *a, const void *b)
{
    const KvlTensorInfo *x = *(const KvlTensorInfo *const *)a, *y = *(const KvlTensorInfo *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Reads one header entry ("name": {dtype, shape, data_offsets}) into t. */
static int st_parse_entry(KvlTensorInfo *t, const char *name, const Json *e, uint64_t data_bytes)
{
    if (e->type != JSON_OBJECT) return fail("tensor '%s': header entry is not an object", name);
    for (size_t i = 0; i < e->length; i++)
        if (strcmp(e->keys[i], "dtype") && strcmp(e->keys[i], "shape") && strcmp(e->keys[i], "data_offsets"))
            return fail("tensor '%s': unknown field '%s' in the header", name, e->keys[i]);
    const Json *dtype = json_get(e, "dtype"), *shape = json_get(e, "shape"), *offsets = json_get(e, "data_offsets");
    if (!dtype || dtype->type != JSON_STRING) return fail("tensor '%s': missing or non-string dtype", name);
    if (dtype_from_name(dtype->string, &t->dtype)) return fail("tensor '%s': unknown dtype '%s'", name, dtype->string);
    if (!shape || shape->type != JSON_ARRAY) return fail("tensor '%s': missing shape", name);
    if (shape->length > KVL_MAX_DIMS) return fail("tensor '%s': %zu dimensions, at most %d supported", name, shape->length, KVL_MAX_DIMS);
    t->n_dims = (int)shape->length;
    uint64_t bytes = (uint64_t)dtype_table[t->dtype].bytes;
    for (int i = 0; i < t->n_dims; i++) {
        long long d;
        if (json_int(shape->children[i], 0, INT64_MAX / 2, &d)) return fail("tensor '%s': shape[%d] is not a non-negative integer", name, i);
        t->shape[i] = d;
        if (d != 0 && bytes > UINT64_MAX / (uint64_t)d) return fail("tensor '%s': shape x dtype size overflows", name);
        bytes *= (uint64_t)d;
    }
    if (!offsets || offsets->type != JSON_ARRAY || offsets->length != 2) return fail("tensor '%s': data_offsets must be [begin, end]", name);
    long long b, en;
    if (json_int(offsets->children[0], 0, INT64_MAX / 2, &b) || json_int(offsets->children[1], 0, INT64_MAX / 2, &en))
        return fail("tensor '%s': data_offsets are not non-negative integers", name);
    if (b > en) return fail("tensor '%s': data_offsets [%lld, %lld] run backwards", name, b, en);
    if ((uint64_t)en > data_bytes) return fail("tensor '%s': data_offsets end %lld is past the data section (%llu bytes)", name, en, (unsigned long long)data_bytes);
    if ((uint64_t)(en - b) != bytes) return fail("tensor '%s': shape x dtype size is %llu bytes but data_offsets cover %lld", name, (unsigned long long)bytes, en - b);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)en;
    return 0;
}

static int st_parse_header(KvlSafetensors *st, const Json *h)
{
    if (h->type != JSON_OBJECT) return fail("header is not a JSON object");
    st->tensors = xcalloc(h->length, sizeof *st->tensors);
    if (!st->tensors) return -1;
    for (size_t i = 0; i < h->length; i++) {
        const char *key = h->keys[i];
        const Json *e = h->children[i];
        for (size_t k = 0; k < i; k++)
            if (strcmp(h->keys[k], key) == 0) return fail("'%s' appears twice in the header", key);
        if (strcmp(key, "__metadata__") == 0) {
            if (e->type != JSON_OBJECT) return fail("__metadata__ is not an object");
            st->meta_keys = xcalloc(e->length, sizeof(char *));
            st->meta_values = xcalloc(e->length, sizeof(char *));
            if (!st->meta_keys || !st->meta_values) return -1;
            for (size_t m = 0; m < e->length; m++) {
                if (e->children[m]->type != JSON_STRING) return fail("__metadata__ value of '%s' is not a string", e->keys[m]);
                st->meta_keys[m] = xstrdup(e->keys[m]);
                st->meta_values[m] = xstrdup(e->children[m]->string);
                st->n_meta++;
                if (!st->meta_keys[m] || !st->meta_values[m]) return -1;
            }
            continue;
        }
        KvlTensorInfo *t = &st->tensors[st->n_tensors];
        if (st_parse_entry(t, key, e, st->data_bytes)) return -1;
        t->name = xstrdup(key);
        if (!t->name) return -1;
        st->n_tensors++;
    }
    /* The ranges, sorted by start, must tile [0, data_bytes) exactly. */
    KvlTensorInfo **order = xmalloc((size_t)st->n_tensors * sizeof *order + 1);
    if (!order) return -1;
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof *order, compare_begin);
    uint64_t expect = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        if (order[i]->begin != expect) {
            int r = fail("tensor '%s' starts at data byte %llu, expected %llu (ranges overlap or leave a gap)",
                         order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)expect);
            free(order);
            return r;
        }
        expect = order[i]->end;
    }
    free(order);
    if (expect != st->data_bytes)
        return fail("the tensors cover %llu bytes of data but the data section holds %llu", (unsigned long long)expect, (unsigned long long)st->data_bytes);
    return 0;
}

int kvl_st_open(KvlSafetensors *st, const char *path)
{
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "rb");
    if (!f) return fail("%s: cannot open: %s", path, strerror(errno));
    st->file = f;
    st->path = xstrdup(path);
    if (!st->path) { kvl_st_close(st); return -1; }
    unsigned char len_bytes[8];
    if (fseek(f, 0, SEEK_END) != 0) { kvl_st_close(st); return fail("%s: cannot seek", path); }
    long file_size = ftell(f);
    rewind(f);
    if (file_size < 8 || fread(len_bytes, 1, 8, f) != 8) { kvl_st_close(st); return fail("%s: truncated: shorter than the 8-byte header length", path); }
    uint64_t header_len = read_u64_le(len_bytes);
    if (header_len > ST_MAX_HEADER_BYTES) { kvl_st_close(st); return fail("%s: header length %llu exceeds the limit of %u bytes", path, (unsigned long long)header_len, ST_MAX_HEADER_BYTES); }
    if (header_len > (uint64_t)file_size - 8) { kvl_st_close(st); return fail("%s: header length %llu runs past the end of the file (%ld bytes)", path, (unsigned long long)header_len, file_size); }
    if (header_len < 2) { kvl_st_close(st); return fail("%s: header of %llu bytes cannot hold a JSON object", path, (unsigned long long)header_len); }
    char *header = xmalloc((size_t)header_len + 1);
    if (!header) { kvl_st_close(st); return error_wrap("%s", path); }
    if (fread(header, 1, (size_t)header_len, f) != header_len) { free(header); kvl_st_close(st); return fail("%s: truncated header", path); }
    header[header_len] = 0;
    if (header[0] != '{') { free(header); kvl_st_close(st); return fail("%s: header does not start with '{'", path); }
    st->data_start = 8 + header_len;
    st->data_bytes = (uint64_t)file_size - st->data_start;
    Json *h;
    int r = json_parse(&h, header, (size_t)header_len, path);
    free(header);
    if (r) { kvl_st_close(st); return -1; }
    r = st_parse_header(st, h);
    json_free(h);
    if (r) { error_wrap("%s", path); kvl_st_close(st); return -1; }
    return 0;
}

const KvlTensorInfo *kvl_st_find(const KvlSafetensors *st, const char *name)
{
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *kvl_st_meta(const KvlSafetensors *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

/* Reads a tensor's bytes in pieces of at most ST_CHUNK elements and converts each. */
#define ST_CHUNK 65536

static int st_read_raw(const KvlSafetensors *st, const KvlTensorInfo *t, uint64_t offset, void *dst, size_t bytes)
{
    FILE *f = st->file;
    if (seek_to(f, st->data_start + t->begin + offset, st->path)) return -1;
    if (fread(dst, 1, bytes, f) != bytes) return fail("%s: tensor '%s': file ends inside its data", st->path, t->name);
    return 0;
}

/* The element loop of both readers: the file's little-endian values, piece by piece,
   converted to float (F32, F16, BF16 into fdst) or to int32 (I32, I64 into idst). */
static int st_read_converted(const KvlSafetensors *st, const KvlTensorInfo *t, float *fdst, int32_t *idst)
{
    int esize = dtype_table[t->dtype].bytes;
    int64_t n = kvl_tensor_numel(t);
    unsigned char *chunk = xmalloc((size_t)ST_CHUNK * 8);
    if (!chunk) return -1;
    for (int64_t done = 0; done < n; done += ST_CHUNK) {
        int64_t m = n - done < ST_CHUNK ? n - done : ST_CHUNK;
        if (st_read_raw(st, t, (uint64_t)(done * esize), chunk, (size_t)(m * esize))) { free(chunk); return -1; }
        for (int64_t i = 0; i < m; i++) {
            const unsigned char *p = chunk + i * esize;
            int64_t v;
            switch (t->dtype) {
            case KVL_F32: fdst[done + i] = f32_from_bits(read_u32_le(p)); break;
            case KVL_F16: fdst[done + i] = f16_to_f32(read_u16_le(p)); break;
            case KVL_BF16: fdst[done + i] = bf16_to_f32(read_u16_le(p)); break;
            case KVL_I32: idst[done + i] = (int32_t)read_u32_le(p); break;
            default:                                    /* I64 */
                v = (int64_t)read_u64_le(p);
                if (v < INT32_MIN || v > INT32_MAX) { free(chunk); return fail("%s: tensor '%s': value %lld does not fit 32 bits", st->path, t->name, (long long)v); }
                idst[done + i] = (int32_t)v;
            }
        }
    }
    free(chunk);
    return 0;
}

int kvl_st_read_f32(const KvlSafetensors *st, const KvlTensorInfo *t, float *dst)
{
    if (t->dtype != KVL_F32 && t->dtype != KVL_F16 && t->dtype != KVL_BF16)
        return fail("%s: tensor '%s' has dtype %s; expected F32, F16 or BF16", st->path, t->name, dtype_table[t->dtype].name);
    return st_read_converted(st, t, dst, NULL);
}

int kvl_st_read_i32(const KvlSafetensors *st, const KvlTensorInfo *t, int32_t *dst)
{
    if (t->dtype != KVL_I32 && t->dtype != KVL_I64)
        return fail("%s: tensor '%s' has dtype %s; expected I32 or I64", st->path, t->name, dtype_table[t->dtype].name);
    return st_read_converted(st, t, NULL, dst);
}

/* JSON string literal of s (quotes and escapes added) appended to b. */
static int buf_push_json_string(Buf *b, const char *s)
{
    if (buf_puts(b, "\"")) return -1;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; if (buf_push(b, esc, 2)) return -1; }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); if (buf_push(b, esc, 6)) return -1; }
        else if (buf_push(b, s, 1)) return -1;
    }
    return buf_puts(b, "\"");
}

static int buf_printf(Buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);        /* the length first, then the text in place */
    va_end(ap);
    if (n < 0) return fail("formatting failed");
    if (buf_reserve(b, (size_t)n)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static int st_build_header(Buf *h, const KvlTensorOut *ts, int n, const char *const *mk, const char *const *mv, int n_meta)
{
    uint64_t offset = 0;
    if (buf_puts(h, "{")) return -1;
    if (n_meta > 0) {
        if (buf_puts(h, "\"__metadata__\":{")) return -1;
        for (int i = 0; i < n_meta; i++) {
            if (i && buf_puts(h, ",")) return -1;
            if (buf_push_json_string(h, mk[i]) || buf_puts(h, ":") || buf_push_json_string(h, mv[i])) return -1;
        }
        if (buf_puts(h, "}")) return -1;
    }
    for (int i = 0; i < n; i++) {
        const KvlTensorOut *t = &ts[i];
        if (t->dtype != KVL_F32 && t->dtype != KVL_F16 && t->dtype != KVL_BF16 && t->dtype != KVL_I32)
            return fail("tensor '%s': kvlora writes F32, F16, BF16 or I32, not %s", t->name, dtype_table[t->dtype].name);
        if (t->n_dims < 0 || t->n_dims > KVL_MAX_DIMS) return fail("tensor '%s': %d dimensions", t->name, t->n_dims);
        uint64_t bytes = (uint64_t)dtype_table[t->dtype].bytes;
        if ((n_meta > 0 || i > 0) && buf_puts(h, ",")) return -1;
        if (buf_push_json_string(h, t->name) || buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_table[t->dtype].name)) return -1;
        for (int d = 0; d < t->n_dims; d++) {
            if (t->shape[d] < 0) return fail("tensor '%s': negative dimension", t->name);
            bytes *= (uint64_t)t->shape[d];
            if (buf_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d])) return -1;
        }
        if (buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset, (unsigned long long)(offset + bytes))) return -1;
        offset += bytes;
    }
    if (buf_puts(h, "}")) return -1;
    while (h->len % 8) if (buf_puts(h, " ")) return -1;    /* pad so the data starts 8-aligned */
    return 0;
}

int kvl_st_write(const char *path, const KvlTensorOut *tensors, int n_tensors,
                 const char *const *meta_keys, const char *const *meta_values, int n_meta)
{
    Buf h = {0};
    if (st_build_header(&h, tensors, n_tensors, meta_keys, meta_values, n_meta)) { free(h.data); return error_wrap("%s", path); }
    AtomicFile a;
    if (atomic_open(&a, path)) { free(h.data); return -1; }
    unsigned char len_bytes[8];
    write_u64_le(len_bytes, h.len);
    int r = atomic_write(&a, len_bytes, 8) || atomic_write(&a, h.data, h.len);
    free(h.data);
    unsigned char *chunk = r ? NULL : xmalloc((size_t)ST_CHUNK * 4);
    if (!chunk) r = -1;
    for (int i = 0; i < n_tensors && !r; i++) {
        const KvlTensorOut *t = &tensors[i];
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
        int esize = dtype_table[t->dtype].bytes;
        for (int64_t done = 0; done < n && !r; done += ST_CHUNK) {
            int64_t m = n - done < ST_CHUNK ? n - done : ST_CHUNK;
            for (int64_t k = 0; k < m; k++) {
                unsigned char *p = chunk + k * esize;
                if (t->dtype == KVL_I32) { write_u32_le(p, (uint32_t)((const int32_t *)t->data)[done + k]); continue; }
                float v = ((const float *)t->data)[done + k];
                if (t->dtype == KVL_F32) write_u32_le(p, bits_from_f32(v));
                else write_u16_le(p, t->dtype == KVL_F16 ? f32_to_f16(v) : f32_to_bf16(v));
            }
            r = atomic_write(&a, chunk, (size_t)(m * esize));
        }
    }
    free(chunk);
    if (r) { atomic_abort(&a); return -1; }
    return atomic_commit(&a);
}

/* The weight files of a model directory: model.safetensors, or the shards that
   model.safetensors.index.json lists. A shard name must be a plain file name. */
typedef struct { int n; KvlSafetensors files[64]; } ShardSet;

static void shards_close(ShardSet *s)
{
    for (int i = 0; i < s->n; i++) kvl_st_close(&s->files[i]);
    s->n = 0;
}

static int shards_open(ShardSet *s, const char *dir)
{
    char path[4096];
    s->n = 0;
    path_join(path, sizeof path, dir, "model.safetensors");
    if (file_exists(path)) {
        if (kvl_st_open(&s->files[0], path)) return -1;
        s->n = 1;
        return 0;
    }
    path_join(path, sizeof path, dir, "model.safetensors.index.json");
    if (!file_exists(path)) return fail("%s: no weights: neither model.safetensors nor model.safetensors.index.json", dir);
    Json *index;
    if (json_load(&index, path)) return -1;
    const Json *map = json_get(index, "weight_map");
    int r = -1;
    if (!map || map->type != JSON_OBJECT) { fail("%s: no 'weight_map' object", path); goto done; }
    for (size_t i = 0; i < map->length; i++) {
        const Json *file = map->children[i];
        if (file->type != JSON_STRING) { fail("%s: weight_map['%s'] is not a file name", path, map->keys[i]); goto done; }
        if (strchr(file->string, '/') || strchr(file->string, '\\') || strcmp(file->string, "..") == 0 || file->string[0] == '.' || file->length != strlen(file->string)) {
            fail("%s: weight_map['%s'] = '%s' is not a plain file name in the model directory", path, map->keys[i], file->string);
            goto done;
        }
        int k;
        for (k = 0; k < s->n; k++) {
            const char *base = strrchr(s->files[k].path, '/');
            if (strcmp(base ? base + 1 : s->files[k].path, file->string) == 0) break;
        }
        if (k == s->n) {                        /* a shard not opened yet */
            if (s->n == 64) { fail("%s: more than 64 shards", path); goto done; }
            char shard[4096];
            path_join(shard, sizeof shard, dir, file->string);
            if (kvl_st_open(&s->files[s->n], shard)) goto done;
            s->n++;
        }
        if (!kvl_st_find(&s->files[k], map->keys[i])) {
            fail("%s: weight_map puts '%s' in %s, which does not hold it", path, map->keys[i], file->string);
            goto done;
        }
    }
    r = 0;
done:
    json_free(index);
    if (r) shards_close(s);
    return r;
}

/* Finds a tensor in exactly one shard. */
static int shards_find(const ShardSet *s, const char *name, const KvlSafetensors **file, const KvlTensorInfo **t)
{
    *t = NULL;
    for (int i = 0; i < s->n; i++) {
        const KvlTensorInfo *found = kvl_st_find(&s->files[i], name);
        if (!found) continue;
        if (*t) return fail("tensor '%s' appears in both %s and %s", name, (*file)->path, s->files[i].path);
        *t = found;
        *file = &s->files[i];
    }
    if (!*t) return fail("missing tensor '%s'", name);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* 4. The tokenizer: tokenizer.json BPE (byte-level and SentencePiece-style)            */
/*                                                                                      */
/* Encoding runs the pipeline of the tokenizers library: added tokens are found in the  */
/* raw text first and never split; each piece between them is normalized (Prepend,      */
/* Replace, NFC), pre-tokenized into words (ByteLevel, Metaspace, Split with the        */
/* regexes of GPT-2, Llama 3 and Qwen2, Digits), and each word is cut into vocabulary   */
/* tokens by BPE: start from single characters (byte-level: one character per byte) and */
/* apply the lowest-ranked merge of adjacent tokens until none applies. Characters      */
/* missing from the vocabulary become <0xNN> byte tokens (byte_fallback) or the unknown */
/* token, or, with neither, are left out. The post-processor adds BOS/EOS. Decoding     */
/* maps ids back to token strings and runs the decoders. No regex engine: the three     */
/* regexes are matched by hand (pretok_match), with the Unicode classes \p{L}, \p{N}    */
/* and \s from the range tables of Appendix B.                                          */

/* The Unicode classes the pre-tokenizer regexes name: \p{L}, \p{N} and \s, looked up in
   the range tables of Appendix B. */
static int is_letter(uint32_t cp);
static int is_number(uint32_t cp);
static int is_space(uint32_t cp);

/* Decodes the code point at s[*i] (advancing *i); invalid UTF-8 yields 0xFFFD and one byte. */
static uint32_t utf8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s + *i;
    int len = utf8_valid_len(u, n - *i);
    if (len == 0) { (*i)++; return 0xFFFD; }
    *i += (size_t)len;
    if (len == 1) return u[0];
    if (len == 2) return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
    if (len == 3) return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
    return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 | (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
}

/* A string -> int hash map (open addressing, FNV-1a), for the vocabulary and caches. */
typedef struct { char *key; int len; int value; } MapSlot;
typedef struct { MapSlot *slots; size_t cap, count; } StrMap;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static void strmap_free(StrMap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static MapSlot *strmap_slot(const StrMap *m, const char *key, size_t len)
{
    size_t i = (size_t)fnv1a(key, len) & (m->cap - 1);
    while (m->slots[i].key && !((size_t)m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0)) i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

static int strmap_get(const StrMap *m, const char *key, size_t len)
{
    if (!m->cap) return -1;
    MapSlot *s = strmap_slot(m, key, len);
    return s->key ? s->value : -1;
}

/* Sets key to value; returns the previous value or -1. */
static int strmap_put(StrMap *m, const char *key, size_t len, int value, int *previous)
{
    *previous = -1;
    if (m->count * 2 >= m->cap) {                   /* keep the table at most half full */
        StrMap bigger = {xcalloc(m->cap ? m->cap * 2 : 1024, sizeof(MapSlot)), m->cap ? m->cap * 2 : 1024, 0};
        if (!bigger.slots) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) { *strmap_slot(&bigger, m->slots[i].key, (size_t)m->slots[i].len) = m->slots[i]; bigger.count++; }
        free(m->slots);
        *m = bigger;
    }
    MapSlot *s = strmap_slot(m, key, len);
    if (s->key) { *previous = s->value; s->value = value; return 0; }
    if (!(s->key = xmalloc(len + 1))) return -1;
    memcpy(s->key, key, len);
    s->key[len] = 0;
    s->len = (int)len;
    s->value = value;
    m->count++;
    return 0;
}

/* GPT-2's reversible map of the 256 bytes onto printable characters: printable Latin-1
   bytes stand for themselves, the other 68 take code points 256, 257, ... in order. */
static void byte_level_map(uint32_t byte_to_cp[256])
{
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_to_cp[b] = printable ? (uint32_t)b : (uint32_t)next++;
    }
}

enum { PRE_BYTELEVEL, PRE_METASPACE, PRE_SPLIT, PRE_DIGITS };
enum { REGEX_GPT2, REGEX_LLAMA3, REGEX_QWEN2 };
enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC };
enum { DEC_BYTELEVEL, DEC_METASPACE, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct { int kind; char *from, *to; } NormStep;               /* Prepend: to; Replace: from -> to */
typedef struct { int kind, add_prefix_space, use_regex, regex, individual_digits, prepend_scheme, split; } PreStep;
typedef struct { int kind, prepend_scheme, start, stop; char *from, *to; } DecStep;
typedef struct { char *text; int len, id, special, lstrip, rstrip; } AddedToken;

#define TOK_MAX_STEPS 8
#define TOK_CACHE_WORDS 32768

struct KvlTokenizer {
    int vocab_size;                 /* 1 + the largest id */
    char **id_to_token;             /* [vocab_size] token strings (NULL for unused ids) */
    int *id_len;
    StrMap vocab;                   /* token string -> id */
    StrMap merges;                  /* "left-id right-id" (8 bytes) -> rank */
    int *merge_result;              /* [n_merges] the id a merge makes */
    int n_merges;
    int unk_id, byte_fallback, fuse_unk, ignore_merges;
    int byte_ids[256];              /* <0xNN> ids for byte_fallback, -1 when absent */
    int byte_level;                 /* ByteLevel pre-tokenizer: words are byte-mapped */
    uint32_t byte_to_cp[256];
    int cp_to_byte[512];            /* the inverse, for code points below 512; -1 elsewhere */
    AddedToken *added;
    int n_added;
    NormStep norm[TOK_MAX_STEPS];
    int n_norm;
    PreStep pre[TOK_MAX_STEPS];
    int n_pre;
    DecStep dec[TOK_MAX_STEPS];
    int n_dec;
    int has_decoder;
    int *post_before, n_post_before, *post_after, n_post_after;   /* ids around $A */
    StrMap cache;                   /* word -> index into cache_ids */
    int *cache_ids;                 /* [n][...] length-prefixed id lists */
    size_t cache_ids_len, cache_ids_cap;
};

void kvl_tokenizer_free(KvlTokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < t->vocab_size; i++) free(t->id_to_token[i]);
    free(t->id_to_token);
    free(t->id_len);
    strmap_free(&t->vocab);
    strmap_free(&t->merges);
    strmap_free(&t->cache);
    free(t->cache_ids);
    free(t->merge_result);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].text);
    free(t->added);
    for (int i = 0; i < t->n_norm; i++) { free(t->norm[i].from); free(t->norm[i].to); }
    for (int i = 0; i < t->n_dec; i++) { free(t->dec[i].from); free(t->dec[i].to); }
    free(t->post_before);
    free(t->post_after);
    free(t);
}

int kvl_tokenizer_vocab_size(const KvlTokenizer *t) { return t->vocab_size; }

/* Matches ' ?' (an optional space, ASCII 0x20) then a run of characters of a class. */
typedef int (*CharClass)(uint32_t cp);
static int is_other(uint32_t cp) { return !is_space(cp) && !is_letter(cp) && !is_number(cp); }

static size_t match_run(const char *s, size_t n, size_t i, CharClass cls, int optional_space, size_t max_count)
{
    size_t j = i, count = 0;
    if (optional_space && j < n && s[j] == ' ') j++;
    size_t start = j;
    while (j < n && count < max_count) {
        size_t k = j;
        uint32_t cp = utf8_next(s, n, &k);
        if (!cls(cp)) break;
        j = k;
        count++;
    }
    if (j == start) return 0;
    return j - i;
}

/* \s+(?!\S) then \s+ : a whitespace run, leaving its last character to the next word when a
   non-space follows (so that " word" keeps its space), unless the run is one character. */
static size_t match_spaces(const char *s, size_t n, size_t i)
{
    size_t j = i, last = i;
    while (j < n) {
        size_t k = j;
        if (!is_space(utf8_next(s, n, &k))) break;
        last = j;
        j = k;
    }
    if (j == i) return 0;
    if (j < n && last > i) return last - i;         /* followed by \S: give back one character */
    return j - i;
}

/* The contractions 's 't 're 've 'm 'll 'd, case-insensitive for Llama 3 and Qwen2. */
static size_t match_contraction(const char *s, size_t n, size_t i, int ignore_case)
{
    static const char *const forms[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (i >= n || s[i] != '\'') return 0;
    for (int f = 0; f < 7; f++) {
        size_t len = strlen(forms[f]), k;
        if (i + 1 + len > n) continue;
        for (k = 0; k < len; k++) {
            char c = s[i + 1 + k];
            if (ignore_case && c >= 'A' && c <= 'Z') c = (char)(c + 32);
            if (c != forms[f][k]) break;
        }
        if (k == len) return 1 + len;
    }
    return 0;
}

static int is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
static int not_newline_letter_number(uint32_t cp) { return !is_newline(cp) && !is_letter(cp) && !is_number(cp); }

/* The length of the regex's match at s[i] (its alternatives tried in order, as the regex
   engine does), or 0 where it does not match there.
     GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
     Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
              | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
     Qwen2:  the same with \p{N} for \p{N}{1,3}                                            */
static size_t pretok_match(int regex, const char *s, size_t n, size_t i)
{
    size_t len;
    if (regex == REGEX_GPT2) {
        if ((len = match_contraction(s, n, i, 0))) return len;
        if ((len = match_run(s, n, i, is_letter, 1, SIZE_MAX))) return len;
        if ((len = match_run(s, n, i, is_number, 1, SIZE_MAX))) return len;
        if ((len = match_run(s, n, i, is_other, 1, SIZE_MAX))) return len;
        return match_spaces(s, n, i);
    }
    if ((len = match_contraction(s, n, i, 1))) return len;
    {   /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        size_t k = i;
        uint32_t cp = i < n ? utf8_next(s, n, &k) : 0;
        if (i < n && not_newline_letter_number(cp) && (len = match_run(s, n, k, is_letter, 0, SIZE_MAX))) return k - i + len;
        if ((len = match_run(s, n, i, is_letter, 0, SIZE_MAX))) return len;
    }
    if ((len = match_run(s, n, i, is_number, 0, regex == REGEX_LLAMA3 ? 3 : 1))) return len;
    if ((len = match_run(s, n, i, is_other, 1, SIZE_MAX))) {       /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        size_t j = i + len;
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j - i;
    }
    {   /* \s*[\r\n]+ : up to and including the last newline of the whitespace run */
        size_t j = i, end = 0;
        while (j < n) {
            size_t k = j;
            uint32_t cp = utf8_next(s, n, &k);
            if (!is_space(cp)) break;
            if (is_newline(cp)) end = k;
            j = k;
        }
        if (end) return end - i;
    }
    return match_spaces(s, n, i);
}

/* ---- loading tokenizer.json ---- */

static const char *json_str(const Json *obj, const char *key)
{
    const Json *j = json_get(obj, key);
    return j && j->type == JSON_STRING ? j->string : NULL;
}

static int json_flag(const Json *obj, const char *key, int def)
{
    const Json *j = json_get(obj, key);
    return j && j->type == JSON_BOOL ? j->boolean : def;
}

/* A pattern {"String": "..."}; a {"Regex": ...} is refused (no regex engine here). */
static int tok_pattern(const Json *p, char **out, const char *what)
{
    const char *s = json_str(p, "String");
    if (!s) return fail("tokenizer.json: %s: only {\"String\": ...} patterns are supported", what);
    return (*out = xstrdup(s)) ? 0 : -1;
}

static int tok_prepend_scheme(const Json *j, int *out)
{
    const char *s = json_str(j, "prepend_scheme");
    if (!s) { *out = json_flag(j, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER; return 0; }
    if (!strcmp(s, "always")) *out = PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = PREPEND_NEVER;
    else return fail("tokenizer.json: Metaspace prepend_scheme '%s' is unknown", s);
    return 0;
}

static int tok_check_replacement(const Json *j)
{
    const char *r = json_str(j, "replacement");
    if (r && strcmp(r, "\xe2\x96\x81")) return fail("tokenizer.json: Metaspace replacement other than U+2581 is not supported");
    return 0;
}

/* A "Sequence" component: each element of its list, in order, through the same loader. */
static int tok_sequence(KvlTokenizer *t, const Json *j, const char *list_key, int (*each)(KvlTokenizer *, const Json *))
{
    const Json *list = json_get(j, list_key);
    if (!list || list->type != JSON_ARRAY) return fail("tokenizer.json: Sequence without '%s'", list_key);
    for (size_t i = 0; i < list->length; i++)
        if (each(t, list->children[i])) return -1;
    return 0;
}

static int tok_normalizer(KvlTokenizer *t, const Json *n)
{
    if (!n || n->type == JSON_NULL) return 0;
    const char *type = json_str(n, "type");
    if (!type) return fail("tokenizer.json: normalizer without a type");
    if (!strcmp(type, "Sequence")) return tok_sequence(t, n, "normalizers", tok_normalizer);
    if (t->n_norm == TOK_MAX_STEPS) return fail("tokenizer.json: too many normalizers");
    NormStep *s = &t->norm[t->n_norm++];        /* counted now, so that a failure below frees its strings */
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "NFC")) s->kind = NORM_NFC;
    else if (!strcmp(type, "Prepend")) {
        const char *p = json_str(n, "prepend");
        if (!p || !(s->to = xstrdup(p))) return fail("tokenizer.json: Prepend normalizer without 'prepend'");
        s->kind = NORM_PREPEND;
    } else if (!strcmp(type, "Replace")) {
        const char *c = json_str(n, "content");
        if (!c || tok_pattern(json_get(n, "pattern"), &s->from, "Replace normalizer") || !(s->to = xstrdup(c))) return -1;
        if (!*s->from) return fail("tokenizer.json: Replace normalizer with an empty pattern");
        s->kind = NORM_REPLACE;
    } else return fail("tokenizer.json: normalizer '%s' is not supported (supported: Prepend, Replace, NFC, Sequence)", type);
    return 0;
}

static int tok_pre_tokenizer(KvlTokenizer *t, const Json *p)
{
    static const char *const regexes[3] = {
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    };
    if (!p || p->type == JSON_NULL) return 0;
    const char *type = json_str(p, "type");
    if (!type) return fail("tokenizer.json: pre_tokenizer without a type");
    if (!strcmp(type, "Sequence")) return tok_sequence(t, p, "pretokenizers", tok_pre_tokenizer);
    if (t->n_pre == TOK_MAX_STEPS) return fail("tokenizer.json: too many pre-tokenizers");
    PreStep *s = &t->pre[t->n_pre];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "ByteLevel")) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = json_flag(p, "add_prefix_space", 1);
        s->use_regex = json_flag(p, "use_regex", 1);
        s->regex = REGEX_GPT2;
        t->byte_level = 1;
    } else if (!strcmp(type, "Metaspace")) {
        s->kind = PRE_METASPACE;
        if (tok_check_replacement(p) || tok_prepend_scheme(p, &s->prepend_scheme)) return -1;
        s->split = json_flag(p, "split", 1);
    } else if (!strcmp(type, "Split")) {
        const Json *pattern = json_get(p, "pattern");
        const char *re = json_str(pattern, "Regex"), *behavior = json_str(p, "behavior");
        s->kind = PRE_SPLIT;
        s->regex = -1;
        for (int r = 0; r < 3 && re; r++)
            if (!strcmp(re, regexes[r])) s->regex = r;
        if (s->regex < 0) return fail("tokenizer.json: Split pattern %s is not one kvlora knows (GPT-2, Llama 3, Qwen2)", re ? re : "(not a Regex)");
        if (!behavior || strcmp(behavior, "Isolated") || json_flag(p, "invert", 0))
            return fail("tokenizer.json: Split with behavior '%s' is not supported (only Isolated, not inverted)", behavior ? behavior : "?");
    } else if (!strcmp(type, "Digits")) {
        s->kind = PRE_DIGITS;
        s->individual_digits = json_flag(p, "individual_digits", 0);
    } else return fail("tokenizer.json: pre_tokenizer '%s' is not supported (supported: ByteLevel, Metaspace, Split, Digits, Sequence)", type);
    t->n_pre++;
    return 0;
}

static int tok_decoder(KvlTokenizer *t, const Json *d)
{
    if (!d || d->type == JSON_NULL) return 0;
    const char *type = json_str(d, "type");
    if (!type) return fail("tokenizer.json: decoder without a type");
    t->has_decoder = 1;
    if (!strcmp(type, "Sequence")) return tok_sequence(t, d, "decoders", tok_decoder);
    if (t->n_dec == TOK_MAX_STEPS) return fail("tokenizer.json: too many decoders");
    DecStep *s = &t->dec[t->n_dec++];           /* counted now, so that a failure below frees its strings */
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "ByteLevel")) s->kind = DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) s->kind = DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) s->kind = DEC_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        s->kind = DEC_METASPACE;
        if (tok_check_replacement(d) || tok_prepend_scheme(d, &s->prepend_scheme)) return -1;
    } else if (!strcmp(type, "Replace")) {
        const char *c = json_str(d, "content");
        s->kind = DEC_REPLACE;
        if (!c || tok_pattern(json_get(d, "pattern"), &s->from, "Replace decoder") || !(s->to = xstrdup(c))) return -1;
    } else if (!strcmp(type, "Strip")) {
        const char *c = json_str(d, "content");
        long long start, stop;
        s->kind = DEC_STRIP;
        if (!c || strlen(c) != 1 || json_int(json_get(d, "start"), 0, 1 << 20, &start) || json_int(json_get(d, "stop"), 0, 1 << 20, &stop))
            return fail("tokenizer.json: Strip decoder needs a one-character content, start and stop");
        s->from = xstrdup(c);
        s->start = (int)start;
        s->stop = (int)stop;
    } else return fail("tokenizer.json: decoder '%s' is not supported (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)", type);
    return 0;
}

static int tok_id_of(const KvlTokenizer *t, const char *token)
{
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].text, token)) return t->added[i].id;
    return strmap_get(&t->vocab, token, strlen(token));
}

/* TemplateProcessing's "single" template: the special tokens before and after $A. */
static int tok_post_processor(KvlTokenizer *t, const Json *p)
{
    if (!p || p->type == JSON_NULL) return 0;
    const char *type = json_str(p, "type");
    if (!type) return fail("tokenizer.json: post_processor without a type");
    if (!strcmp(type, "ByteLevel")) return 0;            /* offsets only: the ids do not change */
    if (!strcmp(type, "Sequence")) return tok_sequence(t, p, "processors", tok_post_processor);
    if (strcmp(type, "TemplateProcessing")) return fail("tokenizer.json: post_processor '%s' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)", type);
    const Json *single = json_get(p, "single"), *specials = json_get(p, "special_tokens");
    if (!single || single->type != JSON_ARRAY) return fail("tokenizer.json: TemplateProcessing without 'single'");
    int seen_a = 0;
    free(t->post_before);
    free(t->post_after);
    t->post_before = xcalloc(64, sizeof(int));
    t->post_after = xcalloc(64, sizeof(int));
    t->n_post_before = t->n_post_after = 0;
    if (!t->post_before || !t->post_after) return -1;
    for (size_t i = 0; i < single->length; i++) {
        const Json *item = single->children[i], *st = json_get(item, "SpecialToken"), *seq = json_get(item, "Sequence");
        if (seq) { seen_a = 1; continue; }
        const char *name = json_str(st, "id");
        if (!name) return fail("tokenizer.json: TemplateProcessing item %zu is neither SpecialToken nor Sequence", i);
        const Json *entry = json_get(specials, name), *ids = json_get(entry, "ids");
        int n_ids = ids && ids->type == JSON_ARRAY ? (int)ids->length : 0;
        for (int k = 0; k < (n_ids ? n_ids : 1); k++) {
            long long id;
            if (n_ids) {
                if (json_int(ids->children[k], 0, INT_MAX, &id)) return fail("tokenizer.json: bad id of special token '%s'", name);
            } else if ((id = tok_id_of(t, name)) < 0) return fail("tokenizer.json: special token '%s' is not in the vocabulary", name);
            int *list = seen_a ? t->post_after : t->post_before, *n = seen_a ? &t->n_post_after : &t->n_post_before;
            if (*n == 64) return fail("tokenizer.json: template too long");
            list[(*n)++] = (int)id;
        }
    }
    return 0;
}

/* Registers token string s as id (the vocabulary and the added tokens). */
static int tok_set_token(KvlTokenizer *t, const char *s, size_t len, int id)
{
    if (id < 0 || id >= t->vocab_size) return fail("tokenizer.json: token id %d out of range", id);
    if (t->id_to_token[id] && ((size_t)t->id_len[id] != len || memcmp(t->id_to_token[id], s, len)))
        return fail("tokenizer.json: id %d names two different tokens", id);
    if (!t->id_to_token[id]) {
        if (!(t->id_to_token[id] = xmalloc(len + 1))) return -1;
        memcpy(t->id_to_token[id], s, len);
        t->id_to_token[id][len] = 0;
        t->id_len[id] = (int)len;
    }
    return 0;
}

static int compare_added_length(const void *a, const void *b)
{
    const AddedToken *x = a, *y = b;
    return y->len != x->len ? y->len - x->len : x->id - y->id;     /* longest first */
}

/* The merges: "a b" strings or ["a", "b"] pairs; a merge's rank is its place in the list. */
static int tok_merges(KvlTokenizer *t, const Json *merges)
{
    t->merge_result = xmalloc(sizeof(int) * (merges->length + 1));
    if (!t->merge_result) return -1;
    for (size_t r = 0; r < merges->length; r++) {
        const Json *m = merges->children[r];
        char left[1024], right[1024];
        if (m->type == JSON_STRING) {
            const char *space = strchr(m->string, ' ');
            if (!space || strchr(space + 1, ' ') || (size_t)(space - m->string) >= sizeof left || strlen(space + 1) >= sizeof right)
                return fail("tokenizer.json: merge %zu '%s' is not two tokens separated by one space", r, m->string);
            memcpy(left, m->string, (size_t)(space - m->string));
            left[space - m->string] = 0;
            strcpy(right, space + 1);
        } else if (m->type == JSON_ARRAY && m->length == 2 && m->children[0]->type == JSON_STRING && m->children[1]->type == JSON_STRING &&
                   m->children[0]->length < sizeof left && m->children[1]->length < sizeof right) {
            strcpy(left, m->children[0]->string);
            strcpy(right, m->children[1]->string);
        } else return fail("tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", r);
        char joined[2048];
        snprintf(joined, sizeof joined, "%s%s", left, right);
        int a = strmap_get(&t->vocab, left, strlen(left)), b = strmap_get(&t->vocab, right, strlen(right));
        int c = strmap_get(&t->vocab, joined, strlen(joined)), previous;
        if (a < 0 || b < 0 || c < 0) return fail("tokenizer.json: merge %zu ('%s' '%s') uses or makes a token that is not in the vocabulary", r, left, right);
        unsigned char key[8];
        write_u32_le(key, (uint32_t)a);
        write_u32_le(key + 4, (uint32_t)b);
        if (strmap_put(&t->merges, (const char *)key, 8, (int)r, &previous)) return -1;
        if (previous >= 0) { int keep = previous; strmap_put(&t->merges, (const char *)key, 8, keep, &previous); }  /* the first rank wins */
        t->merge_result[r] = c;
    }
    t->n_merges = (int)merges->length;
    return 0;
}

/* The added tokens: matched in the raw text before anything else, longest first. */
static int tok_added(KvlTokenizer *t, const Json *added)
{
    long long id = 0;
    if (!added || added->type != JSON_ARRAY || !added->length) return 0;
    t->added = xcalloc(added->length, sizeof *t->added);
    if (!t->added) return -1;
    for (size_t i = 0; i < added->length; i++) {
        const Json *a = added->children[i];
        const char *content = json_str(a, "content");
        if (!content || !*content || json_int(json_get(a, "id"), 0, 1 << 24, &id)) return fail("tokenizer.json: added_tokens[%zu] needs content and id", i);
        if (json_flag(a, "single_word", 0)) return fail("tokenizer.json: added token '%s': single_word is not supported", content);
        AddedToken *at = &t->added[t->n_added++];
        if (!(at->text = xstrdup(content))) return -1;
        at->len = (int)strlen(content);
        at->id = (int)id;
        at->special = json_flag(a, "special", 0);
        at->lstrip = json_flag(a, "lstrip", 0);
        at->rstrip = json_flag(a, "rstrip", 0);
        if (tok_set_token(t, content, (size_t)at->len, at->id)) return -1;
    }
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, compare_added_length);
    return 0;
}

static int tok_model(KvlTokenizer *t, const Json *model, const Json *added)
{
    const char *type = json_str(model, "type");
    if (!type || strcmp(type, "BPE")) return fail("tokenizer.json: model '%s' is not supported (only BPE)", type ? type : "(none)");
    if (json_str(model, "continuing_subword_prefix") || json_str(model, "end_of_word_suffix"))
        return fail("tokenizer.json: BPE continuing_subword_prefix / end_of_word_suffix are not supported");
    const Json *dropout = json_get(model, "dropout");
    if (dropout && dropout->type == JSON_NUMBER && dropout->number != 0.0) return fail("tokenizer.json: BPE dropout is not supported");
    const Json *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
    if (!vocab || vocab->type != JSON_OBJECT) return fail("tokenizer.json: model.vocab must be an object");
    if (!merges || merges->type != JSON_ARRAY) return fail("tokenizer.json: model.merges must be a list");
    long long max_id = -1, id = 0;
    for (size_t i = 0; i < vocab->length; i++) {
        if (json_int(vocab->children[i], 0, 1 << 24, &id)) return fail("tokenizer.json: vocab['%s'] is not an id", vocab->keys[i]);
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; added && added->type == JSON_ARRAY && i < added->length; i++)
        if (!json_int(json_get(added->children[i], "id"), 0, 1 << 24, &id) && id > max_id) max_id = id;
    t->vocab_size = (int)max_id + 1;
    t->id_to_token = xcalloc((size_t)t->vocab_size + 1, sizeof(char *));
    t->id_len = xcalloc((size_t)t->vocab_size + 1, sizeof(int));
    if (!t->id_to_token || !t->id_len) return -1;
    for (size_t i = 0; i < vocab->length; i++) {
        int previous;
        json_int(vocab->children[i], 0, 1 << 24, &id);
        size_t len = strlen(vocab->keys[i]);
        if (tok_set_token(t, vocab->keys[i], len, (int)id) || strmap_put(&t->vocab, vocab->keys[i], len, (int)id, &previous)) return -1;
    }
    t->byte_fallback = json_flag(model, "byte_fallback", 0);
    t->fuse_unk = json_flag(model, "fuse_unk", 0);
    t->ignore_merges = json_flag(model, "ignore_merges", 0);
    const char *unk = json_str(model, "unk_token");
    t->unk_id = unk ? strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    if (unk && t->unk_id < 0) return fail("tokenizer.json: unk_token '%s' is not in the vocabulary", unk);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = strmap_get(&t->vocab, name, strlen(name));
    }
    return tok_merges(t, merges) || tok_added(t, added) ? -1 : 0;
}

int kvl_tokenizer_load(KvlTokenizer **out, const char *path)
{
    Json *j;
    *out = NULL;
    if (json_load(&j, path)) return -1;
    int r = -1;
    KvlTokenizer *t = xcalloc(1, sizeof *t);
    if (!t) goto done;
    byte_level_map(t->byte_to_cp);
    for (int i = 0; i < 512; i++) t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) t->cp_to_byte[t->byte_to_cp[b]] = b;
    if (j->type != JSON_OBJECT) { fail("not a JSON object"); goto done; }
    if (tok_model(t, json_get(j, "model"), json_get(j, "added_tokens")) || tok_normalizer(t, json_get(j, "normalizer")) ||
        tok_pre_tokenizer(t, json_get(j, "pre_tokenizer")) || tok_decoder(t, json_get(j, "decoder")) ||
        tok_post_processor(t, json_get(j, "post_processor")))
        goto done;
    const Json *trunc = json_get(j, "truncation"), *pad = json_get(j, "padding");
    if ((trunc && trunc->type != JSON_NULL) || (pad && pad->type != JSON_NULL)) { fail("truncation and padding are not supported"); goto done; }
    r = 0;
done:
    json_free(j);
    if (r) { error_wrap("%s", path); kvl_tokenizer_free(t); return -1; }
    *out = t;
    return 0;
}

/* ---- encoding ---- */

typedef struct { int *data; int n, cap; } IntList;

static int ints_push(IntList *l, int v)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        int *bigger = realloc(l->data, sizeof(int) * cap);
        if (!bigger) return fail("out of memory");
        l->data = bigger;
        l->cap = cap;
    }
    l->data[l->n++] = v;
    return 0;
}

/* BPE on one word: characters (or their <0xNN> bytes, or unk), then the lowest-ranked
   merge of two neighbours, leftmost first, again and again. A character the vocabulary
   lacks, with neither byte_fallback nor unk_token to stand for it, is left out, as the
   tokenizers library does (its neighbours become neighbours and may merge). Words seen
   before come from a cache. */
static int bpe_word(KvlTokenizer *t, const char *w, size_t n, IntList *out)
{
    if (t->ignore_merges) {
        int id = strmap_get(&t->vocab, w, n);
        if (id >= 0) return ints_push(out, id);
    }
    int cached = strmap_get(&t->cache, w, n);
    if (cached >= 0) {
        for (int k = 0; k < t->cache_ids[cached]; k++)
            if (ints_push(out, t->cache_ids[cached + 1 + k])) return -1;
        return 0;
    }
    IntList sym = {0};
    int r = 0;
    for (size_t i = 0; i < n && !r;) {
        size_t start = i;
        utf8_next(w, n, &i);
        int id = strmap_get(&t->vocab, w + start, i - start), all_bytes = 1;
        if (id >= 0) { r = ints_push(&sym, id); continue; }
        for (size_t b = start; b < i; b++) all_bytes &= t->byte_ids[(unsigned char)w[b]] >= 0;
        if (t->byte_fallback && all_bytes) {
            for (size_t b = start; b < i && !r; b++) r = ints_push(&sym, t->byte_ids[(unsigned char)w[b]]);
        } else if (t->unk_id >= 0 && !(t->fuse_unk && sym.n && sym.data[sym.n - 1] == t->unk_id)) {
            r = ints_push(&sym, t->unk_id);
        }
    }
    while (!r && sym.n > 1) {
        int best = -1, best_rank = INT_MAX;
        for (int k = 0; k + 1 < sym.n; k++) {
            unsigned char key[8];
            write_u32_le(key, (uint32_t)sym.data[k]);
            write_u32_le(key + 4, (uint32_t)sym.data[k + 1]);
            int rank = strmap_get(&t->merges, (const char *)key, 8);
            if (rank >= 0 && rank < best_rank) { best_rank = rank; best = k; }
        }
        if (best < 0) break;
        sym.data[best] = t->merge_result[best_rank];
        memmove(sym.data + best + 1, sym.data + best + 2, sizeof(int) * (sym.n - best - 2));
        sym.n--;
    }
    for (int k = 0; k < sym.n && !r; k++) r = ints_push(out, sym.data[k]);
    /* remember the word (the cache starts over when full) */
    if (!r && n < 256) {
        if (t->cache.count >= TOK_CACHE_WORDS) { strmap_free(&t->cache); t->cache_ids_len = 0; }
        if (t->cache_ids_len + sym.n + 1 > t->cache_ids_cap) {
            size_t cap = t->cache_ids_cap ? 2 * t->cache_ids_cap : 65536;
            while (cap < t->cache_ids_len + sym.n + 1) cap *= 2;
            int *bigger = realloc(t->cache_ids, sizeof(int) * cap);
            if (bigger) { t->cache_ids = bigger; t->cache_ids_cap = cap; }
        }
        int previous;
        if (t->cache_ids_len + sym.n + 1 <= t->cache_ids_cap &&
            strmap_put(&t->cache, w, n, (int)t->cache_ids_len, &previous) == 0) {
            t->cache_ids[t->cache_ids_len] = sym.n;
            if (sym.n) memcpy(t->cache_ids + t->cache_ids_len + 1, sym.data, sizeof(int) * sym.n);   /* a word may give no token */
            t->cache_ids_len += (size_t)sym.n + 1;
        }
    }
    free(sym.data);
    return r;
}

/* A word during pre-tokenization: bytes in buf, and whether it starts the original text. */
typedef struct { size_t start, len; int first; } Piece;
typedef struct { Piece *data; int n, cap; } PieceList;

static int pieces_push(PieceList *l, size_t start, size_t len, int first)
{
    if (len == 0) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        Piece *bigger = realloc(l->data, sizeof(Piece) * cap);
        if (!bigger) return fail("out of memory");
        l->data = bigger;
        l->cap = cap;
    }
    Piece p = {start, len, first};
    l->data[l->n++] = p;
    return 0;
}

/* Runs one pre-tokenizer over every piece. New text (a prefix space, byte-mapped
   characters, the metaspace) is appended to buf, and pieces point into buf. */
static int pretokenize_step(const KvlTokenizer *t, const PreStep *s, Buf *buf, PieceList *in, PieceList *out)
{
    static const char meta[] = "\xe2\x96\x81";          /* U+2581, SentencePiece's space */
    out->n = 0;
    for (int p = 0; p < in->n; p++) {
        Piece pc = in->data[p];
        if (s->kind == PRE_BYTELEVEL || s->kind == PRE_METASPACE) {
            /* rewrite the piece into new text at the end of buf */
            size_t at = buf->len;
            int add_space = s->kind == PRE_BYTELEVEL ? s->add_prefix_space && buf->data[pc.start] != ' '
                          : (s->prepend_scheme == PREPEND_ALWAYS || (s->prepend_scheme == PREPEND_FIRST && pc.first)) &&
                            !(pc.len >= 3 && !memcmp(buf->data + pc.start, meta, 3) ) && buf->data[pc.start] != ' ';
            if (add_space && buf_puts(buf, s->kind == PRE_BYTELEVEL ? " " : meta)) return -1;
            for (size_t i = 0; i < pc.len; i++) {
                char c = buf->data[pc.start + i];
                if (s->kind == PRE_METASPACE && c == ' ') { if (buf_puts(buf, meta)) return -1; }
                else if (buf_push(buf, &c, 1)) return -1;
            }
            size_t len = buf->len - at;
            if (s->kind == PRE_METASPACE) {
                if (!s->split) { if (pieces_push(out, at, len, pc.first)) return -1; continue; }
                size_t begin = 0;                       /* split before each metaspace */
                for (size_t i = 3; i + 3 <= len; i++)
                    if (!memcmp(buf->data + at + i, meta, 3)) {
                        if (pieces_push(out, at + begin, i - begin, pc.first && begin == 0)) return -1;
                        begin = i;
                    }
                if (pieces_push(out, at + begin, len - begin, pc.first && begin == 0)) return -1;
                continue;
            }
            /* ByteLevel: split with GPT-2's regex, then map each byte to its character */
            size_t i = 0;
            while (i < len) {
                size_t m = s->use_regex ? pretok_match(REGEX_GPT2, buf->data + at, len, i) : len - i;
                if (m == 0) m = 1;
                size_t mapped = buf->len;
                for (size_t k = 0; k < m; k++) {
                    char enc[4];
                    int e = utf8_encode(t->byte_to_cp[(unsigned char)buf->data[at + i + k]], enc);
                    if (buf_push(buf, enc, (size_t)e)) return -1;
                }
                if (pieces_push(out, mapped, buf->len - mapped, pc.first && i == 0)) return -1;
                i += m;
            }
        } else if (s->kind == PRE_SPLIT) {
            const char *w = buf->data + pc.start;
            size_t i = 0, gap = 0;
            while (i < pc.len) {
                size_t m = pretok_match(s->regex, w, pc.len, i);
                if (m == 0) { size_t k = i; utf8_next(w, pc.len, &k); i = k; continue; }   /* not matched: part of a gap */
                if (i > gap && pieces_push(out, pc.start + gap, i - gap, pc.first && gap == 0)) return -1;
                if (pieces_push(out, pc.start + i, m, pc.first && i == 0)) return -1;
                i += m;
                gap = i;
            }
            if (pc.len > gap && pieces_push(out, pc.start + gap, pc.len - gap, pc.first && gap == 0)) return -1;
        } else {                                        /* Digits: ASCII digits apart from the rest */
            const char *w = buf->data + pc.start;
            size_t i = 0;
            while (i < pc.len) {
                int digit = w[i] >= '0' && w[i] <= '9';
                size_t j = i + 1;
                if (!(digit && s->individual_digits))
                    while (j < pc.len && (w[j] >= '0' && w[j] <= '9') == digit) j++;
                if (pieces_push(out, pc.start + i, j - i, pc.first && i == 0)) return -1;
                i = j;
            }
        }
    }
    return 0;
}

/* ---- NFC: Unicode canonical normalisation, form C ---- */

/* The NFC normalizer (Qwen2's tokenizers and others declare it) rewrites text so that  */
/* canonically equivalent strings become the same bytes: "e" followed by U+0301         */
/* COMBINING ACUTE becomes U+00E9, as text from macOS file names, many PDFs and some    */
/* keyboards needs. Three steps (Unicode's UAX #15):                                    */
/*   1. decompose every character, recursively, by its canonical decomposition (Hangul  */
/*      syllables algorithmically, into conjoining jamo);                               */
/*   2. canonical ordering: sort each run of combining marks by combining class,        */
/*      keeping the order of equal classes (marks of different classes commute, equal   */
/*      ones do not);                                                                   */
/*   3. compose: each mark joins the last starter (a class-0 character) when the pair   */
/*      is a primary composite and no mark of the same or a higher class stands between */
/*      them.                                                                           */
/* The tables (Appendix B) are those of the tokenizers library's normalizer, Unicode    */
/* 9.0.0 (make_unicode_tables.py says why). Most text is in NFC already: a quick check, */
/* with a byte loop for ASCII, lets it through untouched. Bytes that are not valid      */
/* UTF-8 are kept as they are, as class-0 characters that compose with nothing.         */

enum {
    HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
    HANGUL_L_COUNT = 19, HANGUL_V_COUNT = 21, HANGUL_T_COUNT = 28,
    HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_V_COUNT * HANGUL_T_COUNT,
    NFC_RAW_BYTE = 0x110000         /* NFC_RAW_BYTE + b: the byte b of invalid UTF-8 */
};

/* Lookups in NFC's tables (Appendix B): a code point's combining class; its canonical
   decomposition {cp, first, second}; the primary composite of a pair (0 if none); whether
   the quick check must stop at it. */
static int nfc_class(uint32_t cp);
static const uint32_t *nfc_decomposition(uint32_t cp);
static uint32_t nfc_composition(uint32_t first, uint32_t second);
static int nfc_unstable_cp(uint32_t cp);

/* 1 when s is surely in NFC: no character that NFC replaces or may compose with what
   precedes it (NFC_Quick_Check No or Maybe), and the marks in canonical order. */
static int nfc_quick_check(const char *s, size_t n)
{
    int last_class = 0;
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x80) { i++; last_class = 0; continue; }
        uint32_t cp = utf8_next(s, n, &i);
        if (cp < 0x300) { last_class = 0; continue; }      /* below the first combining mark */
        int cls = nfc_class(cp);
        if ((cls && last_class > cls) || nfc_unstable_cp(cp)) return 0;
        last_class = cls;
    }
    return 1;
}

/* Appends the full canonical decomposition of cp. */
static void nfc_decompose(uint32_t cp, uint32_t *out, size_t *n)
{
    const uint32_t *d;
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S;
        out[(*n)++] = HANGUL_L + s / (HANGUL_V_COUNT * HANGUL_T_COUNT);
        out[(*n)++] = HANGUL_V + s % (HANGUL_V_COUNT * HANGUL_T_COUNT) / HANGUL_T_COUNT;
        if (s % HANGUL_T_COUNT) out[(*n)++] = HANGUL_T + s % HANGUL_T_COUNT;
    } else if ((d = nfc_decomposition(cp)) != NULL) {
        nfc_decompose(d[1], out, n);
        if (d[2]) nfc_decompose(d[2], out, n);
    } else out[(*n)++] = cp;
}

/* The primary composite of a starter and the character after it, or 0. */
static uint32_t nfc_compose_pair(uint32_t first, uint32_t second)
{
    if (first >= HANGUL_L && first < HANGUL_L + HANGUL_L_COUNT && second >= HANGUL_V && second < HANGUL_V + HANGUL_V_COUNT)
        return HANGUL_S + ((first - HANGUL_L) * HANGUL_V_COUNT + (second - HANGUL_V)) * HANGUL_T_COUNT;
    if (first >= HANGUL_S && first < HANGUL_S + HANGUL_S_COUNT && (first - HANGUL_S) % HANGUL_T_COUNT == 0 &&
        second > HANGUL_T && second < HANGUL_T + HANGUL_T_COUNT)
        return first + (second - HANGUL_T);
    return nfc_composition(first, second);
}

/* Sorts cp[0 .. n) by class (cls, the same order), stably. A run of marks is one or    */
/* two long in real text (insertion sort); a long one, which only odd or hostile input  */
/* has, is sorted by counting its classes, so that no input costs more than linear      */
/* time.                                                                                */
static int nfc_sort_marks(uint32_t *cp, unsigned char *cls, size_t n)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && cls[j - 1] > cls[j]; j--) {
                uint32_t c = cp[j]; cp[j] = cp[j - 1]; cp[j - 1] = c;
                unsigned char k = cls[j]; cls[j] = cls[j - 1]; cls[j - 1] = k;
            }
        return 0;
    }
    size_t start[257] = {0};
    uint32_t *sorted = xmalloc(sizeof(uint32_t) * n);
    if (!sorted) return -1;
    for (size_t i = 0; i < n; i++) start[cls[i] + 1]++;
    for (int k = 1; k < 257; k++) start[k] += start[k - 1];
    for (size_t i = 0; i < n; i++) sorted[start[cls[i]]++] = cp[i];
    memcpy(cp, sorted, sizeof(uint32_t) * n);
    for (size_t i = 0; i < n; i++) cls[i] = (unsigned char)nfc_class(cp[i]);
    free(sorted);
    return 0;
}

/* Appends the NFC form of s[0 .. n) to out. */
static int nfc_normalize(const char *s, size_t n, Buf *out)
{
    /* A character decomposes into at most 3 code points per 2 bytes of UTF-8 (U+01D5 is
       2 bytes and 3 code points; U+1F82, 3 bytes and 4), so 2n + 1 is room enough. */
    size_t len = 0, cap = 2 * n + 1;
    if (n > SIZE_MAX / 16) return fail("NFC: %zu bytes of text is too long", n);
    uint32_t *cp = xmalloc(sizeof(uint32_t) * cap);
    unsigned char *cls = xmalloc(cap);
    int r = (!cp || !cls) ? -1 : 0;
    for (size_t i = 0; i < n && !r;) {                 /* 1. decompose */
        int bytes = utf8_valid_len((const unsigned char *)s + i, n - i);
        if (bytes == 0) { cp[len++] = NFC_RAW_BYTE + (unsigned char)s[i++]; continue; }
        nfc_decompose(utf8_next(s, n, &i), cp, &len);
    }
    for (size_t i = 0; i < len && !r; i++) cls[i] = (unsigned char)nfc_class(cp[i]);
    for (size_t i = 0; i < len && !r;) {               /* 2. canonical ordering */
        size_t j = i;
        while (j < len && cls[j]) j++;
        if (j - i > 1) r = nfc_sort_marks(cp + i, cls + i, j - i);
        i = j + 1;
    }
    /* 3. compose: `starter` is where the last starter sits in the output so far (-1 when
       the text begins with marks), `last_class` the class of the last character kept
       after it (0 when nothing stands between them). */
    size_t kept = 0;
    long starter = -1;
    int last_class = 0;
    for (size_t i = 0; i < len && !r; i++) {
        uint32_t composite = starter >= 0 && (last_class == 0 || last_class < cls[i]) ? nfc_compose_pair(cp[starter], cp[i]) : 0;
        if (composite) { cp[starter] = composite; continue; }
        if (cls[i] == 0) starter = (long)kept;
        last_class = cls[i];
        cp[kept++] = cp[i];
    }
    for (size_t i = 0; i < kept && !r; i++) {
        char utf8[4];
        if (cp[i] >= NFC_RAW_BYTE) utf8[0] = (char)(cp[i] - NFC_RAW_BYTE);
        r = buf_push(out, utf8, cp[i] >= NFC_RAW_BYTE ? 1 : (size_t)utf8_encode(cp[i], utf8));
    }
    free(cp);
    free(cls);
    return r;
}

/* Normalizes, pre-tokenizes and BPE-encodes one piece of text between added tokens. */
static int encode_segment(KvlTokenizer *t, const char *text, size_t n, int first, IntList *out)
{
    if (n == 0) return 0;
    Buf buf = {0};
    PieceList a = {0}, b = {0};
    int r = buf_push(&buf, text, n);
    for (int i = 0; i < t->n_norm && !r; i++) {
        const NormStep *s = &t->norm[i];
        Buf next = {0};
        if (s->kind == NORM_NFC && nfc_quick_check(buf.data, buf.len)) continue;
        if (s->kind == NORM_NFC) r = nfc_normalize(buf.data, buf.len, &next);
        else if (s->kind == NORM_PREPEND) r = buf_puts(&next, s->to) || buf_push(&next, buf.data, buf.len);
        else {
            size_t from_len = strlen(s->from);
            r = buf_push(&next, "", 0);
            for (size_t k = 0; k < buf.len && !r;) {
                if (k + from_len <= buf.len && !memcmp(buf.data + k, s->from, from_len)) { r = buf_puts(&next, s->to); k += from_len; }
                else r = buf_push(&next, buf.data + k++, 1);
            }
        }
        free(buf.data);
        buf = next;
    }
    if (!r) r = pieces_push(&a, 0, buf.len, first);
    for (int i = 0; i < t->n_pre && !r; i++) {
        r = pretokenize_step(t, &t->pre[i], &buf, &a, &b);
        PieceList tmp = a;
        a = b;
        b = tmp;
    }
    for (int p = 0; p < a.n && !r; p++) r = bpe_word(t, buf.data + a.data[p].start, a.data[p].len, out);
    free(buf.data);
    free(a.data);
    free(b.data);
    return r;
}

static int is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

int kvl_encode(KvlTokenizer *t, const char *text, size_t n, int add_special, int **ids, int *n_ids)
{
    IntList out = {0};
    int r = 0;
    for (int k = 0; add_special && k < t->n_post_before && !r; k++) r = ints_push(&out, t->post_before[k]);
    size_t seg = 0, i = 0;
    while (i < n && !r) {
        const AddedToken *hit = NULL;
        for (int k = 0; k < t->n_added && !hit; k++)
            if ((size_t)t->added[k].len <= n - i && text[i] == t->added[k].text[0] && !memcmp(text + i, t->added[k].text, (size_t)t->added[k].len))
                hit = &t->added[k];
        if (!hit) { i++; continue; }
        size_t end = i;
        if (hit->lstrip) while (end > seg && is_ascii_space(text[end - 1])) end--;
        r = encode_segment(t, text + seg, end - seg, seg == 0, &out) || ints_push(&out, hit->id);
        i += (size_t)hit->len;
        if (hit->rstrip) while (i < n && is_ascii_space(text[i])) i++;
        seg = i;
    }
    if (!r) r = encode_segment(t, text + seg, n - seg, seg == 0, &out);
    for (int k = 0; add_special && k < t->n_post_after && !r; k++) r = ints_push(&out, t->post_after[k]);
    if (r) { free(out.data); return -1; }
    *ids = out.data ? out.data : malloc(sizeof(int));
    *n_ids = out.n;
    return *ids ? 0 : fail("out of memory");
}

/* ---- decoding ---- */

/* Appends bytes as text, each ill-formed UTF-8 sequence replaced by U+FFFD (as Rust's
   String::from_utf8_lossy: one replacement per maximal ill-formed subpart). */
static int buf_push_lossy(Buf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int len = utf8_valid_len(s + i, n - i);
        if (len > 0) { if (buf_push(b, s + i, (size_t)len)) return -1; i += (size_t)len; continue; }
        size_t bad = 1;                     /* a lead byte and the continuation bytes it accepted */
        unsigned c = s[i];
        int need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        for (int k = 0; k < need && i + bad < n; k++) {
            unsigned d = s[i + bad];
            if (k == 0 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) break;
            bad++;
        }
        if (buf_puts(b, "\xef\xbf\xbd")) return -1;
        i += bad;
    }
    return 0;
}

typedef struct { Buf *items; int n; } TokenStrings;

/* Fuse and ByteLevel: all tokens into one string; ByteLevel maps each character back to its
   byte (a token with a character outside the map keeps its own bytes) and reads the
   whole as lossy UTF-8. */
static int decode_join(const KvlTokenizer *t, const DecStep *s, TokenStrings *ts)
{
    Buf joined = {0};
    if (buf_push(&joined, "", 0)) return -1;
    for (int i = 0; i < ts->n; i++) {
        const Buf *item = &ts->items[i];
        if (s->kind == DEC_FUSE) { if (buf_push(&joined, item->data, item->len)) return -1; continue; }
        /* ByteLevel: each character back to its byte, unless the token has a character
           outside the map (then its own bytes); the whole as lossy UTF-8 */
        Buf bytes = {0};
        int mapped = 1;
        for (size_t k = 0; k < item->len && mapped;) {
            uint32_t cp = utf8_next(item->data, item->len, &k);
            int b = cp < 512 ? t->cp_to_byte[cp] : -1;
            if (b < 0) mapped = 0;
            else { unsigned char byte = (unsigned char)b; if (buf_push(&bytes, &byte, 1)) return -1; }
        }
        int r = mapped ? buf_push(&joined, bytes.data ? bytes.data : "", bytes.len) : buf_push(&joined, item->data, item->len);
        free(bytes.data);
        if (r) return -1;
    }
    if (s->kind == DEC_BYTELEVEL) {
        Buf lossy = {0};
        if (buf_push(&lossy, "", 0) || buf_push_lossy(&lossy, (const unsigned char *)joined.data, joined.len)) return -1;
        free(joined.data);
        joined = lossy;
    }
    for (int i = 0; i < ts->n; i++) free(ts->items[i].data);
    ts->items[0] = joined;
    ts->n = ts->n ? 1 : 0;
    if (!ts->n) free(joined.data);
    return 0;
}

/* ByteFallback: each run of <0xNN> tokens into the text its bytes spell, or one U+FFFD per
   token when they are not valid UTF-8. */
static int decode_byte_fallback(TokenStrings *ts)
{
    int out = 0;
    for (int i = 0; i < ts->n;) {
        int j = i;
        Buf bytes = {0};
        while (j < ts->n && ts->items[j].len == 6 && !memcmp(ts->items[j].data, "<0x", 3) && ts->items[j].data[5] == '>' &&
               isxdigit((unsigned char)ts->items[j].data[3]) && isxdigit((unsigned char)ts->items[j].data[4])) {
            unsigned char byte = (unsigned char)strtol(ts->items[j].data + 3, NULL, 16);
            if (buf_push(&bytes, &byte, 1)) return -1;
            j++;
        }
        if (j == i) { ts->items[out++] = ts->items[i++]; continue; }
        Buf text = {0};
        int valid = 1;
        for (size_t k = 0; k < bytes.len && valid;) {
            int len = utf8_valid_len((const unsigned char *)bytes.data + k, bytes.len - k);
            if (!len) valid = 0; else k += (size_t)len;
        }
        for (int k = i; k < j; k++) free(ts->items[k].data);
        if (valid) {
            if (buf_push(&text, bytes.data, bytes.len)) return -1;
            ts->items[out++] = text;
        } else {
            for (int k = i; k < j; k++) {
                Buf one = {0};
                if (buf_puts(&one, "\xef\xbf\xbd")) return -1;
                ts->items[out++] = one;
            }
        }
        free(bytes.data);
        i = j;
    }
    ts->n = out;
    return 0;
}

/* Replace, Metaspace and Strip: token by token. */
static int decode_each(const DecStep *s, TokenStrings *ts)
{
    for (int i = 0; i < ts->n; i++) {
        Buf *item = &ts->items[i], next = {0};
        if (buf_push(&next, "", 0)) return -1;
        if (s->kind == DEC_REPLACE || s->kind == DEC_METASPACE) {
            const char *from = s->kind == DEC_REPLACE ? s->from : "\xe2\x96\x81", *to = s->kind == DEC_REPLACE ? s->to : " ";
            size_t from_len = strlen(from);
            for (size_t k = 0; k < item->len;) {
                if (from_len && k + from_len <= item->len && !memcmp(item->data + k, from, from_len)) { if (buf_puts(&next, to)) return -1; k += from_len; }
                else if (buf_push(&next, item->data + k++, 1)) return -1;
            }
            if (s->kind == DEC_METASPACE && i == 0 && s->prepend_scheme != PREPEND_NEVER && next.len && next.data[0] == ' ') {
                memmove(next.data, next.data + 1, next.len);
                next.len--;
            }
        } else {                                                   /* Strip */
            size_t a = 0, z = item->len;
            for (int k = 0; k < s->start && a < z && item->data[a] == s->from[0]; k++) a++;
            for (int k = 0; k < s->stop && z > a && item->data[z - 1] == s->from[0]; k++) z--;
            if (buf_push(&next, item->data + a, z - a)) return -1;
        }
        free(item->data);
        *item = next;
    }
    return 0;
}

static int decode_step(const KvlTokenizer *t, const DecStep *s, TokenStrings *ts)
{
    if (s->kind == DEC_FUSE || s->kind == DEC_BYTELEVEL) return decode_join(t, s, ts);
    if (s->kind == DEC_BYTEFALLBACK) return decode_byte_fallback(ts);
    return decode_each(s, ts);
}

static int is_special(const KvlTokenizer *t, int id)
{
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) return t->added[i].special;
    return 0;
}

int kvl_decode(const KvlTokenizer *t, const int *ids, int n, int skip_special, char **text, size_t *len)
{
    TokenStrings ts = {xcalloc((size_t)n + 1, sizeof(Buf)), 0};
    Buf out = {0};
    int r = ts.items ? 0 : -1;
    for (int i = 0; i < n && !r; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size || !t->id_to_token[ids[i]]) { r = fail("decode: token id %d is not in the vocabulary", ids[i]); break; }
        if (skip_special && is_special(t, ids[i])) continue;
        r = buf_push(&ts.items[ts.n++], t->id_to_token[ids[i]], (size_t)t->id_len[ids[i]]);
    }
    for (int i = 0; i < t->n_dec && !r; i++) r = decode_step(t, &t->dec[i], &ts);
    if (!r) r = buf_push(&out, "", 0);
    for (int i = 0; i < ts.n && !r; i++)     /* no decoder: tokens joined by spaces, as the library does */
        r = (i && !t->has_decoder && buf_puts(&out, " ")) || buf_push(&out, ts.items[i].data ? ts.items[i].data : "", ts.items[i].len);
    for (int i = 0; i < ts.n; i++) free(ts.items[i].data);
    free(ts.items);
    if (r) { free(out.data); return -1; }
    *text = out.data;
    *len = out.len;
    return 0;
}

/* The id of a token string (added tokens included), or -1. */
int kvl_token_id(const KvlTokenizer *t, const char *token) { return tok_id_of(t, token); }

/* ------------------------------------------------------------------------------------ */
/* 5. The model: config, weights, the KV cache and its file, saving a model directory   */
/*                                                                                      */
/* config.json is read the way transformers reads it for the four supported classes:    */
/* the same defaults for absent fields, and a refusal for anything that would change    */
/* the numbers in a way this file does not implement (another activation, a rope        */
/* scaling type other than llama3, biases on layers that have none here ...). One table */
/* of (Hugging Face name, shape) entries drives loading, checking and the single        */
/* allocation the weights point into. The KV cache is [L][KVH][positions][HD] for keys  */
/* (after RoPE) and for values; its file holds the filled positions, their token ids    */
/* and the model's fingerprint.                                                         */

static int config_int(const Json *cfg, const char *key, int required, int def, int lo, int hi, int *out, const char *where)
{
    const Json *j = json_get(cfg, key);
    if (!j || j->type == JSON_NULL) {
        if (required) return fail("%s: missing field '%s'", where, key);
        *out = def;
        return 0;
    }
    long long v;
    if (json_int(j, lo, hi, &v)) return fail("%s: field '%s' must be an integer in [%d, %d]", where, key, lo, hi);
    *out = (int)v;
    return 0;
}

static int config_float(const Json *j, const char *key, float def, float *out, const char *where)
{
    if (!j || j->type == JSON_NULL) { *out = def; return 0; }
    if (j->type != JSON_NUMBER) return fail("%s: field '%s' must be a number", where, key);
    *out = (float)j->number;
    return 0;
}

static int config_bool(const Json *cfg, const char *key, int def, int *out, const char *where)
{
    const Json *j = json_get(cfg, key);
    if (!j || j->type == JSON_NULL) { *out = def; return 0; }
    if (j->type != JSON_BOOL) return fail("%s: field '%s' must be true or false", where, key);
    *out = j->boolean;
    return 0;
}

/* bos/eos may be a number, a list of numbers (the first is used) or null. */
static int config_token_id(const Json *cfg, const char *key, int vocab, int *out, const char *where)
{
    const Json *j = json_get(cfg, key);
    long long v;
    *out = -1;
    if (j && j->type == JSON_ARRAY) j = j->length ? j->children[0] : NULL;
    if (!j || j->type == JSON_NULL) return 0;
    if (json_int(j, 0, vocab - 1, &v)) return fail("%s: field '%s' must be a token id in [0, %d)", where, key, vocab);
    *out = (int)v;
    return 0;
}

/* Rope settings live either at the top level (rope_theta, rope_scaling) or, as recent
   transformers versions write them, in one "rope_parameters" object that holds
   rope_theta and rope_type together with the scaling fields. */
static int config_rope(KvlConfig *c, const Json *cfg, const char *where)
{
    const Json *params = json_get(cfg, "rope_parameters");
    const Json *scaling = json_get(cfg, "rope_scaling");
    const Json *theta = json_get(cfg, "rope_theta");
    if (params && params->type != JSON_NULL) {
        if (params->type != JSON_OBJECT) return fail("%s: 'rope_parameters' must be an object", where);
        if (json_get(params, "rope_theta")) theta = json_get(params, "rope_theta");
        scaling = params;
    }
    if (config_float(theta, "rope_theta", 10000.0f, &c->rope_theta, where)) return -1;
    if (!(c->rope_theta > 1.0f)) return fail("%s: rope_theta must be greater than 1", where);
    if (!scaling || scaling->type == JSON_NULL) return 0;
    if (scaling->type != JSON_OBJECT) return fail("%s: 'rope_scaling' must be an object or null", where);
    const Json *type = json_get(scaling, "rope_type");
    if (!type) type = json_get(scaling, "type");                 /* the older spelling */
    if (!type || type->type == JSON_NULL) {
        if (scaling == params) return 0;                         /* rope_parameters with only rope_theta */
        return fail("%s: rope_scaling has no 'rope_type'", where);
    }
    if (type->type != JSON_STRING) return fail("%s: rope_type must be a string", where);
    if (strcmp(type->string, "default") == 0) return 0;
    if (strcmp(type->string, "llama3") != 0)
        return fail("%s: rope scaling type '%s' is not supported (supported: default, llama3)", where, type->string);
    c->rope_llama3 = 1;
    int r = config_float(json_get(scaling, "factor"), "factor", -1, &c->rope_factor, where) ||
            config_float(json_get(scaling, "low_freq_factor"), "low_freq_factor", -1, &c->rope_low_freq_factor, where) ||
            config_float(json_get(scaling, "high_freq_factor"), "high_freq_factor", -1, &c->rope_high_freq_factor, where) ||
            config_int(scaling, "original_max_position_embeddings", 1, 0, 1, 1 << 30, &c->rope_original_max_positions, where);
    if (r) return -1;
    if (!(c->rope_factor >= 1) || !(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return fail("%s: llama3 rope scaling needs factor >= 1 and high_freq_factor > low_freq_factor > 0", where);
    const Json *af = json_get(scaling, "attention_factor");
    if (af && af->type != JSON_NULL && !(af->type == JSON_NUMBER && af->number == 1.0))
        return fail("%s: rope attention_factor other than 1 is not supported", where);
    return 0;
}

/* The architecture: "architectures": ["LlamaForCausalLM"], else model_type. */
static int config_arch(KvlConfig *c, const Json *cfg, const char *where)
{
    static const struct { const char *arch, *model_type; KvlArch id; } archs[] = {
        {"LlamaForCausalLM", "llama", KVL_LLAMA}, {"MistralForCausalLM", "mistral", KVL_MISTRAL},
        {"Qwen2ForCausalLM", "qwen2", KVL_QWEN2}, {"Qwen3ForCausalLM", "qwen3", KVL_QWEN3},
    };
    const Json *archj = json_get(cfg, "architectures"), *mt = json_get(cfg, "model_type");
    const char *name = NULL;
    int found = -1;
    if (archj && archj->type == JSON_ARRAY && archj->length == 1 && archj->children[0]->type == JSON_STRING)
        name = archj->children[0]->string;
    else if (archj && archj->type != JSON_NULL) return fail("%s: 'architectures' must be a list of one class name", where);
    for (int i = 0; i < 4; i++) {
        if (name && strcmp(name, archs[i].arch) == 0) found = i;
        if (!name && mt && mt->type == JSON_STRING && strcmp(mt->string, archs[i].model_type) == 0) found = i;
    }
    if (found < 0) {
        return fail("%s: architecture '%s' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
             where, name ? name : (mt && mt->type == JSON_STRING) ? mt->string : "(none given)");
    }
    c->arch = archs[found].id;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", archs[found].arch);
    return 0;
}

/* The sizes, and head_dim: explicit when given (Qwen3, some Llamas), else hidden_size / heads. */
static int config_shape(KvlConfig *c, const Json *cfg, const char *where)
{
    const int big = 1 << 24;
    if (config_int(cfg, "hidden_size", 1, 0, 1, big, &c->dim, where) ||
        config_int(cfg, "num_hidden_layers", 1, 0, 1, 4096, &c->n_layers, where) ||
        config_int(cfg, "num_attention_heads", 1, 0, 1, 4096, &c->n_heads, where) ||
        config_int(cfg, "num_key_value_heads", 0, c->n_heads, 1, 4096, &c->n_kv_heads, where) ||
        config_int(cfg, "intermediate_size", 1, 0, 1, big, &c->ffn_dim, where) ||
        config_int(cfg, "vocab_size", 1, 0, 1, big, &c->vocab_size, where) ||
        config_int(cfg, "max_position_embeddings", 0, 2048, 1, 1 << 24, &c->max_positions, where))
        return -1;
    if (c->n_heads % c->n_kv_heads) {
        return fail("%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", where, c->n_heads, c->n_kv_heads);
    }
    if (json_get(cfg, "head_dim") && json_get(cfg, "head_dim")->type != JSON_NULL) {
        if (config_int(cfg, "head_dim", 1, 0, 2, 1 << 16, &c->head_dim, where)) return -1;
    } else {
        if (c->dim % c->n_heads) return fail("%s: hidden_size (%d) is not a multiple of num_attention_heads (%d)", where, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->head_dim % 2) return fail("%s: head_dim %d is odd; rotary embeddings need pairs", where, c->head_dim);
    return 0;
}

/* The activation, the norm, RoPE, biases, q/k norms, the sliding window, BOS and EOS. */
static int config_features(KvlConfig *c, const Json *cfg, const char *where)
{
    const Json *act = json_get(cfg, "hidden_act");
    if (act && !(act->type == JSON_STRING && strcmp(act->string, "silu") == 0)) {
        return fail("%s: hidden_act '%s' is not supported (only silu)", where, act->type == JSON_STRING ? act->string : "?");
    }
    if (config_float(json_get(cfg, "rms_norm_eps"), "rms_norm_eps", 1e-6f, &c->rms_eps, where)) return -1;
    if (!(c->rms_eps > 0)) return fail("%s: rms_norm_eps must be positive", where);
    if (config_rope(c, cfg, where)) return -1;
    const Json *partial = json_get(cfg, "partial_rotary_factor");
    if (partial && !(partial->type == JSON_NUMBER && partial->number == 1.0)) return fail("%s: partial_rotary_factor is not supported", where);

    if (config_bool(cfg, "tie_word_embeddings", 0, &c->tie_embeddings, where)) return -1;
    int attention_bias = 0, mlp_bias = 0, use_sliding = 0;
    if (config_bool(cfg, "attention_bias", 0, &attention_bias, where) ||
        config_bool(cfg, "mlp_bias", 0, &mlp_bias, where) ||
        config_bool(cfg, "use_sliding_window", 0, &use_sliding, where))
        return -1;
    if (attention_bias) return fail("%s: attention_bias = true is not supported", where);
    if (mlp_bias) return fail("%s: mlp_bias = true is not supported", where);
    c->qkv_bias = c->arch == KVL_QWEN2;
    c->qk_norm = c->arch == KVL_QWEN3;

    /* Mistral applies its sliding window whenever one is set; Qwen2/3 only with
       use_sliding_window, and then only on some layers, which we do not implement. */
    if (c->arch == KVL_MISTRAL) {
        if (config_int(cfg, "sliding_window", 0, 0, 1, 1 << 30, &c->sliding_window, where)) return -1;
    } else if (use_sliding) {
        return fail("%s: use_sliding_window = true is not supported", where);
    } else if (c->arch == KVL_LLAMA && json_get(cfg, "sliding_window") && json_get(cfg, "sliding_window")->type != JSON_NULL) {
        return fail("%s: sliding_window is not supported for Llama models", where);
    }
    if (config_token_id(cfg, "bos_token_id", c->vocab_size, &c->bos_token_id, where) ||
        config_token_id(cfg, "eos_token_id", c->vocab_size, &c->eos_token_id, where))
        return -1;
    return 0;
}

int kvl_config_parse(KvlConfig *c, const char *text, size_t len, const char *where)
{
    Json *cfg;
    memset(c, 0, sizeof *c);
    if (json_parse(&cfg, text, len, where)) return -1;
    int r = cfg->type != JSON_OBJECT ? fail("%s: not a JSON object", where)
          : config_arch(c, cfg, where) || config_shape(c, cfg, where) || config_features(c, cfg, where) ? -1 : 0;
    json_free(cfg);
    return r;
}

size_t kvl_cache_bytes_per_token(const KvlConfig *c)
{
    return 2 * (size_t)c->n_layers * c->n_kv_heads * c->head_dim * sizeof(float);
}

/* The weights as llm.c keeps its parameters: one table of (name, shape) entries, one
   allocation, and the named pointers of KvlWeights pointing into it. The table is also
   what the loader walks: the Hugging Face name of every tensor and its expected shape. */
typedef struct {
    char name[96];        /* Hugging Face name; %d is the layer */
    float **ptr;
    int per_layer;        /* one tensor per layer, stacked [L][...] */
    int rows, cols;       /* cols == 0 for a vector */
} WeightSpec;

static int weight_specs(const KvlConfig *c, KvlWeights *w, WeightSpec *s)
{
    int D = c->dim, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim, n = 0;
#define SPEC(nm, p, layer, r, k) do { snprintf(s[n].name, sizeof s[n].name, "%s", nm); s[n].ptr = p; \
        s[n].per_layer = layer; s[n].rows = r; s[n].cols = k; n++; } while (0)
    SPEC("model.embed_tokens.weight", &w->embed, 0, c->vocab_size, D);
    SPEC("model.layers.%d.input_layernorm.weight", &w->attn_norm, 1, D, 0);
    SPEC("model.layers.%d.self_attn.q_proj.weight", &w->wq, 1, QD, D);
    SPEC("model.layers.%d.self_attn.k_proj.weight", &w->wk, 1, KD, D);
    SPEC("model.layers.%d.self_attn.v_proj.weight", &w->wv, 1, KD, D);
    SPEC("model.layers.%d.self_attn.o_proj.weight", &w->wo, 1, D, QD);
    if (c->qkv_bias) {
        SPEC("model.layers.%d.self_attn.q_proj.bias", &w->bq, 1, QD, 0);
        SPEC("model.layers.%d.self_attn.k_proj.bias", &w->bk, 1, KD, 0);
        SPEC("model.layers.%d.self_attn.v_proj.bias", &w->bv, 1, KD, 0);
    }
    if (c->qk_norm) {
        SPEC("model.layers.%d.self_attn.q_norm.weight", &w->q_norm, 1, c->head_dim, 0);
        SPEC("model.layers.%d.self_attn.k_norm.weight", &w->k_norm, 1, c->head_dim, 0);
    }
    SPEC("model.layers.%d.post_attention_layernorm.weight", &w->mlp_norm, 1, D, 0);
    SPEC("model.layers.%d.mlp.gate_proj.weight", &w->w_gate, 1, c->ffn_dim, D);
    SPEC("model.layers.%d.mlp.up_proj.weight", &w->w_up, 1, c->ffn_dim, D);
    SPEC("model.layers.%d.mlp.down_proj.weight", &w->w_down, 1, D, c->ffn_dim);
    SPEC("model.norm.weight", &w->final_norm, 0, D, 0);
    if (!c->tie_embeddings) SPEC("lm_head.weight", &w->lm_head, 0, c->vocab_size, D);
#undef SPEC
    return n;
}
#define MAX_WEIGHT_SPECS 20

static size_t spec_numel(const WeightSpec *s, int n_layers)
{
    return (size_t)(s->per_layer ? n_layers : 1) * s->rows * (s->cols ? s->cols : 1);
}

/* Loads one tensor into dst after checking its shape; refuses NaN and infinity, which
   would otherwise spread silently through every logit. */
static int load_tensor(const ShardSet *s, const char *name, int rows, int cols, float *dst, const char **dtype_name)
{
    const KvlSafetensors *file = NULL;
    const KvlTensorInfo *t;
    if (shards_find(s, name, &file, &t)) return -1;
    int ok = cols ? (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols)
                  : (t->n_dims == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "", want[64];
        for (int d = 0; d < t->n_dims; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
        if (cols) snprintf(want, sizeof want, "%d, %d", rows, cols); else snprintf(want, sizeof want, "%d", rows);
        return fail("%s: tensor '%s' has shape [%s], but config.json implies [%s]", file->path, name, got, want);
    }
    if (kvl_st_read_f32(file, t, dst)) return -1;
    size_t n = (size_t)rows * (cols ? cols : 1);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return fail("%s: tensor '%s' holds a non-finite value (%g) at element %zu", file->path, name, dst[i], i);
    *dtype_name = dtype_table[t->dtype].name;
    return 0;
}

/* Every tensor in the files must be one we load: an unknown one could mean a feature we
   do not implement (a bias, a norm), and ignoring it would give silently wrong logits. */
static int check_no_extra_tensors(const ShardSet *s, const KvlConfig *c, const WeightSpec *specs, int n_specs)
{
    char name[128];
    for (int f = 0; f < s->n; f++)
        for (int i = 0; i < s->files[f].n_tensors; i++) {
            const char *t = s->files[f].tensors[i].name;
            int known = 0, layer;
            for (int k = 0; k < n_specs && !known; k++) {
                if (!specs[k].per_layer) { known = strcmp(t, specs[k].name) == 0; continue; }
                for (layer = 0; layer < c->n_layers && !known; layer++) {
                    snprintf(name, sizeof name, specs[k].name, layer);
                    known = strcmp(t, name) == 0;
                }
            }
            if (strstr(t, "rotary_emb.inv_freq")) known = 1;              /* old checkpoints: recomputed */
            if (c->tie_embeddings && strcmp(t, "lm_head.weight") == 0) known = 1;   /* tied: transformers ignores it */
            if (!known) return fail("%s: unexpected tensor '%s' (not part of a %s with this config.json)", s->files[f].path, t, c->arch_name);
        }
    return 0;
}

void kvl_model_free(KvlModel *m);
static void scratch_free(KvlScratch *s);    /* the forward pass's activations: section 7 */

/* One block for all weights; the spec table's pointers are set to their places in it. */
static int model_alloc(KvlModel *m, WeightSpec *specs, int n_specs)
{
    size_t total = 0, bytes = 0;
    for (int i = 0; i < n_specs; i++) total += spec_numel(&specs[i], m->config.n_layers);
    if (mul_size(total, sizeof(float), &bytes)) return -1;
    m->memory = xmalloc(bytes);
    if (!m->memory) return -1;
    m->n_params = total;
    float *p = m->memory;
    for (int i = 0; i < n_specs; i++) {
        *specs[i].ptr = p;
        p += spec_numel(&specs[i], m->config.n_layers);
    }
    if (m->config.tie_embeddings) m->w.lm_head = m->w.embed;
    return 0;
}

/* A model with random weights, for benchmarks and as the start of training: matrices
   uniform in +-sqrt(3 / in) (unit variance of each output for unit inputs), embeddings
   uniform in +-1, norm weights 1, biases 0. */
int kvl_model_random(KvlModel **out, const KvlConfig *c, uint64_t seed)
{
    *out = NULL;
    KvlModel *m = xcalloc(1, sizeof *m);
    if (!m) return -1;
    m->config = *c;
    WeightSpec specs[MAX_WEIGHT_SPECS];
    int n_specs = weight_specs(c, &m->w, specs);
    if (model_alloc(m, specs, n_specs)) { free(m); return error_wrap("random model"); }
    KvlRng rng;
    kvl_rng_seed(&rng, seed);
    for (int i = 0; i < n_specs; i++) {
        float *p = *specs[i].ptr;
        size_t n = spec_numel(&specs[i], c->n_layers);
        int is_norm = strstr(specs[i].name, "norm") != NULL, is_bias = strstr(specs[i].name, "bias") != NULL;
        float scale = strstr(specs[i].name, "embed") ? 1.0f : specs[i].cols ? sqrtf(3.0f / specs[i].cols) : 0.0f;
        for (size_t k = 0; k < n; k++)
            p[k] = is_norm ? 1.0f : is_bias ? 0.0f : (2.0f * kvl_rng_float(&rng) - 1.0f) * scale;
    }
    snprintf(m->file_dtype, sizeof m->file_dtype, "random");
    *out = m;
    return 0;
}

int kvl_model_load(KvlModel **out, const char *dir)
{
    char path[4096];
    char *text;
    size_t len;
    *out = NULL;
    KvlModel *m = xcalloc(1, sizeof *m);
    if (!m) return -1;
    path_join(path, sizeof path, dir, "config.json");
    if (read_file(path, &text, &len)) { free(m); return -1; }
    int r = kvl_config_parse(&m->config, text, len, path);
    free(text);
    if (r) { free(m); return -1; }
    const KvlConfig *c = &m->config;
    WeightSpec specs[MAX_WEIGHT_SPECS];
    int n_specs = weight_specs(c, &m->w, specs);
    if (model_alloc(m, specs, n_specs)) { free(m); return error_wrap("%s: the weights", dir); }

    ShardSet *shards = xcalloc(1, sizeof *shards);
    if (!shards || shards_open(shards, dir)) { free(shards); kvl_model_free(m); return -1; }
    r = check_no_extra_tensors(shards, c, specs, n_specs);
    for (int i = 0; i < n_specs && !r; i++) {
        float *p = *specs[i].ptr;
        int copies = specs[i].per_layer ? c->n_layers : 1;
        size_t each = (size_t)specs[i].rows * (specs[i].cols ? specs[i].cols : 1);
        for (int l = 0; l < copies && !r; l++) {
            char name[128];
            const char *dtype = "";
            snprintf(name, sizeof name, specs[i].name, l);
            r = load_tensor(shards, name, specs[i].rows, specs[i].cols, p, &dtype);
            if (!r && !strstr(m->file_dtype, dtype)) {       /* e.g. "BF16" or "BF16+F32" */
                if (m->file_dtype[0]) strncat(m->file_dtype, "+", sizeof m->file_dtype - strlen(m->file_dtype) - 1);
                strncat(m->file_dtype, dtype, sizeof m->file_dtype - strlen(m->file_dtype) - 1);
            }
            p += each;
        }
    }
    shards_close(shards);
    free(shards);
    if (r) { kvl_model_free(m); return -1; }
    *out = m;
    return 0;
}

void kvl_model_free(KvlModel *m)
{
    if (!m) return;
    scratch_free(m->scratch);
    free(m->memory);
    free(m);
}

int kvl_cache_init(KvlCache *c, const KvlConfig *config, int max_tokens)
{
    memset(c, 0, sizeof *c);
    if (max_tokens < 1) return fail("KV cache: capacity must be at least 1 token");
    if (max_tokens > config->max_positions)
        return fail("KV cache: %d tokens exceed the model's %d positions (max_position_embeddings)", max_tokens, config->max_positions);
    c->n_layers = config->n_layers;
    c->n_kv_heads = config->n_kv_heads;
    c->head_dim = config->head_dim;
    c->max_tokens = max_tokens;
    size_t n = 0;
    if (mul_size((size_t)config->n_layers * config->n_kv_heads * config->head_dim, (size_t)max_tokens, &n)) return -1;
    c->k = xcalloc(n, sizeof(float));
    c->v = xcalloc(n, sizeof(float));
    if (!c->k || !c->v) { kvl_cache_free(c); return error_wrap("KV cache of %d tokens", max_tokens); }
    return 0;
}

void kvl_cache_free(KvlCache *c)
{
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

static int cache_fits(const KvlCache *cache, const KvlConfig *c)
{
    return cache->n_layers == c->n_layers && cache->n_kv_heads == c->n_kv_heads && cache->head_dim == c->head_dim;
}

/* src's first n positions into dst, a cache of the same shape with room for them (a
   cartridge into the student's cache, or into a new one). */
static void cache_copy_into(KvlCache *dst, const KvlCache *src, int n)
{
    size_t heads = (size_t)src->n_layers * src->n_kv_heads, HD = (size_t)src->head_dim;
    for (size_t h = 0; h < heads; h++) {
        memcpy(dst->k + h * dst->max_tokens * HD, src->k + h * src->max_tokens * HD, sizeof(float) * n * HD);
        memcpy(dst->v + h * dst->max_tokens * HD, src->v + h * src->max_tokens * HD, sizeof(float) * n * HD);
    }
    dst->n_tokens = n;
}

/* dst: a new cache for model config c holding src's first n positions, with room for
   `room` more. */
static int cache_copy(KvlCache *dst, const KvlCache *src, const KvlConfig *c, int n, int room)
{
    memset(dst, 0, sizeof *dst);
    if (!cache_fits(src, c)) return fail("KV cache: made for another model shape");
    if (src->n_evicted) return fail("KV cache: an evicted cache's slots are not its positions: not copied");
    if (kvl_cache_init(dst, c, n + room)) return -1;
    cache_copy_into(dst, src, n);
    return 0;
}

/* A fingerprint of a model: its shape and a sample of its weights' bits, hashed with
   FNV-1a. Cache files carry it, so that a cache recorded with another model is refused. */
static void model_fingerprint(const KvlModel *m, char out[17])
{
    const KvlConfig *c = &m->config;
    uint64_t h = 0xcbf29ce484222325ull;
    int dims[] = {c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab_size, (int)c->arch};
    unsigned char b[4];
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        write_u32_le(b, (uint32_t)dims[i]);
        for (int k = 0; k < 4; k++) h = (h ^ b[k]) * 0x100000001b3ull;
    }
    for (size_t i = 0; i < m->n_params; i += 997) {
        write_u32_le(b, bits_from_f32(m->memory[i]));
        for (int k = 0; k < 4; k++) h = (h ^ b[k]) * 0x100000001b3ull;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* The KV cache as a file: layers.N.k and layers.N.v, [KVH, T, HD] each, and tokens
   (I32 [T]); the metadata names the model (fingerprint) and the prefix length. */
int kvl_cache_save(const KvlCache *cache, const KvlModel *m, const int *tokens, int n_prefix, KvlDtype dtype, const char *path)
{
    int L = cache->n_layers, T = cache->n_tokens, KVH = cache->n_kv_heads, HD = cache->head_dim;
    if (cache->n_evicted) return fail("%s: an evicted cache's positions are not its slots: not saved", path);
    KvlTensorOut *ts = xcalloc((size_t)2 * L + 1, sizeof *ts);
    char *names = xcalloc((size_t)2 * L, 32);
    float *packed = xmalloc(sizeof(float) * 2 * (size_t)L * KVH * T * HD + 1);
    if (!ts || !names || !packed) { free(ts); free(names); free(packed); return error_wrap("%s", path); }
    /* the cache holds max_tokens positions per head; the file holds the T filled ones */
    for (int l = 0; l < L; l++)
        for (int kv = 0; kv < 2; kv++) {
            float *dst = packed + ((size_t)(2 * l + kv)) * KVH * T * HD;
            const float *src = kv ? cache->v : cache->k;
            for (int h = 0; h < KVH; h++)
                memcpy(dst + (size_t)h * T * HD, src + (((size_t)l * KVH + h) * cache->max_tokens) * HD, sizeof(float) * T * HD);
            char *name = names + (size_t)(2 * l + kv) * 32;
            snprintf(name, 32, "layers.%d.%c", l, kv ? 'v' : 'k');
            KvlTensorOut t = {name, dtype, 3, {KVH, T, HD}, dst};
            ts[2 * l + kv] = t;
        }
    KvlTensorOut tok = {"tokens", KVL_I32, 1, {T}, tokens};
    ts[2 * L] = tok;
    char fingerprint[17], prefix[16];
    model_fingerprint(m, fingerprint);
    snprintf(prefix, sizeof prefix, "%d", n_prefix);
    const char *mk[4] = {"format", "kvlora_version", "model_fingerprint", "prefix_length"};
    const char *mv[4] = {"kvlora cache", KVL_VERSION, fingerprint, prefix};
    int r = kvl_st_write(path, ts, 2 * L + 1, mk, mv, 4);
    free(ts);
    free(names);
    free(packed);
    return r;
}

/* Reads a cache file written by kvl_cache_save for this model into a fresh cache with
   room for extra more tokens; *tokens (allocated) gets its ids, *n_prefix the prefix length. */
int kvl_cache_load(KvlCache *cache, const KvlModel *m, const char *path, int extra, int **tokens, int *n_tokens, int *n_prefix)
{
    const KvlConfig *c = &m->config;
    KvlSafetensors st;
    *tokens = NULL;
    memset(cache, 0, sizeof *cache);           /* the error paths free it */
    if (kvl_st_open(&st, path)) return -1;
    char fingerprint[17];
    model_fingerprint(m, fingerprint);
    const char *format = kvl_st_meta(&st, "format"), *fp = kvl_st_meta(&st, "model_fingerprint"), *pl = kvl_st_meta(&st, "prefix_length");
    const KvlTensorInfo *tt = kvl_st_find(&st, "tokens");
    long long prefix = -1;
    int r = -1;
    if (!format || strcmp(format, "kvlora cache") != 0) { fail("%s: not a kvlora cache (no __metadata__ format \"kvlora cache\")", path); goto done; }
    if (!fp || strcmp(fp, fingerprint) != 0) { fail("%s: the cache was recorded with another model (fingerprint %s, this model's is %s)", path, fp ? fp : "none", fingerprint); goto done; }
    if (!tt || tt->n_dims != 1 || tt->shape[0] < 1 || tt->shape[0] > c->max_positions) { fail("%s: bad or missing 'tokens'", path); goto done; }
    int T = (int)tt->shape[0];
    if (!pl || parse_ids(pl, tokens, n_tokens) || *n_tokens != 1 || (prefix = (*tokens)[0]) > T) { fail("%s: bad prefix_length", path); goto done; }
    free(*tokens);
    *tokens = xmalloc(sizeof(int) * T);
    if (!*tokens || kvl_cache_init(cache, c, T + extra > c->max_positions ? c->max_positions : T + extra)) goto done;
    if (kvl_st_read_i32(&st, tt, *tokens)) goto done;
    for (int i = 0; i < T; i++)
        if ((*tokens)[i] < 0 || (*tokens)[i] >= c->vocab_size) { fail("%s: token %d outside the vocabulary", path, (*tokens)[i]); goto done; }
    float *plane = xmalloc(sizeof(float) * (size_t)c->n_kv_heads * T * c->head_dim);
    if (!plane) goto done;
    for (int l = 0; l < c->n_layers; l++)
        for (int kv = 0; kv < 2; kv++) {
            char name[32];
            snprintf(name, sizeof name, "layers.%d.%c", l, kv ? 'v' : 'k');
            const KvlTensorInfo *t = kvl_st_find(&st, name);
            if (!t || t->n_dims != 3 || t->shape[0] != c->n_kv_heads || t->shape[1] != T || t->shape[2] != c->head_dim) {
                fail("%s: tensor '%s' is missing or not [%d, %d, %d]", path, name, c->n_kv_heads, T, c->head_dim);
                free(plane);
                goto done;
            }
            if (kvl_st_read_f32(&st, t, plane)) { free(plane); goto done; }
            float *dst = kv ? cache->v : cache->k;
            for (int h = 0; h < c->n_kv_heads; h++)
                memcpy(dst + (((size_t)l * c->n_kv_heads + h) * cache->max_tokens) * c->head_dim, plane + (size_t)h * T * c->head_dim,
                       sizeof(float) * T * c->head_dim);
        }
    free(plane);
    cache->n_tokens = T;
    *n_tokens = T;
    *n_prefix = (int)prefix;
    r = 0;
done:
    if (r) { free(*tokens); *tokens = NULL; kvl_cache_free(cache); }
    kvl_st_close(&st);
    return r;
}

/* config.json for a model of shape c, as transformers writes a LlamaForCausalLM's
   (only for what kvl_config_parse reads back the same: Llama without biases or q/k norms).
   A model without a BOS or EOS token (id -1) gets null, as transformers writes None. */
static int config_json(const KvlConfig *c, Buf *b)
{
    char bos[16] = "null", eos[16] = "null";
    if (c->qkv_bias || c->qk_norm || c->sliding_window || c->rope_llama3) return fail("config.json: only plain Llama shapes are written");
    if (c->bos_token_id >= 0) snprintf(bos, sizeof bos, "%d", c->bos_token_id);
    if (c->eos_token_id >= 0) snprintf(eos, sizeof eos, "%d", c->eos_token_id);
    return buf_printf(b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
                         "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                         "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
                         "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n"
                         "  \"rope_theta\": %.9g,\n  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": %s,\n  \"eos_token_id\": %s,\n"
                         "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"mlp_bias\": false,\n  \"torch_dtype\": \"float32\"\n}\n",
                      c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_positions,
                      c->rms_eps, c->rope_theta, c->tie_embeddings ? "true" : "false", bos, eos);
}

/* Writes a model directory: the model's weights, float32, under their Hugging Face names,
   and src_dir's config.json and tokenizer.json (if any); src_dir NULL: a config.json
   written from m->config, and no tokenizer. */
int kvl_model_save(const KvlModel *m, const char *src_dir, const char *out_dir)
{
    const KvlConfig *c = &m->config;
    KvlWeights w = m->w;
    WeightSpec specs[MAX_WEIGHT_SPECS];
    int n_specs = weight_specs(c, &w, specs), n = 0;
    for (int i = 0; i < n_specs; i++) n += specs[i].per_layer ? c->n_layers : 1;
    KvlTensorOut *ts = xcalloc((size_t)n, sizeof *ts);
    char *names = xcalloc((size_t)n, 128);
    char from[4096], to[4096];
    int r = -1;
    if (!ts || !names || make_dir(out_dir)) goto done;
    int k = 0;
    for (int i = 0; i < n_specs; i++) {
        int copies = specs[i].per_layer ? c->n_layers : 1;
        size_t each = (size_t)specs[i].rows * (specs[i].cols ? specs[i].cols : 1);
        for (int l = 0; l < copies; l++, k++) {
            snprintf(names + (size_t)k * 128, 128, specs[i].name, l);
            ts[k].name = names + (size_t)k * 128;
            ts[k].dtype = KVL_F32;
            ts[k].n_dims = specs[i].cols ? 2 : 1;
            ts[k].shape[0] = specs[i].rows;
            ts[k].shape[1] = specs[i].cols;
            ts[k].data = *specs[i].ptr + (size_t)l * each;
        }
    }
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    path_join(to, sizeof to, out_dir, "model.safetensors");
    if (kvl_st_write(to, ts, n, mk, mv, 1)) goto done;
    path_join(to, sizeof to, out_dir, "config.json");
    if (!src_dir) {
        Buf config = {0};
        r = config_json(c, &config) || write_text_file(to, config.data) ? -1 : 0;
        free(config.data);
        goto done;
    }
    path_join(from, sizeof from, src_dir, "config.json");
    if (copy_file(from, to)) goto done;
    path_join(from, sizeof from, src_dir, "tokenizer.json");
    path_join(to, sizeof to, out_dir, "tokenizer.json");
    if (file_exists(from) && copy_file(from, to)) goto done;
    r = 0;
done:
    free(ts);
    free(names);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* 6. Layers: forward and backward                                                      */
/*                                                                                      */
/* The kernels of a decoder layer, each x_forward followed by its x_backward, as llm.c  */
/* lays out train_gpt2.c: the matmul, the embedding, RMSNorm (and Qwen3's per-head q/k  */
/* norms), RoPE, attention, a linear layer with its LoRA adapter, SwiGLU, and one whole */
/* layer. The forward pass (section 7) runs the forwards; the student (section 8) runs  */
/* both. Each backward opens with its derivative. Arguments come in one order: outputs, */
/* values saved for the backward, inputs, weights, sizes (scratch last); a backward     */
/* mirrors its forward with d names and adds to its gradients with += unless its first  */
/* comment line says it overwrites.                                                     */

/* The matmul of every linear layer: out[t][o] = sum_i x[t][i] w[o][i] + b[o].
   x is [T][in], w is [out][in] (nn.Linear's layout), b is [out] or NULL.

   kvl_matmul_naive is the definition: each output starts at 0, adds x[t][i] w[o][i] for
   i = 0, 1, ... in turn, then adds the bias. matmul computes exactly the same sums in
   exactly the same order, faster (Appendix A), so the two agree bit for bit. */
void kvl_matmul_naive(float *out, const float *x, const float *w, const float *b, int T, int in, int n_out)
{
    for (int t = 0; t < T; t++)
        for (int o = 0; o < n_out; o++) {
            float sum = 0.0f;
            for (int i = 0; i < in; i++) sum += x[(size_t)t * in + i] * w[(size_t)o * in + i];
            out[(size_t)t * n_out + o] = b ? sum + b[o] : sum;
        }
}

/* The product behind matmul and the backward's products:
       out[t][n] (+)= sum_k x[t][k] w(k, n)      for t < T, n < N, summed over k = 0, 1, ... in turn,
   with w(k, n) = w[n][k] when w_is_nk (nn.Linear's [out][in]: the forward) and w[k][n]
   otherwise (the backward's dx = dy W). With accumulate the sums go on from what out holds.
   Each output is summed in kvl_matmul_naive's order, so the two agree bit for bit;
   Appendix A computes it fast. */
static void gemm(float *out, const float *x, const float *w, int T, int K, int N, int w_is_nk, int accumulate);

/* kvl_matmul_naive's result, through gemm. */
static void matmul(float *out, const float *x, const float *w, const float *b, int T, int in, int n_out)
{
    gemm(out, x, w, T, in, n_out, 1, 0);
    if (b)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < n_out; o++) out[(size_t)t * n_out + o] += b[o];
}

/* The matmul's backward. For out = x W^T: dx += dy W, which is gemm(dx, dy, w, T, n_out, in,
   0, 1), and the weight's gradient
       dw[o][i] += scale * sum_t dy[t][o] x[t][i]
   from the output gradient dy [T][O] and the input x [T][I]. matmul_weight_backward is its
   plain loop (threads split the rows o); weight_backward below computes the same sums. */
static void matmul_weight_backward(float *dw, const float *dy, const float *x, float scale, int T, int O, int I)
{
    PARALLEL_FOR
    for (int o = 0; o < O; o++)
        for (int t = 0; t < T; t++) {
            float g = dy[(size_t)t * O + o] * scale;
            const float *xt = x + (size_t)t * I;
            float *row = dw + (size_t)o * I;
            for (int i = 0; i < I; i++) row[i] += g * xt[i];
        }
}

/* dw[o][i] += scale * sum_t dy[t][o] x[t][i] as one matmul dw += (scale dy)^T x: dy [T][O]
   is first turned into dy_t [O][T], so that gemm's blocked, thread-independent sums over t
   do the work. The same products summed in the same order as matmul_weight_backward
   (test_weight_backward_matches_loop checks the bits), at the speed of the blocked kernel. */
static void weight_backward(float *dw, const float *dy, const float *x, float scale, int T, int O, int I, float *dy_t)
{
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) dy_t[(size_t)o * T + t] = dy[(size_t)t * O + o] * scale;
    gemm(dw, dy_t, x, O, T, I, 0, 1);
}

/* A dot product with a fixed summation order: eight running partial sums, combined
   pairwise at the end. The order is written out, so the compiler may vectorise it but
   not change it; the result is the same on every machine. */
static float dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* The embedding: token t's vector is row tokens[t] of the table, x[t] = embed[tokens[t]]. */
static void embedding_forward(float *x, const int *tokens, const float *embed, int T, int D)
{
    for (int t = 0; t < T; t++) memcpy(x + (size_t)t * D, embed + (size_t)tokens[t] * D, sizeof(float) * D);
}

/* Embedding backward: x[t] is a copy of row tokens[t], so that row collects its gradient,
       d_embed[tokens[t]] += dx[t]      (a token that occurs twice collects twice). */
static void embedding_backward(float *d_embed, const float *dx, const int *tokens, int T, int D)
{
    for (int t = 0; t < T; t++) {
        float *row = d_embed + (size_t)tokens[t] * D;
        for (int i = 0; i < D; i++) row[i] += dx[(size_t)t * D + i];
    }
}

/* RMSNorm (Zhang & Sennrich 2019), as transformers' LlamaRMSNorm computes it:
   y = x / sqrt(mean(x^2) + eps) * w. The mean is accumulated in double. */
static void rmsnorm_forward(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv_rms = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv_rms * w[i];
}

/* RMSNorm backward. With r = 1 / sqrt(mean(x^2) + eps) and y_i = x_i r w_i,
       dy_i/dx_k = r w_i [i = k] - x_i w_i r^3 x_k / n,
   so  dx_k += r w_k dy_k - x_k r^3 / n * sum_i dy_i w_i x_i,   and  dw_i += dy_i x_i r
   (dw NULL: the weight is not trained). */
static void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0, dot_dy = 0.0;
    for (int i = 0; i < n; i++) {
        ss += (double)x[i] * x[i];
        dot_dy += (double)dy[i] * w[i] * x[i];
    }
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    float k = (float)(dot_dy * r * r * r / n);
    for (int i = 0; i < n; i++) dx[i] += r * w[i] * dy[i] - x[i] * k;
    if (dw)
        for (int i = 0; i < n; i++) dw[i] += dy[i] * x[i] * r;
}

/* q_norm and k_norm (Qwen3): RMSNorm over each of the n_heads head vectors of v
   ([n_heads][HD]), in place, with one weight w [HD] shared by the heads. */
static void head_norm_forward(float *v, const float *w, int n_heads, int HD, float eps)
{
    for (int h = 0; h < n_heads; h++) rmsnorm_forward(v + h * HD, v + h * HD, w, HD, eps);
}

/* Back through q_norm / k_norm, in place on d (rewritten, not added to); dw is added to.
   The norm's input, raw ([n_heads][HD]), is what layer_forward saved before it. */
static void head_norm_backward(float *d, float *dw, const float *raw, const float *w, int n_heads, int HD, float eps, float *d_head)
{
    for (int h = 0; h < n_heads; h++) {
        memset(d_head, 0, sizeof(float) * HD);
        rmsnorm_backward(d_head, dw, d + h * HD, raw + h * HD, w, HD, eps);
        memcpy(d + h * HD, d_head, sizeof(float) * HD);
    }
}

/* Rotary embeddings, Hugging Face's "rotate half" convention: a head vector's first and
   second halves are the two coordinates of HD/2 planes, and pair i turns by the angle
   pos * inv_freq[i], inv_freq[i] = theta^(-2i/HD). Computed in float32 as transformers
   does, so that cos and sin agree to the last bit or two.

   llama3 scaling (Llama 3.1) stretches the long wavelengths: frequencies whose
   wavelength exceeds original_max / low_freq_factor are divided by factor, those below
   original_max / high_freq_factor are kept, and those in between are interpolated. */
static void rope_frequencies(float *inv_freq, const KvlConfig *c)
{
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        if (c->rope_llama3) {
            float old_len = (float)c->rope_original_max_positions;
            float low_wavelen = old_len / c->rope_low_freq_factor, high_wavelen = old_len / c->rope_high_freq_factor;
            float wavelen = 2.0f * (float)3.14159265358979323846 / f;
            float scaled = wavelen > low_wavelen ? f / c->rope_factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float smooth = (old_len / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                scaled = (1.0f - smooth) * scaled / c->rope_factor + smooth * scaled;
            }
            f = scaled;
        }
        inv_freq[i] = f;
    }
}

static void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int pos0, int T, int half)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            float angle = (float)(pos0 + t) * inv_freq[i];
            cos_t[t * half + i] = cosf(angle);
            sin_t[t * half + i] = sinf(angle);
        }
}

/* Rotates each of n_heads head vectors of v ([n_heads][HD]) by the angles of one position. */
static void rope_forward(float *v, const float *cos_t, const float *sin_t, int n_heads, int head_dim)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *a = v + h * head_dim, *b = a + half;
        for (int i = 0; i < half; i++) {
            float x1 = a[i], x2 = b[i];
            a[i] = x1 * cos_t[i] - x2 * sin_t[i];
            b[i] = x2 * cos_t[i] + x1 * sin_t[i];
        }
    }
}

/* RoPE backward, in place on d ([n_heads][HD]), as the forward rotates in place. The
   rotation is orthogonal, so the gradient turns back by -angle: (a, b) -> (a c - b s,
   b c + a s) has transpose (da, db) = (dy_a c + dy_b s, dy_b c - dy_a s). */
static void rope_backward(float *d, const float *cos_t, const float *sin_t, int n_heads, int head_dim)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *a = d + h * head_dim, *b = a + half;
        for (int i = 0; i < half; i++) {
            float da = a[i], db = b[i];
            a[i] = da * cos_t[i] + db * sin_t[i];
            b[i] = db * cos_t[i] - da * sin_t[i];
        }
    }
}

/* The first key a query at position pos sees: 0, or with a sliding window the window's first. */
static int first_key(int pos, const KvlConfig *c)
{
    return c->sliding_window && pos - c->sliding_window + 1 > 0 ? pos - c->sliding_window + 1 : 0;
}

/* Query q's attention probabilities over keys[first .. pos] ([P][HD]), into p[first .. pos]:
   the scores q . k_j / sqrt(HD), less their maximum, exponentiated, over their sum. */
static void attention_probabilities(float *p, const float *q, const float *keys, int first, int pos, int HD)
{
    float scale = 1.0f / sqrtf((float)HD), max_score = -INFINITY, sum = 0.0f;
    for (int j = first; j <= pos; j++) {
        p[j] = dot(q, keys + (size_t)j * HD, HD) * scale;
        if (p[j] > max_score) max_score = p[j];
    }
    for (int j = first; j <= pos; j++) {
        p[j] = expf(p[j] - max_score);
        sum += p[j];
    }
    for (int j = first; j <= pos; j++) p[j] /= sum;
}

/* Causal attention of T new queries over the cache (which already holds their own keys):
   for head h, query t at position pos = pos0 + t attends to the positions j <= pos
   (and j > pos - window with a sliding window),
       p_tj = softmax_j(q_t . k_j / sqrt(HD)),   out_t = sum_j p_tj v_j,
   with key/value head h / (H / KVH) (grouped-query attention). The probabilities of head h,
   query t are written at att + h * head_stride + t * row_stride (row_stride 0: one row per
   head, reused); the student keeps them all for the backward. Threads split the heads.
   This is the definition; the forward pass runs attention_forward_blocked below. */
static void attention_forward(float *out, float *att, size_t head_stride, size_t row_stride, const float *q,
                              const KvlCache *cache, int layer, int pos0, int T, const KvlConfig *c)
{
    int H = c->n_heads, HD = c->head_dim, group = c->n_heads / c->n_kv_heads;
    PARALLEL_FOR
    for (int h = 0; h < H; h++) {
        size_t head_offset = ((size_t)layer * c->n_kv_heads + h / group) * cache->max_tokens * HD;
        const float *keys = cache->k + head_offset, *values = cache->v + head_offset;
        for (int t = 0; t < T; t++) {
            int pos = pos0 + t, first = first_key(pos, c);
            float *p = att + h * head_stride + t * row_stride, *o = out + ((size_t)t * H + h) * HD;
            attention_probabilities(p, q + ((size_t)t * H + h) * HD, keys, first, pos, HD);
            for (int d = 0; d < HD; d++) o[d] = 0.0f;
            for (int j = first; j <= pos; j++) {
                const float *vj = values + (size_t)j * HD;
                for (int d = 0; d < HD; d++) o[d] += p[j] * vj[d];
            }
        }
    }
}

/* attention_forward's very sums, faster (Appendix A): blocks of queries share each block
   of keys while it is in cache, several keys' dot products run side by side, and threads
   split jobs of (some query heads of a key/value group, query block). att, head_stride
   and row_stride as above; or, with att NULL, the probabilities are not kept and each
   thread writes its score rows at att_rows + thread * head_stride (attention_job_heads x
   ATT_QUERIES rows), row_stride floats apart. test.c's attention_blocked_matches_plain
   checks the bits. */
#define ATT_QUERIES 16          /* queries of each head in a job */
#define ATT_MAX_HEAD_DIM 256    /* wider heads take the plain loop's dot(), as does a job of one query */

/* The query heads of a key/value group read the same keys: a job takes the same queries
   of as many of them as fit one head of ATT_MAX_HEAD_DIM (head dims rounded up to 8), so
   that each block of keys is read once for them all. Each thread's score rows are then
   [attention_job_heads][ATT_QUERIES][keys]. */
static int attention_job_heads(const KvlConfig *c)
{
    int group = c->n_heads / c->n_kv_heads, HD8 = (c->head_dim + 7) / 8 * 8;
    int fit = HD8 <= ATT_MAX_HEAD_DIM ? ATT_MAX_HEAD_DIM / HD8 : 1;
    return group < fit ? group : fit;
}

static void attention_forward_blocked(float *out, float *att, float *att_rows, size_t head_stride, size_t row_stride,
                                      const float *q, const KvlCache *cache, int layer, int pos0, int T, const KvlConfig *c);

/* Attention backward; writes d_q, d_k and d_v (does not add to them). For
   o_t = sum_j p_tj v_j, p_t = softmax_j(s_tj), s_tj = q_t . k_j / sqrt(HD):
       dv_j  += sum_t p_tj do_t            dp_tj = do_t . v_j
       ds_tj  = p_tj (dp_tj - sum_j' p_tj' dp_tj')           (the softmax Jacobian)
       dq_t  += sum_j ds_tj k_j / sqrt(HD)   dk_j += sum_t ds_tj q_t / sqrt(HD)
   A key/value head collects from every query head of its group, so threads split the
   key/value heads (each sum keeps one order whatever the thread count). This is the
   student's case: queries at positions n_past .. n_past + T - 1 over the n_past + T keys
   the cache holds (n_past: keys before the student's tokens, a cartridge's; usually 0),
   att as attention_forward keeps it (head h, query t at att + h * head_stride + t * row_stride).
   d_q is [T][H*HD]; d_k and d_v are [KVH][n_past + T][HD], the cache's layout; d_p is
   [H][n_past + T] scratch. */
static void attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *att, size_t head_stride,
                               size_t row_stride, const float *q, const KvlCache *cache, int layer, int n_past, int T,
                               const KvlConfig *c, float *d_p)
{
    int H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, group = H / KVH, n_keys = n_past + T;
    float scale = 1.0f / sqrtf((float)HD);
    PARALLEL_FOR
    for (int g = 0; g < KVH; g++) {
        size_t head_offset = ((size_t)layer * KVH + g) * cache->max_tokens * HD;
        const float *keys = cache->k + head_offset, *values = cache->v + head_offset;
        float *dk = d_k + (size_t)g * n_keys * HD, *dv = d_v + (size_t)g * n_keys * HD;
        memset(dk, 0, sizeof(float) * n_keys * HD);
        memset(dv, 0, sizeof(float) * n_keys * HD);
        for (int h = g * group; h < (g + 1) * group; h++) {
            float *dp = d_p + (size_t)h * n_keys;
            for (int t = 0; t < T; t++) {
                const float *p = att + h * head_stride + t * row_stride;
                const float *do_t = d_out + ((size_t)t * H + h) * HD, *qt = q + ((size_t)t * H + h) * HD;
                float *dqt = d_q + ((size_t)t * H + h) * HD;
                int pos = n_past + t, first = first_key(pos, c);
                float p_dot_dp = 0.0f;
                for (int j = first; j <= pos; j++) {
                    dp[j] = dot(do_t, values + (size_t)j * HD, HD);
                    p_dot_dp += p[j] * dp[j];
                    for (int d = 0; d < HD; d++) dv[(size_t)j * HD + d] += p[j] * do_t[d];
                }
                for (int d = 0; d < HD; d++) dqt[d] = 0.0f;
                for (int j = first; j <= pos; j++) {
                    float ds = p[j] * (dp[j] - p_dot_dp) * scale;
                    for (int d = 0; d < HD; d++) {
                        dqt[d] += ds * keys[(size_t)j * HD + d];
                        dk[(size_t)j * HD + d] += ds * qt[d];
                    }
                }
            }
        }
    }
}

/* The attention each key receives, for the eviction policies of section 11 (H2O, SnapKV
   rank keys by it): mass[g][j] += p_tj over the T queries at positions pos0 + t >= from and
   the query heads of key/value head g, with attention_forward's probabilities, computed
   again (rows: a row of scratch per thread, row_stride floats apart). mass is [KVH][P] of
   layer `layer`, P = cache->max_tokens. Threads split the key/value heads. */
static void attention_mass(float *mass, float *rows, size_t row_stride, const float *q, const KvlCache *cache, int layer,
                           int pos0, int T, int from, const KvlConfig *c)
{
    int H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, group = H / KVH;
    PARALLEL_FOR
    for (int g = 0; g < KVH; g++) {
        const float *keys = cache->k + ((size_t)layer * KVH + g) * cache->max_tokens * HD;
        float *p = rows + thread_index() * row_stride, *m = mass + (size_t)g * cache->max_tokens;
        for (int t = pos0 < from ? from - pos0 : 0; t < T; t++)
            for (int h = g * group; h < (g + 1) * group; h++) {
                int pos = pos0 + t, first = first_key(pos, c);
                attention_probabilities(p, q + ((size_t)t * H + h) * HD, keys, first, pos, HD);
                for (int j = first; j <= pos; j++) m[j] += p[j];
            }
    }
}

/* A linear layer of the model, with its LoRA adapter when one is attached:
       y = W x + b + scale * B (A x)      (PEFT: base(x) + lora_B(lora_A(x)) * scaling)
   u receives A x ([T][R]), which the backward pass needs; tmp is [T][n_out] scratch. */
static void linear_forward(float *out, float *u, const float *x, const float *w, const float *b,
                           const KvlLora *lora, KvlTarget target, int layer, int T, int in, int n_out, float *tmp)
{
    matmul(out, x, w, b, T, in, n_out);
    if (!lora || !lora->has[target]) return;
    int R = lora->rank;
    matmul(u, x, lora->A[target] + (size_t)layer * R * in, NULL, T, in, R);
    matmul(tmp, u, lora->B[target] + (size_t)layer * n_out * R, NULL, T, R, n_out);
    for (size_t i = 0; i < (size_t)T * n_out; i++) out[i] += tmp[i] * lora->scale;
}

/* Linear layer backward, y = W x + b + s B (A x) with u = A x:
       dx += dy W + du A,   du = s dy B,   dB += s dy^T u,   dA += du^T x,
       dW += dy^T x,  db += sum_t dy_t   (only when pretraining: dw non-NULL; db when b exists).
   dA and dB are added to dlora (same layout as lora). du ([T][R]) and dy_t are scratch. */
static void linear_backward(float *dx, float *dw, float *db, KvlLora *dlora, const float *dy, const float *u,
                            const float *x, const float *w, const KvlLora *lora, KvlTarget target, int layer,
                            int T, int in, int n_out, float *du, float *dy_t)
{
    gemm(dx, dy, w, T, n_out, in, 0, 1);
    if (dw) weight_backward(dw, dy, x, 1.0f, T, n_out, in, dy_t);
    for (int t = 0; db && t < T; t++)
        for (int o = 0; o < n_out; o++) db[o] += dy[(size_t)t * n_out + o];
    if (!lora || !lora->has[target]) return;
    int R = lora->rank;
    const float *A = lora->A[target] + (size_t)layer * R * in, *B = lora->B[target] + (size_t)layer * n_out * R;
    float *dA = dlora->A[target] + (size_t)layer * R * in, *dB = dlora->B[target] + (size_t)layer * n_out * R;
    gemm(du, dy, B, T, n_out, R, 0, 0);
    for (size_t i = 0; i < (size_t)T * R; i++) du[i] *= lora->scale;
    weight_backward(dB, dy, u, lora->scale, T, n_out, R, dy_t);
    weight_backward(dA, du, x, 1.0f, T, R, in, dy_t);
    gemm(dx, du, A, T, R, in, 0, 1);
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* SwiGLU, the MLP's gate (Shazeer 2020): hidden = silu(gate) * up, elementwise over n,
   silu(g) = g sigmoid(g). Threads split the elements: an exponential each is too much
   work for one thread to do alone. */
static void swiglu_forward(float *hidden, const float *gate, const float *up, size_t n)
{
    PARALLEL_FOR
    for (size_t i = 0; i < n; i++) hidden[i] = silu(gate[i]) * up[i];
}

/* SwiGLU backward; writes d_gate and d_up (does not add to them). For h = silu(g) u:
       dg = dh u silu'(g),  silu'(g) = sigmoid(g) (1 + g (1 - sigmoid(g))),   du = dh silu(g). */
static void swiglu_backward(float *d_gate, float *d_up, const float *d_hidden, const float *gate, const float *up, size_t n)
{
    PARALLEL_FOR
    for (size_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + expf(-gate[i]));
        d_gate[i] = d_hidden[i] * up[i] * sig * (1.0f + gate[i] * (1.0f - sig));
        d_up[i] = d_hidden[i] * gate[i] * sig;
    }
}

/* Where one layer's forward pass writes its activations. The forward pass points every
   layer at the same scratch; the student (section 8) gives each layer its own slice, and
   asks for the copies the backward needs (res_*, q_raw, k_raw: NULL when not wanted). */
typedef struct {
    float *res_attn, *res_mlp;      /* [T][D] the residual stream entering each block, or NULL */
    float *xn_attn, *xn_mlp;        /* [T][D] its RMSNorm */
    float *q, *k, *v;               /* [T][H*HD], [T][KVH*HD] x2 */
    float *q_raw, *k_raw;           /* q and k before q_norm/k_norm (Qwen3), or NULL */
    float *att;                     /* attention probabilities, see attention_forward; or NULL: */
    float *att_rows;                /* not kept, each thread's score rows, see attention_forward_blocked */
    size_t att_head_stride, att_row_stride;
    float *att_out;                 /* [T][H*HD] */
    float *gate, *up, *hidden;      /* [T][F] */
    float *delta;                   /* [T][D] a block's output before it joins the residual */
    float *u[KVL_N_TARGETS];        /* [T][R] A x of each adapted layer */
    float *lora_tmp;                /* [T][max(H*HD, F, D)] */
    const float *rope_cos, *rope_sin;   /* [T][HD/2] the rotation of each token's position */
    /* The T tokens are one sequence (n_seqs 0), or n_seqs sequences of seq_len[s] tokens one
       after another (the student's pass over several probes), each from position pos0 and
       reading only its own keys. */
    int n_seqs;
    const int *seq_len;
} LayerBuffers;

/* The gradients one layer's backward works in: scratch, reused by every layer. */
typedef struct {
    float *d_xn;                    /* [T][D] of a block's normalised input */
    float *d_att_out;               /* [T][H*HD] */
    float *d_q;                     /* [T][H*HD] */
    float *d_k, *d_v;               /* [KVH][n_past + a sequence's tokens][HD], the cache's layout */
    float *d_k_rows, *d_v_rows;     /* [T][KVH*HD] the same, all the sequences, in the projections' layout */
    float *d_p;                     /* [H][n_past + a sequence's tokens] */
    int n_past;                     /* keys before the tokens (a cartridge's), see attention_backward */
    KvlCache *d_past;               /* NULL, or where d loss / d those keys and values go (the cache's layout) */
    float *d_gate, *d_up, *d_hidden;    /* [T][F] */
    float *d_u;                     /* [T][R] */
    float *d_head;                  /* [HD] one head's gradient through q_norm / k_norm */
    float *dy_t;                    /* a linear layer's output gradient, transposed */
} LayerGrads;

/* Layer l on T tokens at positions pos0 ... : x (the residual stream, [T][D]) gets
       x += Attention(RMSNorm(x));  x += MLP(RMSNorm(x))
   and the tokens' keys and values go into the cache. Its two blocks, the first:
       n = RMSNorm(x);  x += o(attention(rope(q(n)), rope(k(n)), v(n)))   (with the cache)
   in three steps: the queries, keys and values of the tokens; attention over the cache;
   the output projection. The first and last serve batched decoding (section 7) too. */
static void attention_inputs(const float *x, const LayerBuffers *b, const KvlModel *m, int l, int T)
{
    const KvlConfig *c = &m->config;
    const KvlWeights *w = &m->w;
    const KvlLora *lora = m->lora;
    int D = c->dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim;
    int QD = H * HD, KD = KVH * HD, half = HD / 2;
    if (b->res_attn) memcpy(b->res_attn, x, sizeof(float) * T * D);
    PARALLEL_FOR
    for (int t = 0; t < T; t++) rmsnorm_forward(b->xn_attn + (size_t)t * D, x + (size_t)t * D, w->attn_norm + (size_t)l * D, D, c->rms_eps);
    linear_forward(b->q, b->u[KVL_Q_PROJ], b->xn_attn, w->wq + (size_t)l * QD * D, w->bq ? w->bq + (size_t)l * QD : NULL, lora, KVL_Q_PROJ, l, T, D, QD, b->lora_tmp);
    linear_forward(b->k, b->u[KVL_K_PROJ], b->xn_attn, w->wk + (size_t)l * KD * D, w->bk ? w->bk + (size_t)l * KD : NULL, lora, KVL_K_PROJ, l, T, D, KD, b->lora_tmp);
    linear_forward(b->v, b->u[KVL_V_PROJ], b->xn_attn, w->wv + (size_t)l * KD * D, w->bv ? w->bv + (size_t)l * KD : NULL, lora, KVL_V_PROJ, l, T, D, KD, b->lora_tmp);
    if (b->q_raw) memcpy(b->q_raw, b->q, sizeof(float) * T * QD);
    if (b->k_raw) memcpy(b->k_raw, b->k, sizeof(float) * T * KD);
    for (int t = 0; t < T; t++) {
        float *qt = b->q + (size_t)t * QD, *kt = b->k + (size_t)t * KD;
        if (c->qk_norm) {       /* Qwen3: before the rotation */
            head_norm_forward(qt, w->q_norm + (size_t)l * HD, H, HD, c->rms_eps);
            head_norm_forward(kt, w->k_norm + (size_t)l * HD, KVH, HD, c->rms_eps);
        }
        rope_forward(qt, b->rope_cos + (size_t)t * half, b->rope_sin + (size_t)t * half, H, HD);
        rope_forward(kt, b->rope_cos + (size_t)t * half, b->rope_sin + (size_t)t * half, KVH, HD);
    }
}

/* Token t's key and value (row t of b->k, b->v) into the cache at position pos, layer l
   (the cache is [L][KVH][positions][HD]). */
static void cache_store(KvlCache *cache, const LayerBuffers *b, int l, int t, int pos)
{
    int KVH = cache->n_kv_heads, HD = cache->head_dim;
    for (int h = 0; h < KVH; h++) {
        size_t at = (((size_t)l * KVH + h) * cache->max_tokens + pos) * HD;
        memcpy(cache->k + at, b->k + ((size_t)t * KVH + h) * HD, sizeof(float) * HD);
        memcpy(cache->v + at, b->v + ((size_t)t * KVH + h) * HD, sizeof(float) * HD);
    }
}

/* Sequence s of a pass of several (LayerBuffers' n_seqs) keeps its keys and values in the
   cache's slots from t0, the row of its first token: a view of the cache whose slot 0 is
   slot t0 (the same layout, shifted), so that attention reads the sequence's keys alone. */
static KvlCache cache_from_slot(const KvlCache *cache, int t0)
{
    KvlCache view = *cache;
    view.k += (size_t)t0 * cache->head_dim;
    view.v += (size_t)t0 * cache->head_dim;
    return view;
}

static void attention_output(float *x, const LayerBuffers *b, const KvlModel *m, int l, int T)
{
    const KvlConfig *c = &m->config;
    int D = c->dim, QD = c->n_heads * c->head_dim;
    linear_forward(b->delta, b->u[KVL_O_PROJ], b->att_out, m->w.wo + (size_t)l * D * QD, NULL, m->lora, KVL_O_PROJ, l, T, QD, D, b->lora_tmp);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += b->delta[i];
}

static void attention_block_forward(float *x, KvlCache *cache, const LayerBuffers *b, const KvlModel *m, int l, int pos0, int T)
{
    int QD = m->config.n_heads * m->config.head_dim, n_seqs = b->n_seqs ? b->n_seqs : 1;
    attention_inputs(x, b, m, l, T);
    for (int s = 0, t0 = 0; s < n_seqs; s++) {
        int n = b->n_seqs ? b->seq_len[s] : T;
        KvlCache keys = cache_from_slot(cache, t0);
        for (int t = 0; t < n; t++) cache_store(&keys, b, l, t0 + t, pos0 + t);
        attention_forward_blocked(b->att_out + (size_t)t0 * QD, b->att ? b->att + (size_t)t0 * b->att_row_stride : NULL, b->att_rows,
                                  b->att_head_stride, b->att_row_stride, b->q + (size_t)t0 * QD, &keys, l, pos0, n, &m->config);
        t0 += n;
    }
    if (cache->mass && b->att_rows)             /* (the forward pass's, one sequence; not the student's) */
        attention_mass(cache->mass + (size_t)l * cache->n_kv_heads * cache->max_tokens, b->att_rows, b->att_head_stride, b->q,
                       cache, l, pos0, T, cache->mass_from, &m->config);
    attention_output(x, b, m, l, T);
}

/* The second: n = RMSNorm(x);  x += down(silu(gate(n)) * up(n)) */
static void mlp_block_forward(float *x, const LayerBuffers *b, const KvlModel *m, int l, int T)
{
    const KvlConfig *c = &m->config;
    const KvlWeights *w = &m->w;
    const KvlLora *lora = m->lora;
    int D = c->dim, F = c->ffn_dim;
    if (b->res_mlp) memcpy(b->res_mlp, x, sizeof(float) * T * D);
    PARALLEL_FOR
    for (int t = 0; t < T; t++) rmsnorm_forward(b->xn_mlp + (size_t)t * D, x + (size_t)t * D, w->mlp_norm + (size_t)l * D, D, c->rms_eps);
    linear_forward(b->gate, b->u[KVL_GATE_PROJ], b->xn_mlp, w->w_gate + (size_t)l * F * D, NULL, lora, KVL_GATE_PROJ, l, T, D, F, b->lora_tmp);
    linear_forward(b->up, b->u[KVL_UP_PROJ], b->xn_mlp, w->w_up + (size_t)l * F * D, NULL, lora, KVL_UP_PROJ, l, T, D, F, b->lora_tmp);
    swiglu_forward(b->hidden, b->gate, b->up, (size_t)T * F);
    linear_forward(b->delta, b->u[KVL_DOWN_PROJ], b->hidden, w->w_down + (size_t)l * D * F, NULL, lora, KVL_DOWN_PROJ, l, T, F, D, b->lora_tmp);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += b->delta[i];
}

static void layer_forward(float *x, KvlCache *cache, const LayerBuffers *b, const KvlModel *m, int l, int pos0, int T)
{
    attention_block_forward(x, cache, b, m, l, pos0, T);
    mlp_block_forward(x, b, m, l, T);
}

/* Layer backward, layer_forward read from the bottom up. dx holds d loss / d x for the
   layer's output; each block is x_out = x_in + f(RMSNorm(x_in)), so dx passes through
   unchanged and the block adds the gradient through f and the norm:
       MLP:        f = down(silu(gate(n)) * up(n))
       attention:  f = o(attention(rope(q(n)), rope(k(n)), v(n)))   (Qwen3: q_norm, k_norm before rope)
   b holds what layer_forward saved (the student's slice for layer l), cache the keys and
   values. LoRA gradients are added to dlora, and, when pretraining, the weights' to dw
   (NULL: the weights are frozen). */
static void layer_backward(float *dx, KvlWeights *dw, KvlLora *dlora, const LayerBuffers *b, const KvlCache *cache,
                           const KvlModel *m, int l, int T, const LayerGrads *g)
{
    const KvlConfig *c = &m->config;
    const KvlWeights *w = &m->w;
    const KvlLora *lora = m->lora;
    int D = c->dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, F = c->ffn_dim;
    int QD = H * HD, KD = KVH * HD, half = HD / 2, n_seqs = b->n_seqs ? b->n_seqs : 1;
    /* the gradient of layer l's weight p, or NULL when the weights are frozen */
#define DW(p, size) (dw && dw->p ? dw->p + (size_t)l * (size) : NULL)

    /* MLP block */
    memset(g->d_hidden, 0, sizeof(float) * T * F);
    linear_backward(g->d_hidden, DW(w_down, D * F), NULL, dlora, dx, b->u[KVL_DOWN_PROJ], b->hidden, w->w_down + (size_t)l * D * F,
                    lora, KVL_DOWN_PROJ, l, T, F, D, g->d_u, g->dy_t);
    swiglu_backward(g->d_gate, g->d_up, g->d_hidden, b->gate, b->up, (size_t)T * F);
    memset(g->d_xn, 0, sizeof(float) * T * D);
    linear_backward(g->d_xn, DW(w_gate, F * D), NULL, dlora, g->d_gate, b->u[KVL_GATE_PROJ], b->xn_mlp, w->w_gate + (size_t)l * F * D,
                    lora, KVL_GATE_PROJ, l, T, D, F, g->d_u, g->dy_t);
    linear_backward(g->d_xn, DW(w_up, F * D), NULL, dlora, g->d_up, b->u[KVL_UP_PROJ], b->xn_mlp, w->w_up + (size_t)l * F * D,
                    lora, KVL_UP_PROJ, l, T, D, F, g->d_u, g->dy_t);
    for (int t = 0; t < T; t++)
        rmsnorm_backward(dx + (size_t)t * D, DW(mlp_norm, D), g->d_xn + (size_t)t * D, b->res_mlp + (size_t)t * D,
                         w->mlp_norm + (size_t)l * D, D, c->rms_eps);

    /* attention block */
    memset(g->d_att_out, 0, sizeof(float) * T * QD);
    linear_backward(g->d_att_out, DW(wo, D * QD), NULL, dlora, dx, b->u[KVL_O_PROJ], b->att_out, w->wo + (size_t)l * D * QD,
                    lora, KVL_O_PROJ, l, T, QD, D, g->d_u, g->dy_t);
    for (int s = 0, t0 = 0; s < n_seqs; s++) {         /* each sequence over its own keys */
        int n = b->n_seqs ? b->seq_len[s] : T, n_keys = g->n_past + n;
        KvlCache keys = cache_from_slot(cache, t0);
        attention_backward(g->d_q + (size_t)t0 * QD, g->d_k, g->d_v, g->d_att_out + (size_t)t0 * QD, b->att + (size_t)t0 * b->att_row_stride,
                           b->att_head_stride, b->att_row_stride, b->q + (size_t)t0 * QD, &keys, l, g->n_past, n, c, g->d_p);
        for (int h = 0; h < KVH; h++) {
            for (int t = t0; t < t0 + n; t++) {
                memcpy(g->d_k_rows + (size_t)t * KD + h * HD, g->d_k + ((size_t)h * n_keys + g->n_past + t - t0) * HD, sizeof(float) * HD);
                memcpy(g->d_v_rows + (size_t)t * KD + h * HD, g->d_v + ((size_t)h * n_keys + g->n_past + t - t0) * HD, sizeof(float) * HD);
            }
            if (g->d_past) {                    /* the keys before (one sequence): constants of the layer, gradients out */
                size_t at = ((size_t)l * KVH + h) * g->d_past->max_tokens * HD;
                memcpy(g->d_past->k + at, g->d_k + (size_t)h * n_keys * HD, sizeof(float) * g->n_past * HD);
                memcpy(g->d_past->v + at, g->d_v + (size_t)h * n_keys * HD, sizeof(float) * g->n_past * HD);
            }
        }
        t0 += n;
    }
    for (int t = 0; t < T; t++) {
        float *dq = g->d_q + (size_t)t * QD, *dk = g->d_k_rows + (size_t)t * KD;
        rope_backward(dq, b->rope_cos + (size_t)t * half, b->rope_sin + (size_t)t * half, H, HD);
        rope_backward(dk, b->rope_cos + (size_t)t * half, b->rope_sin + (size_t)t * half, KVH, HD);
        if (c->qk_norm) {
            head_norm_backward(dq, DW(q_norm, HD), b->q_raw + (size_t)t * QD, w->q_norm + (size_t)l * HD, H, HD, c->rms_eps, g->d_head);
            head_norm_backward(dk, DW(k_norm, HD), b->k_raw + (size_t)t * KD, w->k_norm + (size_t)l * HD, KVH, HD, c->rms_eps, g->d_head);
        }
    }
    memset(g->d_xn, 0, sizeof(float) * T * D);
    linear_backward(g->d_xn, DW(wq, QD * D), DW(bq, QD), dlora, g->d_q, b->u[KVL_Q_PROJ], b->xn_attn, w->wq + (size_t)l * QD * D,
                    lora, KVL_Q_PROJ, l, T, D, QD, g->d_u, g->dy_t);
    linear_backward(g->d_xn, DW(wk, KD * D), DW(bk, KD), dlora, g->d_k_rows, b->u[KVL_K_PROJ], b->xn_attn, w->wk + (size_t)l * KD * D,
                    lora, KVL_K_PROJ, l, T, D, KD, g->d_u, g->dy_t);
    linear_backward(g->d_xn, DW(wv, KD * D), DW(bv, KD), dlora, g->d_v_rows, b->u[KVL_V_PROJ], b->xn_attn, w->wv + (size_t)l * KD * D,
                    lora, KVL_V_PROJ, l, T, D, KD, g->d_u, g->dy_t);
    for (int t = 0; t < T; t++)
        rmsnorm_backward(dx + (size_t)t * D, DW(attn_norm, D), g->d_xn + (size_t)t * D, b->res_attn + (size_t)t * D,
                         w->attn_norm + (size_t)l * D, D, c->rms_eps);
#undef DW
}

/* ------------------------------------------------------------------------------------ */
/* 7. The forward pass and generation                                                   */
/*                                                                                      */
/* For each token: embed; per layer, x += Attention(RMSNorm(x)) then x +=               */
/* MLP(RMSNorm(x)); finally logits = lm_head(RMSNorm(x)). Tokens are processed in       */
/* chunks of up to CHUNK_TOKENS so that each weight matrix is read once per chunk       */
/* instead of once per token; the keys and values of every token go into the KV cache,  */
/* and each query attends to the cache up to and including its own position.            */

#define CHUNK_TOKENS 256

struct KvlScratch {
    int max_tokens;       /* T capacity */
    int max_keys;         /* P capacity of one attention row */
    float *x;             /* [T][D] the residual stream */
    float *xb;            /* [T][D] normalised input of the current sublayer */
    float *q;             /* [T][H*HD] */
    float *k;             /* [T][KVH*HD] */
    float *v;             /* [T][KVH*HD] */
    float *att_out;       /* [T][H*HD] attention output before o_proj */
    int att_threads;      /* threads the score rows were made for */
    int job_heads;        /* attention_job_heads */
    float *att;           /* [threads][attention_job_heads][ATT_QUERIES][P] each thread's attention score rows */
    float *gate;          /* [T][F] */
    float *up;            /* [T][F] */
    float *hidden;        /* [T][F] silu(gate) * up */
    float *delta;         /* [T][D] a block's output */
    float *rope_cos;      /* [T][HD/2] */
    float *rope_sin;      /* [T][HD/2] */
    float *inv_freq;      /* [HD/2] rotary frequencies */
    int max_rank;         /* R capacity of the LoRA buffers */
    float *lora_u;        /* [T][R] A x of the current adapted layer */
    float *lora_out;      /* [T][max(H*HD, F, D)] B (A x) before scaling */
};

static void scratch_free(KvlScratch *s)
{
    if (!s) return;
    float **bufs[] = {&s->x, &s->xb, &s->q, &s->k, &s->v, &s->att_out, &s->att, &s->gate, &s->up, &s->hidden,
                      &s->delta, &s->rope_cos, &s->rope_sin, &s->inv_freq, &s->lora_u, &s->lora_out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(*bufs[i]);
    free(s);
}

/* (Re)allocates the activations when a call needs more tokens, keys or LoRA rank than
   they hold. */
static int scratch_reserve(KvlModel *m, int n_tokens, int n_keys)
{
    KvlScratch *s = m->scratch;
    int R = m->lora ? m->lora->rank : 1;
    if (s && s->max_tokens >= n_tokens && s->max_keys >= n_keys && s->max_rank >= R && s->att_threads >= max_threads()) return 0;
    const KvlConfig *c = &m->config;
    int T = n_tokens, P = n_keys;
    if (s) {
        if (s->max_tokens > T) T = s->max_tokens;
        if (s->max_keys > P) P = s->max_keys;
        if (s->max_rank > R) R = s->max_rank;
        scratch_free(s);
        m->scratch = NULL;
    }
    int widest = c->n_heads * c->head_dim;
    if (c->ffn_dim > widest) widest = c->ffn_dim;
    if (c->dim > widest) widest = c->dim;
    s = xcalloc(1, sizeof *s);
    if (!s) return -1;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    s->max_tokens = T;
    s->max_keys = P;
    s->x = xmalloc(sizeof(float) * T * c->dim);
    s->xb = xmalloc(sizeof(float) * T * c->dim);
    s->q = xmalloc(sizeof(float) * T * QD);
    s->k = xmalloc(sizeof(float) * T * KD);
    s->v = xmalloc(sizeof(float) * T * KD);
    s->att_out = xmalloc(sizeof(float) * T * QD);
    s->att_threads = max_threads();
    s->job_heads = attention_job_heads(c);
    s->att = xmalloc(sizeof(float) * s->att_threads * s->job_heads * ATT_QUERIES * P);
    s->gate = xmalloc(sizeof(float) * T * c->ffn_dim);
    s->up = xmalloc(sizeof(float) * T * c->ffn_dim);
    s->hidden = xmalloc(sizeof(float) * T * c->ffn_dim);
    s->delta = xmalloc(sizeof(float) * T * c->dim);
    s->rope_cos = xmalloc(sizeof(float) * T * c->head_dim / 2);
    s->rope_sin = xmalloc(sizeof(float) * T * c->head_dim / 2);
    s->inv_freq = xmalloc(sizeof(float) * c->head_dim / 2);
    s->max_rank = R;
    s->lora_u = xmalloc(sizeof(float) * T * R);
    s->lora_out = xmalloc(sizeof(float) * T * widest);
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att_out || !s->att || !s->gate || !s->up || !s->hidden || !s->delta ||
        !s->rope_cos || !s->rope_sin || !s->inv_freq || !s->lora_u || !s->lora_out) {
        scratch_free(s);
        return error_wrap("activations for %d tokens", T);
    }
    rope_frequencies(s->inv_freq, c);
    m->scratch = s;
    return 0;
}

/* A layer's buffers in the forward pass's scratch: each layer overwrites the last one's,
   and the two norms' outputs share one buffer. */
static LayerBuffers forward_buffers(KvlScratch *s)
{
    LayerBuffers b = {0};
    b.xn_attn = b.xn_mlp = s->xb;
    b.q = s->q; b.k = s->k; b.v = s->v;
    b.att = NULL; b.att_rows = s->att;
    b.att_head_stride = (size_t)s->job_heads * ATT_QUERIES * s->max_keys; b.att_row_stride = (size_t)s->max_keys;
    b.att_out = s->att_out;
    b.gate = s->gate; b.up = s->up; b.hidden = s->hidden;
    b.delta = s->delta;
    for (int k = 0; k < KVL_N_TARGETS; k++) b.u[k] = s->lora_u;
    b.lora_tmp = s->lora_out;
    b.rope_cos = s->rope_cos; b.rope_sin = s->rope_sin;
    return b;
}

/* One chunk of tokens through every layer; writes the chunk's keys and values into the
   cache at positions pos0 .. pos0 + T - 1 and leaves the final residual stream in s->x. */
static void forward_chunk(KvlModel *m, KvlCache *cache, const int *tokens, int T)
{
    const KvlConfig *c = &m->config;
    KvlScratch *s = m->scratch;
    int D = c->dim;
    LayerBuffers b = forward_buffers(s);
    embedding_forward(s->x, tokens, m->w.embed, T, D);
    rope_tables(s->rope_cos, s->rope_sin, s->inv_freq, cache->n_tokens + cache->n_evicted, T, c->head_dim / 2);
    for (int l = 0; l < c->n_layers; l++) layer_forward(s->x, cache, &b, m, l, cache->n_tokens, T);
    cache->n_tokens += T;
}

int kvl_forward(KvlModel *m, KvlCache *cache, const int *tokens, int n_tokens, float *logits, int n_logits)
{
    const KvlConfig *c = &m->config;
    if (n_tokens < 1) return fail("forward: no tokens");
    if (logits && (n_logits < 1 || n_logits > n_tokens)) return fail("forward: n_logits = %d, expected 1..%d", n_logits, n_tokens);
    if (!cache_fits(cache, c)) return fail("forward: the KV cache was made for another model shape");
    if (n_tokens > cache->max_tokens - cache->n_tokens)
        return fail("forward: %d more tokens do not fit the KV cache (%d of %d positions used)", n_tokens, cache->n_tokens, cache->max_tokens);
    if ((int64_t)cache->n_evicted + cache->n_tokens + n_tokens > c->max_positions)
        return fail("forward: %d more tokens after %d read exceed the model's %d positions", n_tokens, cache->n_evicted + cache->n_tokens, c->max_positions);
    for (int t = 0; t < n_tokens; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size) return fail("forward: token id %d at index %d is outside the vocabulary [0, %d)", tokens[t], t, c->vocab_size);
    int chunk = n_tokens < CHUNK_TOKENS ? n_tokens : CHUNK_TOKENS;
    if (scratch_reserve(m, chunk, cache->max_tokens)) return -1;
    KvlScratch *s = m->scratch;
    int first_logit = n_tokens - (logits ? n_logits : 0);
    for (int t0 = 0; t0 < n_tokens; t0 += chunk) {
        int T = n_tokens - t0 < chunk ? n_tokens - t0 : chunk;
        forward_chunk(m, cache, tokens + t0, T);
        /* logits of the wanted positions of this chunk: lm_head(RMSNorm(x)) */
        int from = first_logit > t0 ? first_logit - t0 : 0;
        if (!logits || from >= T) continue;
        for (int t = from; t < T; t++)
            rmsnorm_forward(s->xb + (size_t)(t - from) * c->dim, s->x + (size_t)t * c->dim, m->w.final_norm, c->dim, c->rms_eps);
        matmul(logits + (size_t)(t0 + from - first_logit) * c->vocab_size, s->xb, m->w.lm_head, NULL, T - from, c->dim, c->vocab_size);
    }
    return 0;
}

/* ---- batched decoding: several sequences after one cached context ---- */

/* Each sequence's token is a row of one chunk: the linear layers see a chunk of rows, as
   in prefill, and compute each row's sums as they would alone. Only attention and RoPE
   differ: row r sits at its own position n_shared + tail_len, and reads the shared
   cache's keys and then its own tail's (Appendix A). */
static void attention_forward_batch(float *out, float *att_rows, size_t head_stride, size_t row_stride, const float *q,
                                    const KvlBatch *batch, const int *seq, int layer, int T, const KvlConfig *c);

void kvl_batch_free(KvlBatch *b)
{
    kvl_cache_free(&b->tails);
    free(b->tail_len);
    memset(b, 0, sizeof *b);
}

int kvl_batch_init(KvlBatch *b, const KvlModel *m, const KvlCache *shared, int n_seqs, int max_tail)
{
    memset(b, 0, sizeof *b);
    if (n_seqs < 1 || max_tail < 1) return fail("batch: %d sequences of %d tokens", n_seqs, max_tail);
    if (!cache_fits(shared, &m->config)) return fail("batch: the KV cache was made for another model shape");
    if ((int64_t)shared->n_evicted + shared->n_tokens + max_tail > m->config.max_positions)
        return fail("batch: %d tokens after the cache's %d exceed the model's %d positions", max_tail, shared->n_evicted + shared->n_tokens,
                    m->config.max_positions);
    if ((size_t)n_seqs * max_tail > INT_MAX) return fail("batch: %d sequences of %d tokens are too many", n_seqs, max_tail);
    b->shared = shared;
    b->n_seqs = n_seqs;
    b->max_tail = max_tail;
    KvlConfig tails = m->config;            /* the tails' positions are n_seqs x max_tail slots, not the model's */
    tails.max_positions = n_seqs * max_tail;
    b->tail_len = xcalloc((size_t)n_seqs, sizeof(int));
    if (!b->tail_len || kvl_cache_init(&b->tails, &tails, n_seqs * max_tail)) {
        kvl_batch_free(b);
        return -1;
    }
    return 0;
}

int kvl_forward_batch(KvlModel *m, KvlBatch *batch, const int *tokens, float *logits)
{
    const KvlConfig *c = &m->config;
    int D = c->dim, V = c->vocab_size, half = c->head_dim / 2, n_shared = batch->shared->n_tokens, T = 0;
    for (int b = 0; b < batch->n_seqs; b++) {
        if (tokens[b] >= V) return fail("batch: token id %d of sequence %d is outside the vocabulary [0, %d)", tokens[b], b, V);
        if (tokens[b] >= 0 && batch->tail_len[b] >= batch->max_tail) return fail("batch: sequence %d is full (%d tokens)", b, batch->max_tail);
        T += tokens[b] >= 0;
    }
    if (T == 0) return 0;
    int *seq = xmalloc(sizeof(int) * 2 * (size_t)T), *ids = seq + T;   /* row r: sequence seq[r] reads ids[r] */
    if (!seq || scratch_reserve(m, T, n_shared + batch->max_tail)) { free(seq); return -1; }
    for (int b = 0, r = 0; b < batch->n_seqs; b++)
        if (tokens[b] >= 0) { seq[r] = b; ids[r++] = tokens[b]; }
    KvlScratch *s = m->scratch;
    LayerBuffers lb = forward_buffers(s);
    embedding_forward(s->x, ids, m->w.embed, T, D);
    for (int r = 0; r < T; r++)
        rope_tables(s->rope_cos + (size_t)r * half, s->rope_sin + (size_t)r * half, s->inv_freq, n_shared + batch->shared->n_evicted + batch->tail_len[seq[r]], 1, half);
    for (int l = 0; l < c->n_layers; l++) {
        attention_inputs(s->x, &lb, m, l, T);
        for (int r = 0; r < T; r++) cache_store(&batch->tails, &lb, l, r, seq[r] * batch->max_tail + batch->tail_len[seq[r]]);
        attention_forward_batch(s->att_out, lb.att_rows, lb.att_head_stride, lb.att_row_stride, s->q, batch, seq, l, T, c);
        attention_output(s->x, &lb, m, l, T);
        mlp_block_forward(s->x, &lb, m, l, T);
    }
    for (int r = 0; r < T; r++) batch->tail_len[seq[r]]++;
    if (logits) {
        for (int r = 0; r < T; r++) rmsnorm_forward(s->xb + (size_t)r * D, s->x + (size_t)r * D, m->w.final_norm, D, c->rms_eps);
        matmul(logits, s->xb, m->w.lm_head, NULL, T, D, V);
        for (int r = T - 1; r >= 0; r--)        /* row r to its sequence's row seq[r] >= r */
            if (seq[r] != r) memcpy(logits + (size_t)seq[r] * V, logits + (size_t)r * V, sizeof(float) * V);
    }
    free(seq);
    return 0;
}

/* ---- sampling: from logits to the next token ---- */

/* Greedy decoding takes the first maximum, as torch.argmax does. Sampling divides the    */
/* logits by the temperature, keeps the smallest set of most likely tokens whose          */
/* probability reaches top_p (nucleus sampling, as transformers' TopPLogitsWarper), and  */
/* draws from it with the seeded PRNG.                                                    */

int kvl_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct { float p; int id; } ProbIndex;

/* Sorts by probability, largest first, ties by lower id first (deterministic), as a
   comparison sort with that order would; but in four passes of a stable radix sort on
   the float's bits (for p >= 0 their order as integers is the order of the numbers),
   which is linear in n: sampling sorts a vocabulary per token. tmp holds n entries. */
static void sort_prob_desc(ProbIndex *order, ProbIndex *tmp, int n)
{
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (int i = 0; i < n; i++) {
            uint32_t key;
            memcpy(&key, &order[i].p, sizeof key);
            count[((~key >> shift) & 0xFF) + 1]++;     /* ~key: descending */
        }
        for (int d = 0; d < 256; d++) count[d + 1] += count[d];
        for (int i = 0; i < n; i++) {
            uint32_t key;
            memcpy(&key, &order[i].p, sizeof key);
            tmp[count[(~key >> shift) & 0xFF]++] = order[i];
        }
        memcpy(order, tmp, sizeof *order * (size_t)n);
    }
}

int kvl_sample(float *logits, int n, float temperature, float top_p, KvlRng *rng)
{
    if (temperature <= 0.0f) return kvl_argmax(logits, n);
    double u = kvl_rng_float(rng);     /* one draw per sampled token, always (batched self-study counts on it) */
    float max_logit = logits[kvl_argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        logits[i] = expf((logits[i] - max_logit) / temperature);
        sum += logits[i];
    }
    ProbIndex *order = malloc(sizeof *order * 2 * (size_t)n);
    if (!order) return kvl_argmax(logits, n);  /* out of memory: degrade to greedy */
    for (int i = 0; i < n; i++) { order[i].p = (float)(logits[i] / sum); order[i].id = i; }
    sort_prob_desc(order, order + n, n);
    int keep = n;
    if (top_p > 0.0f && top_p < 1.0f) {
        double cumulative = 0.0;
        for (int i = 0; i < n; i++) {
            cumulative += order[i].p;
            if (cumulative >= top_p) { keep = i + 1; break; }
        }
    }
    double kept = 0.0;
    for (int i = 0; i < keep; i++) kept += order[i].p;
    double r = u * kept, cumulative = 0.0;
    int chosen = order[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        cumulative += order[i].p;
        if (r < cumulative) { chosen = order[i].id; break; }
    }
    free(order);
    return chosen;
}

/* The generation loop: prefill the prompt into a fresh KV cache, then take one token at a
   time: sample it from the last logits, append it, and run it through the model so that
   its K and V join the cache. ids (room for n_prompt + max_new) receives the prompt and
   then each new token; *n_ids counts them. Stops after max_new tokens or at the model's
   eos_token_id (which is kept). on_token, when given, sees the ids after each new token;
   a nonzero return stops the loop and becomes kvl_generate's return value. The last token
   is never run through the model: no one would read its logits. */
int kvl_generate(KvlModel *m, const int *prompt, int n_prompt, int max_new,
                 float temperature, float top_p, uint64_t seed,
                 int *ids, int *n_ids, KvlTokenCallback on_token, void *user)
{
    KvlCache cache = {0};
    *n_ids = 0;
    if (n_prompt < 1 || max_new < 0) return fail("generate: %d prompt tokens and %d new ones", n_prompt, max_new);
    if ((int64_t)n_prompt + max_new > m->config.max_positions)
        return fail("generate: the prompt (%d tokens) and %d new tokens exceed the model's %d positions",
                    n_prompt, max_new, m->config.max_positions);
    if (kvl_cache_init(&cache, &m->config, n_prompt + max_new)) return -1;
    int rc = kvl_generate_after(m, &cache, prompt, n_prompt, max_new, temperature, top_p, seed, ids, n_ids, on_token, user);
    kvl_cache_free(&cache);
    return rc;
}

int kvl_generate_after(KvlModel *m, KvlCache *cache, const int *prompt, int n_prompt, int max_new,
                       float temperature, float top_p, uint64_t seed,
                       int *ids, int *n_ids, KvlTokenCallback on_token, void *user)
{
    const KvlConfig *c = &m->config;
    *n_ids = 0;
    if (n_prompt < 1) return fail("generate: the prompt is empty");
    if (max_new < 0) return fail("generate: max_new is %d, must be >= 0", max_new);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return fail("generate: prompt token %d is %d, outside the vocabulary [0, %d)", i, prompt[i], c->vocab_size);
    int64_t before = (int64_t)cache->n_evicted + cache->n_tokens;
    if (before + n_prompt + max_new > c->max_positions)
        return fail("generate: the cache's %d tokens, the prompt's %d and %d new ones exceed the model's %d positions",
                    (int)before, n_prompt, max_new, c->max_positions);
    if (cache->n_tokens + n_prompt + max_new > cache->max_tokens)
        return fail("generate: the prompt (%d tokens) and %d new tokens do not fit the cache's room (%d of %d positions used)",
                    n_prompt, max_new, cache->n_tokens, cache->max_tokens);
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    if (!logits) return fail("out of memory");
    memcpy(ids, prompt, sizeof(int) * (size_t)n_prompt);
    *n_ids = n_prompt;
    int rc = kvl_forward(m, cache, prompt, n_prompt, logits, 1);
    KvlRng rng;
    kvl_rng_seed(&rng, seed);
    for (int produced = 0; !rc && produced < max_new; produced++) {
        int next = kvl_sample(logits, c->vocab_size, temperature, top_p, &rng);
        ids[(*n_ids)++] = next;
        if (on_token && (rc = on_token(ids, *n_ids, user)) != 0) break;
        if (next == c->eos_token_id) break;
        if (produced + 1 < max_new) rc = kvl_forward(m, cache, &next, 1, logits, 1);
    }
    free(logits);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* 8. The student: the forward pass that keeps its activations, and the backward        */
/*                                                                                      */
/* Distillation trains only the LoRA matrices, but their gradients need the gradient of */
/* the loss with respect to every activation: it flows back from the logits through     */
/* lm_head, the final norm, and each layer's MLP and attention, down the residual       */
/* stream. The student's forward is the forward pass of section 7 from position 0,      */
/* keeping what the backward needs (llm.c's ActivationTensors); its backward runs       */
/* section 6's layer_backward from the last layer to the first. A pass may read several */
/* sequences side by side (a step's probes): the linear layers then read each weight    */
/* once for all their tokens, and only attention tells the sequences apart. The model's */
/* own weights are constants when distilling; pretraining (section 11) asks for their   */
/* gradients too.                                                                       */

typedef struct {
    int max_tokens, rank;
    int max_seq;          /* the longest of the sequences a pass reads side by side (max_tokens in all) */
    int max_past, n_past; /* keys and values the student reads before its tokens (a cartridge), in
                             cache's first n_past positions, put there by the caller; usually 0 */
    /* The pass student_forward made (acts_pass): n_tokens tokens, one sequence (n_seqs 0) or
       n_seqs of seq_len[s] one after another, as LayerBuffers has them, the longest of
       `longest` tokens; seq_len is the caller's array, read again by the backward. */
    int n_tokens, n_seqs, longest;
    const int *seq_len;
    size_t bytes;         /* all of the below, for the record (kvlora bench prints it) */
    KvlCache cache;       /* the keys (after RoPE) and values the student reads and writes, all layers */
    KvlCache d_past;      /* d loss / d the n_past keys and values before the tokens, when max_past > 0 */
    float *res_attn;      /* [L][T][D] residual stream entering each layer */
    float *xn_attn;       /* [L][T][D] its RMSNorm */
    float *q_raw;         /* [L][T][H*HD] q_proj output before q_norm (qk_norm only) */
    float *k_raw;         /* [L][T][KVH*HD] k_proj output before k_norm (qk_norm only) */
    float *q;             /* [L][T][H*HD] queries after norm and RoPE */
    float *att;           /* [L][H][T][n_past + the longest sequence] attention probabilities */
    float *att_out;       /* [L][T][H*HD] */
    float *res_mlp;       /* [L][T][D] residual stream entering the MLP */
    float *xn_mlp;        /* [L][T][D] its RMSNorm */
    float *gate;          /* [L][T][F] gate_proj output, before silu */
    float *up;            /* [L][T][F] */
    float *hidden;        /* [L][T][F] silu(gate) * up */
    float *lora_u[KVL_N_TARGETS];   /* [L][T][R] A x of each adapted layer */
    float *res_final;     /* [T][D] */
    float *xn_final;      /* [T][D] */
    float *logits;        /* [T][V] */
    float *lora_tmp;      /* [T][max(H*HD, F, D)] scratch */
    /* gradients of one layer at a time */
    float *d_res;         /* [T][D] d loss / d residual stream */
    float *d_xn;          /* [T][D] */
    float *d_q;           /* [T][H*HD] */
    float *d_k;           /* [KVH][n_past + a sequence's T][HD] (the cache's layout) */
    float *d_v;           /* [KVH][n_past + a sequence's T][HD] */
    float *d_att_out;     /* [T][H*HD] */
    float *d_gate;        /* [T][F] */
    float *d_up;          /* [T][F] */
    float *d_hidden;      /* [T][F] */
    float *d_u;           /* [T][R] */
    float *d_k_rows;      /* [T][KVH*HD] d_k in the projections' layout */
    float *d_p;           /* [H][n_past + a sequence's T] d loss / d attention probability, one row per head */
    float *d_logits;      /* [T][V] */
    float *dy_t;          /* [max(F, H*HD, D, R)][T] a layer's output gradient, transposed; [V][T] when pretraining */
    const int *tokens;    /* the tokens student_forward read, for the embedding's gradient (pretraining;
                             the caller's array, like seq_len) */
} Acts;

static void acts_free(Acts *a)
{
    float **bufs[] = {&a->res_attn, &a->xn_attn, &a->q_raw, &a->k_raw, &a->q, &a->att, &a->att_out, &a->res_mlp,
                      &a->xn_mlp, &a->gate, &a->up, &a->hidden, &a->res_final, &a->xn_final, &a->logits, &a->lora_tmp,
                      &a->d_res, &a->d_xn, &a->d_q, &a->d_k, &a->d_v, &a->d_att_out, &a->d_gate, &a->d_up, &a->d_hidden,
                      &a->d_u, &a->d_k_rows, &a->d_p, &a->d_logits, &a->dy_t};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(*bufs[i]);
    for (int t = 0; t < KVL_N_TARGETS; t++) free(a->lora_u[t]);
    kvl_cache_free(&a->cache);
    kvl_cache_free(&a->d_past);
    memset(a, 0, sizeof *a);
}

/* The student's activations for passes of up to max_tokens tokens, sequences of up to
   max_seq tokens each, after up to max_past keys. */
static int acts_init(Acts *a, const KvlConfig *c, int max_past, int max_tokens, int max_seq, int rank, int weight_grads)
{
    memset(a, 0, sizeof *a);
    size_t T = (size_t)max_tokens, L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->ffn_dim, K = (size_t)max_past + max_seq;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim, H = (size_t)c->n_heads;
    size_t widest = QD > F ? QD : F;
    if (D > widest) widest = D;
    size_t widest_out = widest > (size_t)c->vocab_size ? widest : (size_t)c->vocab_size;
    a->max_tokens = max_tokens;
    a->max_seq = max_seq;
    a->max_past = max_past;
    a->rank = rank;
    KvlConfig rows = *c;        /* the cache's slots are a pass's rows, more of them than positions, maybe */
    rows.max_positions = max_past + max_tokens;
    if (kvl_cache_init(&a->cache, &rows, max_past + max_tokens) || (max_past && kvl_cache_init(&a->d_past, c, max_past))) {
        acts_free(a);
        return -1;
    }
    struct { float **p; size_t n; } bufs[] = {
        {&a->res_attn, L * T * D}, {&a->xn_attn, L * T * D}, {&a->q, L * T * QD}, {&a->att, L * H * T * K},
        {&a->att_out, L * T * QD}, {&a->res_mlp, L * T * D}, {&a->xn_mlp, L * T * D}, {&a->gate, L * T * F},
        {&a->up, L * T * F}, {&a->hidden, L * T * F}, {&a->res_final, T * D}, {&a->xn_final, T * D},
        {&a->logits, T * c->vocab_size}, {&a->lora_tmp, T * widest}, {&a->d_res, T * D}, {&a->d_xn, T * D},
        {&a->d_q, T * QD}, {&a->d_k, K * KD}, {&a->d_v, K * KD}, {&a->d_att_out, T * QD}, {&a->d_gate, T * F},
        {&a->d_up, T * F}, {&a->d_hidden, T * F}, {&a->d_u, T * rank}, {&a->d_k_rows, T * QD}, {&a->d_p, H * K},
        {&a->d_logits, T * c->vocab_size},
        {&a->q_raw, c->qk_norm ? L * T * QD : 0}, {&a->k_raw, c->qk_norm ? L * T * KD : 0},
        {&a->dy_t, (weight_grads ? widest_out : widest > (size_t)rank ? widest : (size_t)rank) * T},
    };
    a->bytes = kvl_cache_bytes_per_token(c) * (T + 2 * (size_t)max_past) + (size_t)KVL_N_TARGETS * L * T * rank * sizeof(float);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (bufs[i].n && !(*bufs[i].p = xmalloc(sizeof(float) * bufs[i].n))) { acts_free(a); return error_wrap("activations for %d tokens", max_tokens); }
        a->bytes += sizeof(float) * bufs[i].n;
    }
    for (int t = 0; t < KVL_N_TARGETS; t++)
        if (!(a->lora_u[t] = xmalloc(sizeof(float) * L * T * rank))) { acts_free(a); return error_wrap("activations"); }
    return 0;
}

/* Records the pass the student reads: T tokens, one sequence (n_seqs 0) or n_seqs of
   seq_len[s] one after another. */
static void acts_pass(Acts *a, int T, const int *seq_len, int n_seqs)
{
    a->n_tokens = T;
    a->n_seqs = n_seqs;
    a->seq_len = seq_len;
    a->longest = n_seqs ? 0 : T;
    for (int i = 0; i < n_seqs; i++)
        if (seq_len[i] > a->longest) a->longest = seq_len[i];
}

/* Where layer l of the student keeps its activations: its own slice of a (the backward
   reads them), and the forward pass's scratch for what only the forward needs. */
static void student_layer_buffers(LayerBuffers *b, const KvlModel *m, const Acts *a, int l)
{
    const KvlConfig *c = &m->config;
    const KvlScratch *s = m->scratch;
    int D = c->dim, H = c->n_heads, KD = c->n_kv_heads * c->head_dim, F = c->ffn_dim, R = a->rank, T = a->n_tokens;
    int QD = H * c->head_dim;
    *b = (LayerBuffers){0};
    size_t LD = (size_t)l * T * D, LQ = (size_t)l * T * QD, LF = (size_t)l * T * F;
    b->res_attn = a->res_attn + LD; b->xn_attn = a->xn_attn + LD;
    b->res_mlp = a->res_mlp + LD; b->xn_mlp = a->xn_mlp + LD;
    b->q = a->q + LQ; b->k = s->k; b->v = s->v;     /* k and v live on in the student's cache */
    b->q_raw = c->qk_norm ? a->q_raw + LQ : NULL;
    b->k_raw = c->qk_norm ? a->k_raw + (size_t)l * T * KD : NULL;
    size_t n_keys = (size_t)a->n_past + a->longest;       /* a row of probabilities for each token */
    b->att = a->att + (size_t)l * H * T * n_keys; b->att_head_stride = (size_t)T * n_keys; b->att_row_stride = n_keys;
    b->att_out = a->att_out + LQ;
    b->gate = a->gate + LF; b->up = a->up + LF; b->hidden = a->hidden + LF;
    b->delta = s->delta;
    for (int k = 0; k < KVL_N_TARGETS; k++) b->u[k] = a->lora_u[k] + (size_t)l * T * R;
    b->lora_tmp = a->lora_tmp;
    b->rope_cos = s->rope_cos; b->rope_sin = s->rope_sin;
    b->n_seqs = a->n_seqs; b->seq_len = a->seq_len;
}

/* The student's forward pass over tokens[0..T) at positions a->n_past ... (usually 0) with
   the model's adapter (m->lora): section 6's layer_forward, each layer writing into its own
   slice of a. With n_seqs > 0 the tokens are that many sequences of seq_len[s] tokens one
   after another (a pass over several probes, which reads each weight once for them all),
   each from position a->n_past and reading only its own keys (several sequences need
   n_past 0: they would share the keys before); every row's sums are the ones it would
   have alone. a keeps tokens and seq_len, which must stay as they are until the backward. */
static void student_forward(Acts *a, const int *tokens, KvlModel *m, int T, const int *seq_len, int n_seqs)
{
    const KvlConfig *c = &m->config;
    const KvlWeights *w = &m->w;
    KvlScratch *s = m->scratch;
    int D = c->dim, half = c->head_dim / 2;
    float *x = a->res_final;                    /* the running residual stream */
    a->tokens = tokens;
    acts_pass(a, T, seq_len, n_seqs);
    embedding_forward(x, tokens, w->embed, T, D);
    for (int i = 0, t0 = 0; i < (n_seqs ? n_seqs : 1); i++) {
        int n = n_seqs ? seq_len[i] : T;
        rope_tables(s->rope_cos + (size_t)t0 * half, s->rope_sin + (size_t)t0 * half, s->inv_freq, a->n_past, n, half);
        t0 += n;
    }
    a->cache.n_tokens = a->n_past;
    for (int l = 0; l < c->n_layers; l++) {
        LayerBuffers b;
        student_layer_buffers(&b, m, a, l);
        layer_forward(x, &a->cache, &b, m, l, a->n_past, T);
    }
    a->cache.n_tokens = a->n_past + T;
    for (int t = 0; t < T; t++) rmsnorm_forward(a->xn_final + (size_t)t * D, x + (size_t)t * D, w->final_norm, D, c->rms_eps);
    matmul(a->logits, a->xn_final, w->lm_head, NULL, T, D, c->vocab_size);
}

/* Backward of the whole student: from a->d_logits ([T][V], zero on rows outside the loss)
   to the LoRA gradients, which are added to dlora (when not NULL), and, when pretraining,
   to the gradients of every weight, added to dw (same layout as m->w; NULL: frozen). With
   keys before the tokens (a->n_past > 0), their gradients are written to a->d_past. */
static void student_backward(KvlWeights *dw, KvlLora *dlora, Acts *a, KvlModel *m)
{
    const KvlConfig *c = &m->config;
    const KvlWeights *w = &m->w;
    int D = c->dim, T = a->n_tokens;

    /* logits = lm_head(RMSNorm(x)) */
    memset(a->d_xn, 0, sizeof(float) * T * D);
    gemm(a->d_xn, a->d_logits, w->lm_head, T, c->vocab_size, D, 0, 1);
    if (dw) weight_backward(dw->lm_head, a->d_logits, a->xn_final, 1.0f, T, c->vocab_size, D, a->dy_t);
    memset(a->d_res, 0, sizeof(float) * T * D);
    for (int t = 0; t < T; t++)
        rmsnorm_backward(a->d_res + (size_t)t * D, dw ? dw->final_norm : NULL, a->d_xn + (size_t)t * D, a->res_final + (size_t)t * D,
                         w->final_norm, D, c->rms_eps);

    /* the layers, last to first; the forward pass's k scratch holds d_v in the projections' layout */
    LayerGrads g = {.d_xn = a->d_xn, .d_att_out = a->d_att_out, .d_q = a->d_q, .d_k = a->d_k, .d_v = a->d_v,
                    .d_k_rows = a->d_k_rows, .d_v_rows = m->scratch->k, .d_p = a->d_p, .n_past = a->n_past,
                    .d_past = a->n_past ? &a->d_past : NULL, .d_gate = a->d_gate, .d_up = a->d_up,
                    .d_hidden = a->d_hidden, .d_u = a->d_u, .d_head = a->lora_tmp, .dy_t = a->dy_t};
    for (int l = c->n_layers - 1; l >= 0; l--) {
        LayerBuffers b;
        student_layer_buffers(&b, m, a, l);
        layer_backward(a->d_res, dw, dlora, &b, &a->cache, m, l, T, &g);
    }
    /* with tied embeddings the embedding's rows already hold lm_head's gradient */
    if (dw) embedding_backward(dw->embed, a->d_res, a->tokens, T, D);
}

/* ------------------------------------------------------------------------------------ */
/* 9. LoRA adapters: init, save and load (PEFT), merge, combine                         */
/*                                                                                      */
/* An adapter puts y += scale * B (A x) on chosen linear layers of every decoder layer. */
/* PEFT names the tensors                                                               */
/* base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ([R, in]) and         */
/* ...lora_B.weight ([out, R]); adapter_config.json holds r, lora_alpha, target_modules */
/* and use_rslora. The scale is alpha / r, or alpha / sqrt(r) (rsLoRA).                 */

const char *const kvl_target_names[KVL_N_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

static const char *target_module(KvlTarget t) { return t <= KVL_O_PROJ ? "self_attn" : "mlp"; }

static void target_shape(const KvlConfig *c, KvlTarget t, int *in, int *out)
{
    int D = c->dim, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    switch (t) {
    case KVL_Q_PROJ: *in = D; *out = QD; break;
    case KVL_K_PROJ: case KVL_V_PROJ: *in = D; *out = KD; break;
    case KVL_O_PROJ: *in = QD; *out = D; break;
    case KVL_GATE_PROJ: case KVL_UP_PROJ: *in = D; *out = F; break;
    default: *in = F; *out = D; break;
    }
}

int kvl_lora_parse_targets(const char *list, int has[KVL_N_TARGETS])
{
    memset(has, 0, sizeof(int) * KVL_N_TARGETS);
    if (strcmp(list, "all") == 0 || strcmp(list, "all-linear") == 0) {
        for (int t = 0; t < KVL_N_TARGETS; t++) has[t] = 1;
        return 0;
    }
    const char *p = list;
    int n = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        int t;
        for (t = 0; t < KVL_N_TARGETS; t++)
            if (strlen(kvl_target_names[t]) == len && strncmp(p, kvl_target_names[t], len) == 0) break;
        if (t == KVL_N_TARGETS)
            return fail("unknown LoRA target '%.*s' (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all)", (int)len, p);
        has[t] = 1;
        n++;
        p += len;
        if (*p == ',') p++;
    }
    if (n == 0) return fail("no LoRA targets given");
    return 0;
}

void kvl_lora_free(KvlLora *lora)
{
    free(lora->params);
    memset(lora, 0, sizeof *lora);
}

/* The shapes of an adapter for config, and its one zeroed block. */
static int lora_alloc(KvlLora *lora, const KvlConfig *c, int rank, float alpha, int use_rslora, const int has[KVL_N_TARGETS])
{
    memset(lora, 0, sizeof *lora);
    if (rank < 1 || rank > 65536) return fail("LoRA rank %d is out of range (1..65536)", rank);
    if (!(alpha > 0) || !isfinite(alpha)) return fail("LoRA alpha must be positive");
    lora->rank = rank;
    lora->alpha = alpha;
    lora->use_rslora = use_rslora;
    lora->scale = use_rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
    lora->n_layers = c->n_layers;
    size_t total = 0;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        lora->has[t] = has[t] != 0;
        target_shape(c, (KvlTarget)t, &lora->in[t], &lora->out[t]);
        if (has[t]) total += (size_t)c->n_layers * rank * ((size_t)lora->in[t] + lora->out[t]);
    }
    if (total == 0) return fail("an adapter needs at least one target");
    lora->params = xcalloc(total, sizeof(float));
    if (!lora->params) return error_wrap("LoRA adapter");
    lora->n_params = total;
    float *p = lora->params;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!has[t]) continue;
        lora->A[t] = p;
        p += (size_t)c->n_layers * rank * lora->in[t];
        lora->B[t] = p;
        p += (size_t)c->n_layers * rank * lora->out[t];
    }
    return 0;
}

/* A zeroed adapter of the same shapes: the gradients, AdamW's moments. */
static int lora_alloc_like(KvlLora *like, const KvlLora *lora, const KvlConfig *c)
{
    return lora_alloc(like, c, lora->rank, lora->alpha, lora->use_rslora, lora->has);
}

int kvl_lora_init(KvlLora *lora, const KvlConfig *c, int rank, float alpha, int use_rslora,
                  const int has[KVL_N_TARGETS], uint64_t seed)
{
    if (lora_alloc(lora, c, rank, alpha, use_rslora, has)) return -1;
    KvlRng rng;
    kvl_rng_seed(&rng, seed);
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!has[t]) continue;
        float bound = 1.0f / sqrtf((float)lora->in[t]);
        size_t n = (size_t)c->n_layers * rank * lora->in[t];
        for (size_t i = 0; i < n; i++) lora->A[t][i] = (2.0f * kvl_rng_float(&rng) - 1.0f) * bound;
    }
    return 0;
}

static void lora_tensor_name(char *out, size_t cap, int layer, KvlTarget t, char ab)
{
    snprintf(out, cap, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer, target_module(t), kvl_target_names[t], ab);
}

/* The tensors of an adapter (or of its gradient, with prefix "grad."), in PEFT's names. */
static int lora_tensor_list(const KvlLora *lora, const char *prefix, KvlTensorOut **out, char **names_out, int *n_out)
{
    int n = 0;
    for (int t = 0; t < KVL_N_TARGETS; t++) n += lora->has[t] ? 2 * lora->n_layers : 0;
    KvlTensorOut *ts = xcalloc((size_t)n, sizeof *ts);
    char *names = xcalloc((size_t)n, 160);
    if (!ts || !names) { free(ts); free(names); return -1; }
    int k = 0;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!lora->has[t]) continue;
        for (int l = 0; l < lora->n_layers; l++)
            for (int ab = 0; ab < 2; ab++, k++) {
                char base[128];
                lora_tensor_name(base, sizeof base, l, (KvlTarget)t, ab ? 'B' : 'A');
                snprintf(names + (size_t)k * 160, 160, "%s%s", prefix, base);
                ts[k].name = names + (size_t)k * 160;
                ts[k].dtype = KVL_F32;
                ts[k].n_dims = 2;
                ts[k].shape[0] = ab ? lora->out[t] : lora->rank;
                ts[k].shape[1] = ab ? lora->rank : lora->in[t];
                ts[k].data = ab ? lora->B[t] + (size_t)l * lora->out[t] * lora->rank
                                : lora->A[t] + (size_t)l * lora->rank * lora->in[t];
            }
    }
    *out = ts;
    *names_out = names;
    *n_out = n;
    return 0;
}

int kvl_lora_save(const KvlLora *lora, const char *dir)
{
    char path[4096];
    KvlTensorOut *ts;
    char *names;
    int n;
    if (make_dir(dir)) return -1;
    if (lora_tensor_list(lora, "", &ts, &names, &n)) return -1;
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    path_join(path, sizeof path, dir, "adapter_model.safetensors");
    int r = kvl_st_write(path, ts, n, mk, mv, 1);
    free(ts);
    free(names);
    if (r) return -1;
    Buf j = {0};
    if (buf_printf(&j, "{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n  \"r\": %d,\n  \"lora_alpha\": %.9g,\n", lora->rank, lora->alpha) ||
        buf_printf(&j, "  \"lora_dropout\": 0.0,\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"use_rslora\": %s,\n", lora->use_rslora ? "true" : "false") ||
        buf_puts(&j, "  \"inference_mode\": true,\n  \"base_model_name_or_path\": ") || buf_push_json_string(&j, lora->base_model) ||
        buf_puts(&j, ",\n  \"target_modules\": [")) { free(j.data); return -1; }
    int first = 1;
    for (int t = 0; t < KVL_N_TARGETS; t++)
        if (lora->has[t]) {
            if (buf_printf(&j, "%s\"%s\"", first ? "" : ", ", kvl_target_names[t])) { free(j.data); return -1; }
            first = 0;
        }
    if (buf_puts(&j, "]\n}\n")) { free(j.data); return -1; }
    path_join(path, sizeof path, dir, "adapter_config.json");
    r = write_text_file(path, j.data);
    free(j.data);
    return r;
}

/* adapter_config.json: r, lora_alpha, use_rslora and target_modules, refusing every
   PEFT option that would change the numbers in a way kvlora does not implement. */
static int lora_config(const Json *cfg, const char *path, int *rank, float *alpha, int *rslora, int has[KVL_N_TARGETS])
{
    const Json *type = json_get(cfg, "peft_type"), *targets = json_get(cfg, "target_modules");
    if (!type || type->type != JSON_STRING || strcmp(type->string, "LORA") != 0) return fail("%s: peft_type must be \"LORA\"", path);
    if (config_int(cfg, "r", 1, 0, 1, 65536, rank, path) || config_float(json_get(cfg, "lora_alpha"), "lora_alpha", (float)*rank, alpha, path) ||
        config_bool(cfg, "use_rslora", 0, rslora, path))
        return -1;
    static const char *const must_be_false[] = {"fan_in_fan_out", "use_dora", "lora_bias"};
    for (int i = 0; i < 3; i++) {
        int v = 0;
        if (config_bool(cfg, must_be_false[i], 0, &v, path)) return -1;
        if (v) return fail("%s: %s = true is not supported", path, must_be_false[i]);
    }
    const Json *bias = json_get(cfg, "bias");
    if (bias && !(bias->type == JSON_STRING && strcmp(bias->string, "none") == 0)) return fail("%s: bias must be \"none\"", path);
    static const char *const must_be_empty[] = {"rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save",
                                                "layer_replication", "target_parameters", "trainable_token_indices"};
    for (int i = 0; i < 7; i++) {
        const Json *v = json_get(cfg, must_be_empty[i]);
        if (v && v->type != JSON_NULL && !((v->type == JSON_OBJECT || v->type == JSON_ARRAY) && v->length == 0))
            return fail("%s: '%s' is not supported", path, must_be_empty[i]);
    }
    if (targets && targets->type == JSON_STRING) {
        if (kvl_lora_parse_targets(targets->string, has)) return error_wrap("%s: target_modules", path);
    } else if (targets && targets->type == JSON_ARRAY && targets->length > 0) {
        for (size_t i = 0; i < targets->length; i++) {
            const Json *tj = targets->children[i];
            int one[KVL_N_TARGETS];
            if (tj->type != JSON_STRING || kvl_lora_parse_targets(tj->string, one)) return error_wrap("%s: target_modules", path);
            for (int t = 0; t < KVL_N_TARGETS; t++) has[t] |= one[t];
        }
    } else return fail("%s: target_modules must be a list of module names", path);
    return 0;
}

/* Every A and B matrix of the adapter from adapter_model.safetensors, each checked for its
   shape and for finite values; a tensor that is none of them is refused too. */
static int lora_read_tensors(KvlLora *lora, const KvlSafetensors *st, const char *path, const KvlConfig *c)
{
    int expected = 0, rank = lora->rank;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!lora->has[t]) continue;
        for (int l = 0; l < c->n_layers; l++)
            for (int ab = 0; ab < 2; ab++) {
                char name[160];
                lora_tensor_name(name, sizeof name, l, (KvlTarget)t, ab ? 'B' : 'A');
                const KvlTensorInfo *ti = kvl_st_find(st, name);
                int rows = ab ? lora->out[t] : rank, cols = ab ? rank : lora->in[t];
                float *dst = ab ? lora->B[t] + (size_t)l * lora->out[t] * rank : lora->A[t] + (size_t)l * rank * lora->in[t];
                if (!ti) return fail("%s: missing tensor '%s'", path, name);
                if (ti->n_dims != 2 || ti->shape[0] != rows || ti->shape[1] != cols)
                    return fail("%s: tensor '%s' has shape [%lld, %lld], but r = %d and the model imply [%d, %d] (an adapter for another model, or a rank mismatch)",
                                path, name, ti->n_dims > 0 ? (long long)ti->shape[0] : -1, ti->n_dims > 1 ? (long long)ti->shape[1] : -1, rank, rows, cols);
                if (kvl_st_read_f32(st, ti, dst)) return -1;
                for (size_t i = 0; i < (size_t)rows * cols; i++)
                    if (!isfinite(dst[i])) return fail("%s: tensor '%s' holds a non-finite value", path, name);
                expected++;
            }
    }
    for (int i = 0; st->n_tensors != expected && i < st->n_tensors; i++) {
        int known = 0;
        for (int t = 0; t < KVL_N_TARGETS && !known; t++)
            for (int l = 0; l < c->n_layers && lora->has[t] && !known; l++)
                for (int ab = 0; ab < 2 && !known; ab++) {
                    char name[160];
                    lora_tensor_name(name, sizeof name, l, (KvlTarget)t, ab ? 'B' : 'A');
                    known = strcmp(name, st->tensors[i].name) == 0;
                }
        if (!known)
            return fail("%s: unexpected tensor '%s' (not a LoRA matrix of the targets in adapter_config.json, or a layer the model does not have)",
                        path, st->tensors[i].name);
    }
    return 0;
}

/* Loads a PEFT LoRA adapter for a model of config's shapes, refusing what kvlora cannot
   apply exactly: other PEFT types, per-module rank or alpha patterns, fan_in_fan_out,
   bias training, DoRA, and tensors of other shapes. (lora_dropout plays no part:
   kvlora trains without dropout, and inference has none.) */
int kvl_lora_load(KvlLora *lora, const char *dir, const KvlConfig *c)
{
    char path[4096];
    Json *cfg;
    memset(lora, 0, sizeof *lora);
    path_join(path, sizeof path, dir, "adapter_config.json");
    if (json_load(&cfg, path)) return -1;
    int r, rank = 0, has[KVL_N_TARGETS] = {0}, rslora = 0;
    float alpha = 0;
    r = lora_config(cfg, path, &rank, &alpha, &rslora, has);
    if (!r && (r = lora_alloc(lora, c, rank, alpha, rslora, has)) != 0) error_wrap("%s", path);
    const Json *base = json_get(cfg, "base_model_name_or_path");
    if (!r && base && base->type == JSON_STRING) snprintf(lora->base_model, sizeof lora->base_model, "%s", base->string);
    json_free(cfg);
    if (r) return -1;
    path_join(path, sizeof path, dir, "adapter_model.safetensors");
    KvlSafetensors st;
    if (kvl_st_open(&st, path)) { kvl_lora_free(lora); return -1; }
    r = lora_read_tensors(lora, &st, path, c);
    kvl_st_close(&st);
    if (r) kvl_lora_free(lora);
    return r;
}

/* Merging: W' = W + weight * scale * B A for every adapted matrix, in place. A model
   with the merged weights and no adapter computes what the model with the adapter
   computes (up to rounding: the sums are grouped differently). */
int kvl_lora_merge(KvlModel *m, const KvlLora *lora, float weight)
{
    const KvlConfig *c = &m->config;
    float *matrices[KVL_N_TARGETS] = {m->w.wq, m->w.wk, m->w.wv, m->w.wo, m->w.w_gate, m->w.w_up, m->w.w_down};
    if (lora->n_layers != c->n_layers) return fail("merge: the adapter has %d layers, the model %d", lora->n_layers, c->n_layers);
    int R = lora->rank;
    float *bt = NULL;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!lora->has[t]) continue;
        int in, out;
        target_shape(c, (KvlTarget)t, &in, &out);
        if (in != lora->in[t] || out != lora->out[t]) return fail("merge: the adapter's %s is [%d x %d], the model's [%d x %d]", kvl_target_names[t], lora->out[t], lora->in[t], out, in);
        free(bt);
        if (!(bt = xmalloc(sizeof(float) * (size_t)R * out))) return -1;
        for (int l = 0; l < c->n_layers; l++) {
            const float *A = lora->A[t] + (size_t)l * R * in, *B = lora->B[t] + (size_t)l * out * R;
            for (int o = 0; o < out; o++)
                for (int r = 0; r < R; r++) bt[(size_t)r * out + o] = B[(size_t)o * R + r];
            /* W[o][i] += weight scale sum_r B[o][r] A[r][i]: the product of section 6's weight gradient */
            matmul_weight_backward(matrices[t] + (size_t)l * out * in, bt, A, weight * lora->scale, R, out, in);
        }
    }
    free(bt);
    return 0;
}

/* Combining: one adapter equal to sum_k weight_k * adapter_k. Ranks concatenate:
   A = [A_1; A_2; ...], B = [w_1 s_1 B_1, w_2 s_2 B_2, ...], with alpha = rank so that the
   new scale is 1. A target missing from an adapter contributes zero rows. */
int kvl_lora_combine(KvlLora *out, const KvlLora *adapters, const float *weights, int n, const KvlConfig *c)
{
    int rank = 0, has[KVL_N_TARGETS] = {0};
    for (int k = 0; k < n; k++) {
        if (adapters[k].n_layers != c->n_layers) return fail("combine: adapter %d is for a model of %d layers", k + 1, adapters[k].n_layers);
        rank += adapters[k].rank;
        for (int t = 0; t < KVL_N_TARGETS; t++) has[t] |= adapters[k].has[t];
    }
    if (lora_alloc(out, c, rank, (float)rank, 0, has)) return -1;
    int r0 = 0;
    for (int k = 0; k < n; k++) {
        const KvlLora *a = &adapters[k];
        for (int t = 0; t < KVL_N_TARGETS; t++) {
            if (!a->has[t]) continue;
            int in = out->in[t], o_dim = out->out[t];
            for (int l = 0; l < c->n_layers; l++) {
                float *A = out->A[t] + (size_t)l * rank * in, *B = out->B[t] + (size_t)l * o_dim * rank;
                memcpy(A + (size_t)r0 * in, a->A[t] + (size_t)l * a->rank * in, sizeof(float) * a->rank * in);
                for (int o = 0; o < o_dim; o++)
                    for (int r = 0; r < a->rank; r++)
                        B[(size_t)o * rank + r0 + r] = weights[k] * a->scale * a->B[t][((size_t)l * o_dim + o) * a->rank + r];
            }
        }
        r0 += a->rank;
    }
    snprintf(out->base_model, sizeof out->base_model, "%s", adapters[0].base_model);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* 10. Distillation: teacher logits, losses, AdamW, probes, the training loop           */
/*                                                                                      */
/* Over T positions with logits z_s (student) and z_t (teacher), vocabulary V:          */
/*   kl  = 1/T sum_t KL(p_t || p_s) = 1/T sum_t sum_v p_t,v (log p_t,v - log p_s,v)     */
/*   mse = 1/(T V) sum_t sum_v (z_s,t,v - z_t,t,v)^2                                    */
/* with p = softmax(z) over the full vocabulary. Sums in double. A teacher kept only as */
/* its top K tokens gives KL_K, the KL over those K tokens and the rest (below).        */
/* The other method, at the end: the closed form, a least-squares solve per layer       */
/* instead of the steps.                                                                */

/* log sum_v exp(z_v), shifted by the maximum so that no exp overflows. */
static double log_sum_exp(const float *z, int n)
{
    float mx = z[kvl_argmax(z, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)z[i] - mx);
    return log(sum) + mx;
}

/* KL(teacher || student) at one position, in one pass over each row's exponentials:
       KL = sum_v p_t (l_t - l_s) = sum_v p_t (z_t - z_s) - lse(z_t) + lse(z_s)
   (the log-softmaxes l = z - lse(z); sum_v p_t = 1). Sums in double. */
static double kl_position(const float *zs, const float *zt, int V)
{
    float ms = zs[kvl_argmax(zs, V)], mt = zt[kvl_argmax(zt, V)];
    double ss = 0.0, st = 0.0, weighted = 0.0;
    for (int v = 0; v < V; v++) ss += exp((double)zs[v] - ms);
    for (int v = 0; v < V; v++) {
        double e = exp((double)zt[v] - mt);
        st += e;
        weighted += e * ((double)zt[v] - zs[v]);
    }
    return weighted / st - (log(st) + mt) + (log(ss) + ms);
}

/* The loss D (kl or mse, as above) over T positions, into *loss. Training uses it for mse
   (kl_forward_backward gives kl with its gradient). The positions are independent, so
   threads take blocks of them; the blocks' losses are then added in position order,
   whatever the thread count. No allocation. */
static int loss_forward(double *loss, const float *student, const float *teacher, int T, int V, int use_kl)
{
    double total = 0.0;
    if (!use_kl) {
        for (size_t i = 0; i < (size_t)T * V; i++) {
            double d = (double)student[i] - teacher[i];
            total += d * d;
        }
        *loss = total / ((double)T * V);
        return 0;
    }
    for (int t0 = 0; t0 < T; t0 += 64) {
        double block[64];
        int n = T - t0 < 64 ? T - t0 : 64;
        PARALLEL_FOR
        for (int i = 0; i < n; i++) block[i] = kl_position(student + (size_t)(t0 + i) * V, teacher + (size_t)(t0 + i) * V, V);
        for (int i = 0; i < n; i++) total += block[i];
    }
    *loss = total / T;
    return 0;
}

/* Writes the gradient of the MSE loss with respect to the student's logits, for T
   positions that are part of n_total positions of a batch (the loss is the mean over all of them):
       d/dz_s = 2 (z_s - z_t) / (n_total V)
   (KL's comes with its loss: kl_forward_backward below). */
static void mse_backward(float *d_student, const float *student, const float *teacher, int T, int V, int n_total)
{
    float k = 2.0f / ((float)n_total * V);
    for (size_t i = 0; i < (size_t)T * V; i++) d_student[i] = (student[i] - teacher[i]) * k;
}

/* Floats below FLT_MIN (2^-126) are subnormal, and x86 processors take a microcode assist,
   about a hundred cycles, on each multiply or add with a subnormal operand or result. A
   peaked distribution leaves most of the vocabulary's probabilities and gradients down
   there, and the backward through the output layer multiplies every gradient: each of
   those products would take an assist. So the gradients below, and the exact KL's
   exponentials of the student, are stored as 0 when they would be subnormal: each changes
   by less than 2^-126, and the sum those exponentials enter is at least 1 (the largest
   term is exp(0)), where that is far below its last bit. (exp(-88) is below FLT_MIN
   already: no call for those.) */
static float expf_normal(float x)
{
    float e = x < -88.0f ? 0.0f : expf(x);
    return e < FLT_MIN ? 0.0f : e;
}

static float flush_subnormal(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

/* The KL loss and its gradient together, for training (loss_forward alone is for
   measuring). Adds sum_t KL_t / n_total to *loss, the positions' terms summed in order
   whatever the thread count, and writes
       d KL / d z_s = (softmax(z_s) - softmax(z_t)) / n_total
   (entries below FLT_MIN stored as 0, as above).
   Three exponentials per logit (the student's once, kept in d between the passes; the
   teacher's twice, for its sum and then its probabilities), where a pass for the loss and
   another for the gradient would take five and read the logits four times instead of two. */
static void kl_forward_backward(double *loss, float *d_student, const float *student, const float *teacher, int T, int V, int n_total)
{
    for (int t0 = 0; t0 < T; t0 += 64) {
        double block[64];
        int n = T - t0 < 64 ? T - t0 : 64;
        PARALLEL_FOR
        for (int i = 0; i < n; i++) {
            const float *zs = student + (size_t)(t0 + i) * V, *zt = teacher + (size_t)(t0 + i) * V;
            float *d = d_student + (size_t)(t0 + i) * V;
            float ms = zs[kvl_argmax(zs, V)], mt = zt[kvl_argmax(zt, V)];
            double ss = 0.0, st = 0.0, weighted = 0.0;
            for (int v = 0; v < V; v++) {
                d[v] = expf_normal(zs[v] - ms);
                ss += d[v];
                st += exp((double)zt[v] - mt);
            }
            for (int v = 0; v < V; v++) {
                double pt = exp((double)zt[v] - mt) / st;
                weighted += pt * ((double)zt[v] - zs[v]);
                d[v] = flush_subnormal((float)((d[v] / ss - pt) / n_total));
            }
            block[i] = weighted - (log(st) + mt) + (log(ss) + ms);      /* as in kl_position */
        }
        for (int i = 0; i < n; i++) *loss += block[i] / n_total;
    }
}

/* The teacher kept sparse (Cartridges' recipe, to save its memory): at each position only
   its K most likely tokens, with their log-probabilities l_t,k, and the log of the mass
   left to all the others, log r_t (r_t = sum of p_t,v over v outside the top K). A row:
   K int32 ids in ascending order, K floats l_t,k, one float log r_t (-inf when r_t = 0).
   The loss is then the KL between the two distributions seen through those K + 1 bins,
   the student's rest r_s = sum of p_s,v outside the teacher's top K:
       KL_K = sum_k p_t,k (l_t,k - l_s,k) + r_t (log r_t - log r_s).
   An approximation from below: by the chain rule of KL,
       KL = KL_K + r_t KL(p_t | rest || p_s | rest),
   so it leaves out how the rest's mass is spread, weighted by that mass (test
   kl_topk_against_exact checks the identity and distill_topk the cost to an adapter). */
static size_t teacher_row_bytes(int V, int topk)
{
    return topk > 0 ? sizeof(float) * (2 * (size_t)topk + 1) : sizeof(float) * (size_t)V;
}

/* The K a distillation uses for an asked one: 0 (every logit) when a sparse row would be
   no smaller than the full one (2K + 1 >= V): the exact loss, in fewer bytes. */
static int teacher_topk(int asked, int V)
{
    return asked > 0 && 2 * (size_t)asked + 1 < (size_t)V ? asked : 0;
}

/* The bytes of every probe's teacher rows for an asked top K. */
static size_t teacher_bytes(int V, int asked_topk, const KvlProbe *probes, int n_probes)
{
    size_t tokens = 0;
    for (int i = 0; i < n_probes; i++) tokens += (size_t)probes[i].n;
    return tokens * teacher_row_bytes(V, teacher_topk(asked_topk, V));
}

/* One position's sparse row from the teacher's logits zt. order: 2V entries of scratch,
   in_top: V bytes of scratch. The top K are the first K of the probabilities sorted in
   descending order (ties: the lower id first), so the choice is the same on every
   machine; marking them and reading the marks in order puts their ids in ascending order. */
static void teacher_topk_row(unsigned char *row, const float *zt, int V, int K, ProbIndex *order, unsigned char *in_top)
{
    int32_t *ids = (int32_t *)row;
    float *logp = (float *)(row + sizeof(int32_t) * K), mt = zt[kvl_argmax(zt, V)];
    double st = 0.0, rest = 0.0;
    for (int v = 0; v < V; v++) {
        order[v].p = expf(zt[v] - mt);
        order[v].id = v;
        st += exp((double)zt[v] - mt);
    }
    sort_prob_desc(order, order + V, V);
    memset(in_top, 0, (size_t)V);
    for (int i = 0; i < K; i++) in_top[order[i].id] = 1;
    for (int i = K; i < V; i++) rest += exp((double)zt[order[i].id] - mt);
    for (int v = 0, k = 0; v < V; v++)
        if (in_top[v]) ids[k++] = v;
    double lse = log(st) + mt;
    for (int i = 0; i < K; i++) logp[i] = (float)(zt[ids[i]] - lse);
    logp[K] = rest > 0.0 ? (float)(log(rest) - log(st)) : -INFINITY;
}

/* KL_K and its gradient, as kl_forward_backward does for the exact KL: adds
   sum_t KL_K,t / n_total to *loss and writes d KL_K / d z_s = (p_s - q) / n_total, where
   q_v = p_t,v inside the top K and r_t p_s,v / r_s outside (the rest's mass spread as the
   student spreads it). rows: T sparse rows of K. */
static void kl_topk_forward_backward(double *loss, float *d_student, const float *student, const unsigned char *rows,
                                     int T, int V, int K, int n_total)
{
    size_t row_bytes = teacher_row_bytes(V, K);
    for (int t0 = 0; t0 < T; t0 += 64) {
        double block[64];
        int n = T - t0 < 64 ? T - t0 : 64;
        PARALLEL_FOR
        for (int i = 0; i < n; i++) {
            const float *zs = student + (size_t)(t0 + i) * V;
            const int32_t *ids = (const int32_t *)(rows + (size_t)(t0 + i) * row_bytes);
            const float *logp = (const float *)(rows + (size_t)(t0 + i) * row_bytes + sizeof(int32_t) * K);
            float *d = d_student + (size_t)(t0 + i) * V, ms = zs[kvl_argmax(zs, V)];
            double ss = 0.0, rest_s = 0.0;
            for (int v = 0, k = 0; v < V; v++) {
                d[v] = expf(zs[v] - ms);        /* (not flushed: the rest's mass may be all in subnormals) */
                ss += d[v];
                if (k < K && ids[k] == v) k++;
                else rest_s += d[v];
            }
            double lse_s = log(ss) + ms, r_t = exp((double)logp[K]), kl = 0.0;
            float outside = (float)((1.0 / ss - (rest_s > 0.0 ? r_t / rest_s : 0.0)) / n_total);
            for (int v = 0; v < V; v++) d[v] = flush_subnormal(d[v] * outside);
            for (int k = 0; k < K; k++) {
                double p_t = exp((double)logp[k]), l_s = zs[ids[k]] - lse_s;
                kl += p_t * (logp[k] - l_s);
                d[ids[k]] = flush_subnormal((float)((exp(l_s) - p_t) / n_total));
            }
            if (r_t > 0.0) kl += r_t * (logp[K] - (log(rest_s) - log(ss)));
            block[i] = kl;
        }
        for (int i = 0; i < n; i++) *loss += block[i] / n_total;
    }
}

/* The most tokens a pass of the student reads side by side unless the options say otherwise
   (KvlDistillOptions.pass_tokens). */
#define PASS_TOKENS 256

/* A probe as the student's pass reads it: its tokens (after the prefix) and the teacher's
   rows for them: logits, or with topk > 0 the sparse rows above (KL only). */
typedef struct { const int *ids; int n; const void *teacher; int topk; } PassProbe;

/* One pass of the student (the model with m->lora, after a->n_past keys when a cartridge
   is trained) over n_probes probes side by side, each read as prefix ++ probe (student_forward's
   sequences). Stores in parts[i] probe i's share of the batch loss (its summed loss /
   n_total), and, with backward, adds d loss / d LoRA to dlora (when not NULL) and writes
   the cartridge's gradients to a->d_past (when a->n_past > 0: one probe a pass). The
   gradients are the sums of passes of one probe each, bit for bit: the weight gradients
   add each token's term in turn, and the probes' tokens come in their order. */
static int distill_pass(KvlModel *m, Acts *a, int backward, KvlLora *dlora, const int *prefix, int n_prefix,
                        const PassProbe *probes, int n_probes, int use_kl, int n_total, double *parts)
{
    int V = m->config.vocab_size, T = 0, longest = 0, r = -1;
    for (int i = 0; i < n_probes; i++) {
        T += n_prefix + probes[i].n;
        if (n_prefix + probes[i].n > longest) longest = n_prefix + probes[i].n;
    }
    if (n_probes > 1 && a->n_past) return fail("a pass after a cartridge's keys reads one probe, not %d", n_probes);
    if (T > a->max_tokens || longest > a->max_seq)
        return fail("a pass of %d probes (%d tokens, the longest %d) exceeds the activations' %d (%d)", n_probes, T, longest,
                    a->max_tokens, a->max_seq);
    int *ids = xmalloc(sizeof(int) * (size_t)T), *seq_len = xmalloc(sizeof(int) * (size_t)n_probes);
    if (!ids || !seq_len || scratch_reserve(m, T, a->n_past + longest)) goto done;
    for (int i = 0, t0 = 0; i < n_probes; t0 += seq_len[i++]) {
        seq_len[i] = n_prefix + probes[i].n;
        if (n_prefix) memcpy(ids + t0, prefix, sizeof(int) * n_prefix);
        memcpy(ids + t0 + n_prefix, probes[i].ids, sizeof(int) * probes[i].n);
    }
    student_forward(a, ids, m, T, seq_len, n_probes);
    for (int i = 0, t0 = 0; i < n_probes; t0 += seq_len[i++]) {
        const PassProbe *p = &probes[i];
        const float *zs = a->logits + (size_t)(t0 + n_prefix) * V;
        float *d_zs = a->d_logits + (size_t)(t0 + n_prefix) * V;
        parts[i] = 0.0;
        if (p->topk > 0) kl_topk_forward_backward(&parts[i], d_zs, zs, p->teacher, p->n, V, p->topk, n_total);
        else if (backward && use_kl) kl_forward_backward(&parts[i], d_zs, zs, p->teacher, p->n, V, n_total);
        else {
            if (loss_forward(&parts[i], zs, p->teacher, p->n, V, use_kl)) goto done;
            parts[i] *= (double)p->n / n_total;
            if (backward) mse_backward(d_zs, zs, p->teacher, p->n, V, n_total);
        }
        memset(a->d_logits + (size_t)t0 * V, 0, sizeof(float) * (size_t)n_prefix * V);
    }
    if (backward) student_backward(NULL, dlora, a, m);
    r = 0;
done:
    free(ids);
    free(seq_len);
    return r;
}

/* AdamW (Loshchilov & Hutter), as torch.optim.AdamW: decoupled weight decay, then
       m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
       p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
   One loop over the adapter's one block of parameters. */
typedef struct { float lr, beta1, beta2, eps, weight_decay; int t; float *m, *v; } AdamW;

static void adamw_step(AdamW *opt, float *params, const float *grads, size_t n)
{
    opt->t++;
    float c1 = 1.0f - powf(opt->beta1, (float)opt->t), c2 = 1.0f - powf(opt->beta2, (float)opt->t);
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        opt->m[i] = opt->beta1 * opt->m[i] + (1.0f - opt->beta1) * g;
        opt->v[i] = opt->beta2 * opt->v[i] + (1.0f - opt->beta2) * g * g;
        params[i] -= opt->lr * opt->weight_decay * params[i];
        params[i] -= opt->lr * (opt->m[i] / c1) / (sqrtf(opt->v[i] / c2) + opt->eps);
    }
}

/* The teacher's logits for a probe: the base model reading it after the cached prefix ++
   context (n_ctx positions). The cache is rewound afterwards, so it serves every probe. */
static int teacher_forward(KvlModel *m, KvlCache *cache, int n_ctx, const KvlProbe *p, float *logits)
{
    const KvlLora *keep = m->lora;
    m->lora = NULL;
    cache->n_tokens = n_ctx;
    int r = kvl_forward(m, cache, p->ids, p->n, logits, p->n);
    cache->n_tokens = n_ctx;
    m->lora = keep;
    return r;
}

/* The teacher's logits after the whole cached context: rewind the cache by one position
   and read the context's last token again (same arithmetic, so the same keys and values
   are written back). */
static int logits_after_context(KvlModel *m, KvlCache *cache, int last_token, float *logits)
{
    int n_ctx = cache->n_tokens;
    cache->n_tokens = n_ctx - 1;
    return kvl_forward(m, cache, &last_token, 1, logits, 1);
}

/* The long phases report through one hook (kvlora.h: kvl_set_phase_progress). */
static KvlPhaseProgress phase_progress;
static void *phase_progress_ctx;

void kvl_set_phase_progress(KvlPhaseProgress fn, void *ctx)
{
    phase_progress = fn;
    phase_progress_ctx = ctx;
}

static void report_phase(const char *phase, long long done, long long total, double start)
{
    if (phase_progress) phase_progress(phase_progress_ctx, phase, done, total, now_seconds() - start);
}

/* Self-study: the teacher, reading the cached context, writes its own probes: n
   continuations of len tokens, sampled at temperature 1 from a seeded stream. Continuation
   i starts with generic prompt i mod n_prompts (when there are prompts: "Q:", ...), which
   becomes part of the probe. No ground truth goes in: the probes are the model's own words.
   The continuations are decoded SELF_STUDY_BATCH at a time (kvl_forward_batch), a prompt
   token or a sampled one per step each. The tokens are those of writing the continuations
   one after another: sampled token t of continuation i takes draw i * len + t of the
   stream (kvl_sample makes exactly one draw), whose generator state is kept for it. */
#define SELF_STUDY_BATCH 64

int kvl_self_study(KvlModel *m, KvlCache *cache, int last_token, const KvlProbe *prompts, int n_prompts,
                   int n, int len, uint64_t seed, KvlProbe *out)
{
    int V = m->config.vocab_size, n_ctx = cache->n_tokens, longest = 0, B = n < SELF_STUDY_BATCH ? n : SELF_STUDY_BATCH;
    for (int k = 0; k < n_prompts; k++)
        if (prompts[k].n > longest) longest = prompts[k].n;
    if (len < 1 || n_ctx + longest + len > cache->max_tokens) return fail("self-study: %d tokens do not fit after the %d-token context", longest + len, n_ctx);
    if (n < 1) return 0;
    KvlRng *draws = xmalloc(sizeof(KvlRng) * (size_t)n * len);
    float *after = xmalloc(sizeof(float) * V), *logits = xmalloc(sizeof(float) * V * B);
    int *fed = xmalloc(sizeof(int) * B), *sampled = xmalloc(sizeof(int) * B), *next = xmalloc(sizeof(int) * B);
    KvlBatch batch = {0};
    int r = !draws || !after || !logits || !fed || !sampled || !next ? -1 : kvl_batch_init(&batch, m, cache, B, longest + len);
    const KvlLora *keep = m->lora;
    m->lora = NULL;
    KvlRng rng;
    kvl_rng_seed(&rng, seed ^ 0x5e1f57d7ull);
    for (size_t k = 0; !r && k < (size_t)n * len; k++) {
        draws[k] = rng;
        kvl_rng_u32(&rng);
    }
    double start = now_seconds();
    if (!r) r = logits_after_context(m, cache, last_token, after);
    for (int i0 = 0; i0 < n && !r; i0 += B) {
        int nb = n - i0 < B ? n - i0 : B, done = 0;
        for (int b = 0; b < B; b++) batch.tail_len[b] = fed[b] = sampled[b] = 0;
        for (int b = 0; b < nb && !r; b++) {
            const KvlProbe *prompt = n_prompts ? &prompts[(i0 + b) % n_prompts] : NULL;
            out[i0 + b].n = (prompt ? prompt->n : 0) + len;
            if (!(out[i0 + b].ids = xmalloc(sizeof(int) * (size_t)out[i0 + b].n))) r = -1;
            else if (prompt) memcpy(out[i0 + b].ids, prompt->ids, sizeof(int) * prompt->n);
            else memcpy(logits + (size_t)b * V, after, sizeof(float) * V);
        }
        while (!r && done < nb) {           /* each continuation: its prompt, then a sample per step */
            PARALLEL_FOR
            for (int b = 0; b < nb; b++) {      /* (each sample its own draw: any thread may take it) */
                int i = i0 + b, n_prompt = out[i].n - len;
                if (fed[b] < n_prompt || sampled[b] == len) continue;
                KvlRng draw = draws[(size_t)i * len + sampled[b]];
                out[i].ids[n_prompt + sampled[b]] = kvl_sample(logits + (size_t)b * V, V, 1.0f, 1.0f, &draw);
            }
            for (int b = 0; b < B; b++) {
                int i = i0 + b, n_prompt = b < nb ? out[i].n - len : 0;
                next[b] = -1;
                if (b >= nb || sampled[b] == len) continue;
                if (fed[b] < n_prompt) next[b] = out[i].ids[fed[b]++];
                else if (++sampled[b] < len) next[b] = out[i].ids[n_prompt + sampled[b] - 1];
                else done++;
            }
            if (done < nb) r = kvl_forward_batch(m, &batch, next, logits);
        }
        report_phase("self-study", (long long)(i0 + nb) * len, (long long)n * len, start);
    }
    m->lora = keep;
    kvl_batch_free(&batch);
    free(draws); free(after); free(logits); free(fed); free(sampled); free(next);
    return r;
}

/* Context chunks: windows of len tokens over the context (after the prefix), every
   len / 2 tokens, so each token is seen in two windows. */
int kvl_context_chunks(const int *context, int n_context, int len, KvlProbe **out, int *n_out)
{
    if (len < 1) return fail("context chunks: length must be positive");
    if (len > n_context) len = n_context;
    int stride = len / 2 > 0 ? len / 2 : 1, n = n_context <= len ? 1 : (n_context - len + stride - 1) / stride + 1;
    KvlProbe *p = xcalloc((size_t)n, sizeof *p);
    if (!p) return -1;
    for (int i = 0; i < n; i++) {
        int start = i * stride;
        if (start + len > n_context) start = n_context - len;
        p[i].n = len;
        p[i].ids = xmalloc(sizeof(int) * len);
        if (!p[i].ids) { for (int k = 0; k < i; k++) free(p[k].ids); free(p); return -1; }
        memcpy(p[i].ids, context + start, sizeof(int) * len);
    }
    *out = p;
    *n_out = n;
    return 0;
}

/* Every probe's teacher rows (logits, or the sparse rows of the top topk), one probe after
   another, probe i's from byte teacher_at[i] on: in memory at teacher, or (teacher NULL)
   in the file fp. Each probe's logits are computed into logits ([longest probe][V]), and
   for the file its rows go through rows ([longest probe][row]; for full rows, logits
   itself); order and in_top: scratch for the top K (2V entries, V bytes). */
static int teachers_forward(KvlModel *m, KvlCache *cache, int n_ctx, const KvlProbe *probes, int n_probes, int topk,
                            unsigned char *teacher, FILE *fp, float *logits, unsigned char *rows, ProbIndex *order,
                            unsigned char *in_top, size_t *teacher_at)
{
    int V = m->config.vocab_size;
    size_t at = 0, row_bytes = teacher_row_bytes(V, topk);
    long long done = 0, total = 0;
    double start = now_seconds();
    for (int i = 0; i < n_probes; i++) total += probes[i].n;
    for (int i = 0; i < n_probes; i++) {
        size_t n = (size_t)probes[i].n;
        unsigned char *dest = teacher ? teacher + at : rows;
        teacher_at[i] = at;
        if (teacher_forward(m, cache, n_ctx, &probes[i], topk ? logits : (float *)dest)) return -1;
        for (size_t t = 0; topk && t < n; t++) teacher_topk_row(dest + t * row_bytes, logits + t * V, V, topk, order, in_top);
        if (!teacher && fwrite(dest, row_bytes, n, fp) != n) return fail("teacher logits: writing their file: %s", strerror(errno));
        at += n * row_bytes;
        report_phase("teacher", done += probes[i].n, total, start);
    }
    if (!teacher && fflush(fp)) return fail("teacher logits: writing their file: %s", strerror(errno));
    return 0;
}

/* A probe's n teacher rows of row_bytes back from the file, from byte at. */
static int teacher_read(FILE *fp, size_t at, int n, size_t row_bytes, unsigned char *rows)
{
    if (seek_to(fp, (uint64_t)at, "the teacher logits' file")) return -1;
    if (fread(rows, row_bytes, (size_t)n, fp) != (size_t)n)
        return fail("teacher logits: reading their file back: %s", ferror(fp) ? strerror(errno) : "it is shorter than written");
    return 0;
}

/* The file for teacher logits that exceed the memory budget: path, or an anonymous
   tmpfile(). Where the system allows it (POSIX), the name is removed at once: the open
   file lives on until it is closed, and vanishes however the process ends (an error,
   Ctrl-C, a kill). *named: the name still exists and must be removed after closing. */
static FILE *teacher_file_open(const char *path, int *named)
{
    FILE *fp = path ? fopen(path, "w+b") : tmpfile();
    *named = 0;
    if (!fp) {
        fail("teacher logits: cannot create %s: %s", path ? path : "a temporary file", strerror(errno));
        return NULL;
    }
    *named = path && remove(path) != 0;
    return fp;
}

/* The next batch of probes (at most 4096): the next ones of order, which is shuffled anew
   (Fisher-Yates) at the start of each epoch, so that every probe is seen once an epoch. */
static int next_batch(int *chosen, int batch, int *order, int *next, int n_probes, KvlRng *rng)
{
    int n_chosen = 0;
    for (int b = 0; b < batch && b < 4096; b++) {
        if (*next == n_probes) {
            for (int i = n_probes - 1; i > 0; i--) {
                int j = (int)(kvl_rng_u32(rng) % (uint32_t)(i + 1)), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            *next = 0;
        }
        chosen[n_chosen++] = order[(*next)++];
    }
    return n_chosen;
}

/* Probes with their teacher's rows, computed once (teacher_set_compute) and read back probe
   by probe (teacher_set_rows): in memory, or in a file when they exceed the budget. A
   distillation reads one set; the sessions experiment keeps earlier sessions' sets, whose
   caches are gone by then, to replay them or to train on all of them at once. */
typedef struct {
    const KvlProbe *probes;
    int n_probes, max_len, topk;
    size_t row_bytes, *at;            /* probe i's rows from byte at[i] */
    unsigned char *rows;              /* every probe's rows in memory, or NULL: */
    FILE *fp;                         /* in this file */
    const char *path;                 /* the file's name while it exists (removed by teacher_set_free) */
} TeacherSet;

static void teacher_set_free(TeacherSet *ts)
{
    if (ts->fp) fclose(ts->fp);
    if (ts->path) remove(ts->path);
    free(ts->rows);
    free(ts->at);
    memset(ts, 0, sizeof *ts);
}

/* The rows of the base model (m without adapter) reading the cache, then each probe: in
   memory up to budget bytes (0: 256 MB), else in file (NULL: an anonymous one). */
static int teacher_set_compute(TeacherSet *ts, KvlModel *m, KvlCache *cache, const KvlProbe *probes, int n_probes, int topk,
                               size_t budget, const char *file)
{
    int V = m->config.vocab_size, named = 0, r = -1;
    if (budget == 0) budget = (size_t)256 << 20;
    memset(ts, 0, sizeof *ts);
    if (V < 1 || n_probes < 1) return fail("distill: no vocabulary or no probes");
    ts->probes = probes;
    ts->n_probes = n_probes;
    ts->topk = topk;
    ts->row_bytes = teacher_row_bytes(V, topk);
    for (int i = 0; i < n_probes; i++)
        if (probes[i].n > ts->max_len) ts->max_len = probes[i].n;
    size_t bytes = teacher_bytes(V, topk, probes, n_probes);
    float *logits = xmalloc(sizeof(float) * (size_t)ts->max_len * V);
    unsigned char *sparse = topk && bytes > budget ? xmalloc(ts->row_bytes * (size_t)ts->max_len) : NULL;
    unsigned char *in_top = topk ? xmalloc((size_t)V) : NULL;
    ProbIndex *by_prob = topk ? xmalloc(sizeof(ProbIndex) * 2 * (size_t)V) : NULL;
    const KvlLora *keep = m->lora;
    m->lora = NULL;
    if (!logits || (topk && (!in_top || !by_prob || (bytes > budget && !sparse))) || !(ts->at = xcalloc((size_t)n_probes, sizeof(size_t))))
        goto done;
    if (bytes <= budget ? !(ts->rows = xmalloc(bytes)) : !(ts->fp = teacher_file_open(file, &named))) goto done;
    if (named) ts->path = file;
    r = teachers_forward(m, cache, cache->n_tokens, probes, n_probes, topk, ts->rows, ts->fp, logits,
                         topk ? sparse : (unsigned char *)logits, by_prob, in_top, ts->at);
done:
    m->lora = keep;
    free(logits); free(sparse); free(in_top); free(by_prob);
    if (r) teacher_set_free(ts);
    return r;
}

/* Probe i's rows: in memory, or read from the file into buffer (room for the probe's rows). */
static const unsigned char *teacher_set_rows(const TeacherSet *ts, int i, unsigned char *buffer)
{
    if (ts->rows) return ts->rows + ts->at[i];
    return teacher_read(ts->fp, ts->at[i], ts->probes[i].n, ts->row_bytes, buffer) ? NULL : buffer;
}

/* a -= (a . q) q, the sum in double: a loses its component along the unit vector q. */
static void remove_component(float *a, const float *q, int n)
{
    double dot = 0.0;
    for (int i = 0; i < n; i++) dot += (double)a[i] * q[i];
    for (int i = 0; i < n; i++) a[i] -= (float)(dot * q[i]);
}

/* Keeping an adapter's A rows orthogonal to another's (O-LoRA's aim, the "orthogonal"
   sessions): basis gets, for each target and layer, an orthonormal basis of the span of
   lora's A rows (modified Gram-Schmidt in double; a row that depends on the ones before it
   becomes zero), and project_out_rows then removes from each A row of an adapter its
   component in that span: a -= sum_q (a . q) q. */
static int orthonormal_rows(KvlLora *basis, const KvlLora *lora, const KvlConfig *c)
{
    if (lora_alloc_like(basis, lora, c)) return -1;
    memcpy(basis->params, lora->params, sizeof(float) * lora->n_params);
    int R = lora->rank;
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!lora->has[t]) continue;
        int in = lora->in[t];
        for (int l = 0; l < c->n_layers; l++) {
            float *A = basis->A[t] + (size_t)l * R * in;
            for (int r = 0; r < R; r++) {
                float *a = A + (size_t)r * in;
                double before = 0.0, after = 0.0;
                for (int i = 0; i < in; i++) before += (double)a[i] * a[i];
                for (int q = 0; q < r; q++) remove_component(a, A + (size_t)q * in, in);
                for (int i = 0; i < in; i++) after += (double)a[i] * a[i];
                double scale = after > 1e-12 * before && after > 0.0 ? 1.0 / sqrt(after) : 0.0;
                for (int i = 0; i < in; i++) a[i] = (float)(a[i] * scale);
            }
        }
    }
    return 0;
}

static void project_out_rows(KvlLora *lora, const KvlLora *basis)
{
    for (int t = 0; t < KVL_N_TARGETS; t++) {
        if (!lora->has[t] || !basis->has[t]) continue;
        int in = lora->in[t];
        for (int l = 0; l < lora->n_layers; l++)
            for (int r = 0; r < lora->rank; r++) {
                float *a = lora->A[t] + ((size_t)l * lora->rank + r) * in;
                for (int q = 0; q < basis->rank; q++) remove_component(a, basis->A[t] + ((size_t)l * basis->rank + q) * in, in);
            }
    }
}

/* A cartridge's trained slots: positions [first, first + n) of every layer and key/value
   head of cache, and flat ([2][L][KVH][n][HD]: the keys, then the values) the one block of
   parameters AdamW steps. Copies the slots into flat, flat into the slots, or adds the slots
   to flat (a gradient). */
enum { SLOTS_TO_FLAT, FLAT_TO_SLOTS, SLOTS_ADD_TO_FLAT };

static void cartridge_slots(KvlCache *cache, int first, int n, float *flat, int how)
{
    size_t heads = (size_t)cache->n_layers * cache->n_kv_heads, row = (size_t)n * cache->head_dim;
    for (int kv = 0; kv < 2; kv++)
        for (size_t h = 0; h < heads; h++) {
            float *slots = (kv ? cache->v : cache->k) + (h * cache->max_tokens + first) * cache->head_dim;
            float *f = flat + (kv * heads + h) * row;
            if (how == SLOTS_TO_FLAT) memcpy(f, slots, sizeof(float) * row);
            else if (how == FLAT_TO_SLOTS) memcpy(slots, f, sizeof(float) * row);
            else for (size_t i = 0; i < row; i++) f[i] += slots[i];
        }
}

/* Probe `probe` of teacher set `set`. */
typedef struct { int set, probe; } ProbeRef;

/* The probes of the student's next pass, from list[first] on: as many as its activations
   hold side by side (their tokens, the prefix with each; one at a time after a cartridge's
   keys), at least one. Fills pass[] and returns their count, or -1 when their teacher rows,
   in a file, cannot be read (into buffer, one probe's after another). */
static int next_pass(PassProbe *pass, const Acts *a, int n_prefix, const TeacherSet *sets, const ProbeRef *list, int first, int n,
                     unsigned char *buffer)
{
    int k = 0, tokens = 0;
    for (; first + k < n; k++) {
        const TeacherSet *ts = &sets[list[first + k].set];
        const KvlProbe *p = &ts->probes[list[first + k].probe];
        if (k > 0 && (a->n_past || tokens + n_prefix + p->n > a->max_tokens)) break;
        const unsigned char *rows = teacher_set_rows(ts, list[first + k].probe, buffer);
        if (!rows) return -1;
        if (!ts->rows) buffer += ts->row_bytes * p->n;
        pass[k] = (PassProbe){p->ids, p->n, rows, ts->topk};
        tokens += n_prefix + p->n;
    }
    return k;
}

/* The mean loss over the probes list[0 .. n) (every probe of the main sets) with the
   student as it stands: each probe's loss weighted by its share of the tokens, added in
   the probes' order, as distill_loss adds them. pass and parts: room for a pass's probes. */
static int sets_loss(KvlModel *m, Acts *acts, const int *prefix, int n_prefix, const TeacherSet *sets, const ProbeRef *list, int n,
                     int use_kl, unsigned char *buffer, PassProbe *pass, double *parts, double *loss)
{
    int n_total = 0;
    long long done = 0;
    double start = now_seconds();
    for (int i = 0; i < n; i++) n_total += sets[list[i].set].probes[list[i].probe].n;
    *loss = 0.0;
    for (int first = 0, k; first < n; first += k) {
        if ((k = next_pass(pass, acts, n_prefix, sets, list, first, n, buffer)) < 0 ||
            distill_pass(m, acts, 0, NULL, prefix, n_prefix, pass, k, use_kl, n_total, parts))
            return -1;
        for (int i = 0; i < k; i++) {
            *loss += parts[i];
            done += pass[i].n;
        }
        report_phase("loss", done, n_total, start);
    }
    return 0;
}

/* The distillation loop over teacher sets whose rows are computed. The student is the
   model with the adapter lora; or, to train a cartridge instead (lora NULL), the model
   alone reading cartridge's n_tokens positions before each probe (prefix ++ slots; its
   first n_frozen, the prefix, stay as they are, and prefix is then empty). Each step
   takes its batch from a seeded shuffle of the probes of sets[0 .. n_main) (every probe seen once an epoch) and, when replay > 0, the
   share round(replay x batch) of it from a shuffle of its own over sets[n_main .. n_sets):
   earlier sessions' probes with the rows their teachers gave. It sums the gradient of the
   mean loss over the batch's positions and takes one AdamW step; with
   opt->orthogonal_to, lora's A rows are then projected out of that adapter's A rows' span
   (and once before the first step), so that they stay orthogonal to it exactly. With
   opt->loss_before and opt->loss_after, sets_loss over sets[0 .. n_main) before the first
   step and after the last. */
static int distill_sets(KvlModel *m, const int *prefix, int n_prefix, const TeacherSet *sets, int n_sets, int n_main,
                        float replay, KvlLora *lora, KvlCache *cartridge, int n_frozen, const KvlDistillOptions *opt,
                        double *final_loss)
{
    const KvlConfig *c = &m->config;
    int max_len = 0, n_pool[2] = {0, 0}, r = -1;
    size_t file_row_bytes = 0, all_tokens = 0;
    for (int s = 0; s < n_sets; s++) {
        n_pool[s >= n_main] += sets[s].n_probes;
        if (sets[s].max_len > max_len) max_len = sets[s].max_len;
        if (!sets[s].rows && sets[s].row_bytes > file_row_bytes) file_row_bytes = sets[s].row_bytes;
        for (int i = 0; i < sets[s].n_probes; i++) all_tokens += (size_t)n_prefix + sets[s].probes[i].n;
    }
    if (n_pool[0] < 1) return fail("distill: no probes");
    if (n_prefix + max_len > c->max_positions) return fail("distill: prefix and probe exceed the model's positions");
    int want = opt->batch < 1 ? 1 : opt->batch, n_old = 0;
    if (replay > 0.0f && n_pool[1]) {           /* at least one replayed probe and one new one a step */
        if (want < 2) return fail("distill: replay needs a batch of 2 probes or more");
        n_old = (int)(replay * want + 0.5f);
        n_old = n_old < 1 ? 1 : n_old > want - 1 ? want - 1 : n_old;
        if (n_old > n_pool[1]) n_old = n_pool[1];
    }
    int n_new = want - n_old < n_pool[0] ? want - n_old : n_pool[0];
    if (n_new + n_old > 4096) return fail("distill: batch %d is larger than 4096", n_new + n_old);
    const KvlLora *other = opt->orthogonal_to;
    int n_past = lora ? 0 : cartridge->n_tokens, n_slots = n_past - n_frozen;
    /* the student's passes: probes side by side up to opt->pass_tokens tokens (one at a time after a cartridge's keys) */
    size_t most = opt->pass_tokens > 0 ? (size_t)opt->pass_tokens : PASS_TOKENS;
    int pass_tokens = n_past ? 0 : (int)(all_tokens < most ? all_tokens : most);
    if (pass_tokens < n_prefix + max_len) pass_tokens = n_prefix + max_len;
    if (!lora && (other || n_prefix || n_slots < 1 || n_past + max_len > c->max_positions))
        return fail("distill: a cartridge of %d slots after %d positions, with %d tokens of prefix and probes of %d", n_slots, n_frozen, n_prefix, max_len);
    if (other && other->n_layers != lora->n_layers) return fail("distill: orthogonal_to has %d layers, the adapter %d", other->n_layers, lora->n_layers);
    for (int t = 0; other && t < KVL_N_TARGETS; t++)
        if (other->has[t] && lora->has[t] && other->in[t] != lora->in[t])
            return fail("distill: orthogonal_to's %s reads %d inputs, the adapter's %d", kvl_target_names[t], other->in[t], lora->in[t]);
    KvlLora grad = {0}, basis = {0};
    AdamW adam = {opt->lr, 0.9f, 0.999f, 1e-8f, opt->weight_decay, 0, NULL, NULL};
    Acts acts = {0};
    size_t n_params = lora ? lora->n_params : (size_t)2 * c->n_layers * c->n_kv_heads * n_slots * c->head_dim;
    float *params = lora ? lora->params : xmalloc(sizeof(float) * n_params), *grads = NULL;
    ProbeRef *pool[2];                          /* pool p's probes: the main one (0), the replayed one (1) */
    int *order[2];
    PassProbe *pass = xmalloc(sizeof *pass * (size_t)pass_tokens);      /* (a probe has a token at least) */
    double *parts = xmalloc(sizeof(double) * (size_t)pass_tokens);
    unsigned char *buffer = file_row_bytes ? xmalloc(file_row_bytes * (size_t)pass_tokens) : NULL;
    for (int p = 0; p < 2; p++) {
        pool[p] = xmalloc(sizeof(ProbeRef) * (n_pool[p] + 1));
        order[p] = xmalloc(sizeof(int) * (n_pool[p] + 1));
    }
    const KvlLora *keep = m->lora;
    if (!pass || !parts || (file_row_bytes && !buffer) || !pool[0] || !order[0] || !pool[1] || !order[1] || !params ||
        (lora ? lora_alloc_like(&grad, lora, c) : !(grads = xmalloc(sizeof(float) * n_params))) ||
        !(adam.m = xcalloc(n_params, sizeof(float))) || !(adam.v = xcalloc(n_params, sizeof(float))) ||
        acts_init(&acts, c, n_past, pass_tokens, n_prefix + max_len, lora ? lora->rank : 1, 0) ||
        scratch_reserve(m, pass_tokens, n_past + n_prefix + max_len) || (opt->orthogonal_to && orthonormal_rows(&basis, opt->orthogonal_to, c)))
        goto done;
    if (lora) grads = grad.params;
    else {                                      /* the student reads the cartridge; its slots are set anew each step */
        cartridge_slots(cartridge, n_frozen, n_slots, params, SLOTS_TO_FLAT);
        cache_copy_into(&acts.cache, cartridge, n_past);
        acts.n_past = n_past;
    }
    for (int s = 0, j[2] = {0, 0}; s < n_sets; s++)
        for (int i = 0; i < sets[s].n_probes; i++) {
            int p = s >= n_main;
            pool[p][j[p]] = (ProbeRef){s, i};
            order[p][j[p]] = j[p];
            j[p]++;
        }
    if (opt->orthogonal_to) project_out_rows(lora, &basis);
    m->lora = lora;
    KvlRng rng[2];
    kvl_rng_seed(&rng[0], opt->seed ^ 0xd15711ull);
    kvl_rng_seed(&rng[1], opt->seed ^ 0x4e91a7ull);
    int next[2] = {n_pool[0], n_pool[1]};               /* positions in the shuffled orders */
    if (opt->loss_before && sets_loss(m, &acts, prefix, n_prefix, sets, pool[0], n_pool[0], opt->use_kl, buffer, pass, parts, opt->loss_before))
        goto done;
    double start = now_seconds(), loss = 0.0;
    int stopped = 0;
    for (int step = 0; step < opt->steps && !stopped; step++) {
        int chosen[4096], n_chosen = 0, n_total = 0;
        ProbeRef batch[4096];
        for (int p = 0; p < 2; p++) {
            int n = next_batch(chosen, p ? n_old : n_new, order[p], &next[p], n_pool[p], &rng[p]);
            for (int b = 0; b < n; b++) batch[n_chosen++] = pool[p][chosen[b]];
        }
        for (int b = 0; b < n_chosen; b++) n_total += sets[batch[b].set].probes[batch[b].probe].n;
        memset(grads, 0, sizeof(float) * n_params);
        if (!lora) cartridge_slots(&acts.cache, n_frozen, n_slots, params, FLAT_TO_SLOTS);
        loss = 0.0;
        for (int first = 0, k; first < n_chosen; first += k) {
            if ((k = next_pass(pass, &acts, n_prefix, sets, batch, first, n_chosen, buffer)) < 0 ||
                distill_pass(m, &acts, 1, lora ? &grad : NULL, prefix, n_prefix, pass, k, opt->use_kl, n_total, parts))
                goto done;
            if (!lora) cartridge_slots(&acts.d_past, n_frozen, n_slots, grads, SLOTS_ADD_TO_FLAT);
            for (int i = 0; i < k; i++) loss += parts[i];
        }
        adamw_step(&adam, params, grads, n_params);
        if (opt->orthogonal_to) project_out_rows(lora, &basis);
        if (opt->progress) {           /* nonzero: stop here, with the adapter of this step */
            double elapsed = now_seconds() - start;
            stopped = opt->progress(opt->progress_ctx, step + 1, opt->steps, loss, elapsed, elapsed / (step + 1) * (opt->steps - step - 1), n_total);
        }
    }
    if (final_loss) *final_loss = loss;
    if (!lora) cartridge_slots(cartridge, n_frozen, n_slots, params, FLAT_TO_SLOTS);
    if (opt->loss_after) {
        *opt->loss_after = NAN;
        if (!lora) cartridge_slots(&acts.cache, n_frozen, n_slots, params, FLAT_TO_SLOTS);
        if (!stopped && sets_loss(m, &acts, prefix, n_prefix, sets, pool[0], n_pool[0], opt->use_kl, buffer, pass, parts, opt->loss_after))
            goto done;
    }
    r = 0;
done:
    m->lora = keep;
    for (int p = 0; p < 2; p++) { free(pool[p]); free(order[p]); }
    if (!lora) { free(params); free(grads); }
    free(pass); free(parts); free(buffer); free(adam.m); free(adam.v);
    kvl_lora_free(&grad);
    kvl_lora_free(&basis);
    acts_free(&acts);
    return r;
}

/* The distillation: the teacher, the model alone reading cache (prefix ++ context), gives
   its rows over every probe once, before the steps (whole logits, or the top K): kept in
   memory up to opt->teacher_memory bytes, else in a file and read back batch by batch
   (the same floats either way); then the steps above, training lora, or cartridge. */
static int distill_from_cache(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                              KvlLora *lora, KvlCache *cartridge, int n_frozen, const KvlDistillOptions *opt, double *final_loss)
{
    const KvlConfig *c = &m->config;
    int V = c->vocab_size, max_len = 0;
    if (n_probes < 1) return fail("distill: no probes");
    for (int i = 0; i < n_probes; i++) {
        if (probes[i].n < 1) return fail("distill: probe %d is empty", i);
        if (probes[i].n > max_len) max_len = probes[i].n;
    }
    if (cache->n_tokens + max_len > cache->max_tokens)
        return fail("distill: a probe of %d tokens does not fit after the %d-token context", max_len, cache->n_tokens);
    if ((cartridge ? cartridge->n_tokens : n_prefix) + max_len > c->max_positions)
        return fail("distill: %s and probe exceed the model's positions", cartridge ? "cartridge" : "prefix");
    if (opt->batch > 4096 && n_probes > 4096) return fail("distill: batch %d is larger than 4096", opt->batch < n_probes ? opt->batch : n_probes);
    int topk = teacher_topk(opt->teacher_topk, V);
    if (topk && !opt->use_kl) return fail("distill: a top-K teacher needs the KL loss (the squared logit difference needs every logit)");
    TeacherSet ts;
    if (teacher_set_compute(&ts, m, cache, probes, n_probes, topk, opt->teacher_memory, opt->teacher_file)) return -1;
    int r = distill_sets(m, prefix, n_prefix, &ts, 1, 1, 0.0f, lora, cartridge, n_frozen, opt, final_loss);
    teacher_set_free(&ts);
    return r;
}

int kvl_distill(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                KvlLora *lora, const KvlDistillOptions *opt, double *final_loss)
{
    return distill_from_cache(m, cache, prefix, n_prefix, probes, n_probes, lora, NULL, 0, opt, final_loss);
}

/* A cartridge (Eyuboglu et al., 2025, "Cartridges"): instead of an adapter, a small KV
   cache trained to stand in for the context's. Its first n_prefix positions are cache's
   prefix, kept as they are: the model computes them from the prefix's tokens anyway, and
   they hold the attention sink (Cartridges freezes that first token for the same reason).
   Its n_slots slots start as the keys and values of the context's first n_slots tokens;
   the student is the model alone reading the cartridge, then each probe, at positions
   n_prefix + n_slots ..., and the loss and steps are the adapter's. The keys' gradients
   come from attention_backward, which gives them for every key a query reads. */
int kvl_cartridge_distill(KvlModel *m, KvlCache *cache, int n_prefix, int n_slots, const KvlProbe *probes, int n_probes,
                          const KvlDistillOptions *opt, KvlCache *cartridge, double *final_loss)
{
    memset(cartridge, 0, sizeof *cartridge);
    if (n_slots < 1 || n_prefix < 0 || n_prefix + n_slots > cache->n_tokens)
        return fail("cartridge: %d slots after a prefix of %d, from a cache of %d tokens", n_slots, n_prefix, cache->n_tokens);
    if (cache_copy(cartridge, cache, &m->config, n_prefix + n_slots, 0)) return error_wrap("cartridge");
    if (distill_from_cache(m, cache, NULL, 0, probes, n_probes, NULL, cartridge, n_prefix, opt, final_loss)) {
        kvl_cache_free(cartridge);
        return -1;
    }
    return 0;
}

/* The mean distillation loss over every probe with the model's current adapter; with a
   cartridge, of the model alone reading it, then each probe (prefix is then empty). */
static int distill_loss(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlCache *cartridge,
                        const KvlProbe *probes, int n_probes, int use_kl, double *loss)
{
    const KvlConfig *c = &m->config;
    int n_ctx = cache->n_tokens, max_len = 0, n_total = 0, r = -1;
    for (int i = 0; i < n_probes; i++) {
        if (probes[i].n > max_len) max_len = probes[i].n;
        n_total += probes[i].n;
    }
    Acts acts = {0};
    float *teacher = xmalloc(sizeof(float) * (size_t)max_len * c->vocab_size);
    *loss = 0.0;
    const KvlLora *keep = m->lora;
    if (cartridge) m->lora = NULL;
    if (cartridge && (!cache_fits(cartridge, c) || cartridge->n_evicted)) {
        fail("distill loss: the cartridge is %s", cartridge->n_evicted ? "evicted" : "for another model shape");
        goto done;
    }
    if (!teacher || acts_init(&acts, c, cartridge ? cartridge->n_tokens : 0, n_prefix + max_len, n_prefix + max_len, m->lora ? m->lora->rank : 1, 0) ||
        scratch_reserve(m, n_prefix + max_len, cache->max_tokens))
        goto done;
    if (cartridge) {
        cache_copy_into(&acts.cache, cartridge, cartridge->n_tokens);
        acts.n_past = cartridge->n_tokens;
    }
    double start = now_seconds();
    long long done_tokens = 0;
    for (int i = 0; i < n_probes; i++) {
        double part = 0.0;
        PassProbe probe = {probes[i].ids, probes[i].n, teacher, 0};
        if (teacher_forward(m, cache, n_ctx, &probes[i], teacher) ||
            distill_pass(m, &acts, 0, NULL, prefix, n_prefix, &probe, 1, use_kl, n_total, &part))
            goto done;
        *loss += part;
        report_phase("loss", done_tokens += probes[i].n, n_total, start);
    }
    r = 0;
done:
    m->lora = keep;
    free(teacher);
    acts_free(&acts);
    return r;
}

int kvl_distill_loss(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                     int use_kl, double *loss)
{
    return distill_loss(m, cache, prefix, n_prefix, NULL, probes, n_probes, use_kl, loss);
}

int kvl_cartridge_loss(KvlModel *m, KvlCache *cache, const KvlCache *cartridge, const KvlProbe *probes, int n_probes,
                       int use_kl, double *loss)
{
    return distill_loss(m, cache, NULL, 0, cartridge, probes, n_probes, use_kl, loss);
}

/* ---- the closed form: the best low-rank update of one layer by least squares ---- */

/* GPTQ's view of a linear layer y = W x: over N tokens with inputs X (as columns) and  */
/* the outputs Y wanted from it, the update dW that minimises                           */
/*     ||Y - (W + dW) X||^2 + lambda ||dW||^2   (lambda damps directions few tokens take) */
/* needs only two sums over the tokens: G = X X^T + lambda I [in][in] and C = R X^T     */
/* [out][in], with R = Y - W X the residual. The full-rank answer is dW* = C G^-1.      */
/* Writing G = L L^T (Cholesky), the objective is a constant plus ||(dW - dW*) L||^2,   */
/* so the best update of rank r is not dW* truncated but                                */
/*     dW_r = SVD_r(dW* L) L^-1,   where   dW* L = C L^-T,                              */
/* the truncation done where the objective is a plain Frobenius norm. As LoRA factors:  */
/* B = U_r S_r^(1/2) and A = S_r^(1/2) V_r^T L^-1 (then divided by LoRA's scale), S_r   */
/* the r largest singular values. The sums and the solves are in double: G's condition  */
/* number is the square of X's.                                                         */

/* In place: the lower triangle of the symmetric nxn matrix g becomes L with g = L L^T, the
   upper triangle zeros. -1 when g is not positive definite (a pivot <= 0). */
static int cholesky(double *g, int n)
{
    for (int j = 0; j < n; j++) {
        double d = g[(size_t)j * n + j];
        for (int k = 0; k < j; k++) d -= g[(size_t)j * n + k] * g[(size_t)j * n + k];
        if (!(d > 0.0)) return fail("closed form: the matrix is not positive definite (pivot %d is %g)", j, d);
        double l_jj = sqrt(d);
        g[(size_t)j * n + j] = l_jj;
        for (int i = j + 1; i < n; i++) {
            double s = g[(size_t)i * n + j];
            for (int k = 0; k < j; k++) s -= g[(size_t)i * n + k] * g[(size_t)j * n + k];
            g[(size_t)i * n + j] = s / l_jj;
        }
        for (int k = j + 1; k < n; k++) g[(size_t)j * n + k] = 0.0;
    }
    return 0;
}

/* x = L^-1 b (forward substitution), or, transposed, x = L^-T b (back substitution); in place. */
static void solve_lower(const double *l, double *b, int n, int transposed)
{
    if (!transposed)
        for (int i = 0; i < n; i++) {
            double s = b[i];
            for (int k = 0; k < i; k++) s -= l[(size_t)i * n + k] * b[k];
            b[i] = s / l[(size_t)i * n + i];
        }
    else
        for (int i = n - 1; i >= 0; i--) {
            double s = b[i];
            for (int k = i + 1; k < n; k++) s -= l[(size_t)k * n + i] * b[k];
            b[i] = s / l[(size_t)i * n + i];
        }
}

/* The number of eigenvalues below x of the symmetric tridiagonal matrix T (diagonal d,
   off-diagonal e): by Sylvester's law of inertia, the number of negative pivots of the
   LDL^T factorisation of T - x I, q_i = d_i - x - e_(i-1)^2 / q_(i-1). A pivot too small
   to divide by is taken as -pivmin. */
static int eigen_count_below(const double *d, const double *e, int n, double x, double pivmin)
{
    int count = 0;
    double q = 1.0;
    for (int i = 0; i < n; i++) {
        q = d[i] - x - (i ? e[i - 1] * e[i - 1] / q : 0.0);
        if (fabs(q) <= pivmin) q = -pivmin;
        count += q < 0.0;
    }
    return count;
}

/* y = (T - lambda I)^-1 y for the tridiagonal T (d, e), in place: Gaussian elimination with
   row exchanges leaves an upper triangle of three diagonals (u0, u1, u2: scratch of n
   each), then back substitution. Inverse iteration calls it with lambda an eigenvalue to
   the last bits, so a pivot may be as good as zero: it is then replaced by a tiny one, and
   the solution is huge along the eigenvector, which is the point. */
static void tridiagonal_shifted_solve(const double *d, const double *e, int n, double lambda, double *y,
                                      double *u0, double *u1, double *u2, double tiny)
{
    double diag = d[0] - lambda, sup1 = n > 1 ? e[0] : 0.0, sup2 = 0.0;  /* row i as reduced so far */
    for (int i = 0; i + 1 < n; i++) {
        double sub = e[i], next_diag = d[i + 1] - lambda, next_sup = i + 2 < n ? e[i + 1] : 0.0;
        if (fabs(diag) >= fabs(sub)) {          /* row i is the pivot: eliminate from row i + 1 */
            double f = diag != 0.0 ? sub / diag : 0.0;
            u0[i] = diag; u1[i] = sup1; u2[i] = sup2;
            y[i + 1] -= f * y[i];
            diag = next_diag - f * sup1;
            sup1 = next_sup - f * sup2;
        } else {                                /* row i + 1 is: exchange, then eliminate from row i */
            double f = diag / sub, yi = y[i];
            u0[i] = sub; u1[i] = next_diag; u2[i] = next_sup;
            y[i] = y[i + 1];
            y[i + 1] = yi - f * y[i];
            diag = sup1 - f * next_diag;
            sup1 = sup2 - f * next_sup;
        }
        sup2 = 0.0;
    }
    u0[n - 1] = diag;
    for (int i = n - 1; i >= 0; i--) {
        double s = y[i] - (i + 1 < n ? u1[i] * y[i + 1] : 0.0) - (i + 2 < n ? u2[i] * y[i + 2] : 0.0);
        y[i] = s / (fabs(u0[i]) > tiny ? u0[i] : tiny);
    }
}

/* The r largest eigenvalues (descending) of the symmetric nxn matrix a, which is destroyed,
   and their eigenvectors (the columns of vectors, nxr). Only a few of the n pairs are
   wanted, so instead of diagonalising the whole matrix:
   1. n - 2 Householder reflections H_k = I - 2 u_k u_k^T make a tridiagonal T = Q^T a Q,
      Q = H_0 H_1 ... H_(n-3) (u_k zeroes column k below its first subdiagonal entry);
   2. bisection with eigen_count_below finds each wanted eigenvalue of T to the last bits;
   3. inverse iteration finds its eigenvector y of T: a solve with T - lambda I multiplies
      y's component along that eigenvector by 1 / (its eigenvalue - lambda), enormous next to
      every other one. Each vector is kept orthogonal to those found before it (Gram-Schmidt),
      which separates the vectors of a repeated eigenvalue;
   4. Q y is the eigenvector of a.
   Step 1 costs (4/3) n^3, the rest n^2 per wanted pair. */
static int symmetric_top_eigen(double *a, int n, int r, double *values, double *vectors)
{
    double *u = xcalloc((size_t)n * n, sizeof(double)), *d = xmalloc(sizeof(double) * n), *e = xcalloc((size_t)n, sizeof(double));
    double *w = xmalloc(sizeof(double) * 3 * n), *y = xmalloc(sizeof(double) * n);
    if (!u || !d || !e || !w || !y) { free(u); free(d); free(e); free(w); free(y); return -1; }
    for (int k = 0; k + 2 < n; k++) {           /* 1: reflect column k's x = a[k+1..][k] onto alpha e_1 */
        double *uk = u + (size_t)k * n, norm = 0.0;
        for (int i = k + 1; i < n; i++) norm += a[(size_t)i * n + k] * a[(size_t)i * n + k];
        norm = sqrt(norm);
        if (norm == 0.0) continue;              /* already zero: H_k = I */
        double x0 = a[(size_t)(k + 1) * n + k], alpha = x0 > 0.0 ? -norm : norm;   /* no cancellation in x0 - alpha */
        double scale = 1.0 / sqrt(2.0 * norm * (norm + fabs(x0)));             /* 1 / |x - alpha e_1| */
        for (int i = k + 1; i < n; i++) uk[i] = a[(size_t)i * n + k] * scale;
        uk[k + 1] = (x0 - alpha) * scale;
        /* the trailing block B becomes H B H = B - 2 u p'^T - 2 p' u^T, p = B u, p' = p - (u^T p) u */
        double *p = w, up = 0.0;
        for (int i = k + 1; i < n; i++) {
            double s = 0.0;
            for (int j = k + 1; j < n; j++) s += a[(size_t)i * n + j] * uk[j];
            p[i] = s;
            up += uk[i] * s;
        }
        for (int i = k + 1; i < n; i++) p[i] -= up * uk[i];
        for (int i = k + 1; i < n; i++)
            for (int j = k + 1; j < n; j++) a[(size_t)i * n + j] -= 2.0 * (uk[i] * p[j] + p[i] * uk[j]);
        a[(size_t)(k + 1) * n + k] = alpha;
    }
    double bound = 0.0, max_e2 = 0.0;           /* Gershgorin: every eigenvalue within bound of 0 */
    for (int i = 0; i < n; i++) {
        d[i] = a[(size_t)i * n + i];
        if (i + 1 < n) e[i] = a[(size_t)(i + 1) * n + i];
    }
    for (int i = 0; i < n; i++) {
        double radius = (i ? fabs(e[i - 1]) : 0.0) + (i + 1 < n ? fabs(e[i]) : 0.0);
        bound = fmax(bound, fabs(d[i]) + radius);
        if (i + 1 < n) max_e2 = fmax(max_e2, e[i] * e[i]);
    }
    double pivmin = DBL_MIN * fmax(1.0, max_e2), tiny = DBL_EPSILON * fmax(bound, DBL_MIN);
    for (int k = 0; k < r; k++) {
        int below = n - 1 - k;                  /* 2: the eigenvalue with n - 1 - k others below it */
        double lo = -bound - tiny, hi = bound + tiny;
        for (int it = 0; it < 200; it++) {
            double mid = 0.5 * (lo + hi);
            if (mid <= lo || mid >= hi) break;  /* no double left between them */
            if (eigen_count_below(d, e, n, mid, pivmin) > below) hi = mid; else lo = mid;
        }
        double lambda = values[k] = 0.5 * (lo + hi);
        for (int i = 0; i < n; i++) y[i] = 1.0 + 0.5 * sin(1.0 + i + 7.0 * k);   /* 3: any start not orthogonal to it */
        for (int it = 0; it < 4; it++) {
            tridiagonal_shifted_solve(d, e, n, lambda, y, w, w + n, w + 2 * n, tiny);
            for (int j = 0; j < k; j++) {       /* against the earlier vectors (still T's) */
                double dot = 0.0;
                for (int i = 0; i < n; i++) dot += vectors[(size_t)i * r + j] * y[i];
                for (int i = 0; i < n; i++) y[i] -= dot * vectors[(size_t)i * r + j];
            }
            double norm = 0.0;
            for (int i = 0; i < n; i++) norm += y[i] * y[i];
            norm = sqrt(norm);
            for (int i = 0; i < n; i++) y[i] = norm > 0.0 ? y[i] / norm : 0.0;
        }
        for (int i = 0; i < n; i++) vectors[(size_t)i * r + k] = y[i];
    }
    for (int k = 0; k < r; k++)                 /* 4: Q y = H_0 (H_1 (... H_(n-3) y)) */
        for (int j = n - 3; j >= 0; j--) {
            const double *uj = u + (size_t)j * n;
            double dot = 0.0;
            for (int i = j + 1; i < n; i++) dot += uj[i] * vectors[(size_t)i * r + k];
            for (int i = j + 1; i < n; i++) vectors[(size_t)i * r + k] -= 2.0 * dot * uj[i];
        }
    free(u); free(d); free(e); free(w); free(y);
    return 0;
}

/* The r largest singular values of the mxn matrix a with their left and right singular
   vectors (the columns of u, mxr, and v, nxr), r <= min(m, n), from the eigenpairs of the
   smaller Gram matrix: a^T a = V S^2 V^T gives u_k = a v_k / s_k, a a^T = U S^2 U^T gives
   v_k = a^T u_k / s_k. A zero singular value gets zero vectors on the other side. */
static int top_singular(const double *a, int m, int n, int r, double *sigma, double *u, double *v)
{
    int left = m < n, k_dim = left ? m : n;             /* the Gram matrix is k_dim x k_dim */
    double *gram = xmalloc(sizeof(double) * k_dim * k_dim), *values = xmalloc(sizeof(double) * r);
    int ok = gram && values;
    for (int i = 0; ok && i < k_dim; i++)
        for (int j = i; j < k_dim; j++) {
            double s = 0.0;
            if (left) for (int k = 0; k < n; k++) s += a[(size_t)i * n + k] * a[(size_t)j * n + k];
            else for (int k = 0; k < m; k++) s += a[(size_t)k * n + i] * a[(size_t)k * n + j];
            gram[(size_t)i * k_dim + j] = gram[(size_t)j * k_dim + i] = s;
        }
    double *known = left ? u : v, *other = left ? v : u;
    int n_known = left ? m : n, n_other = left ? n : m;
    if (ok) ok = symmetric_top_eigen(gram, k_dim, r, values, known) == 0;
    for (int k = 0; ok && k < r; k++) {
        sigma[k] = values[k] > 0.0 ? sqrt(values[k]) : 0.0;
        for (int i = 0; i < n_other; i++) {             /* the other side: a v / s or a^T u / s */
            double s = 0.0;
            for (int j = 0; j < n_known; j++)
                s += (left ? a[(size_t)j * n + i] : a[(size_t)i * n + j]) * known[(size_t)j * r + k];
            other[(size_t)i * r + k] = sigma[k] > 0.0 ? s / sigma[k] : 0.0;
        }
    }
    free(gram);
    free(values);
    return ok ? 0 : -1;
}

/* The best rank-r update dW = B A (B [out][r], A [r][in], float) for the sums g = X X^T + lambda I
   (destroyed: it becomes L) and c = R X^T (destroyed: it becomes dW* L), as above. */
static int lowrank_least_squares(float *b, float *a, double *g, double *c, int out, int in, int r)
{
    if (r > out || r > in) return fail("closed form: rank %d exceeds the layer's %d x %d", r, out, in);
    if (cholesky(g, in)) return -1;
    for (int o = 0; o < out; o++) solve_lower(g, c + (size_t)o * in, in, 0);    /* row o of C L^-T is L^-1 c_o */
    double *sigma = xmalloc(sizeof(double) * r), *u = xmalloc(sizeof(double) * out * r), *v = xmalloc(sizeof(double) * in * r);
    double *col = xmalloc(sizeof(double) * in);
    int ok = sigma && u && v && col && top_singular(c, out, in, r, sigma, u, v) == 0;
    for (int k = 0; ok && k < r; k++) {
        double root = sqrt(sigma[k]);
        for (int o = 0; o < out; o++) b[(size_t)o * r + k] = (float)(u[(size_t)o * r + k] * root);     /* B = U_r S_r^(1/2) */
        for (int i = 0; i < in; i++) col[i] = v[(size_t)i * r + k];
        solve_lower(g, col, in, 1);                /* A's row k: sqrt(s_k) (L^-T v_k)^T */
        for (int i = 0; i < in; i++) a[(size_t)k * in + i] = (float)(root * col[i]);
    }
    free(sigma);
    free(u);
    free(v);
    free(col);
    return ok ? 0 : -1;
}

/* ---- the closed form over the whole model: layer by layer, from the bottom ---- */

/* A target layer's input is shared by its group: q, k, v read the attention norm's     */
/* output, o the attention's, gate and up the MLP norm's, down the SwiGLU's. For the    */
/* teacher (the model alone, reading a probe after the cached context) these are fixed  */
/* and kept for every probe token; the student's (prefix ++ probe, with the adapter     */
/* solved so far) are recomputed before each group, so that a layer is solved for the   */
/* inputs the updates below it produce, as GPTQ quantises. The residual a target must   */
/* add is the teacher's output minus the student's, W (x_t - x_s) (a bias cancels).     */

enum { GROUP_ATTN_IN, GROUP_O_IN, GROUP_MLP_IN, GROUP_DOWN_IN, N_GROUPS };
static const int target_group[KVL_N_TARGETS] = {GROUP_ATTN_IN, GROUP_ATTN_IN, GROUP_ATTN_IN, GROUP_O_IN, GROUP_MLP_IN, GROUP_MLP_IN, GROUP_DOWN_IN};

static int group_width(const KvlConfig *c, int g)
{
    return g == GROUP_O_IN ? c->n_heads * c->head_dim : g == GROUP_DOWN_IN ? c->ffn_dim : c->dim;
}

/* The teacher's inputs of every group and layer over one probe of n tokens read after the
   cache's n_ctx positions: in[g] + ((l * n_all) + at) * width_g for l = 0 .. L-1 (rows at ..
   at + n - 1 of a [L][n_all][width] block). xn_mlp: [n][dim], the MLP norm's own buffer. */
static int teacher_group_inputs(KvlModel *m, KvlCache *cache, int n_ctx, const int *probe, int n, float *xn_mlp,
                                float *in[N_GROUPS], size_t n_all, size_t at)
{
    const KvlConfig *c = &m->config;
    const KvlLora *keep = m->lora;
    if (n > cache->max_tokens - n_ctx) return fail("closed form: a probe of %d tokens does not fit the cache", n);
    if (scratch_reserve(m, n, cache->max_tokens)) return -1;
    KvlScratch *s = m->scratch;
    LayerBuffers b = forward_buffers(s);
    b.xn_mlp = xn_mlp;                          /* the attention norm's output must survive the layer */
    const float *group_out[N_GROUPS] = {b.xn_attn, b.att_out, b.xn_mlp, b.hidden};
    m->lora = NULL;
    embedding_forward(s->x, probe, m->w.embed, n, c->dim);
    rope_tables(s->rope_cos, s->rope_sin, s->inv_freq, n_ctx, n, c->head_dim / 2);
    for (int l = 0; l < c->n_layers; l++) {
        layer_forward(s->x, cache, &b, m, l, n_ctx, n);      /* cache->n_tokens stays n_ctx */
        for (int g = 0; g < N_GROUPS; g++) {
            size_t width = (size_t)group_width(c, g);
            memcpy(in[g] + ((size_t)l * n_all + at) * width, group_out[g], sizeof(float) * n * width);
        }
    }
    m->lora = keep;
    return 0;
}

/* Solves the targets of group g in layer l, given the teacher's inputs xt [n_all][width]
   and the student's xs [n_all][width]. The group's targets share two sums over the tokens,
   G = sum x_s x_s^T and E = sum (x_t - x_s) x_s^T; each target's C is then W E. */
enum { SUM_BLOCK = 64 };                        /* tokens per block of the sums */
static int solve_group(KvlModel *m, KvlLora *lora, int l, int g, const float *xt, const float *xs, size_t n_all, float damping)
{
    const KvlConfig *c = &m->config;
    const float *weights[KVL_N_TARGETS] = {m->w.wq, m->w.wk, m->w.wv, m->w.wo, m->w.w_gate, m->w.w_up, m->w.w_down};
    int in = group_width(c, g), R = lora->rank, r = -1, out_max = 0;
    for (int k = 0; k < KVL_N_TARGETS; k++)
        if (lora->out[k] > out_max) out_max = lora->out[k];
    double *gram = xcalloc((size_t)in * in, sizeof(double)), *e = xcalloc((size_t)in * in, sizeof(double));
    double *g2 = xmalloc(sizeof(double) * in * in), *cross = xmalloc(sizeof(double) * out_max * in);
    double *x = xmalloc(sizeof(double) * SUM_BLOCK * in), *diff = xmalloc(sizeof(double) * SUM_BLOCK * in);
    float *b = xmalloc(sizeof(float) * out_max * R), *a = xmalloc(sizeof(float) * R * in);
    if (!gram || !e || !g2 || !cross || !x || !diff || !b || !a) goto done;
    /* Each entry of G and E sums over the tokens in order. The tokens go in blocks, so that
       a row of G and of E stays in cache while the block passes (the whole of G and E
       would not: 2.4 MB for the MLP's down_proj at 384 inputs); rows are independent, so
       the threads split them. G's lower triangle is mirrored from the upper. */
    for (size_t t0 = 0; t0 < n_all; t0 += SUM_BLOCK) {
        int n_block = n_all - t0 < SUM_BLOCK ? (int)(n_all - t0) : SUM_BLOCK;
        for (int t = 0; t < n_block; t++)
            for (int i = 0; i < in; i++) {
                x[(size_t)t * in + i] = xs[(t0 + t) * in + i];
                diff[(size_t)t * in + i] = (double)xt[(t0 + t) * in + i] - xs[(t0 + t) * in + i];
            }
        PARALLEL_FOR
        for (int i = 0; i < in; i++) {
            double *g_row = gram + (size_t)i * in, *e_row = e + (size_t)i * in;
            for (int t = 0; t < n_block; t++) {
                const double *x_row = x + (size_t)t * in;
                double xi = x_row[i], di = diff[(size_t)t * in + i];
                for (int j = i; j < in; j++) g_row[j] += xi * x_row[j];
                for (int j = 0; j < in; j++) e_row[j] += di * x_row[j];
            }
        }
    }
    for (int i = 0; i < in; i++)
        for (int j = 0; j < i; j++) gram[(size_t)i * in + j] = gram[(size_t)j * in + i];
    double mean_diag = 0.0;                     /* lambda = damping x the mean of diag(G) */
    for (int i = 0; i < in; i++) mean_diag += gram[(size_t)i * in + i] / in;
    for (int i = 0; i < in; i++) gram[(size_t)i * in + i] += damping * mean_diag;
    for (int k = 0; k < KVL_N_TARGETS; k++) {
        if (!lora->has[k] || target_group[k] != g) continue;
        int out = lora->out[k];
        const float *w = weights[k] + (size_t)l * out * in;
        PARALLEL_FOR
        for (int o = 0; o < out; o++) {         /* C = W E, row o summed over i in order, along E's rows */
            double *c_row = cross + (size_t)o * in;
            for (int j = 0; j < in; j++) c_row[j] = 0.0;
            for (int i = 0; i < in; i++) {
                double w_oi = w[(size_t)o * in + i];
                for (int j = 0; j < in; j++) c_row[j] += w_oi * e[(size_t)i * in + j];
            }
        }
        memcpy(g2, gram, sizeof(double) * in * in);
        if (lowrank_least_squares(b, a, g2, cross, out, in, R)) goto done;
        /* dW = scale * B A: B as solved, A divided by the scale */
        memcpy(lora->B[k] + (size_t)l * out * R, b, sizeof(float) * out * R);
        for (int i = 0; i < R * in; i++) lora->A[k][(size_t)l * R * in + i] = a[i] / lora->scale;
    }
    r = 0;
done:
    free(gram); free(e); free(g2); free(cross); free(x); free(diff); free(b); free(a);
    return r;
}

/* Block 0 (attention) or 1 (the MLP) of the student's layer l over T tokens from position
   0, as in student_forward: x, the residual stream entering the block, becomes the stream
   leaving it; the activations land in a's slice l. */
static void student_block_forward(Acts *a, KvlModel *m, float *x, int T, int l, int block)
{
    KvlScratch *s = m->scratch;
    LayerBuffers b;
    rope_tables(s->rope_cos, s->rope_sin, s->inv_freq, 0, T, m->config.head_dim / 2);
    acts_pass(a, T, NULL, 0);
    student_layer_buffers(&b, m, a, l);
    a->cache.n_tokens = 0;
    if (block == 0) attention_block_forward(x, &a->cache, &b, m, l, 0, T);
    else mlp_block_forward(x, &b, m, l, T);
}

int kvl_distill_closed_form(KvlModel *m, KvlCache *cache, const int *prefix, int n_prefix, const KvlProbe *probes, int n_probes,
                            KvlLora *lora, float damping, int max_tokens)
{
    const KvlConfig *c = &m->config;
    int n_ctx = cache->n_tokens, n_use = 0, max_len = 0, r = -1, D = c->dim;
    size_t n_all = 0;
    for (; n_use < n_probes && n_all + (size_t)probes[n_use].n <= (size_t)max_tokens; n_use++) {
        n_all += (size_t)probes[n_use].n;
        if (probes[n_use].n > max_len) max_len = probes[n_use].n;
    }
    if (n_use == 0) return fail("closed form: no probe fits in %d tokens", max_tokens);
    /* entering: each student sequence's residual stream entering the layer being solved,
       [n_prefix + n] rows of D per probe, one after another */
    float *teacher[N_GROUPS] = {0}, *student = NULL, *xn_mlp = xmalloc(sizeof(float) * (size_t)max_len * c->dim);
    float *entering = xmalloc(sizeof(float) * (n_all + (size_t)n_use * n_prefix) * D);
    int *seq = xmalloc(sizeof(int) * (size_t)(n_prefix + max_len));
    const KvlLora *keep = m->lora;
    Acts acts = {0};
    size_t widest = 0;
    for (int g = 0; g < N_GROUPS; g++)
        if ((size_t)group_width(c, g) > widest) widest = (size_t)group_width(c, g);
    for (int g = 0; g < N_GROUPS; g++) teacher[g] = xmalloc(sizeof(float) * (size_t)c->n_layers * n_all * group_width(c, g));
    student = xmalloc(sizeof(float) * n_all * widest);
    if (!xn_mlp || !entering || !seq || !student || !teacher[0] || !teacher[1] || !teacher[2] || !teacher[3] ||
        acts_init(&acts, c, 0, n_prefix + max_len, n_prefix + max_len, lora->rank, 0) || scratch_reserve(m, n_prefix + max_len, n_prefix + max_len))
        goto done;
    for (size_t at = 0, i = 0; i < (size_t)n_use; at += (size_t)probes[i].n, i++)
        if (teacher_group_inputs(m, cache, n_ctx, probes[i].ids, probes[i].n, xn_mlp, teacher, n_all, at)) goto done;
    /* the student starts as the model itself, its streams as the embeddings */
    for (int k = 0; k < KVL_N_TARGETS; k++)
        if (lora->has[k]) memset(lora->B[k], 0, sizeof(float) * c->n_layers * lora->out[k] * lora->rank);
    m->lora = lora;
    memcpy(seq, prefix, sizeof(int) * n_prefix);
    for (size_t row = 0, i = 0; i < (size_t)n_use; row += (size_t)(n_prefix + probes[i].n), i++) {
        memcpy(seq + n_prefix, probes[i].ids, sizeof(int) * probes[i].n);
        embedding_forward(entering + row * D, seq, m->w.embed, n_prefix + probes[i].n, D);
    }
    /* Block by block (attention, then MLP, of each layer): each group's inputs come from its
       block run again, on a copy of the stream, with the updates solved so far, the block's
       own included; once the block is solved, one more run moves every stream past it. */
    for (int l = 0; l < c->n_layers; l++)
        for (int block = 0; block < 2; block++) {
            for (int g = 2 * block; g < 2 * block + 2; g++) {      /* the block's two groups */
                int wanted = 0, width = group_width(c, g);
                for (int k = 0; k < KVL_N_TARGETS; k++) wanted |= lora->has[k] && target_group[k] == g;
                if (!wanted) continue;
                const float *group_in[N_GROUPS] = {acts.xn_attn, acts.att_out, acts.xn_mlp, acts.hidden};
                for (size_t at = 0, row = 0, i = 0; i < (size_t)n_use; at += (size_t)probes[i].n, row += (size_t)(n_prefix + probes[i].n), i++) {
                    int T = n_prefix + probes[i].n;
                    memcpy(acts.res_final, entering + row * D, sizeof(float) * T * D);
                    student_block_forward(&acts, m, acts.res_final, T, l, block);
                    memcpy(student + at * width, group_in[g] + ((size_t)l * T + n_prefix) * width, sizeof(float) * probes[i].n * width);
                }
                if (solve_group(m, lora, l, g, teacher[g] + (size_t)l * n_all * width, student, n_all, damping)) goto done;
            }
            if (block == 1 && l + 1 == c->n_layers) break;          /* no stream goes on past the last block */
            for (size_t row = 0, i = 0; i < (size_t)n_use; row += (size_t)(n_prefix + probes[i].n), i++)
                student_block_forward(&acts, m, entering + row * D, n_prefix + probes[i].n, l, block);
        }
    r = 0;
done:
    m->lora = keep;
    for (int g = 0; g < N_GROUPS; g++) free(teacher[g]);
    free(student);
    free(entering);
    free(xn_mlp);
    free(seq);
    acts_free(&acts);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* 11. Experiments: the needle corpus, pretraining and its BPE trainer, the needle test */
/*                                                                                      */
/* Documents of English-like filler from a small grammar, with needles "The secret code */
/* of NAME is DDDDD." placed at chosen depths, and the questions "Q: What is the secret */
/* code of NAME? A:" whose answers only the needles hold. Everything follows from the   */
/* seed, so a document can be made again anywhere. On this corpus a small model learns, */
/* from nothing, to read and to look needles up (kvl_pretrain: the built-in model), and */
/* the needle test measures what an adapter distilled from a document's cache retains.  */

static const char *const corpus_dets[] = {"the", "a", "every", "one", "that", "this", "some", "each"};
static const char *const corpus_adjs[] = {"old", "little", "quiet", "bright", "green", "tall", "happy", "cold", "small", "busy",
                                          "gentle", "red", "lazy", "clever", "warm", "dark", "soft", "brave", "round", "proud"};
static const char *const corpus_nouns[] = {"dog", "river", "teacher", "garden", "house", "bird", "city", "farmer", "boat", "tree",
                                           "window", "child", "road", "market", "mountain", "cat", "village", "baker", "lamp", "forest",
                                           "letter", "train", "king", "horse", "school", "bridge", "doctor", "storm", "field", "song"};
static const char *const corpus_verbs[] = {"watched", "found", "carried", "followed", "painted", "visited", "remembered", "built",
                                           "opened", "crossed", "heard", "cleaned", "loved", "passed", "helped", "moved"};
static const char *const corpus_preps[] = {"near", "behind", "under", "beside", "across", "inside", "above", "around"};
static const char *const name_heads[] = {"Al", "Ben", "Car", "Dan", "El", "Fen", "Gar", "Hal", "Is", "Jo", "Kel", "Lor", "Mar", "Nor",
                                         "Ol", "Per", "Ros", "Sam", "Tor", "Val"};
static const char *const name_tails[] = {"a", "en", "ia", "o", "us", "ine", "ard", "ie", "on", "ett", "is", "ana", "el", "wyn", "ora"};

#define PICK(list, rng) list[kvl_rng_u32(rng) % (sizeof list / sizeof list[0])]

/* Name number i of the 300 (20 heads x 15 tails). */
static void corpus_name(int i, char *out, size_t cap)
{
    int heads = (int)(sizeof name_heads / sizeof name_heads[0]), tails = (int)(sizeof name_tails / sizeof name_tails[0]);
    i %= heads * tails;
    snprintf(out, cap, "%s%s", name_heads[i % heads], name_tails[i / heads]);
}

/* One filler sentence: "The quiet dog watched a river near the market." */
static int corpus_sentence(Buf *b, KvlRng *rng)
{
    char first[32];
    snprintf(first, sizeof first, "%s", PICK(corpus_dets, rng));
    first[0] = (char)toupper((unsigned char)first[0]);
    int r = buf_puts(b, first) || buf_puts(b, " ");
    if (kvl_rng_u32(rng) % 2) r = r || buf_puts(b, PICK(corpus_adjs, rng)) || buf_puts(b, " ");
    r = r || buf_puts(b, PICK(corpus_nouns, rng)) || buf_puts(b, " ") || buf_puts(b, PICK(corpus_verbs, rng)) || buf_puts(b, " ") ||
        buf_puts(b, PICK(corpus_dets, rng)) || buf_puts(b, " ") || buf_puts(b, PICK(corpus_nouns, rng));
    if (kvl_rng_u32(rng) % 2)
        r = r || buf_puts(b, " ") || buf_puts(b, PICK(corpus_preps, rng)) || buf_puts(b, " the ") || buf_puts(b, PICK(corpus_nouns, rng));
    return r || buf_puts(b, ". ");
}

/* A document of about n_sentences filler sentences with n_needles needles, needle k after
   the fraction depths[k] of the filler (depths NULL: spread evenly). Names are distinct;
   codes are five digits. *text is allocated. */
int kvl_needle_document(char **text, size_t *len, KvlNeedle *needles, int n_needles, int n_sentences, const float *depths, uint64_t seed)
{
    if (n_needles < 0 || n_needles > 300) return fail("needle document: %d needles (0..300)", n_needles);
    KvlRng rng;
    kvl_rng_seed(&rng, seed ^ 0x4e33d1eull);
    int used[300] = {0};
    if (n_needles) memset(needles, 0, sizeof *needles * (size_t)n_needles);
    for (int k = 0; k < n_needles; k++) {
        int i;
        do i = (int)(kvl_rng_u32(&rng) % 300); while (used[i]);
        used[i] = 1;
        corpus_name(i, needles[k].name, sizeof needles[k].name);
        snprintf(needles[k].code, sizeof needles[k].code, "%05u", kvl_rng_u32(&rng) % 100000u);
        needles[k].depth = depths ? depths[k] : (k + 0.5f) / n_needles;
    }
    Buf b = {0};
    int r = buf_push(&b, "", 0);
    for (int s = 0; s <= n_sentences && !r; s++) {
        for (int k = 0; k < n_needles && !r; k++)       /* the needles due before sentence s */
            if ((int)(needles[k].depth * n_sentences + 0.5f) == s)
                r = buf_printf(&b, "The secret code of %s is %s. ", needles[k].name, needles[k].code);
        if (s < n_sentences && !r) r = corpus_sentence(&b, &rng);
    }
    if (r) { free(b.data); return -1; }
    while (b.len && b.data[b.len - 1] == ' ') b.data[--b.len] = 0;
    *text = b.data;
    *len = b.len;
    return 0;
}

/* The question about a needle, up to the answer: "Q: What is the secret code of NAME? A:" */
void kvl_needle_question(const KvlNeedle *needle, char *out, size_t cap)
{
    snprintf(out, cap, "Q: What is the secret code of %.31s? A:", needle->name);
}

/* ---- pretraining: a small model learns the corpus from nothing ---- */

/* The seed of document number index of a run: pretraining documents have even seeds and
   the needle test's odd ones, so that no test document was ever seen in training. */
uint64_t kvl_document_seed(uint64_t run_seed, uint64_t index, int for_test)
{
    uint64_t z = run_seed * 0x9E3779B97F4A7C15ull + index + 1;     /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (z << 1) | (uint64_t)(for_test != 0);
}

/* A pretraining text: a document of 0 .. max_sentences filler sentences with 1 .. 8 needles
   at random depths, then every needle's question and answer, in random order:
       The old dog ... The secret code of Alia is 04217. ... the market.
       Q: What is the secret code of Alia? A: 04217
       Q: ...                                                                            */
int kvl_pretrain_text(char **text, size_t *len, int max_sentences, uint64_t seed)
{
    KvlRng rng;
    kvl_rng_seed(&rng, seed ^ 0x7e47ull);
    KvlNeedle needles[8];
    float depths[8];
    int n_needles = 1 + (int)(kvl_rng_u32(&rng) % 8), order[8];
    int n_sentences = max_sentences > 0 ? (int)(kvl_rng_u32(&rng) % (uint32_t)(max_sentences + 1)) : 0;
    for (int k = 0; k < n_needles; k++) { depths[k] = kvl_rng_float(&rng); order[k] = k; }
    for (int k = n_needles - 1; k > 0; k--) {
        int j = (int)(kvl_rng_u32(&rng) % (uint32_t)(k + 1)), t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    char *doc;
    size_t doc_len;
    if (kvl_needle_document(&doc, &doc_len, needles, n_needles, n_sentences, depths, seed)) return -1;
    Buf b = {doc, doc_len, doc_len + 1};     /* the document goes on growing */
    int r = buf_puts(&b, "\n");
    for (int k = 0; k < n_needles && !r; k++) {
        char q[96];
        kvl_needle_question(&needles[order[k]], q, sizeof q);
        r = buf_printf(&b, "%s %s\n", q, needles[order[k]].code);
    }
    if (r) { free(b.data); return -1; }
    *text = b.data;
    *len = b.len;
    return 0;
}

/* ---- a byte-level BPE tokenizer, trained on the corpus ---- */

typedef struct { int left, right; long long count; } PairCount;

static int compare_pairs(const void *a, const void *b)
{
    const PairCount *x = a, *y = b;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return x->right < y->right ? -1 : x->right > y->right;
}

/* A token's string as tokenizer.json spells it: each byte through GPT-2's byte map. */
static int buf_push_byte_level(Buf *b, const char *bytes, size_t n, const uint32_t byte_to_cp[256])
{
    Buf mapped = {0};
    int r = buf_push(&mapped, "", 0);
    for (size_t i = 0; i < n && !r; i++) {
        uint32_t cp = byte_to_cp[(unsigned char)bytes[i]];
        char u[3];
        if (cp < 0x80) { u[0] = (char)cp; r = buf_push(&mapped, u, 1); }
        else { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); r = buf_push(&mapped, u, 2); }
    }
    r = r || buf_push_json_string(b, mapped.data);
    free(mapped.data);
    return r;
}

/* BPE training's state: the text as its distinct words, each a list of token ids (id b <
   256 is the byte b), and the tokens learnt so far. */
enum { BPE_N_SPECIAL = 2, BPE_N_BYTES = 256 };
typedef struct {
    IntList *words;                 /* each distinct word as token ids */
    long long *freq;                /* how often each word occurs in the text */
    int n_words, cap_words;
    int n_tokens, vocab_size;
    Buf *strings;                   /* [vocab_size] each token's bytes */
    int *merge_left, *merge_right;  /* [vocab_size] the two tokens token id was merged from */
    char *has_digit;                /* [vocab_size] */
    PairCount *pairs;               /* every adjacent pair of every word, with its word's count */
    size_t pairs_cap;
} BpeTrainer;

static void bpe_free(BpeTrainer *b)
{
    for (int k = 0; k < b->n_words; k++) free(b->words[k].data);
    for (int i = 0; b->strings && i < b->vocab_size; i++) free(b->strings[i].data);
    free(b->words); free(b->freq); free(b->strings); free(b->merge_left); free(b->merge_right); free(b->has_digit); free(b->pairs);
}

/* Adds word text[0..n) to the distinct words (its bytes as tokens), or counts it once more. */
static int bpe_add_word(BpeTrainer *b, StrMap *word_index, const char *text, size_t n)
{
    int k = strmap_get(word_index, text, n), previous;
    if (k < 0) {
        if (b->n_words == b->cap_words) {
            int cap = b->cap_words ? 2 * b->cap_words : 1024;
            IntList *w2 = realloc(b->words, sizeof *w2 * cap);
            if (!w2) return fail("out of memory");
            b->words = w2;
            long long *f2 = realloc(b->freq, sizeof *f2 * cap);
            if (!f2) return fail("out of memory");
            b->freq = f2;
            b->cap_words = cap;
        }
        k = b->n_words++;
        memset(&b->words[k], 0, sizeof b->words[k]);
        b->freq[k] = 0;
        for (size_t j = 0; j < n; j++)
            if (ints_push(&b->words[k], (unsigned char)text[j])) return -1;
        if (strmap_put(word_index, text, n, k, &previous)) return -1;
    }
    b->freq[k]++;
    return 0;
}

/* The most frequent adjacent pair, counting each occurrence with its word's frequency; ties
   go to the smallest pair of ids. best->count is 0 when no pair is left. */
static int bpe_best_pair(BpeTrainer *b, PairCount *best)
{
    size_t n_pairs = 0;
    for (int k = 0; k < b->n_words; k++) {
        const IntList *w = &b->words[k];
        if (n_pairs + (size_t)w->n > b->pairs_cap) {
            size_t cap = b->pairs_cap ? 2 * b->pairs_cap : 65536;
            while (cap < n_pairs + (size_t)w->n) cap *= 2;
            PairCount *p2 = realloc(b->pairs, sizeof *p2 * cap);
            if (!p2) return fail("out of memory");
            b->pairs = p2;
            b->pairs_cap = cap;
        }
        for (int j = 0; j + 1 < w->n; j++) {
            int l = w->data[j], r = w->data[j + 1];
            if (b->has_digit[l] || b->has_digit[r]) continue;
            b->pairs[n_pairs++] = (PairCount){l, r, b->freq[k]};
        }
    }
    *best = (PairCount){-1, -1, 0};
    qsort(b->pairs, n_pairs, sizeof *b->pairs, compare_pairs);
    for (size_t i = 0; i < n_pairs;) {
        PairCount sum = b->pairs[i];
        size_t j = i + 1;
        for (; j < n_pairs && b->pairs[j].left == sum.left && b->pairs[j].right == sum.right; j++) sum.count += b->pairs[j].count;
        if (sum.count > best->count) *best = sum;     /* strictly greater: the first (smallest) pair wins ties */
        i = j;
    }
    return 0;
}

/* A new token for the pair, and every occurrence of the pair merged into it, left to right. */
static int bpe_merge(BpeTrainer *b, PairCount pair)
{
    int id = b->n_tokens++;
    b->merge_left[id] = pair.left;
    b->merge_right[id] = pair.right;
    if (buf_push(&b->strings[id], b->strings[pair.left].data, b->strings[pair.left].len) ||
        buf_push(&b->strings[id], b->strings[pair.right].data, b->strings[pair.right].len))
        return -1;
    for (int k = 0; k < b->n_words; k++) {
        IntList *w = &b->words[k];
        int to = 0;
        for (int j = 0; j < w->n; j++) {
            if (j + 1 < w->n && w->data[j] == pair.left && w->data[j + 1] == pair.right) { w->data[to++] = id; j++; }
            else w->data[to++] = w->data[j];
        }
        w->n = to;
    }
    return 0;
}

/* The learnt tokens as a tokenizer.json: <s> and </s>, the vocabulary, the merges. */
static int bpe_tokenizer_json(const BpeTrainer *b, Buf *out)
{
    uint32_t byte_to_cp[256];
    byte_level_map(byte_to_cp);
    if (buf_puts(out, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n")) return -1;
    for (int i = 0; i < BPE_N_SPECIAL; i++)
        if (buf_printf(out, "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                            "\"normalized\": false, \"special\": true}%s\n", i, i ? "</s>" : "<s>", i + 1 < BPE_N_SPECIAL ? "," : ""))
            return -1;
    if (buf_puts(out, "  ],\n  \"normalizer\": null,\n"
                      "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},\n"
                      "  \"post_processor\": {\"type\": \"TemplateProcessing\",\n"
                      "    \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
                      "    \"pair\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
                      "{\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],\n"
                      "    \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [0], \"tokens\": [\"<s>\"]}}},\n"
                      "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
                      "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null, "
                      "\"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
                      "    \"vocab\": {\"<s>\": 0, \"</s>\": 1"))
        return -1;
    for (int id = 0; id < b->n_tokens; id++)
        if (buf_puts(out, id % 8 ? ", " : ",\n      ") ||
            buf_push_byte_level(out, b->strings[id].data, b->strings[id].len, byte_to_cp) || buf_printf(out, ": %d", id + BPE_N_SPECIAL))
            return -1;
    if (buf_puts(out, "},\n    \"merges\": [")) return -1;
    for (int id = BPE_N_BYTES; id < b->n_tokens; id++) {
        const Buf *l = &b->strings[b->merge_left[id]], *r = &b->strings[b->merge_right[id]];
        if (buf_puts(out, id == BPE_N_BYTES ? "\n      [" : ",\n      [") || buf_push_byte_level(out, l->data, l->len, byte_to_cp) ||
            buf_puts(out, ", ") || buf_push_byte_level(out, r->data, r->len, byte_to_cp) || buf_puts(out, "]"))
            return -1;
    }
    return buf_puts(out, "]}\n}\n");
}

/* Byte-pair encoding (Sennrich et al. 2016) learnt from text: cut the text into words with
   GPT-2's pre-tokenizer, start every word from its bytes, and repeatedly merge the most
   frequent adjacent pair of tokens (ties: the smallest pair of ids) into a new token, until
   there are vocab_size tokens or no pair occurs twice. A pair that touches a digit is never
   merged, so that a number is one token per digit (a needle's code is copied digit by
   digit). *json receives a tokenizer.json that kvl_tokenizer_load and Hugging Face's
   tokenizers both read: ids 0 and 1 are <s> and </s>, 2..257 the bytes, then the merges in
   the order they were learnt; encoding adds <s> in front. */
int kvl_bpe_train(const char *text, size_t len, int vocab_size, char **json, size_t *json_len)
{
    if (vocab_size < BPE_N_SPECIAL + BPE_N_BYTES || vocab_size > 1 << 20)
        return fail("BPE training: vocabulary of %d tokens (%d .. %d)", vocab_size, BPE_N_SPECIAL + BPE_N_BYTES, 1 << 20);
    BpeTrainer b = {0};
    StrMap word_index = {0};
    Buf out = {0};
    int r = -1;
    b.vocab_size = vocab_size;
    b.n_tokens = BPE_N_BYTES;
    b.strings = xcalloc((size_t)vocab_size, sizeof(Buf));
    b.merge_left = xmalloc(sizeof(int) * vocab_size);
    b.merge_right = xmalloc(sizeof(int) * vocab_size);
    b.has_digit = xcalloc((size_t)vocab_size, 1);
    if (!b.strings || !b.merge_left || !b.merge_right || !b.has_digit) goto done;
    for (int c = 0; c < BPE_N_BYTES; c++) {
        char byte = (char)c;
        if (buf_push(&b.strings[c], &byte, 1)) goto done;
        b.has_digit[c] = c >= '0' && c <= '9';
    }
    for (size_t i = 0; i < len;) {
        size_t n = pretok_match(REGEX_GPT2, text, len, i);
        if (n == 0) n = 1;              /* (cannot happen: the last alternative matches any space) */
        if (bpe_add_word(&b, &word_index, text + i, n)) goto done;
        i += n;
    }
    while (b.n_tokens + BPE_N_SPECIAL < vocab_size) {
        PairCount best = {-1, -1, 0};
        if (bpe_best_pair(&b, &best)) goto done;
        if (best.count < 2) break;
        if (bpe_merge(&b, best)) goto done;
    }
    if (bpe_tokenizer_json(&b, &out)) goto done;
    *json = out.data;
    *json_len = out.len;
    out.data = NULL;
    r = 0;
done:
    if (r) error_wrap("BPE training");
    bpe_free(&b);
    free(out.data);
    strmap_free(&word_index);
    return r;
}

/* ---- pretraining: the loss, the initial weights, the training loop ---- */

/* Next-token cross-entropy over T positions, loss_t = log sum_v exp(z_t,v) - z_t,target_t:
   adds sum_t loss_t / n_total to *loss and writes d loss / d z = (softmax(z_t) -
   onehot(target_t)) / n_total. */
static void xent_forward_backward(double *loss, float *d_logits, const float *logits, const int *targets, int T, int V, int n_total)
{
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        float *d = d_logits + (size_t)t * V;
        double lse = log_sum_exp(z, V);
        *loss += (lse - z[targets[t]]) / n_total;
        for (int v = 0; v < V; v++) d[v] = (float)(exp((double)z[v] - lse) / n_total);
        d[targets[t]] -= 1.0f / n_total;
    }
}

/* A model of c's shape with every weight zero (gradients). */
static int model_zeros(KvlModel **out, const KvlConfig *c)
{
    KvlModel *m = xcalloc(1, sizeof *m);
    WeightSpec specs[MAX_WEIGHT_SPECS];
    if (!m) return -1;
    m->config = *c;
    if (model_alloc(m, specs, weight_specs(c, &m->w, specs))) { free(m); return -1; }
    memset(m->memory, 0, sizeof(float) * m->n_params);
    *out = m;
    return 0;
}

/* The untrained model a pretraining run starts from: kvl_model_random's weights (variance
   1/fan-in, embeddings uniform in [-1, 1]), then two changes:
   - the layers that write into the residual stream (o_proj, down_proj) x 1/sqrt(2 L), so
     that the stream does not grow with depth;
   - every embedding + KVL_PRETRAIN_EMBED_SHIFT: a direction shared by all tokens. Looking
     a needle up by name takes induction, and induction takes heads that attend by
     position (the token before). With RoPE and no biases a head does that most simply
     through a part of its query and key that is the same for every token; random
     zero-mean embeddings give almost none, and the corpus never rewards growing one, so
     without the shift a model learns to answer with a needle not yet asked about and
     stays there. On the output side (tied embeddings) the shift adds the same logit to
     every token: softmax ignores it.
   The embeddings start at full scale: small ones (GPT-2's x0.05) keep the needles from
   being learnt at all. How this was found: data/model/README.md. */
int kvl_model_pretrain_init(KvlModel **out, const KvlConfig *c, uint64_t seed)
{
    if (kvl_model_random(out, c, seed)) return -1;
    KvlModel *m = *out;
    float shrink = 1.0f / sqrtf(2.0f * c->n_layers);
    for (size_t i = 0; i < (size_t)c->n_layers * c->dim * c->n_heads * c->head_dim; i++) m->w.wo[i] *= shrink;
    for (size_t i = 0; i < (size_t)c->n_layers * c->dim * c->ffn_dim; i++) m->w.w_down[i] *= shrink;
    for (size_t i = 0; i < (size_t)c->vocab_size * c->dim; i++) m->w.embed[i] += KVL_PRETRAIN_EMBED_SHIFT;
    return 0;
}

int kvl_pretrain_state_init(KvlPretrainState *s, const KvlModel *m)
{
    memset(s, 0, sizeof *s);
    s->adam_m = xcalloc(m->n_params, sizeof(float));
    s->adam_v = xcalloc(m->n_params, sizeof(float));
    if (!s->adam_m || !s->adam_v) { kvl_pretrain_state_free(s); return -1; }
    return 0;
}

void kvl_pretrain_state_free(KvlPretrainState *s)
{
    free(s->adam_m);
    free(s->adam_v);
    memset(s, 0, sizeof *s);
}

/* The step, the texts read and the run's options are kept as text in the file's metadata,
   floats with 9 significant digits (enough to give back the same float). */
static const char *const pretrain_state_keys[12] = {"step", "n_texts", "steps", "batch_tokens", "seq_len", "short_steps",
                                                    "ramp_steps", "warmup", "lr", "weight_decay", "clip", "seed"};

int kvl_pretrain_state_save(const char *path, const KvlPretrainState *s, const KvlModel *m, const KvlPretrainOptions *o)
{
    char v[12][32];
    const char *values[12];
    snprintf(v[0], 32, "%d", s->step);
    snprintf(v[1], 32, "%llu", (unsigned long long)s->n_texts);
    snprintf(v[2], 32, "%d", o->steps);
    snprintf(v[3], 32, "%d", o->batch_tokens);
    snprintf(v[4], 32, "%d", o->seq_len);
    snprintf(v[5], 32, "%d", o->short_steps);
    snprintf(v[6], 32, "%d", o->ramp_steps);
    snprintf(v[7], 32, "%d", o->warmup);
    snprintf(v[8], 32, "%.9g", o->lr);
    snprintf(v[9], 32, "%.9g", o->weight_decay);
    snprintf(v[10], 32, "%.9g", o->clip);
    snprintf(v[11], 32, "%llu", (unsigned long long)o->seed);
    for (int i = 0; i < 12; i++) values[i] = v[i];
    KvlTensorOut t[3] = {{"weights", KVL_F32, 1, {(int64_t)m->n_params}, m->memory},
                         {"adam_m", KVL_F32, 1, {(int64_t)m->n_params}, s->adam_m},
                         {"adam_v", KVL_F32, 1, {(int64_t)m->n_params}, s->adam_v}};
    return kvl_st_write(path, t, 3, pretrain_state_keys, values, 12);
}

int kvl_pretrain_state_load(const char *path, KvlPretrainState *s, const KvlModel *m, KvlPretrainOptions *o)
{
    const char *const *keys = pretrain_state_keys;
    KvlSafetensors st;
    if (kvl_st_open(&st, path)) return -1;
    double num[12];
    int r = -1;
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 12; i++) {
        const char *text = kvl_st_meta(&st, keys[i]);
        char *end;
        if (!text) { fail("%s: no '%s' in the metadata; not a pretraining state", path, keys[i]); goto done; }
        num[i] = strtod(text, &end);
        if (end == text || *end || !(num[i] >= 0) || (i != 1 && i != 11 && i < 8 && num[i] > INT_MAX)) {
            fail("%s: bad '%s' in the metadata: '%s'", path, keys[i], text);
            goto done;
        }
    }
    if (num[0] > num[2]) { fail("%s: step %.0f is past the run's %.0f steps", path, num[0], num[2]); goto done; }
    const KvlTensorInfo *tw = kvl_st_find(&st, "weights"), *tm = kvl_st_find(&st, "adam_m"), *tv = kvl_st_find(&st, "adam_v");
    if (!tw || !tm || !tv || kvl_tensor_numel(tw) != (int64_t)m->n_params || kvl_tensor_numel(tm) != (int64_t)m->n_params ||
        kvl_tensor_numel(tv) != (int64_t)m->n_params) {
        fail("%s: expected tensors weights, adam_m and adam_v of %zu floats (the model's parameters)", path, m->n_params);
        goto done;
    }
    if (kvl_pretrain_state_init(s, m) || kvl_st_read_f32(&st, tm, s->adam_m) || kvl_st_read_f32(&st, tv, s->adam_v) ||
        kvl_st_read_f32(&st, tw, m->memory)) {
        kvl_pretrain_state_free(s);
        goto done;
    }
    s->step = (int)num[0];
    s->n_texts = strtoull(kvl_st_meta(&st, "n_texts"), NULL, 10);
    memset(o, 0, sizeof *o);
    o->steps = (int)num[2]; o->batch_tokens = (int)num[3]; o->seq_len = (int)num[4]; o->short_steps = (int)num[5];
    o->ramp_steps = (int)num[6]; o->warmup = (int)num[7]; o->lr = (float)num[8]; o->weight_decay = (float)num[9];
    o->clip = (float)num[10]; o->seed = strtoull(kvl_st_meta(&st, "seed"), NULL, 10);
    r = 0;
done:
    kvl_st_close(&st);
    return r;
}

/* A batch's documents are dealt to PRETRAIN_LANES lanes in turn (document b to lane
   b % PRETRAIN_LANES); a lane reads its documents one after another with its own
   activations, scratch and gradient, and the lanes' gradients are then added in lane
   order. The lanes, not the threads, fix the order of every sum, so the thread count
   changes nothing. Threads take whole lanes: a small model's products are too small to
   share, and threads sharing them would spend much of their time waiting for each
   other. */
#define PRETRAIN_LANES 4

/* The most filler sentences that fit o->seq_len, from the tokens of a 100-sentence text,
   leaving room for 8 needles (13 tokens each) and their questions and answers (20). */
static int pretrain_full_sentences(KvlTokenizer *tok, const KvlPretrainOptions *o, int *full_sentences)
{
    char *doc;
    size_t len;
    int *ids, n;
    if (kvl_needle_document(&doc, &len, NULL, 0, 100, NULL, o->seed)) return -1;
    int r = kvl_encode(tok, doc, len, 0, &ids, &n);
    free(doc);
    if (r) return -1;
    free(ids);
    *full_sentences = (int)((double)(o->seq_len - 8 * 33) * 100 / (n > 0 ? n : 1));
    if (*full_sentences < 0) *full_sentences = 0;
    return 0;
}

/* The curriculum: at most 3 filler sentences for the first o->short_steps steps, then
   growing linearly over o->ramp_steps steps to full_sentences. */
static int pretrain_max_sentences(const KvlPretrainOptions *o, int step, int full_sentences)
{
    if (step >= o->short_steps + o->ramp_steps) return full_sentences;
    double grown = step < o->short_steps ? 0.0 : (double)(step - o->short_steps) / o->ramp_steps;
    int max_sentences = 3 + (int)(grown * (full_sentences - 3));
    return max_sentences > full_sentences ? full_sentences : max_sentences;
}

/* One step's texts: token sequences (<s> text </s>, at most seq_len + 1 tokens: inputs and
   their next tokens) until they hold o->batch_tokens predicted tokens. */
typedef struct { int **seqs, *lens, n, cap, n_tokens; } PretrainBatch;

static void pretrain_batch_free(PretrainBatch *b)
{
    for (int i = 0; i < b->n; i++) free(b->seqs[i]);
    free(b->seqs);
    free(b->lens);
}

static int pretrain_batch(PretrainBatch *b, KvlTokenizer *tok, const KvlPretrainOptions *o, int eos, int max_sentences, uint64_t *n_texts)
{
    for (int i = 0; i < b->n; i++) free(b->seqs[i]);
    b->n_tokens = 0;
    for (b->n = 0; b->n_tokens < o->batch_tokens; b->n++) {
        char *text;
        size_t len;
        int *ids, n;
        if (b->n == b->cap) {
            int cap = b->cap ? 2 * b->cap : 64, **more_seqs = realloc(b->seqs, sizeof *b->seqs * cap), *more_lens;
            if (more_seqs) b->seqs = more_seqs;
            if (!more_seqs || !(more_lens = realloc(b->lens, sizeof *b->lens * cap))) return fail("out of memory");
            b->lens = more_lens;
            b->cap = cap;
        }
        if (kvl_pretrain_text(&text, &len, max_sentences, kvl_document_seed(o->seed, (*n_texts)++, 0))) return -1;
        int e = kvl_encode(tok, text, len, 1, &ids, &n);
        free(text);
        if (e) return -1;
        if (n <= o->seq_len) {                  /* room for </s> */
            int *more = realloc(ids, sizeof(int) * (n + 1));
            if (!more) { free(ids); return fail("out of memory"); }
            ids = more;
            ids[n++] = eos;
        }
        b->seqs[b->n] = ids;
        b->lens[b->n] = n > o->seq_len + 1 ? o->seq_len + 1 : n;
        b->n_tokens += b->lens[b->n] - 1;
    }
    return 0;
}

/* The lanes (see PRETRAIN_LANES): each a view of the model with its own scratch, its
   activations and its gradient. */
typedef struct {
    KvlModel model[PRETRAIN_LANES];
    KvlModel *grad[PRETRAIN_LANES];
    Acts acts[PRETRAIN_LANES];
    double loss[PRETRAIN_LANES];
} PretrainLanes;

static int pretrain_lanes_init(PretrainLanes *lanes, const KvlModel *m, int seq_len)
{
    memset(lanes, 0, sizeof *lanes);
    for (int i = 0; i < PRETRAIN_LANES; i++) {       /* the lanes share the weights, nothing else */
        lanes->model[i] = *m;
        lanes->model[i].scratch = NULL;
    }
    for (int i = 0; i < PRETRAIN_LANES; i++)
        if (model_zeros(&lanes->grad[i], &m->config) || acts_init(&lanes->acts[i], &m->config, 0, seq_len, seq_len, 1, 1) ||
            scratch_reserve(&lanes->model[i], seq_len, seq_len))
            return -1;
    return 0;
}

static void pretrain_lanes_free(PretrainLanes *lanes)
{
    for (int i = 0; i < PRETRAIN_LANES; i++) {
        acts_free(&lanes->acts[i]);
        scratch_free(lanes->model[i].scratch);
        kvl_model_free(lanes->grad[i]);
    }
}

/* The batch's gradient of the mean next-token loss into grad, summed lane by lane in lane
   order; returns the loss. */
static double pretrain_gradient(PretrainLanes *lanes, const PretrainBatch *b, KvlModel *grad)
{
    int V = grad->config.vocab_size;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int lane = 0; lane < PRETRAIN_LANES; lane++) {
        KvlModel *lm = &lanes->model[lane];
        Acts *acts = &lanes->acts[lane];
        memset(lanes->grad[lane]->memory, 0, sizeof(float) * grad->n_params);
        lanes->loss[lane] = 0.0;
        for (int k = lane; k < b->n; k += PRETRAIN_LANES) {
            int T = b->lens[k] - 1;
            student_forward(acts, b->seqs[k], lm, T, NULL, 0);
            xent_forward_backward(&lanes->loss[lane], acts->d_logits, acts->logits, b->seqs[k] + 1, T, V, b->n_tokens);
            student_backward(&lanes->grad[lane]->w, NULL, acts, lm);
        }
    }
    double loss = 0.0;
    for (int lane = 0; lane < PRETRAIN_LANES; lane++) loss += lanes->loss[lane];
    PARALLEL_FOR
    for (size_t i = 0; i < grad->n_params; i++) {
        float g = 0.0f;
        for (int lane = 0; lane < PRETRAIN_LANES; lane++) g += lanes->grad[lane]->memory[i];
        grad->memory[i] = g;
    }
    return loss;
}

/* Scales the gradient down to a global norm of clip when it is longer (clip 0: never). */
static void clip_gradient(float *g, size_t n, float clip)
{
    double norm2 = 0.0;
    for (size_t i = 0; i < n; i++) norm2 += (double)g[i] * g[i];
    double norm = sqrt(norm2);
    if (clip > 0 && norm > clip)
        for (size_t i = 0; i < n; i++) g[i] *= (float)(clip / norm);
}

/* The learning rate of a step: a linear warmup, then a cosine decay to a tenth. */
static float pretrain_lr(const KvlPretrainOptions *o, int step)
{
    double progress = o->steps > 1 ? (double)step / (o->steps - 1) : 1.0;
    return step < o->warmup ? o->lr * (step + 1) / o->warmup
                            : (float)(o->lr * (0.1 + 0.9 * 0.5 * (1.0 + cos(3.14159265358979 * progress))));
}

/* Trains every weight of m on pretraining texts (<s> text </s>, cut at o->seq_len tokens):
   each step takes texts until they hold o->batch_tokens tokens, next-token cross-entropy
   over all of them, gradients clipped to a global norm of o->clip, AdamW with a linear
   warmup and a cosine decay of the learning rate to a tenth. Text number i of the run has
   document seed kvl_document_seed(o->seed, i, 0).

   The curriculum is what makes the needles learnable. Answering needs two attention heads
   that only pay together: one that moves the name to the positions after it, and one that
   finds, from the question, the needle with that name and copies its digits. Until both
   exist neither earns any loss, and the few answer tokens of long documents are lost in
   the filler's gradient noise: long texts alone never get there. Short texts, many to a
   step, are mostly needles and questions. So for the first o->short_steps steps texts
   have at most 3 filler sentences; then over o->ramp_steps steps the filler grows to fill
   o->seq_len, so that retrieval carries over to long contexts (how the recipe was found:
   data/model/README.md). */
int kvl_pretrain(KvlModel *m, KvlTokenizer *tok, const KvlPretrainOptions *o, KvlPretrainState *state, double *final_loss)
{
    const KvlConfig *c = &m->config;
    int r = -1, full_sentences;
    if (o->seq_len < 2 || o->seq_len > c->max_positions) return fail("pretrain: sequence length %d (2 .. %d)", o->seq_len, c->max_positions);
    if (o->batch_tokens < 1 || o->batch_tokens > (1 << 24)) return fail("pretrain: batch of %d tokens (1 .. 2^24)", o->batch_tokens);
    if (kvl_tokenizer_vocab_size(tok) > c->vocab_size)
        return fail("pretrain: the tokenizer has %d tokens, the model %d", kvl_tokenizer_vocab_size(tok), c->vocab_size);
    KvlModel *grad = NULL;
    PretrainLanes *lanes = xcalloc(1, sizeof *lanes);
    PretrainBatch batch = {0};
    KvlPretrainState fresh = {0};
    const KvlLora *keep = m->lora;
    m->lora = NULL;
    if (!state) state = &fresh;
    if (!lanes || pretrain_lanes_init(lanes, m, o->seq_len)) goto done;
    if ((!state->adam_m && kvl_pretrain_state_init(state, m)) || model_zeros(&grad, c)) goto done;
    if (pretrain_full_sentences(tok, o, &full_sentences)) goto done;
    AdamW adam = {o->lr, 0.9f, 0.95f, 1e-8f, o->weight_decay, state->step, state->adam_m, state->adam_v};
    uint64_t n_texts = state->n_texts;
    int eos = c->eos_token_id >= 0 ? c->eos_token_id : 1, first_step = state->step;
    double start = now_seconds(), loss = 0.0;
    for (int step = first_step; step < o->steps; step++) {
        if (pretrain_batch(&batch, tok, o, eos, pretrain_max_sentences(o, step, full_sentences), &n_texts)) goto done;
        loss = pretrain_gradient(lanes, &batch, grad);
        clip_gradient(grad->memory, grad->n_params, o->clip);
        adam.lr = pretrain_lr(o, step);
        adamw_step(&adam, m->memory, grad->memory, m->n_params);
        state->step = step + 1;
        state->n_texts = n_texts;
        if (o->progress) {
            double elapsed = now_seconds() - start;
            if (o->progress(o->progress_ctx, step + 1, o->steps, loss, elapsed, elapsed / (step + 1 - first_step) * (o->steps - step - 1),
                            batch.n_tokens))
                break;
        }
    }
    if (final_loss) *final_loss = loss;
    r = 0;
done:
    m->lora = keep;
    pretrain_batch_free(&batch);
    kvl_pretrain_state_free(&fresh);
    if (lanes) pretrain_lanes_free(lanes);
    free(lanes);
    kvl_model_free(grad);
    return r;
}

/* The answers of a pretraining text are the " DDDDD" after each "? A:". The text is
   encoded piece by piece, cut before and after each answer; every cut is where the
   byte-level pre-tokenizer splits anyway (before a space, before a newline), so the pieces'
   tokens are the whole text's. */
int kvl_pretrain_eval(KvlModel *m, KvlTokenizer *tok, int n_texts, int max_sentences, uint64_t seed,
                      double *answer_loss, double *answers_right, int by_needles[9][2])
{
    const KvlConfig *c = &m->config;
    int V = c->vocab_size, r = -1, cap = c->max_positions;
    int *ids = xmalloc(sizeof(int) * (size_t)cap), *is_answer = xmalloc(sizeof(int) * (size_t)cap);
    float *logits = xmalloc(sizeof(float) * (size_t)cap * V);
    KvlCache cache = {0};
    double loss = 0.0;
    long n_answer_tokens = 0, n_answers = 0, n_right = 0;
    if (by_needles) memset(by_needles, 0, sizeof(int) * 9 * 2);
    if (!ids || !is_answer || !logits || kvl_cache_init(&cache, c, cap)) goto done;
    for (int i = 0; i < n_texts; i++) {
        char *text;
        size_t len;
        if (kvl_pretrain_text(&text, &len, max_sentences, kvl_document_seed(seed, (uint64_t)i, 1))) goto done;
        int n = 0, e = 0;
        ids[n] = c->bos_token_id >= 0 ? c->bos_token_id : 0;
        is_answer[n++] = 0;
        for (size_t at = 0; at < len && !e;) {
            const char *q = strstr(text + at, "? A:");
            size_t piece_end = q ? (size_t)(q - text) + 4 : len, answer_end = piece_end;
            while (answer_end < len && text[answer_end] != '\n') answer_end++;
            for (int part = 0; part < 2 && !e; part++) {        /* up to the answer, the answer */
                size_t from = part ? piece_end : at, to = part ? answer_end : piece_end;
                int *t, nt;
                if (to == from) continue;
                if ((e = kvl_encode(tok, text + from, to - from, 0, &t, &nt))) break;
                if (n + nt > cap) e = fail("pretrain eval: a text of more than %d tokens", cap);
                for (int k = 0; k < nt && !e; k++) { ids[n] = t[k]; is_answer[n++] = part; }
                free(t);
            }
            at = answer_end;
        }
        if (!e) {                            /* the pieces must be the whole text's tokens */
            int *whole, n_whole;
            if (!(e = kvl_encode(tok, text, len, 0, &whole, &n_whole))) {
                if (n_whole != n - 1 || memcmp(whole, ids + 1, sizeof(int) * (size_t)n_whole))
                    e = fail("pretrain eval: this tokenizer splits text %d at an answer's edge", i);
                free(whole);
            }
        }
        free(text);
        cache.n_tokens = 0;
        if (e || kvl_forward(m, &cache, ids, n, logits, n)) goto done;
        int all_right = 1, in_answer = 0;
        long answers_before = n_answers, right_before = n_right;
        for (int t = 1; t <= n; t++) {
            if (t < n && is_answer[t]) {                        /* token t, predicted at t - 1 */
                const float *z = logits + (size_t)(t - 1) * V;
                loss += log_sum_exp(z, V) - z[ids[t]];
                n_answer_tokens++;
                all_right &= kvl_argmax(z, V) == ids[t];
                in_answer = 1;
            } else if (in_answer) {                             /* an answer ended */
                n_answers++;
                n_right += all_right;
                all_right = 1;
                in_answer = 0;
            }
        }
        int K = (int)(n_answers - answers_before);                 /* a text asks each needle once */
        if (by_needles && K >= 1 && K <= 8) {
            by_needles[K][0] += (int)(n_right - right_before);
            by_needles[K][1] += K;
        }
    }
    *answer_loss = n_answer_tokens ? loss / n_answer_tokens : 0.0;
    *answers_right = n_answers ? (double)n_right / n_answers : 0.0;
    r = 0;
done:
    kvl_cache_free(&cache);
    free(ids); free(is_answer); free(logits);
    return r;
}

/* ---- the needle test: recall with the context, without it, and with the adapter ---- */

/* The <s> every needle text starts with (id 0 for a model that has none). */
static int needle_bos(const KvlConfig *c)
{
    return c->bos_token_id >= 0 ? c->bos_token_id : 0;
}

/* The longest document (in whole sentences) of at most n_tokens tokens with the needles at
   their depths; *ids gets its tokens (no <s>). The needles follow from the seed alone, so
   the filler can grow one sentence at a time around the same needles. */
static int needle_context(KvlTokenizer *tok, KvlNeedle *needles, int n_needles, const float *depths, int n_tokens,
                          uint64_t seed, int **ids, int *n_ids)
{
    *ids = NULL;
    for (int n_sentences = 0;; n_sentences++) {
        char *text;
        size_t len;
        int *t, n;
        if (kvl_needle_document(&text, &len, needles, n_needles, n_sentences, depths, seed)) goto fail;
        int r = kvl_encode(tok, text, len, 0, &t, &n);
        free(text);
        if (r) goto fail;
        if (n > n_tokens) { free(t); break; }
        free(*ids);
        *ids = t;
        *n_ids = n;
    }
    if (*ids) return 0;
    fail("needle test: %d needles do not fit in %d tokens", n_needles, n_tokens);
fail:
    free(*ids);
    *ids = NULL;
    return -1;
}

/* The model's greedy answer to a question read after what the cache holds: n_answer
   tokens. The cache is left as it was. */
static int needle_answer(KvlModel *m, KvlCache *cache, const int *question, int n_question, int *answer, int n_answer, float *logits)
{
    int n_ctx = cache->n_tokens, V = m->config.vocab_size;
    int r = kvl_forward(m, cache, question, n_question, logits, 1);
    for (int t = 0; t < n_answer && !r; t++) {
        answer[t] = kvl_argmax(logits, V);
        if (t + 1 < n_answer) r = kvl_forward(m, cache, &answer[t], 1, logits, 1);
    }
    cache->n_tokens = n_ctx;
    return r;
}

/* Exact match: the answer's tokens decode to " DDDDD", the needle's code. */
static int needle_correct(const KvlTokenizer *tok, const int *answer, int n_answer, const KvlNeedle *needle, int *correct)
{
    char *text, want[16];
    size_t len;
    if (kvl_decode(tok, answer, n_answer, 1, &text, &len)) return -1;
    snprintf(want, sizeof want, " %s", needle->code);
    *correct = strcmp(text, want) == 0;
    free(text);
    return 0;
}

/* Asks the needle's question after what the cache holds (room: the positions left) and
   scores the model's greedy answer of NEEDLE_ANSWER tokens into *correct. */
enum { NEEDLE_ANSWER = 6 };                     /* " DDDDD": a space and five digits */
static int needle_ask(KvlModel *m, KvlTokenizer *tok, KvlCache *cache, const KvlNeedle *needle, int room, float *logits, int *correct)
{
    char q[96];
    int *ids, n, answer[NEEDLE_ANSWER];
    q[0] = '\n';
    kvl_needle_question(needle, q + 1, sizeof q - 1);
    if (kvl_encode(tok, q, strlen(q), 0, &ids, &n)) return -1;
    int e = n + NEEDLE_ANSWER > room ? fail("needle test: question too long")
          : needle_answer(m, cache, ids, n, answer, NEEDLE_ANSWER, logits) || needle_correct(tok, answer, NEEDLE_ANSWER, needle, correct);
    free(ids);
    return e ? -1 : 0;
}

/* The K needles' questions, each asked after what the cache holds: correct[k], and *right,
   the answers right. */
static int needle_ask_all(KvlModel *m, KvlTokenizer *tok, KvlCache *cache, const KvlNeedle *needles, int K, int room,
                          float *logits, int correct[KVL_NEEDLE_MAX], int *right)
{
    *right = 0;
    for (int k = 0; k < K; k++) {
        if (needle_ask(m, tok, cache, &needles[k], room, logits, &correct[k])) return -1;
        *right += correct[k];
    }
    return 0;
}

/* The questions asked after <s> alone, with the model as it stands (its weights and
   m->lora). <s> is read with the adapter too, as the student read it in training. */
static int ask_without_context(KvlModel *m, KvlTokenizer *tok, const KvlNeedle *needles, int K, int room, float *logits,
                               int correct[KVL_NEEDLE_MAX], int *right)
{
    KvlCache empty = {0};
    int bos = needle_bos(&m->config);
    int r = kvl_cache_init(&empty, &m->config, 1 + room) || kvl_forward(m, &empty, &bos, 1, NULL, 0) ||
            needle_ask_all(m, tok, &empty, needles, K, room, logits, correct, right);
    kvl_cache_free(&empty);
    return r ? -1 : 0;
}

/* A needle document as a trial or a session uses it: its needles, BOS ++ its tokens, its
   KV cache (with room after it for a probe or a question), and, with_probes, the probes
   distilled from it, which hold no ground truth: the teacher's own samples after "\nQ:"
   (seeded by o->distill.seed), and/or slices of the context. */
typedef struct {
    KvlNeedle needles[KVL_NEEDLE_MAX];
    int n_doc, *tokens, room;                /* tokens: BOS ++ the document's n_doc */
    KvlCache cache;
    KvlProbe *probes;
    int n_probes;
    double probe_seconds;
} NeedleDoc;

static void needle_doc_free(NeedleDoc *d)
{
    for (int i = 0; i < d->n_probes; i++) free(d->probes[i].ids);
    free(d->probes);
    free(d->tokens);
    kvl_cache_free(&d->cache);
    memset(d, 0, sizeof *d);
}

static int needle_doc_open(NeedleDoc *d, KvlModel *m, KvlTokenizer *tok, const KvlNeedleOptions *o, const float *depths,
                           uint64_t doc_seed, int with_probes)
{
    const KvlConfig *c = &m->config;
    int *doc = NULL, n_chunks = 0, r = -1, bos = needle_bos(c);
    KvlProbe *chunks = NULL, prompt = {0};
    memset(d, 0, sizeof *d);
    if (needle_context(tok, d->needles, o->n_needles, depths, o->context_len, doc_seed, &doc, &d->n_doc)) return -1;
    d->room = 64 + (o->self_study_len > o->chunk_len ? o->self_study_len : o->chunk_len);
    if (!(d->tokens = xmalloc(sizeof(int) * (d->n_doc + 1)))) goto done;
    d->tokens[0] = bos;
    memcpy(d->tokens + 1, doc, sizeof(int) * d->n_doc);
    if (1 + d->n_doc + d->room > c->max_positions) {
        fail("needle test: a %d-token context leaves no room in %d positions", d->n_doc, c->max_positions);
        goto done;
    }
    if (kvl_cache_init(&d->cache, c, 1 + d->n_doc + d->room) || kvl_forward(m, &d->cache, d->tokens, 1 + d->n_doc, NULL, 0)) goto done;
    if (!with_probes) { r = 0; goto done; }
    double start = now_seconds();
    int n_self = o->probes & KVL_PROBES_SELF_STUDY ? o->n_self_study : 0;
    if (o->probes & KVL_PROBES_CONTEXT && kvl_context_chunks(doc, d->n_doc, o->chunk_len, &chunks, &n_chunks)) goto done;
    if (!(d->probes = xcalloc((size_t)(n_self + n_chunks) + 1, sizeof *d->probes))) goto done;
    if (n_self) {
        if (kvl_encode(tok, "\nQ:", 3, 0, &prompt.ids, &prompt.n)) goto done;
        int e = kvl_self_study(m, &d->cache, d->tokens[d->n_doc], &prompt, 1, n_self, o->self_study_len, o->distill.seed, d->probes);
        d->n_probes = n_self;                   /* (freed with d, whatever happened) */
        if (e) goto done;
    }
    if (n_chunks) memcpy(d->probes + d->n_probes, chunks, sizeof *chunks * n_chunks);   /* (memcpy from NULL is undefined) */
    d->n_probes += n_chunks;
    n_chunks = 0;
    if (d->n_probes == 0) { fail("needle test: no probes"); goto done; }
    d->probe_seconds = now_seconds() - start;
    r = 0;
done:
    for (int i = 0; i < n_chunks; i++) free(chunks[i].ids);
    free(chunks); free(prompt.ids); free(doc);
    if (r) needle_doc_free(d);
    return r;
}

/* One trial of the needle test (see KvlNeedleOptions): a document of o->context_len
   tokens with o->n_needles needles at depths, from doc_seed; its KV cache and probes; then
   each needle's question "\nQ: What is the secret code of NAME? A:" asked after the cached
   context and after <s> alone, and, for each run, after <s> alone with an adapter
   distilled from those probes by the run's method (<s> read through it, as in training).
   Every run starts from the same initial adapter (the seed), so that the runs differ only
   in method and rank. The generator's codes are used only to score. */
int kvl_needle_trial(KvlModel *m, KvlTokenizer *tok, const KvlNeedleOptions *o, const float *depths, uint64_t doc_seed,
                     KvlNeedleResult *res)
{
    const KvlConfig *c = &m->config;
    int K = o->n_needles, r = -1, bos = needle_bos(c);
    NeedleDoc d = {0};
    KvlLora lora = {0};
    float *logits = xmalloc(sizeof(float) * c->vocab_size);
    memset(res, 0, sizeof *res);
    if (!logits) return -1;
    if (K < 1 || K > KVL_NEEDLE_MAX) { fail("needle test: %d needles (1 .. %d)", K, KVL_NEEDLE_MAX); goto done; }
    if (o->n_runs < 1 || o->n_runs > KVL_NEEDLE_RUNS) { fail("needle test: %d runs (1 .. %d)", o->n_runs, KVL_NEEDLE_RUNS); goto done; }
    if (needle_doc_open(&d, m, tok, o, depths, doc_seed, 1)) goto done;
    memcpy(res->needles, d.needles, sizeof *d.needles * K);
    res->n_needles = K;
    res->context_tokens = d.n_doc;
    res->kv_cache_bytes = kvl_cache_bytes_per_token(c) * (size_t)d.n_doc;
    res->probe_seconds = d.probe_seconds;
    res->n_probes = d.n_probes;

    /* the base model, with and without the context */
    int correct[KVL_NEEDLE_MAX], right;
    for (int k = 0; k < K; k++)
        if (needle_ask(m, tok, &d.cache, &d.needles[k], d.room, logits, &res->correct[k][0])) goto done;
    if (ask_without_context(m, tok, d.needles, K, d.room, logits, correct, &right)) goto done;
    for (int k = 0; k < K; k++) res->correct[k][1] = correct[k];

    /* each run: an adapter from the probes, its loss over them, and the questions it answers */
    for (int run = 0; run < o->n_runs; run++) {
        const KvlNeedleRun *u = &o->runs[run];
        double start = now_seconds();
        if (kvl_lora_init(&lora, c, u->rank, u->alpha, 0, o->targets, o->distill.seed) ||
            (u->method != KVL_METHOD_GRADIENT && kvl_distill_closed_form(m, &d.cache, &bos, 1, d.probes, d.n_probes, &lora, o->damping, o->solve_tokens)) ||
            (u->method != KVL_METHOD_CLOSED_FORM && kvl_distill(m, &d.cache, &bos, 1, d.probes, d.n_probes, &lora, &o->distill, NULL)))
            goto done;
        res->distill_seconds[run] = now_seconds() - start;
        res->adapter_bytes[run] = lora.n_params * sizeof(float);
        m->lora = &lora;
        int e = kvl_distill_loss(m, &d.cache, &bos, 1, d.probes, d.n_probes, o->distill.use_kl, &res->loss[run]) ||
                ask_without_context(m, tok, d.needles, K, d.room, logits, correct, &right);
        for (int k = 0; k < K && !e; k++) res->correct[k][2 + run] = correct[k];
        m->lora = NULL;
        kvl_lora_free(&lora);
        if (e) goto done;
    }
    r = 0;
done:
    needle_doc_free(&d);
    free(logits);
    kvl_lora_free(&lora);
    return r;
}

/* ---- many sessions: how adapters are combined over time, forgetting and drift ---- */

const char *const kvl_merge_names[KVL_N_MERGES] = {"incremental", "incremental-replay", "compose-sum", "compose-orthogonal",
                                                   "merge-weights", "joint"};

/* Drift of the final state away from the base model, on text never distilled: (a) the
   answers right with the context on fresh needle documents, *base_right by the base
   model, *right by the final state (out of *asked); (b) the mean over positions of
   KL(base || final) of next-token distributions on fresh filler (no needles). base_weights:
   the base model's weights when the final state is merged into m's (else NULL); the final
   state is m as it stands on entry, and is left so. */
static int session_drift(KvlModel *m, KvlTokenizer *tok, const KvlSessionsOptions *o, uint64_t seed, const float *base_weights,
                         KvlSessionsResult *res)
{
    const KvlConfig *c = &m->config;
    int V = c->vocab_size, bos = needle_bos(c), r = -1, *filler = NULL, n_filler = 0;
    size_t n_weights = base_weights ? m->n_params : 0;
    const KvlLora *final_lora = m->lora;
    float *final_weights = n_weights ? xmalloc(sizeof(float) * n_weights) : NULL;
    float *logits = xmalloc(sizeof(float) * V), *adapted = NULL, *base = NULL;
    int *ids = NULL;
    KvlCache cache = {0};
    NeedleDoc d = {0};
    res->drift_asked = res->drift_base = res->drift_right = 0;
    if (!logits || (n_weights && !final_weights)) goto done;
    if (n_weights) memcpy(final_weights, m->memory, sizeof(float) * n_weights);
    if (needle_context(tok, NULL, 0, NULL, o->drift_tokens, kvl_document_seed(seed, 2 * KVL_SESSIONS_MAX, 1), &ids, &n_filler) ||
        !(filler = xmalloc(sizeof(int) * (n_filler + 1))) || !(adapted = xmalloc(sizeof(float) * (n_filler + 1) * V)) ||
        !(base = xmalloc(sizeof(float) * (n_filler + 1) * V)) || kvl_cache_init(&cache, c, n_filler + 1))
        goto done;
    filler[0] = bos;                            /* <s> ++ the filler */
    memcpy(filler + 1, ids, sizeof(int) * n_filler);
    for (int pass = 0; pass < 2; pass++) {      /* the final state, then the base model */
        if (pass == 1) {
            m->lora = NULL;
            if (n_weights) memcpy(m->memory, base_weights, sizeof(float) * n_weights);
        }
        cache.n_tokens = 0;
        if (kvl_forward(m, &cache, filler, n_filler + 1, pass ? base : adapted, n_filler + 1)) goto done;
        for (int j = 0; j < o->drift_documents; j++) {
            if (needle_doc_open(&d, m, tok, &o->needle, NULL, kvl_document_seed(seed, KVL_SESSIONS_MAX + (uint64_t)j, 1), 0)) goto done;
            for (int k = 0; k < o->needle.n_needles; k++) {
                int correct = 0;
                if (needle_ask(m, tok, &d.cache, &d.needles[k], d.room, logits, &correct)) goto done;
                *(pass ? &res->drift_base : &res->drift_right) += correct;
                res->drift_asked += !pass;
            }
            needle_doc_free(&d);
        }
    }
    double kl = 0.0;
    for (int t = 0; t <= n_filler; t++) kl += kl_position(adapted + (size_t)t * V, base + (size_t)t * V, V);
    res->drift_kl = kl / (n_filler + 1);
    r = 0;
done:
    m->lora = final_lora;
    if (final_weights) memcpy(m->memory, final_weights, sizeof(float) * n_weights);
    needle_doc_free(&d);
    kvl_cache_free(&cache);
    free(final_weights); free(logits); free(adapted); free(base); free(filler); free(ids);
    return r;
}

/* Many sessions with one merging strategy (see KvlSessionsOptions). Session k reads a fresh
   needle document (seed kvl_document_seed(seed, k, 1)): its cache is recorded, its probes
   made and the teacher's rows over them computed; then the cache is dropped, as a
   deployed system would, and only the probes and rows remain. How the session is learnt:
   - incremental: the one adapter goes on training (from where session k-1 left it) on
     session k's probes;
   - incremental-replay: the same, with o->replay of each batch drawn from the earlier
     sessions' probes and kept rows;
   - compose-sum: an adapter of its own (seed + k), from scratch; the deployed adapter is
     the sum of all so far (kvl_lora_combine, weights 1);
   - compose-orthogonal: the same, its A rows kept orthogonal to the earlier adapters';
   - merge-weights: an adapter of its own, then merged into the weights, which teach the
     next session (the model is restored at the end);
   - joint: nothing until the end, then one adapter trained on every session's probes at
     once, steps x S (every probe seen as often as in the others): the reference ceiling.
   After each session (but joint), its own questions are asked without context
   (res->learnt); after the last, every session's (res->kept); then the drift. */
int kvl_needle_sessions(KvlModel *m, KvlTokenizer *tok, const KvlSessionsOptions *o, int merge, uint64_t seed, KvlSessionsResult *res)
{
    const KvlConfig *c = &m->config;
    const KvlNeedleOptions *no = &o->needle;
    const KvlNeedleRun *u = &no->runs[0];
    int S = o->n_sessions, K = no->n_needles, r = -1, bos = needle_bos(c), room = 0;
    int correct[KVL_NEEDLE_MAX], composed = merge == KVL_MERGE_COMPOSE_SUM || merge == KVL_MERGE_COMPOSE_ORTHOGONAL;
    memset(res, 0, sizeof *res);
    if (S < 1 || S > KVL_SESSIONS_MAX) return fail("sessions: %d sessions (1 .. %d)", S, KVL_SESSIONS_MAX);
    if (merge < 0 || merge >= KVL_N_MERGES) return fail("sessions: no merging strategy %d", merge);
    if (K < 1 || K > KVL_NEEDLE_MAX) return fail("sessions: %d needles (1 .. %d)", K, KVL_NEEDLE_MAX);
    if (!(o->replay >= 0.0f && o->replay < 1.0f)) return fail("sessions: a replay share of %g (0 <= share < 1)", o->replay);
    if (o->drift_documents < 0 || o->drift_documents > KVL_SESSIONS_MAX)      /* (their seeds come after the sessions', before the filler's) */
        return fail("sessions: %d drift documents (0 .. %d)", o->drift_documents, KVL_SESSIONS_MAX);
    NeedleDoc *docs = xcalloc((size_t)S, sizeof *docs);
    TeacherSet *sets = xcalloc((size_t)S, sizeof *sets), *pool = xcalloc((size_t)S, sizeof *pool);
    KvlLora *parts = xcalloc((size_t)S, sizeof *parts), state = {0};
    float *ones = xmalloc(sizeof(float) * S), *logits = xmalloc(sizeof(float) * c->vocab_size);
    float *base_weights = merge == KVL_MERGE_WEIGHTS ? xmalloc(sizeof(float) * m->n_params) : NULL;
    const KvlLora *keep = m->lora;
    double start = now_seconds();
    int topk = teacher_topk(no->distill.teacher_topk, c->vocab_size);
    res->n_sessions = S;
    res->n_needles = K;
    if (!docs || !sets || !pool || !parts || !ones || !logits || (merge == KVL_MERGE_WEIGHTS && !base_weights)) goto done;
    if (topk && !no->distill.use_kl) { fail("sessions: a top-K teacher needs the KL loss"); goto done; }
    for (int t = 0; t < KVL_N_TARGETS && merge == KVL_MERGE_COMPOSE_ORTHOGONAL; t++) {
        int in, out;                            /* S sessions' A rows must fit side by side */
        target_shape(c, (KvlTarget)t, &in, &out);
        if (no->targets[t] && (size_t)S * u->rank > (size_t)in) {
            fail("sessions: %d sessions of rank %d leave no orthogonal room in %s's %d inputs", S, u->rank, kvl_target_names[t], in);
            goto done;
        }
    }
    if (merge == KVL_MERGE_JOINT && no->distill.steps > INT_MAX / S) { fail("sessions: %d steps x %d sessions are too many", no->distill.steps, S); goto done; }
    if (base_weights) memcpy(base_weights, m->memory, sizeof(float) * m->n_params);
    for (int k = 0; k < S; k++) ones[k] = 1.0f;
    m->lora = NULL;
    for (int k = 0; k < S; k++) {
        KvlDistillOptions opt = no->distill;
        int n_sets = 1, fresh = merge != KVL_MERGE_INCREMENTAL && merge != KVL_MERGE_INCREMENTAL_REPLAY;
        KvlLora *lora = composed ? &parts[k] : &parts[0];
        if (needle_doc_open(&docs[k], m, tok, no, NULL, kvl_document_seed(seed, (uint64_t)k, 1), 1)) goto done;
        room = docs[k].room;
        if (teacher_set_compute(&sets[k], m, &docs[k].cache, docs[k].probes, docs[k].n_probes, topk, no->distill.teacher_memory, NULL)) goto done;
        kvl_cache_free(&docs[k].cache);        /* the session ends: only its probes and rows remain */
        if (merge == KVL_MERGE_JOINT) continue;
        if (fresh || k == 0) {
            kvl_lora_free(lora);
            if (kvl_lora_init(lora, c, u->rank, u->alpha, 0, no->targets, no->distill.seed + (fresh ? (uint64_t)k : 0))) goto done;
        }
        pool[0] = sets[k];                      /* this session's probes, then the earlier ones to replay */
        if (merge == KVL_MERGE_INCREMENTAL_REPLAY)
            for (int j = 0; j < k; j++) pool[n_sets++] = sets[j];
        opt.seed = no->distill.seed + (uint64_t)k;
        opt.orthogonal_to = merge == KVL_MERGE_COMPOSE_ORTHOGONAL && k > 0 ? &state : NULL;
        if (distill_sets(m, &bos, 1, pool, n_sets, 1, merge == KVL_MERGE_INCREMENTAL_REPLAY ? o->replay : 0.0f, lora, NULL, 0, &opt, NULL)) goto done;
        if (composed) {                         /* the sum of every session's adapter so far */
            KvlLora sum = {0};
            if (kvl_lora_combine(&sum, parts, ones, k + 1, c)) goto done;
            kvl_lora_free(&state);
            state = sum;
        }
        if (merge == KVL_MERGE_WEIGHTS && kvl_lora_merge(m, lora, 1.0f)) goto done;
        m->lora = merge == KVL_MERGE_WEIGHTS ? NULL : composed ? &state : lora;
        int e = ask_without_context(m, tok, docs[k].needles, K, room, logits, correct, &res->learnt[k]);
        m->lora = NULL;                         /* the next session's teacher: the model (merged or not) alone */
        if (e) goto done;
        if (o->progress) o->progress(o->progress_ctx, merge, k + 1, S, res->learnt[k], K, now_seconds() - start);
    }
    if (merge == KVL_MERGE_JOINT) {
        KvlDistillOptions opt = no->distill;
        opt.steps *= S;
        if (kvl_lora_init(&parts[0], c, u->rank, u->alpha, 0, no->targets, no->distill.seed) ||
            distill_sets(m, &bos, 1, sets, S, S, 0.0f, &parts[0], NULL, 0, &opt, NULL))
            goto done;
    }
    m->lora = merge == KVL_MERGE_WEIGHTS ? NULL : composed ? &state : &parts[0];
    res->adapter_bytes = merge == KVL_MERGE_WEIGHTS ? 0 : m->lora->n_params * sizeof(float);
    for (int k = 0; k < S; k++)
        if (ask_without_context(m, tok, docs[k].needles, K, room, logits, correct, &res->kept[k])) goto done;
    if (merge == KVL_MERGE_JOINT)
        for (int k = 0; k < S; k++) res->learnt[k] = res->kept[k];   /* learnt all at once: no "right after" */
    if (session_drift(m, tok, o, seed, base_weights, res)) goto done;
    res->seconds = now_seconds() - start;
    if (o->progress && merge == KVL_MERGE_JOINT) o->progress(o->progress_ctx, merge, S, S, res->kept[S - 1], K, res->seconds);
    r = 0;
done:
    m->lora = keep;
    if (base_weights) memcpy(m->memory, base_weights, sizeof(float) * m->n_params);
    for (int k = 0; k < S && docs; k++) needle_doc_free(&docs[k]);
    for (int k = 0; k < S && sets; k++) teacher_set_free(&sets[k]);
    for (int k = 0; k < S && parts; k++) kvl_lora_free(&parts[k]);
    kvl_lora_free(&state);
    free(docs); free(sets); free(pool); free(parts); free(ones); free(logits); free(base_weights);
    return r;
}

/* ---- recall against bytes: a cache kept in fewer bytes ---- */

/* Asymmetric uniform quantisation of the n values x[0], x[stride], ... to bits bits:
   zero = their minimum, scale = (max - min) / (2^bits - 1), q = round((x - zero) / scale),
   written back as zero + q scale. Each value moves by at most scale / 2 (and float
   rounding). */
static void quantize_group(float *x, int n, size_t stride, int bits)
{
    float lo = x[0], hi = x[0], levels = (float)((1u << bits) - 1u);
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    float scale = (hi - lo) / levels;
    for (int i = 0; i < n; i++) {
        float *v = &x[(size_t)i * stride], q = scale > 0.0f ? floorf((*v - lo) / scale + 0.5f) : 0.0f;
        *v = lo + (q < 0.0f ? 0.0f : q > levels ? levels : q) * scale;
    }
}

/* KIVI's quantised cache (Liu et al., 2024): keys per channel, each channel's values over
   `group` consecutive tokens sharing a scale and a zero point (keys have outlier channels,
   so a channel is the unit that varies least); values per token, each token's head_dim
   values in groups of `group` channels; the last `residual` tokens stay in float. A last
   group of keys shorter than `group` tokens is quantised as it is (KIVI keeps it in float
   until it fills: give `residual` for that). The cache keeps the dequantised values, which
   the model reads as it would the float ones.
   Positions before `first` (a prefix every way of keeping the context reads as it is) stay
   in float and out of the count. *bytes: the rest as stored: bits per quantised value, 8
   bytes per group (scale and zero point as float32), 4 per value of the float tokens. */
int kvl_cache_quantize(KvlCache *cache, int first, int bits, int group, int residual, size_t *bytes)
{
    if (bits < 1 || bits > 16) return fail("quantised cache: %d bits (1 .. 16)", bits);
    if (group < 1 || residual < 0) return fail("quantised cache: groups of %d, %d float tokens", group, residual);
    if (first < 0 || first > cache->n_tokens) return fail("quantised cache: from position %d of %d", first, cache->n_tokens);
    int HD = cache->head_dim, n = cache->n_tokens - first, n_q = n > residual ? n - residual : 0;
    size_t heads = (size_t)cache->n_layers * cache->n_kv_heads, values = heads * HD * 2, groups = 0;
    for (size_t h = 0; h < heads; h++) {
        float *k = cache->k + (h * cache->max_tokens + first) * HD, *v = cache->v + (h * cache->max_tokens + first) * HD;
        for (int d = 0; d < HD; d++)
            for (int t0 = 0; t0 < n_q; t0 += group, groups++)
                quantize_group(k + (size_t)t0 * HD + d, n_q - t0 < group ? n_q - t0 : group, (size_t)HD, bits);
        for (int t = 0; t < n_q; t++)
            for (int c0 = 0; c0 < HD; c0 += group, groups++)
                quantize_group(v + (size_t)t * HD + c0, HD - c0 < group ? HD - c0 : group, 1, bits);
    }
    *bytes = (values * n_q * bits + 7) / 8 + 8 * groups + 4 * values * (size_t)(n - n_q);
    return 0;
}

/* The cache as record stores it in 16 bits: every key and value from position `first` on
   rounded to F16 or BF16 (to nearest even) and back. */
int kvl_cache_round(KvlCache *cache, int first, KvlDtype dtype)
{
    if (dtype != KVL_F16 && dtype != KVL_BF16 && dtype != KVL_F32) return fail("cache rounding: F32, F16 or BF16");
    if (first < 0 || first > cache->n_tokens) return fail("cache rounding: from position %d of %d", first, cache->n_tokens);
    size_t heads = (size_t)cache->n_layers * cache->n_kv_heads, n = (size_t)(cache->n_tokens - first) * cache->head_dim;
    for (size_t h = 0; h < heads; h++)
        for (int kv = 0; kv < 2; kv++) {
            float *x = (kv ? cache->v : cache->k) + (h * cache->max_tokens + first) * cache->head_dim;
            for (size_t i = 0; dtype != KVL_F32 && i < n; i++) x[i] = round_to(x[i], dtype);
        }
    return 0;
}

/* Eviction: which of a context's tokens a cache keeps when it may keep only `budget` of
   them. All three policies are applied once, after the whole context was read with full
   attention (SnapKV's setting; StreamingLLM and H2O evict while reading, which can only
   lose more), and every kept key keeps the RoPE phase of its position:
     streaming  StreamingLLM (Xiao et al., 2023): the first tokens, which draw attention
                whatever they hold ("attention sinks"; 4 positions, counting the prefix),
                and the most recent ones;
     h2o        H2O (Zhang et al., 2023): half the budget the most recent tokens, half the
                "heavy hitters", the keys that received the most attention from all the
                context's queries; per layer and key/value head;
     snapkv     SnapKV (Li et al., 2024): the keys the last W = 32 queries (the observation
                window) attend to most, their attention max-pooled over 7 neighbours so
                that a kept key keeps its neighbourhood, and the window itself (its last
                min(W, half the budget, rounded up) tokens); per layer and key/value
                head. */
const char *const kvl_evict_names[KVL_N_EVICTS] = {"streaming", "h2o", "snapkv"};
enum { EVICT_SINKS = 4, SNAPKV_WINDOW = 32, SNAPKV_POOL = 7 };

typedef struct { float score; int pos; } ScoredPos;

static int compare_scored(const void *a, const void *b)     /* higher score first, then earlier */
{
    const ScoredPos *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Marks keep[j] for the n_pick positions of [lo, hi) not yet kept with the highest score. */
static void keep_highest(unsigned char *keep, const float *score, int lo, int hi, int n_pick, ScoredPos *by_score)
{
    int n = 0;
    for (int j = lo; j < hi; j++)
        if (!keep[j]) by_score[n++] = (ScoredPos){score[j], j};
    qsort(by_score, (size_t)n, sizeof *by_score, compare_scored);
    for (int i = 0; i < n_pick && i < n; i++) keep[by_score[i].pos] = 1;
}

int kvl_cache_read_evicting(KvlModel *m, KvlCache *cache, const int *tokens, int n_tokens, int n_prefix, int policy,
                            int budget, size_t *bytes)
{
    const KvlConfig *c = &m->config;
    int n_ctx = n_tokens - n_prefix, L = c->n_layers, KVH = c->n_kv_heads, HD = c->head_dim, P = cache->max_tokens, r = -1;
    if (policy < 0 || policy >= KVL_N_EVICTS) return fail("eviction: no policy %d", policy);
    if (c->sliding_window) return fail("eviction: a sliding-window model counts its window in positions, which eviction parts from slots");
    if (cache->n_tokens || cache->n_evicted) return fail("eviction: the cache must start empty");
    if (n_prefix < 0 || n_ctx < 1 || budget < 1) return fail("eviction: %d tokens after a prefix of %d, a budget of %d", n_ctx, n_prefix, budget);
    if (budget > n_ctx) budget = n_ctx;
    int window = (budget + 1) / 2 < SNAPKV_WINDOW ? (budget + 1) / 2 : SNAPKV_WINDOW;
    size_t plane = (size_t)L * KVH * P;
    float *mass = policy != KVL_EVICT_STREAMING ? xcalloc(plane, sizeof(float)) : NULL, *pooled = xmalloc(sizeof(float) * P);
    unsigned char *keep = xmalloc((size_t)P);
    ScoredPos *by_score = xmalloc(sizeof(ScoredPos) * P);
    if ((policy != KVL_EVICT_STREAMING && !mass) || !pooled || !keep || !by_score) goto done;
    cache->mass = mass;
    cache->mass_from = policy == KVL_EVICT_SNAPKV ? n_tokens - (n_ctx < SNAPKV_WINDOW ? n_ctx : SNAPKV_WINDOW) : 0;
    int e = kvl_forward(m, cache, tokens, n_tokens, NULL, 0);
    cache->mass = NULL;
    if (e) goto done;
    for (int lg = 0; lg < L * KVH; lg++) {      /* layer lg / KVH, key/value head lg % KVH */
        const float *votes = mass ? mass + (size_t)lg * P : NULL;
        memset(keep, 0, (size_t)P);
        memset(keep, 1, (size_t)n_prefix);
        if (policy == KVL_EVICT_STREAMING) {
            int sinks = EVICT_SINKS - n_prefix < 0 ? 0 : EVICT_SINKS - n_prefix;
            if (sinks > budget) sinks = budget;
            memset(keep + n_prefix, 1, (size_t)sinks);
            memset(keep + n_tokens - (budget - sinks), 1, (size_t)(budget - sinks));
        } else if (policy == KVL_EVICT_H2O) {
            memset(keep + n_tokens - budget / 2, 1, (size_t)(budget / 2));
            keep_highest(keep, votes, n_prefix, n_tokens, budget - budget / 2, by_score);
        } else {
            memset(keep + n_tokens - window, 1, (size_t)window);
            for (int j = n_prefix; j < n_tokens - window; j++) {
                float best = 0.0f;
                for (int i = j - SNAPKV_POOL / 2; i <= j + SNAPKV_POOL / 2; i++)
                    if (i >= n_prefix && i < n_tokens - window && votes[i] > best) best = votes[i];
                pooled[j] = best;
            }
            keep_highest(keep, pooled, n_prefix, n_tokens - window, budget - window, by_score);
        }
        /* the kept keys and values move down to the first slots, in order */
        float *k = cache->k + (size_t)lg * P * HD, *v = cache->v + (size_t)lg * P * HD;
        for (int j = 0, slot = 0; j < n_tokens; j++)
            if (keep[j]) {
                memmove(k + (size_t)slot * HD, k + (size_t)j * HD, sizeof(float) * HD);
                memmove(v + (size_t)slot * HD, v + (size_t)j * HD, sizeof(float) * HD);
                slot++;
            }
    }
    cache->n_tokens = n_prefix + budget;
    cache->n_evicted = n_tokens - cache->n_tokens;
    *bytes = kvl_cache_bytes_per_token(c) * (size_t)budget;
    r = 0;
done:
    free(mass); free(pooled); free(keep); free(by_score);
    return r;
}

/* The frontier: every way of keeping a needle document in fewer bytes, scored on the same
   questions. The settings are fixed so that every run draws the same curves: */
const char *const kvl_frontier_methods[KVL_N_FRONTIER] = {"cache", "kivi", "streaming", "h2o", "snapkv", "lora", "cartridge"};
static const KvlDtype frontier_dtypes[] = {KVL_F32, KVL_F16, KVL_BF16};
static const int frontier_kivi[][2] = {{8, 0}, {4, 0}, {2, 0}, {2, 32}};      /* bits, float tokens; groups of 32 */
static const int frontier_percent[] = {2, 5, 10, 20, 50};                     /* eviction budgets */
static const int frontier_ranks[] = {1, 2, 4, 8, 16};
static const int frontier_slots[] = {2, 4, 8, 16, 32, 64, 128};              /* cartridge sizes */
enum { FRONTIER_KIVI_GROUP = 32 };
#define FRONTIER_COUNT(a) ((int)(sizeof a / sizeof a[0]))

/* The name of setting i of a method, as the rows give it: "f16", "4 bits", "10%", ... */
static void frontier_setting(char *out, size_t cap, int method, int i)
{
    if (method == KVL_FRONTIER_CACHE) snprintf(out, cap, "%s", frontier_dtypes[i] == KVL_F32 ? "f32" : frontier_dtypes[i] == KVL_F16 ? "f16" : "bf16");
    else if (method == KVL_FRONTIER_KIVI && frontier_kivi[i][1]) snprintf(out, cap, "%d bits, %d float", frontier_kivi[i][0], frontier_kivi[i][1]);
    else if (method == KVL_FRONTIER_KIVI) snprintf(out, cap, "%d bits", frontier_kivi[i][0]);
    else if (method == KVL_FRONTIER_LORA) snprintf(out, cap, "rank %d", frontier_ranks[i]);
    else if (method == KVL_FRONTIER_CARTRIDGE) snprintf(out, cap, "%d tokens", frontier_slots[i]);
    else snprintf(out, cap, "%d%%", frontier_percent[i]);
}

/* Next-token logits over fresh filler (n tokens after <s>, no needles) read after `first`
   (a cartridge: its positions stand for <s>), or after <s> with the model as it stands:
   logits [n][V], one row per filler token. */
static int filler_logits(KvlModel *m, const int *filler, int n, const KvlCache *first, float *logits)
{
    KvlCache cache = {0};
    int bos = needle_bos(&m->config);
    int r = first ? cache_copy(&cache, first, &m->config, first->n_tokens, n)
                  : kvl_cache_init(&cache, &m->config, 1 + n) || kvl_forward(m, &cache, &bos, 1, NULL, 0);
    r = r || kvl_forward(m, &cache, filler, n, logits, n);
    kvl_cache_free(&cache);
    return r ? -1 : 0;
}

int kvl_needle_frontier(KvlModel *m, KvlTokenizer *tok, const KvlFrontierOptions *o, const float *depths, uint64_t doc_seed,
                        KvlFrontierResult *res)
{
    const KvlConfig *c = &m->config;
    const KvlNeedleOptions *no = &o->needle;
    int K = no->n_needles, V = c->vocab_size, r = -1, bos = needle_bos(c), correct[KVL_NEEDLE_MAX], *filler = NULL, n_filler = 0;
    int distilled = o->methods & (1u << KVL_FRONTIER_LORA | 1u << KVL_FRONTIER_CARTRIDGE);
    KvlDtype dtype = o->dtype == KVL_F16 || o->dtype == KVL_BF16 ? o->dtype : KVL_F32;
    size_t value_bytes = dtype == KVL_F32 ? 4 : 2;
    NeedleDoc d = {0};
    KvlCache work = {0}, cartridge = {0};
    KvlLora lora = {0};
    TeacherSet ts = {0};
    float *logits = xmalloc(sizeof(float) * V), *base = NULL, *with = NULL;
    const KvlLora *keep = m->lora;
    memset(res, 0, sizeof *res);
    if (!logits) return -1;
    m->lora = NULL;
    if (K < 1 || K > KVL_NEEDLE_MAX) { fail("frontier: %d needles (1 .. %d)", K, KVL_NEEDLE_MAX); goto done; }
    if (distilled && o->drift_tokens < 1) { fail("frontier: %d filler tokens for the drift", o->drift_tokens); goto done; }
    if (needle_doc_open(&d, m, tok, no, depths, doc_seed, distilled) || kvl_cache_init(&work, c, d.cache.max_tokens)) goto done;
    memcpy(res->needles, d.needles, sizeof *d.needles * K);
    res->n_needles = K;
    res->context_tokens = d.n_doc;
    res->cache_bytes = kvl_cache_bytes_per_token(c) * (size_t)d.n_doc;
    if (distilled) {                            /* the teacher's rows, once for every adapter and cartridge; the filler */
        int topk = teacher_topk(no->distill.teacher_topk, V);
        if (topk && !no->distill.use_kl) { fail("frontier: a top-K teacher needs the KL loss"); goto done; }
        if (teacher_set_compute(&ts, m, &d.cache, d.probes, d.n_probes, topk, no->distill.teacher_memory, no->distill.teacher_file) ||
            needle_context(tok, NULL, 0, NULL, o->drift_tokens, kvl_document_seed(doc_seed, 1, 1), &filler, &n_filler) ||
            !(base = xmalloc(sizeof(float) * (size_t)n_filler * V)) || !(with = xmalloc(sizeof(float) * (size_t)n_filler * V)) ||
            filler_logits(m, filler, n_filler, NULL, base))
            goto done;
    }
    for (int method = 0; method < KVL_N_FRONTIER; method++) {
        if (!(o->methods & 1u << method)) continue;
        int n_settings = method == KVL_FRONTIER_CACHE ? FRONTIER_COUNT(frontier_dtypes) : method == KVL_FRONTIER_KIVI ? FRONTIER_COUNT(frontier_kivi)
                       : method == KVL_FRONTIER_LORA ? FRONTIER_COUNT(frontier_ranks) : method == KVL_FRONTIER_CARTRIDGE ? FRONTIER_COUNT(frontier_slots)
                       : FRONTIER_COUNT(frontier_percent);
        for (int i = 0; i < n_settings; i++) {
            if (method == KVL_FRONTIER_CARTRIDGE && frontier_slots[i] >= d.n_doc) break;   /* (no larger than the context) */
            double start = now_seconds(), drift = -1.0;
            size_t bytes = 0;
            int right = 0, e = 0;
            KvlCache *ask = &work;
            if (method == KVL_FRONTIER_CACHE || method == KVL_FRONTIER_KIVI) {     /* the cache, rounded or quantised */
                kvl_cache_free(&work);
                e = cache_copy(&work, &d.cache, c, d.cache.n_tokens, d.room);
                if (!e && method == KVL_FRONTIER_CACHE) {      /* (<s> stays as it is: every method reads it) */
                    e = kvl_cache_round(&work, 1, frontier_dtypes[i]);
                    bytes = res->cache_bytes / (frontier_dtypes[i] == KVL_F32 ? 1 : 2);
                } else if (!e)
                    e = kvl_cache_quantize(&work, 1, frontier_kivi[i][0], FRONTIER_KIVI_GROUP, frontier_kivi[i][1], &bytes);
            } else if (method <= KVL_FRONTIER_SNAPKV) {                          /* eviction */
                int budget = (int)((double)d.n_doc * frontier_percent[i] / 100.0 + 0.5);
                work.n_tokens = work.n_evicted = 0;
                e = kvl_cache_read_evicting(m, &work, d.tokens, 1 + d.n_doc, 1, KVL_EVICT_STREAMING + method - KVL_FRONTIER_STREAMING,
                                            budget < 1 ? 1 : budget, &bytes);
            } else if (method == KVL_FRONTIER_LORA) {
                e = kvl_lora_init(&lora, c, frontier_ranks[i], 2.0f * frontier_ranks[i], 0, no->targets, no->distill.seed) ||
                    distill_sets(m, &bos, 1, &ts, 1, 1, 0.0f, &lora, NULL, 0, &no->distill, NULL);
                for (size_t k = 0; dtype != KVL_F32 && k < lora.n_params; k++) lora.params[k] = round_to(lora.params[k], dtype);   /* as stored */
                bytes = lora.n_params * value_bytes;
                m->lora = &lora;
                ask = NULL;
            } else {
                e = cache_copy(&cartridge, &d.cache, c, 1 + frontier_slots[i], 0) ||
                    distill_sets(m, NULL, 0, &ts, 1, 1, 0.0f, NULL, &cartridge, 1, &no->distill, NULL) ||
                    kvl_cache_round(&cartridge, 1, dtype);
                bytes = kvl_cache_bytes_per_token(c) / 4 * value_bytes * (size_t)frontier_slots[i];
                kvl_cache_free(&work);
                e = e || cache_copy(&work, &cartridge, c, cartridge.n_tokens, d.room);
            }
            double made = now_seconds();         /* (the time is the making, not the drift or the asking) */
            if (!e && method >= KVL_FRONTIER_LORA) {    /* drift: KL(base || with it) over fresh filler */
                double kl = 0.0;
                e = filler_logits(m, filler, n_filler, method == KVL_FRONTIER_CARTRIDGE ? &cartridge : NULL, with);
                for (int t = 0; t < n_filler && !e; t++) kl += kl_position(with + (size_t)t * V, base + (size_t)t * V, V);
                drift = kl / n_filler;
            }
            e = e || (ask ? needle_ask_all(m, tok, ask, d.needles, K, d.room, logits, correct, &right)
                          : ask_without_context(m, tok, d.needles, K, d.room, logits, correct, &right));
            m->lora = NULL;
            kvl_lora_free(&lora);
            kvl_cache_free(&cartridge);
            if (e) goto done;
            KvlFrontierRow *row = &res->rows[res->n_rows++];
            *row = (KvlFrontierRow){method, "", bytes, right, K, made - start, drift};
            frontier_setting(row->setting, sizeof row->setting, method, i);
            if (o->progress) o->progress(o->progress_ctx, row);
        }
    }
    r = 0;
done:
    m->lora = keep;
    needle_doc_free(&d);
    teacher_set_free(&ts);
    kvl_cache_free(&work);
    kvl_cache_free(&cartridge);
    kvl_lora_free(&lora);
    free(logits); free(base); free(with); free(filler);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* 12. The command-line tool (compiled only with -DKVLORA_MAIN), options in one table   */
/*                                                                                      */
/* Only this section prints and picks exit codes: 0 success, 1 the work failed (the     */
/* message says why), 2 the command line was wrong. Each command lists its options in   */
/* one table (name, kind, destination, range, default, help): the same rows parse argv  */
/* and write the command's --help, so that every default is written once.               */

#ifdef KVLORA_MAIN

static int cli_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kvlora: error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return 1;
}

static int usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kvlora %s: ", command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see kvlora %s --help)\n", command);
    return 2;
}

/* Prints the library's message when status says that a call failed; returns whether it did. */
static int failed(int status)
{
    if (status) cli_error("%s", kvl_last_error());
    return status != 0;
}

/* --- the option table --- */

/* What an option takes, and what its destination is: FLAG sets an int to 1; INT is a
   long long in [lo, hi] (hi INFINITY: no bound); FLOAT a float in [lo, hi] and POSITIVE
   one in (0, hi], checked as stored; STRING keeps the argument; CHOICE stores the value's
   index among the metavar's "a|b|c", CHOICES 1 to 16 comma-separated such indices;
   NUMBERS are 1 to 16 comma-separated doubles in [lo, hi]; STRINGS collects an option
   given again and again. */
typedef enum { OPT_FLAG, OPT_INT, OPT_FLOAT, OPT_POSITIVE, OPT_STRING, OPT_CHOICE, OPT_CHOICES, OPT_NUMBERS, OPT_STRINGS } OptKind;
typedef struct { int n; double v[16]; } Numbers;
typedef struct { int n; int v[16]; } Choices;
typedef struct { int n; const char *v[64]; } Strings;

typedef struct {
    const char *name;       /* "--rank"; NULL: the row is a heading of --help */
    OptKind kind;
    void *dest;
    double lo, hi;
    const char *def;        /* parsed into dest before argv; NULL: none, or a rule that the help states */
    const char *metavar;    /* "R" of "--rank R" */
    const char *help;       /* a '\n' goes on on the next line */
} Option;

#define COUNT(a) (int)(sizeof (a) / sizeof (a)[0])
enum { GO_ON = -1 };        /* from parse_options: the command line is good, run the command */

/* The index of the len bytes at v among the metavar's "a|b|c", or -1. */
static int choice_index(const char *metavar, const char *v, size_t len)
{
    int k = 0;
    for (const char *c = metavar; *c; k++) {
        size_t n = strcspn(c, "|");
        if (n == len && !strncmp(c, v, len)) return k;
        c += n + (c[n] == '|');
    }
    return -1;
}

/* Stores v in o's destination; nonzero when o does not take v. */
static int set_option(const Option *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case OPT_FLAG: *(int *)o->dest = 1; return 0;
    case OPT_STRING: *(const char **)o->dest = v; return 0;
    case OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (end == v || *end || errno || x < o->lo || x > o->hi) return 1;
        *(long long *)o->dest = x;
        return 0;
    }
    case OPT_FLOAT: case OPT_POSITIVE: {
        double x = strtod(v, &end);
        float *f = o->dest;
        if (end == v || *end || !isfinite(x)) return 1;
        *f = (float)x;
        return !((o->kind == OPT_FLOAT ? *f >= o->lo : *f > 0) && *f <= o->hi);
    }
    case OPT_CHOICE: {
        int k = choice_index(o->metavar, v, strlen(v));
        if (k < 0) return 1;
        *(int *)o->dest = k;
        return 0;
    }
    case OPT_CHOICES: {
        Choices *l = o->dest;
        for (l->n = 0;; v++) {
            size_t len = strcspn(v, ",");
            int k = choice_index(o->metavar, v, len);
            if (k < 0 || l->n == COUNT(l->v)) return 1;
            l->v[l->n++] = k;
            v += len;
            if (!*v) return 0;
        }
    }
    case OPT_NUMBERS: {
        Numbers *l = o->dest;
        for (l->n = 0; *v; v = *end ? end + 1 : end) {
            double x = strtod(v, &end);
            if (end == v || errno || !(x >= o->lo && x <= o->hi) || l->n == COUNT(l->v) || (*end && *end != ',')) return 1;
            l->v[l->n++] = x;
        }
        return l->n == 0;
    }
    case OPT_STRINGS: {
        Strings *s = o->dest;
        if (s->n == COUNT(s->v)) return 1;
        s->v[s->n++] = v;
        return 0;
    }
    }
    return 1;
}

/* What o takes, for the message when it was given something else. */
static void describe(const Option *o, char *out, size_t cap)
{
    int bounded = !isinf(o->hi);
    if (o->kind == OPT_INT && bounded) snprintf(out, cap, "an integer from %.10g to %.10g", o->lo, o->hi);
    else if (o->kind == OPT_INT) snprintf(out, cap, "an integer >= %.10g", o->lo);
    else if (o->kind == OPT_FLOAT && bounded) snprintf(out, cap, "a number from %.10g to %.10g", o->lo, o->hi);
    else if (o->kind == OPT_FLOAT) snprintf(out, cap, "a number >= %.10g", o->lo);
    else if (o->kind == OPT_POSITIVE && bounded) snprintf(out, cap, "a number in (0, %.10g]", o->hi);
    else if (o->kind == OPT_POSITIVE) snprintf(out, cap, "a number > 0");
    else if (o->kind == OPT_CHOICE) snprintf(out, cap, "one of %s", o->metavar);
    else if (o->kind == OPT_CHOICES) snprintf(out, cap, "1 to 16 comma-separated of %s", o->metavar);
    else if (o->kind == OPT_NUMBERS) snprintf(out, cap, "1 to 16 comma-separated numbers from %.10g to %.10g", o->lo, o->hi);
    else snprintf(out, cap, "given at most 64 times");
}

/* --help: the usage text, then a line for each option, from the table. */
static void print_help(const char *usage, const Option *opts, int n)
{
    fputs(usage, stdout);
    for (int k = 0; k < n; k++) {
        const char *h = opts[k].help, *nl, *def = opts[k].def;
        char left[160];
        if (!opts[k].name) { printf("%s\n", h); continue; }
        snprintf(left, sizeof left, "%s %s", opts[k].name, opts[k].metavar ? opts[k].metavar : "");
        printf(strlen(left) > 20 ? "  %s\n%23s" : "  %-20s %s", left, "");
        for (; (nl = strchr(h, '\n')); h = nl + 1) printf("%.*s\n%23s", (int)(nl - h), h, "");
        printf("%s%s%s%s\n", h, def ? " (default " : "", def ? def : "", def ? ")" : "");
    }
}

/* Parses argv with the table: the defaults first, then argv in order. Returns GO_ON, or
   the exit code when the command ends here: 0 after --help, 2 on a usage error. The
   arguments that are not options go to pos[0], pos[1], ...: at most n_pos of them (a model
   directory, or compare's two files), at least n_required. */
static int parse_options(const char *command, const char *usage, const Option *opts, int n, int argc, char **argv,
                         const char **pos, int n_pos, int n_required)
{
    int n_given = 0;
    for (int k = 0; k < n; k++)
        if (opts[k].def) set_option(&opts[k], opts[k].def);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        int k = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { print_help(usage, opts, n); return 0; }
        if (a[0] != '-') {
            if (n_pos == 0) return usage_error(command, "unexpected argument '%s'", a);
            if (n_given == n_pos && n_pos == 1) return usage_error(command, "one model directory expected, got '%s' too", a);
            if (n_given == n_pos) return usage_error(command, "%d files expected, got '%s' too", n_pos, a);
            pos[n_given++] = a;
            continue;
        }
        while (k < n && !(opts[k].name && !strcmp(opts[k].name, a))) k++;
        if (k == n) return usage_error(command, "unknown option '%s'", a);
        if (!(v = opts[k].kind == OPT_FLAG ? "" : i + 1 < argc ? argv[++i] : NULL)) return usage_error(command, "option %s needs a value", a);
        if (set_option(&opts[k], v)) {
            char what[96];
            describe(&opts[k], what, sizeof what);
            return usage_error(command, "%s must be %s, got '%s'", a, what, v);
        }
    }
    if (n_given < n_required) return n_pos == 1 ? usage_error(command, "missing MODEL_DIR") : usage_error(command, "%d files expected", n_required);
    return GO_ON;
}

/* --- helpers of several commands --- */

static int check_ids(const int *ids, int n, const KvlConfig *c, const char *what)
{
    for (int i = 0; i < n; i++)
        if (ids[i] >= c->vocab_size) return fail("%s: token id %d is outside the vocabulary [0, %d)", what, ids[i], c->vocab_size);
    return 0;
}

/* The tokenizer of a model directory (DIR/tokenizer.json), or a tokenizer.json itself. */
static int load_tokenizer(const char *dir_or_file, KvlTokenizer **t)
{
    char path[4096];
    size_t n = strlen(dir_or_file);
    if (n >= 5 && !strcmp(dir_or_file + n - 5, ".json")) snprintf(path, sizeof path, "%s", dir_or_file);
    else path_join(path, sizeof path, dir_or_file, "tokenizer.json");
    if (!file_exists(path)) return fail("%s: no tokenizer.json (text needs one; give token ids instead)", dir_or_file);
    return kvl_tokenizer_load(t, path);
}

/* Text to ids with a model's tokenizer; with_special adds its BOS/EOS template. *tok is
   loaded on first use and kept for the caller's later texts (the caller frees it). */
static int encode_text(const char *dir, KvlTokenizer **tok, const char *text, size_t len, int with_special, int **ids, int *n)
{
    if (!*tok && load_tokenizer(dir, tok)) return -1;
    return kvl_encode(*tok, text, len, with_special, ids, n);
}

/* The prefix P both sides see and the context C, from the command line: token ids, or
   text through the model's tokenizer (the prefix with the tokenizer's BOS, the context
   without). The prefix defaults to the model's BOS token. */
typedef struct { const char *context_ids, *context_file, *prefix_ids, *prefix_text; } ContextArgs;

#define CONTEXT_OPTIONS(ca) \
    {"--context", OPT_STRING, &(ca).context_file, 0, 0, NULL, "FILE", "the context as a text file (needs the model's tokenizer.json)"}, \
    {"--context-ids", OPT_STRING, &(ca).context_ids, 0, 0, NULL, "LIST", "or as token ids, e.g. 5,9,12"}, \
    {"--prefix", OPT_STRING, &(ca).prefix_text, 0, 0, NULL, "TEXT", "the prefix both sides see (default: the model's BOS token)"}, \
    {"--prefix-ids", OPT_STRING, &(ca).prefix_ids, 0, 0, NULL, "LIST", "or as token ids"}

static int context_from_args(const char *dir, KvlTokenizer **tok, const ContextArgs *a, const KvlConfig *c,
                             int **prefix, int *n_prefix, int **context, int *n_context)
{
    *prefix = *context = NULL;
    if (a->context_ids) {
        if (parse_ids(a->context_ids, context, n_context)) return error_wrap("--context-ids");
    } else {
        char *text;
        size_t len;
        if (read_file(a->context_file, &text, &len)) return -1;
        int r = encode_text(dir, tok, text, len, 0, context, n_context);
        free(text);
        if (r) return -1;
    }
    if (*n_context == 0) return fail("the context is empty: nothing to distil");
    if (a->prefix_ids) {
        if (parse_ids(a->prefix_ids, prefix, n_prefix)) return error_wrap("--prefix-ids");
    } else if (a->prefix_text) {
        if (encode_text(dir, tok, a->prefix_text, strlen(a->prefix_text), 1, prefix, n_prefix)) return -1;
    } else {
        if (!(*prefix = malloc(sizeof(int)))) return fail("out of memory");
        *n_prefix = 0;
        if (c->bos_token_id >= 0) (*prefix)[(*n_prefix)++] = c->bos_token_id;
    }
    return check_ids(*context, *n_context, c, "the context") || check_ids(*prefix, *n_prefix, c, "the prefix");
}

/* SIGINT / SIGTERM ask distill and pretrain to stop after the current step and keep what
   they have. A second one quits at once: every file is written to a temporary name and
   renamed, so the last checkpoint on disk stays whole. So does one that comes before the
   first step has ended (the teacher's pass, the loss before): there is nothing to keep. */
static volatile sig_atomic_t stop_requested, a_step_ended;
static void request_stop(int sig)
{
    (void)sig;
    if (stop_requested || !a_step_ended) _Exit(130);
    stop_requested = 1;
}

/* A long phase's progress on stderr (kvl_set_phase_progress): a line at most every 2 s,
   and one at the end. last: when the last line was printed, in the phase's seconds. */
static void print_phase(void *last, const char *phase, long long done, long long total, double seconds)
{
    double *printed = last, rate = done / (seconds + 1e-9);
    if (done < total && seconds - *printed < 2.0) return;
    *printed = done < total ? seconds : 0.0;    /* the next phase starts its clock again */
    fprintf(stderr, "kvlora: %-10s %lld/%lld tokens  %7.0f tok/s  %6.1f s elapsed  %6.1f s left\n",
            phase, done, total, rate, seconds, (total - done) / (rate + 1e-9));
}

/* tokens into the cache after what it holds, in chunks of 512 with a progress line: the
   same bits as one call (each token's sums do not depend on the chunk it is in). */
static int prefill(KvlModel *m, KvlCache *cache, const int *tokens, int n)
{
    double start = now_seconds(), printed = 0.0;
    for (int at = 0; at < n; at += 512) {
        int chunk = n - at < 512 ? n - at : 512;
        if (kvl_forward(m, cache, tokens + at, chunk, NULL, 0)) return -1;
        print_phase(&printed, "prefill", at + chunk, n, now_seconds() - start);
    }
    return 0;
}

/* Before the steps there is nothing to keep: quit at once (also where the shell that
   started the command in the background had SIGINT ignored). */
static void quit_at_once(int sig) { (void)sig; _Exit(130); }

/* --- kvlora tokenize / detokenize --- */

static const char *tokenize_usage =
    "usage: kvlora tokenize MODEL_DIR [--text TEXT | < FILE] [--no-special] [--bench]\n\n"
    "Prints the token ids of the text (or of standard input), comma-separated, with the\n"
    "tokenizer's BOS/EOS template unless --no-special. MODEL_DIR may also be a tokenizer.json.\n\n";

static const char *const bench_words[] = {
    "the", "of", "and", "a", "to", "in", "is", "was", "that", "for", "it", "with", "as", "he", "she", "on", "his", "her", "they", "at",
    "by", "this", "had", "from", "but", "not", "are", "or", "one", "all", "were", "when", "there", "can", "an", "which", "their",
    "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "many", "some", "so", "these", "would", "other",
    "into", "has", "more", "time", "two", "like", "see", "number", "way", "could", "people", "my", "than", "first", "water", "been",
    "called", "who", "long", "down", "day", "did", "get", "come", "made", "may", "part", "little", "girl", "named", "loved", "play",
    "outside", "park", "secret", "code", "garden", "morning", "quickly", "remembered", "mountain", "river", "because", "through",
    "between", "important",
};

/* --bench: 4 MB of English-like text from 100 words (the word cache helps), then 4 MB of
   random letter strings (no word repeats, no cache hits), each encoded once. */
static int tokenize_bench(KvlTokenizer *t)
{
    Buf b = {0};
    KvlRng rng;
    int *ids = NULL, n = 0, r = 0;
    kvl_rng_seed(&rng, 1);
    for (int pass = 0; pass < 2 && !r; pass++) {
        for (b.len = 0; !r && b.len < (size_t)4 << 20;) {
            uint32_t u = kvl_rng_u32(&rng);
            if (pass == 0) {
                uint32_t p = kvl_rng_u32(&rng) % 100;
                r = buf_puts(&b, bench_words[u % COUNT(bench_words)]) || buf_puts(&b, p < 6 ? ". " : p < 10 ? ", " : p < 11 ? ".\n" : " ");
            } else {
                char w[16];
                int wl = 3 + (int)(u % 8);
                for (int k = 0; k < wl; k++) w[k] = (char)('a' + kvl_rng_u32(&rng) % 26);
                w[wl] = ' ';
                r = buf_push(&b, w, (size_t)wl + 1);
            }
        }
        free(ids);
        ids = NULL;
        double t0 = now_seconds();
        if (r || (r = kvl_encode(t, b.data, b.len, 0, &ids, &n))) break;
        double dt = now_seconds() - t0;
        printf("%-34s %.2f MB, %d tokens, %.3f s: %.2f MB/s (%d vocabulary entries)\n", pass ? "random letter strings (no reuse):"
               : "English-like text (100 words):", b.len / 1048576.0, n, dt, b.len / 1048576.0 / dt, kvl_tokenizer_vocab_size(t));
    }
    free(b.data);
    free(ids);
    return failed(r);
}

/* Standard input to the end. */
static int read_stdin(Buf *b)
{
    char chunk[1 << 16];
    for (size_t got = 1; got > 0;) {
        got = fread(chunk, 1, sizeof chunk, stdin);
        if (buf_push(b, chunk, got)) return -1;
    }
    return 0;
}

static int cmd_tokenize(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL;
    int no_special = 0, bench = 0, *ids = NULL, n = 0, r;
    Option opts[] = {
        {"--text", OPT_STRING, &text, 0, 0, NULL, "TEXT", "the text (without it, standard input)"},
        {"--no-special", OPT_FLAG, &no_special, 0, 0, NULL, NULL, "without the tokenizer's BOS/EOS template"},
        {"--bench", OPT_FLAG, &bench, 0, 0, NULL, NULL, "the speed of encoding instead, in MB/s: of 4 MB of English-like text\n"
                                                         "(100 common words: the word cache helps) and 4 MB of random letter strings"},
    };
    if ((r = parse_options("tokenize", tokenize_usage, opts, COUNT(opts), argc, argv, &dir, 1, 1)) != GO_ON) return r;
    KvlTokenizer *t;
    Buf in = {0};
    if (failed(load_tokenizer(dir, &t))) return 1;
    if (bench) r = tokenize_bench(t);
    else if (!(r = failed((text ? buf_puts(&in, text) : read_stdin(&in)) || kvl_encode(t, in.data, in.len, !no_special, &ids, &n)))) {
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        printf("\n");
    }
    free(in.data);
    free(ids);
    kvl_tokenizer_free(t);
    return r;
}

static const char *detokenize_usage =
    "usage: kvlora detokenize MODEL_DIR --ids 1,2,3 [--skip-special]\n\n"
    "Prints the text of the token ids. MODEL_DIR may also be a tokenizer.json.\n\n";

static int cmd_detokenize(int argc, char **argv)
{
    const char *dir = NULL, *ids_arg = NULL;
    int skip = 0, *ids, n, r;
    Option opts[] = {
        {"--ids", OPT_STRING, &ids_arg, 0, 0, NULL, "LIST", "the token ids, e.g. 1,415,2936"},
        {"--skip-special", OPT_FLAG, &skip, 0, 0, NULL, NULL, "leave the special tokens (BOS, EOS, ...) out"},
    };
    if ((r = parse_options("detokenize", detokenize_usage, opts, COUNT(opts), argc, argv, &dir, 1, 1)) != GO_ON) return r;
    if (!ids_arg) return usage_error("detokenize", "missing --ids");
    if (parse_ids(ids_arg, &ids, &n)) return usage_error("detokenize", "--ids: %s", kvl_last_error());
    KvlTokenizer *t = NULL;
    char *text = NULL;
    size_t len;
    if (!(r = failed(load_tokenizer(dir, &t) || kvl_decode(t, ids, n, skip, &text, &len)))) { fwrite(text, 1, len, stdout); printf("\n"); }
    free(text);
    free(ids);
    kvl_tokenizer_free(t);
    return r;
}

/* --- kvlora info --- */

static const char *info_usage =
    "usage: kvlora info MODEL_DIR\n\n"
    "Loads a Hugging Face model directory (config.json + safetensors weights), checks it,\n"
    "and prints its architecture, shape, parameter count, the dtype of its weight files\n"
    "and the bytes of KV cache that each token of context costs.\n";

/* 1234567 as 1,234,567 */
static void print_grouped(size_t n)
{
    if (n < 1000) { printf("%zu", n); return; }
    print_grouped(n / 1000);
    printf(",%03zu", n % 1000);
}

static int cmd_info(int argc, char **argv)
{
    const char *dir = NULL;
    KvlModel *m;
    int r = parse_options("info", info_usage, NULL, 0, argc, argv, &dir, 1, 1);
    if (r != GO_ON) return r;
    if (failed(kvl_model_load(&m, dir))) return 1;
    const KvlConfig *c = &m->config;
    printf("%-18s%s\n%-18s%s\n", "model", dir, "architecture", c->arch_name);
    printf("%-18s%d\n%-18s%d\n", "layers", c->n_layers, "hidden size", c->dim);
    printf("%-18s%d query, %d key/value (grouped-query: %d per group), head dim %d\n", "heads",
           c->n_heads, c->n_kv_heads, c->n_heads / c->n_kv_heads, c->head_dim);
    printf("%-18s%d\n%-18s%d\n%-18s%d\n", "ffn size", c->ffn_dim, "vocabulary", c->vocab_size, "max positions", c->max_positions);
    if (c->rope_llama3)
        printf("%-18stheta %g, llama3 scaling (factor %g, low %g, high %g, original %d)\n", "rope", c->rope_theta,
               c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_positions);
    else
        printf("%-18stheta %g\n", "rope", c->rope_theta);
    printf("%-18s%g\n", "rms norm eps", c->rms_eps);
    printf("%-18s%s%s%s\n", "features", c->tie_embeddings ? "tied embeddings " : "",
           c->qkv_bias ? "q/k/v biases " : "", c->qk_norm ? "q/k norms " : "");
    if (c->sliding_window) printf("%-18s%d\n", "sliding window", c->sliding_window);
    printf("%-18s", "parameters");
    print_grouped(m->n_params);
    printf("\n");
    printf("%-18s%s\n", "file dtype", m->file_dtype);
    size_t per_token = kvl_cache_bytes_per_token(c);
    printf("%-18s%zu bytes per token as float32 (%zu as f16/bf16); %zu at %d positions\n", "KV cache",
           per_token, per_token / 2, per_token * (size_t)c->max_positions, c->max_positions);
    kvl_model_free(m);
    return 0;
}

/* --- kvlora generate --- */

static const char *generate_usage =
    "usage: kvlora generate MODEL_DIR (--prompt TEXT | --ids LIST) [options]\n\n"
    "Reads the prompt, then generates N more tokens, one at a time with the KV cache. With\n"
    "--prompt (needs the model's tokenizer.json) it streams the text; with --ids it prints\n"
    "all ids (prompt and generated) comma-separated as they come. Stops early at the\n"
    "model's eos_token_id. --n-samples N draws N continuations side by side (one pass over\n"
    "the weights a step for all of them), sample b as --seed S + b alone would, and prints\n"
    "them whole, one after another, when all are done.\n\n";

/* Streams text: decodes all ids so far (so that spaces and multi-byte characters come out
   right) and prints what is new, holding back a trailing U+FFFD that the next token may
   complete. */
static int print_new_text(const KvlTokenizer *t, const int *ids, int n, size_t *printed)
{
    char *text;
    size_t len;
    if (kvl_decode(t, ids, n, 1, &text, &len)) return cli_error("%s", kvl_last_error());
    size_t end = len;
    if (end >= 3 && !memcmp(text + end - 3, "\xef\xbf\xbd", 3)) end -= 3;
    if (end > *printed) { fwrite(text + *printed, 1, end - *printed, stdout); *printed = end; }
    free(text);
    return 0;
}

/* kvl_generate's callback for the CLI: prints each new token as it comes. */
typedef struct { const KvlTokenizer *tok; size_t printed; double first_token_time; } GenerateStream;

static int stream_token(const int *ids, int n_ids, void *user)
{
    GenerateStream *s = user;
    if (s->first_token_time == 0.0) s->first_token_time = now_seconds();
    if (!s->tok) printf(",%d", ids[n_ids - 1]);
    else if (print_new_text(s->tok, ids, n_ids, &s->printed)) return 1;
    fflush(stdout);
    return 0;
}

/* Prints the prompt, streams what is generated after it (and after cache, when given),
   then the speed on stderr. */
static int generate(KvlModel *m, KvlCache *cache, const KvlTokenizer *tok, const int *prompt, int n_prompt, int n_new, float temperature,
                    float top_p, uint64_t seed)
{
    GenerateStream stream = {tok, 0, 0.0};
    int n_all, *all = xmalloc(sizeof(int) * (size_t)(n_prompt + n_new));
    if (failed(!all)) return 1;
    if (!tok) for (int i = 0; i < n_prompt; i++) printf(i ? ",%d" : "%d", prompt[i]);
    else if (print_new_text(tok, prompt, n_prompt, &stream.printed)) { free(all); return 1; }
    fflush(stdout);
    double start = now_seconds();
    int status = cache->max_tokens ? kvl_generate_after(m, cache, prompt, n_prompt, n_new, temperature, top_p, seed, all, &n_all, stream_token, &stream)
                                   : kvl_generate(m, prompt, n_prompt, n_new, temperature, top_p, seed, all, &n_all, stream_token, &stream);
    free(all);
    if (status) { if (status < 0) cli_error("%s", kvl_last_error()); return 1; }
    printf("\n");
    fflush(stdout);
    double end = now_seconds(), prefilled = n_all > n_prompt ? stream.first_token_time : end;
    int produced = n_all - n_prompt;
    fprintf(stderr, "kvlora: prefill %d tokens in %.3f s, generated %d tokens in %.3f s (%.1f tokens/s)\n",
            n_prompt, prefilled - start, produced, end - prefilled, produced / (end - prefilled + 1e-9));
    return 0;
}

/* --n-samples: the prompt but its last token read once into cache (shared, with room for
   it), then n_samples sequences that each read that token and go on, decoded side by side
   (kvl_forward_batch); sequence b samples from its own stream seeded seed + b, so that it
   draws what kvl_generate with that seed draws. */
static int generate_samples(KvlModel *m, KvlCache *cache, const KvlTokenizer *tok, const int *prompt, int n_prompt, int n_new,
                            float temperature, float top_p, uint64_t seed, int n_samples)
{
    const KvlConfig *c = &m->config;
    int V = c->vocab_size, all = n_prompt + n_new, rc = 1;
    int *ids = xmalloc(sizeof(int) * (size_t)n_samples * all), *n_ids = xcalloc((size_t)n_samples, sizeof(int));
    int *next = xmalloc(sizeof(int) * (size_t)n_samples);
    float *logits = xmalloc(sizeof(float) * (size_t)n_samples * V);
    KvlRng *rng = xmalloc(sizeof(KvlRng) * (size_t)n_samples);
    KvlBatch batch = {0};
    double start = now_seconds();
    if (failed(!ids || !n_ids || !next || !logits || !rng ||
               (n_prompt > 1 && kvl_forward(m, cache, prompt, n_prompt - 1, NULL, 0)) ||
               kvl_batch_init(&batch, m, cache, n_samples, n_new > 0 ? n_new : 1)))
        goto done;
    for (int b = 0; b < n_samples; b++) {
        memcpy(ids + (size_t)b * all, prompt, sizeof(int) * n_prompt);
        n_ids[b] = n_prompt;
        next[b] = prompt[n_prompt - 1];
        kvl_rng_seed(&rng[b], seed + (uint64_t)b);
    }
    for (int step = 0, running = n_samples; step < n_new && running > 0; step++) {
        if (failed(kvl_forward_batch(m, &batch, next, logits))) goto done;
        for (int b = 0; b < n_samples; b++) {
            if (next[b] < 0) continue;
            int token = kvl_sample(logits + (size_t)b * V, V, temperature, top_p, &rng[b]);
            ids[(size_t)b * all + n_ids[b]++] = token;
            next[b] = token == c->eos_token_id ? -1 : token;
            running -= next[b] < 0;
        }
    }
    double seconds = now_seconds() - start;
    long long produced = 0;
    for (int b = 0; b < n_samples; b++) {
        size_t printed = 0;
        produced += n_ids[b] - n_prompt;
        if (tok) printf("--- sample %d (seed %llu) ---\n", b + 1, (unsigned long long)(seed + (uint64_t)b));
        if (!tok)
            for (int i = 0; i < n_ids[b]; i++) printf(i ? ",%d" : "%d", ids[(size_t)b * all + i]);
        else if (print_new_text(tok, ids + (size_t)b * all, n_ids[b], &printed)) goto done;
        printf("\n");
    }
    fflush(stdout);
    fprintf(stderr, "kvlora: %d samples, %lld tokens in %.3f s (%.1f tokens/s)\n", n_samples, produced, seconds, produced / (seconds + 1e-9));
    rc = 0;
done:
    kvl_batch_free(&batch);
    free(ids); free(n_ids); free(next); free(logits); free(rng);
    return rc;
}

static int cmd_generate(int argc, char **argv)
{
    const char *dir = NULL, *ids_arg = NULL, *adapter = NULL, *text = NULL, *cartridge = NULL;
    long long n_new, seed, n_samples;
    float temperature, top_p;
    Option opts[] = {
        {"--prompt", OPT_STRING, &text, 0, 0, NULL, "TEXT", "the prompt as text (the tokenizer adds its BOS)"},
        {"--ids", OPT_STRING, &ids_arg, 0, 0, NULL, "LIST", "or as token ids, e.g. 1,415,2936"},
        {"-n", OPT_INT, &n_new, 0, 1 << 24, "32", "N", "tokens to generate"},
        {"--temperature", OPT_FLOAT, &temperature, 0, INFINITY, "0", "T", "0 = greedy; > 0 samples from softmax(logits / T)"},
        {"--top-p", OPT_POSITIVE, &top_p, 0, 1, "1", "P", "nucleus sampling: keep the most likely tokens up to probability P"},
        {"--seed", OPT_INT, &seed, 0, INFINITY, "0", "S", "seed of the sampler: same seed, same tokens"},
        {"--adapter", OPT_STRING, &adapter, 0, 0, NULL, "DIR", "a LoRA adapter to apply (PEFT's layout)"},
        {"--cartridge", OPT_STRING, &cartridge, 0, 0, NULL, "FILE", "read the prompt after a cartridge (distill --method cartridge)\n"
                                                                  "or a recorded cache; its prefix holds the BOS"},
        {"--n-samples", OPT_INT, &n_samples, 1, 4096, "1", "N", "N continuations side by side, seeds S, S + 1, ... (printed at the end)"},
    };
    int r = parse_options("generate", generate_usage, opts, COUNT(opts), argc, argv, &dir, 1, 1), *prompt = NULL, n_prompt = 0;
    if (r != GO_ON) return r;
    if (!ids_arg == !text) return usage_error("generate", "give the prompt as exactly one of --prompt TEXT or --ids LIST");
    if (ids_arg && parse_ids(ids_arg, &prompt, &n_prompt)) return usage_error("generate", "--ids: %s", kvl_last_error());
    KvlTokenizer *tok = NULL;
    KvlModel *m = NULL;
    KvlLora lora = {0};
    KvlCache cache = {0};
    int *cached = NULL, n_cached = 0, n_cached_prefix = 0;
    r = 1;
    if (text && failed(load_tokenizer(dir, &tok) || kvl_encode(tok, text, strlen(text), !cartridge, &prompt, &n_prompt))) goto done;
    if (n_prompt == 0) { cli_error("the prompt is empty"); goto done; }
    if (failed(kvl_model_load(&m, dir) || check_ids(prompt, n_prompt, &m->config, "--ids") ||
               (adapter && kvl_lora_load(&lora, adapter, &m->config)))) goto done;
    if (cartridge && failed(kvl_cache_load(&cache, m, cartridge, n_prompt + (int)n_new, &cached, &n_cached, &n_cached_prefix))) goto done;
    m->lora = adapter ? &lora : NULL;
    if (n_cached + n_prompt + n_new > m->config.max_positions)        /* before the prompt is printed */
        cli_error("the prompt (%d tokens) and -n %lld exceed the model's %d positions", n_prompt, n_new, m->config.max_positions);
    else if (n_samples > 1) {
        if (!cartridge && failed(kvl_cache_init(&cache, &m->config, n_prompt))) goto done;
        r = generate_samples(m, &cache, tok, prompt, n_prompt, (int)n_new, temperature, top_p, (uint64_t)seed, (int)n_samples);
    } else r = generate(m, &cache, tok, prompt, n_prompt, (int)n_new, temperature, top_p, (uint64_t)seed);
done:
    kvl_cache_free(&cache);
    free(cached);
    kvl_lora_free(&lora);
    kvl_model_free(m);
    kvl_tokenizer_free(tok);
    free(prompt);
    return r;
}

/* --- kvlora dump --- */

static const char *dump_usage =
    "usage: kvlora dump MODEL_DIR --tokens LIST [options] -o OUT.safetensors\n\n"
    "The numerics contract that optimised builds and the tests diff against. Runs the model\n"
    "(with the LoRA adapter, if given: the student) on prefix ++ tokens and writes a\n"
    "safetensors file with:\n"
    "  logits          F32 [T, vocab]  at the T positions of --tokens\n"
    "  tokens          I32 [T]\n"
    "With --context-tokens, also the teacher, the model alone on prefix ++ context ++ tokens:\n"
    "  teacher_logits  F32 [T, vocab]  at the same T tokens\n"
    "  loss            F32 [1]         the distillation loss between the two (--loss):\n"
    "                                  kl = mean over positions of KL(teacher || student),\n"
    "                                  mse = mean over positions and vocabulary of the squared\n"
    "                                  logit difference\n"
    "With --context-tokens and --adapter, also the gradient of that loss for every LoRA tensor:\n"
    "  grad.<PEFT name>                same shape as the tensor, e.g.\n"
    "                                  grad.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\n"
    "With --activations, also the residual stream of the student at the same T positions:\n"
    "  hidden.0        F32 [T, dim]    after the embedding\n"
    "  hidden.l        F32 [T, dim]    after layer l, for l = 1 .. n_layers\n"
    "  hidden.norm     F32 [T, dim]    after the final norm (what lm_head reads)\n"
    "so that `kvlora compare` names the first layer where two builds part ways.\n\n";

/* What to dump: ids[0] the T tokens, ids[1] the prefix, ids[2] the context (n[k] each). */
typedef struct { const char *dir, *out, *adapter, *lists[3]; int loss, activations, *ids[3], n[3]; } Dump;
static const char *const dump_lists[3] = {"--tokens", "--prefix-tokens", "--context-tokens"};

/* The student (the model with the adapter, if any) on prefix ++ tokens; with a context,
   the teacher (the model alone) on prefix ++ context ++ tokens. */
static int dump_logits(KvlModel *m, KvlLora *lora, const Dump *d, float *logits, float *teacher)
{
    int T = d->n[0], r = 0, *seq = xmalloc(sizeof(int) * (size_t)(d->n[1] + d->n[2] + T));
    KvlCache cache = {0};
    if (!seq) return -1;
    for (int pass = 0; pass < (d->lists[2] ? 2 : 1) && !r; pass++) {
        int n_before = d->n[1] + (pass ? d->n[2] : 0);
        if (d->n[1]) memcpy(seq, d->ids[1], sizeof(int) * d->n[1]);
        if (pass) memcpy(seq + d->n[1], d->ids[2], sizeof(int) * d->n[2]);
        memcpy(seq + n_before, d->ids[0], sizeof(int) * T);
        m->lora = (!pass && d->adapter) ? lora : NULL;
        r = kvl_cache_init(&cache, &m->config, n_before + T) || kvl_forward(m, &cache, seq, n_before + T, pass ? teacher : logits, T);
        kvl_cache_free(&cache);
    }
    free(seq);
    return r;
}

/* The gradient of the loss for every LoRA tensor, as tensors named grad.<PEFT name>. */
static int dump_gradients(KvlModel *m, KvlLora *lora, const Dump *d, const float *teacher, KvlLora *grad,
                          KvlTensorOut **tensors, char **names, int *n)
{
    int T = d->n[0], r;
    Acts acts = {0};
    PassProbe probe = {d->ids[0], T, teacher, 0};
    double loss;
    m->lora = lora;
    r = lora_alloc_like(grad, lora, &m->config) || acts_init(&acts, &m->config, 0, d->n[1] + T, d->n[1] + T, lora->rank, 0) ||
        distill_pass(m, &acts, 1, grad, d->ids[1], d->n[1], &probe, 1, d->loss == 0, T, &loss) ||
        lora_tensor_list(grad, "grad.", tensors, names, n);
    acts_free(&acts);
    return r;
}

/* The residual stream of the student's pass over prefix ++ tokens (the pass of section 8,
   which keeps it) at the T positions of the tokens: n_layers + 2 blocks of [T, dim], the
   embedding, each layer's output, the final norm; named hidden.0 .. hidden.L, hidden.norm. */
static int dump_activations(KvlModel *m, KvlLora *lora, const Dump *d, float **hidden, KvlTensorOut **tensors, char **names)
{
    const KvlConfig *c = &m->config;
    int T = d->n[0], n = d->n[1] + T, L = c->n_layers, D = c->dim, r;
    size_t block = (size_t)T * D, skip = (size_t)d->n[1] * D;
    int *seq = xmalloc(sizeof(int) * (size_t)n);
    Acts acts = {0};
    *hidden = xmalloc(sizeof(float) * block * (L + 2));
    *tensors = xcalloc((size_t)L + 2, sizeof **tensors);
    *names = xmalloc((size_t)(L + 2) * 24);
    m->lora = d->adapter ? lora : NULL;
    r = !seq || !*hidden || !*tensors || !*names || acts_init(&acts, c, 0, n, n, d->adapter ? lora->rank : 0, 0) || scratch_reserve(m, n, n);
    if (!r) {
        if (d->n[1]) memcpy(seq, d->ids[1], sizeof(int) * d->n[1]);
        memcpy(seq + d->n[1], d->ids[0], sizeof(int) * T);
        student_forward(&acts, seq, m, n, NULL, 0);
        for (int l = 0; l < L + 2; l++) {
            /* layer l's input is res_attn[l]; the last layer's output and the norm's are kept apart */
            const float *from = l < L ? acts.res_attn + (size_t)l * n * D : l == L ? acts.res_final : acts.xn_final;
            memcpy(*hidden + l * block, from + skip, sizeof(float) * block);
            char *name = *names + l * 24;
            if (l <= L) snprintf(name, 24, "hidden.%d", l);
            else snprintf(name, 24, "hidden.norm");
            (*tensors)[l] = (KvlTensorOut){name, KVL_F32, 2, {T, D}, *hidden + l * block};
        }
    }
    acts_free(&acts);
    free(seq);
    return r ? -1 : 0;
}

static int dump_run(KvlModel *m, const Dump *d)
{
    const KvlConfig *c = &m->config;
    int T = d->n[0], n_grad = 0, n_hidden = d->activations ? c->n_layers + 2 : 0, has_context = d->lists[2] != NULL, rc = 1;
    KvlLora lora = {0}, grad = {0};
    KvlTensorOut *tensors = NULL, *grad_tensors = NULL, *hidden_tensors = NULL;
    char *grad_names = NULL, *hidden_names = NULL;
    float *logits = NULL, *teacher = NULL, *hidden = NULL, loss_value = 0.0f;
    double loss;
    for (int k = 0; k < 3; k++)
        if (failed(check_ids(d->ids[k], d->n[k], c, dump_lists[k]))) goto done;
    if (failed((d->adapter && kvl_lora_load(&lora, d->adapter, c)) || !(logits = xmalloc(sizeof(float) * (size_t)T * c->vocab_size)) ||
               !(teacher = xmalloc(sizeof(float) * (size_t)T * c->vocab_size)) || dump_logits(m, &lora, d, logits, teacher))) goto done;
    if (has_context) {
        if (failed(loss_forward(&loss, logits, teacher, T, c->vocab_size, d->loss == 0))) goto done;
        loss_value = (float)loss;
    }
    if (failed(has_context && d->adapter && dump_gradients(m, &lora, d, teacher, &grad, &grad_tensors, &grad_names, &n_grad)) ||
        failed(d->activations && dump_activations(m, &lora, d, &hidden, &hidden_tensors, &hidden_names)) ||
        failed(!(tensors = xcalloc((size_t)4 + n_grad + n_hidden, sizeof *tensors)))) goto done;
    KvlTensorOut base[4] = {
        {"logits", KVL_F32, 2, {T, c->vocab_size}, logits},
        {"tokens", KVL_I32, 1, {T}, d->ids[0]},
        {"teacher_logits", KVL_F32, 2, {T, c->vocab_size}, teacher},
        {"loss", KVL_F32, 1, {1}, &loss_value},
    };
    int n_tensors = has_context ? 4 : 2;
    memcpy(tensors, base, sizeof(KvlTensorOut) * n_tensors);
    if (n_grad) memcpy(tensors + n_tensors, grad_tensors, sizeof(KvlTensorOut) * n_grad);
    if (n_hidden) memcpy(tensors + n_tensors + n_grad, hidden_tensors, sizeof(KvlTensorOut) * n_hidden);
    const char *mk[7] = {"format", "kvlora_version", "model", "prefix_tokens", "context_tokens", "adapter", "loss"};
    const char *mv[7] = {"kvlora dump", KVL_VERSION, d->dir, d->lists[1] ? d->lists[1] : "", d->lists[2] ? d->lists[2] : "",
                         d->adapter ? d->adapter : "", d->loss == 0 ? "kl" : "mse"};
    if (failed(kvl_st_write(d->out, tensors, n_tensors + n_grad + n_hidden, mk, mv, has_context ? 7 : 6))) goto done;
    fprintf(stderr, "kvlora: wrote %s (%d positions x %d logits%s%s%s)\n", d->out, T, c->vocab_size,
            has_context ? ", teacher logits and loss" : "", n_grad ? ", LoRA gradients" : "", n_hidden ? ", activations" : "");
    rc = 0;
done:
    m->lora = NULL;
    free(logits);
    free(teacher);
    free(tensors);
    free(grad_tensors);
    free(grad_names);
    free(hidden);
    free(hidden_tensors);
    free(hidden_names);
    kvl_lora_free(&grad);
    kvl_lora_free(&lora);
    return rc;
}

static int cmd_dump(int argc, char **argv)
{
    Dump d = {0};
    Option opts[] = {
        {"--tokens", OPT_STRING, &d.lists[0], 0, 0, NULL, "LIST", "the T tokens whose logits are written, e.g. 5,9,12"},
        {"--prefix-tokens", OPT_STRING, &d.lists[1], 0, 0, NULL, "LIST", "tokens before them, seen by student and teacher"},
        {"--context-tokens", OPT_STRING, &d.lists[2], 0, 0, NULL, "LIST", "the context, after the prefix, seen by the teacher only"},
        {"--adapter", OPT_STRING, &d.adapter, 0, 0, NULL, "DIR", "the student's LoRA adapter (PEFT's layout)"},
        {"--loss", OPT_CHOICE, &d.loss, 0, 0, "kl", "kl|mse", "the distillation loss"},
        {"--activations", OPT_FLAG, &d.activations, 0, 0, NULL, NULL, "also the residual stream after each layer (hidden.*)"},
        {"-o", OPT_STRING, &d.out, 0, 0, NULL, "OUT.safetensors", "the file to write"},
    };
    int r = parse_options("dump", dump_usage, opts, COUNT(opts), argc, argv, &d.dir, 1, 1);
    if (r != GO_ON) return r;
    if (!d.lists[0]) return usage_error("dump", "missing --tokens");
    if (!d.out) return usage_error("dump", "missing -o OUT.safetensors");
    for (int k = 0; k < 3 && r == GO_ON; k++)
        if (d.lists[k] && parse_ids(d.lists[k], &d.ids[k], &d.n[k])) r = usage_error("dump", "%s: %s", dump_lists[k], kvl_last_error());
    KvlModel *m = NULL;
    if (r == GO_ON) r = failed(kvl_model_load(&m, d.dir)) ? 1 : dump_run(m, &d);
    kvl_model_free(m);
    for (int k = 0; k < 3; k++) free(d.ids[k]);
    return r;
}

/* --- kvlora record --- */

static const char *record_usage =
    "usage: kvlora record MODEL_DIR (--context FILE | --context-ids LIST) [options] -o CACHE.safetensors\n\n"
    "Reads prefix ++ context and writes its KV cache: layers.N.k and layers.N.v, each\n"
    "[kv_heads, T, head_dim] (keys after RoPE), tokens I32 [T], and metadata naming the model\n"
    "(a fingerprint of its shape and weights) and the prefix length. Text needs the model's\n"
    "tokenizer.json: the context is encoded without BOS, a --prefix with it.\n\n";

static int cmd_record(int argc, char **argv)
{
    static const KvlDtype dtypes[3] = {KVL_F32, KVL_F16, KVL_BF16};
    const char *dir = NULL, *out = NULL;
    ContextArgs ca = {0};
    int dtype = 0, r;
    Option opts[] = {
        CONTEXT_OPTIONS(ca),
        {"--dtype", OPT_CHOICE, &dtype, 0, 0, "f32", "f32|f16|bf16", "the stored precision (f32: reading the file back gives\n"
                                                                      "exactly the logits of recomputing the cache)"},
        {"-o", OPT_STRING, &out, 0, 0, NULL, "CACHE.safetensors", "the file to write"},
    };
    if ((r = parse_options("record", record_usage, opts, COUNT(opts), argc, argv, &dir, 1, 1)) != GO_ON) return r;
    if (!ca.context_ids == !ca.context_file) return usage_error("record", "give the context as exactly one of --context FILE or --context-ids LIST");
    if (ca.prefix_ids && ca.prefix_text) return usage_error("record", "give at most one of --prefix and --prefix-ids");
    if (!out) return usage_error("record", "missing -o CACHE.safetensors");
    KvlModel *m = NULL;
    KvlTokenizer *tok = NULL;
    KvlCache cache = {0};
    int *prefix = NULL, *context = NULL, *seq = NULL, n_prefix = 0, n_context = 0;
    double t0 = 0;
    r = failed(kvl_model_load(&m, dir) || context_from_args(dir, &tok, &ca, &m->config, &prefix, &n_prefix, &context, &n_context) ||
               !(seq = xmalloc(sizeof(int) * (size_t)(n_prefix + n_context))));
    if (!r) {
        memcpy(seq, prefix, sizeof(int) * n_prefix);
        memcpy(seq + n_prefix, context, sizeof(int) * n_context);
        t0 = now_seconds();
        r = failed(kvl_cache_init(&cache, &m->config, n_prefix + n_context) || prefill(m, &cache, seq, n_prefix + n_context) ||
                   kvl_cache_save(&cache, m, seq, n_prefix, dtypes[dtype], out));
    }
    if (!r)
        fprintf(stderr, "kvlora: recorded %d tokens (prefix %d) in %.2f s: %s, %zu bytes of keys and values as float32\n", n_prefix + n_context,
                n_prefix, now_seconds() - t0, out, kvl_cache_bytes_per_token(&m->config) * (size_t)(n_prefix + n_context));
    kvl_cache_free(&cache);
    kvl_model_free(m);
    kvl_tokenizer_free(tok);
    free(prefix);
    free(context);
    free(seq);
    return r;
}

/* --- kvlora distill --- */

static const char *distill_usage =
    "usage: kvlora distill MODEL_DIR (--cache CACHE | --context FILE | --context-ids LIST) [options] -o ADAPTER_DIR\n\n"
    "Trains a LoRA adapter so that the model with it, reading prefix ++ probe, answers like\n"
    "the model reading the cached prefix ++ context ++ probe, and writes it in PEFT's layout\n"
    "(ADAPTER_DIR/adapter_model.safetensors + adapter_config.json). One progress line per\n"
    "step on stderr. Same seed, same adapter, whatever the number of threads. SIGINT and\n"
    "SIGTERM during the steps stop after the current step and save the adapter as it is,\n"
    "skipping the final loss (exit code 130); a second one quits at once. Before the steps\n"
    "they quit at once and write nothing.\n"
    "--method closed-form skips the steps: each target layer, from the bottom, gets the\n"
    "best rank-R least-squares update from the student's inputs to the teacher's outputs\n"
    "over the probes (GPTQ's recipe); hybrid then trains from that adapter.\n"
    "--method cartridge trains a KV cache of --tokens P slots instead (Cartridges): the model\n"
    "alone reading prefix ++ cartridge ++ probe learns to answer like the full cache, and -o\n"
    "names a safetensors file in kvlora record's layout, which generate --cartridge and\n"
    "distill --cache read. Its slots start as the context's first P tokens; the prefix stays.\n\n";

typedef struct {
    const char *dir, *out, *cache, *queries, *query_ids, *targets, *init;
    ContextArgs ca;
    long long self_study, self_study_len, chunk_len, rank, steps, batch, seed, every, solve_tokens, teacher_mb, teacher_topk, pass_tokens;
    float alpha, lr, weight_decay, damping;
    long long slots;
    int chunks, rslora, loss, method;   /* method: KVL_METHOD_* in the order of --method's choices, then: */
} DistillArgs;
enum { METHOD_CARTRIDGE = KVL_METHOD_HYBRID + 1 };

typedef struct {
    KvlLora *lora;
    const char *out;
    long long every;
    int step;
    const double *before;       /* the loss before the steps, said with the first step (or NULL) */
    const char *loss_name;
} DistillProgress;

static int print_progress(void *ctx, int step, int steps, double loss, double elapsed, double eta, int tokens)
{
    DistillProgress *p = ctx;
    a_step_ended = 1;
    if (p->before && p->step == 0) fprintf(stderr, "kvlora: %s loss over the probes before: %.6f\n", p->loss_name, *p->before);
    p->step = step;
    fprintf(stderr, "step %4d/%d  loss %.6f  %7.0f tok/s  %6.1f s elapsed  %6.1f s left\n",
            step, steps, loss, tokens * step / (elapsed + 1e-9), elapsed, eta);
    if (p->every > 0 && step % p->every == 0 && step < steps) {
        if (kvl_lora_save(p->lora, p->out)) fprintf(stderr, "kvlora: checkpoint failed: %s\n", kvl_last_error());
        else fprintf(stderr, "kvlora: checkpoint at step %d in %s\n", step, p->out);
    }
    return stop_requested != 0;
}

/* One probe per non-blank line: comma-separated ids, or text encoded with tok (no BOS). */
static int read_probe_file(const char *path, const KvlConfig *c, KvlTokenizer *tok, KvlProbe **probes, int *n)
{
    char *text, *line, *end;
    size_t len;
    int count = 0, cap = 0;
    if (read_file(path, &text, &len)) return -1;
    for (line = text; line && *line; line = end ? end + 1 : NULL) {
        if ((end = strchr(line, '\n'))) *end = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        size_t l = strlen(p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t')) p[--l] = 0;
        if (!*p) continue;
        if (count == cap) {
            KvlProbe *bigger = realloc(*probes, sizeof(KvlProbe) * (cap = cap ? 2 * cap : 16));
            if (!bigger) { free(text); return fail("out of memory"); }
            *probes = bigger;
        }
        KvlProbe *pr = &(*probes)[count];
        int r = tok ? kvl_encode(tok, p, l, 0, &pr->ids, &pr->n) : parse_ids(p, &pr->ids, &pr->n);
        if (r || check_ids(pr->ids, pr->n, c, path) || pr->n == 0) {
            if (!r) free(pr->ids);
            free(text);
            return pr->n == 0 && !r ? fail("%s, probe %d: no tokens", path, count + 1) : error_wrap("%s, probe %d", path, count + 1);
        }
        count++;
    }
    free(text);
    *n = count;
    return count ? 0 : fail("%s: no probes in the file (one per line)", path);
}

/* The cached prefix ++ context, read from --cache or recorded now, with room after it for
   the longest probe. */
static int distill_context(KvlModel *m, const DistillArgs *a, KvlTokenizer **tok, KvlCache *cache, int **tokens,
                           int *n_tokens, int *n_prefix)
{
    const KvlConfig *c = &m->config;
    int room = (int)(a->self_study_len > a->chunk_len ? a->self_study_len : a->chunk_len) + 4096, r;
    int *prefix = NULL, *context = NULL, n_context = 0;
    if (a->cache) r = kvl_cache_load(cache, m, a->cache, room, tokens, n_tokens, n_prefix);
    else {
        r = context_from_args(a->dir, tok, &a->ca, c, &prefix, n_prefix, &context, &n_context) ||
            !(*tokens = xmalloc(sizeof(int) * (size_t)(*n_prefix + n_context)));
        if (!r) {
            *n_tokens = *n_prefix + n_context;
            memcpy(*tokens, prefix, sizeof(int) * *n_prefix);
            memcpy(*tokens + *n_prefix, context, sizeof(int) * n_context);
            int capacity = *n_tokens + room > c->max_positions ? c->max_positions : *n_tokens + room;
            r = kvl_cache_init(cache, c, capacity) || prefill(m, cache, *tokens, *n_tokens);
        }
        free(prefix);
        free(context);
    }
    if (!r && *n_tokens - *n_prefix < 1) r = fail("the context is empty: nothing to distil");
    if (!r) fprintf(stderr, "kvlora: context of %d tokens after a prefix of %d\n", *n_tokens - *n_prefix, *n_prefix);
    return r;
}

/* Generic prompts that start the teacher's self-study samples, when the model has a
   tokenizer, so that the samples read as questions and answers about the context. */
static int self_study_prompts(const char *dir, KvlTokenizer **tok, const KvlConfig *c, KvlProbe prompts[4])
{
    static const char *const generic[4] = {"\nQ:", "\n", "\nQuestion:", "\nIn short,"};
    char path[4096];
    int n = 0;
    path_join(path, sizeof path, dir, "tokenizer.json");
    if (!*tok && !(file_exists(path) && kvl_tokenizer_load(tok, path) == 0)) return 0;
    for (int k = 0; k < 4; k++) {
        KvlProbe *p = &prompts[n];
        if (kvl_encode(*tok, generic[k], strlen(generic[k]), 0, &p->ids, &p->n)) continue;
        if (p->n > 0 && check_ids(p->ids, p->n, c, "prompt") == 0) n++;
        else free(p->ids);                      /* a prompt this model cannot take */
    }
    return n;
}

/* The probes, in this order: the query file, windows of the context, the teacher's samples. */
static int distill_probes(KvlModel *m, KvlCache *cache, KvlTokenizer **tok, const DistillArgs *a, const int *tokens,
                          int n_tokens, int n_prefix, KvlProbe **probes, int *n_probes)
{
    const KvlConfig *c = &m->config;
    KvlProbe *more = NULL, *all, prompts[4] = {{NULL, 0}};
    int n_more = 0, n_prompts, r;
    if (a->query_ids && read_probe_file(a->query_ids, c, NULL, probes, n_probes)) return -1;
    if (a->queries && ((!*tok && load_tokenizer(a->dir, tok)) || read_probe_file(a->queries, c, *tok, probes, n_probes))) return -1;
    if (a->chunks && kvl_context_chunks(tokens + n_prefix, n_tokens - n_prefix, (int)a->chunk_len, &more, &n_more)) return -1;
    if (!(all = realloc(*probes, sizeof(KvlProbe) * ((size_t)*n_probes + n_more + a->self_study + 1)))) {
        for (int i = 0; i < n_more; i++) free(more[i].ids);
        free(more);
        return fail("out of memory");
    }
    *probes = all;
    if (n_more) memcpy(all + *n_probes, more, sizeof(KvlProbe) * n_more);
    *n_probes += n_more;
    free(more);
    if (a->self_study > 0) {
        memset(all + *n_probes, 0, sizeof(KvlProbe) * a->self_study);
        n_prompts = self_study_prompts(a->dir, tok, c, prompts);
        r = kvl_self_study(m, cache, tokens[n_tokens - 1], prompts, n_prompts, (int)a->self_study, (int)a->self_study_len,
                           (uint64_t)a->seed, all + *n_probes);
        for (int k = 0; k < n_prompts; k++) free(prompts[k].ids);
        *n_probes += (int)a->self_study;
        if (r) return -1;
    }
    fprintf(stderr, "kvlora: %d probes (%s%s%s)\n", *n_probes, a->queries || a->query_ids ? "queries " : "",
            a->chunks ? "context chunks " : "", a->self_study ? "self-study" : "");
    return 0;
}

/* The options both distillations take from the command line. */
static KvlDistillOptions distill_options(const DistillArgs *a, DistillProgress *progress, size_t teacher_memory, const char *teacher_file)
{
    return (KvlDistillOptions){a->loss == 0, (int)a->steps, (int)a->batch, a->lr, a->weight_decay, (uint64_t)a->seed, print_progress,
                               progress, teacher_memory, teacher_file, (int)a->teacher_topk, NULL, NULL, NULL, (int)a->pass_tokens};
}

/* The cartridge: its slots from the context's first P tokens, trained, saved as a cache
   file of prefix ++ those tokens (what it was made from); the losses before and after. */
static int distill_cartridge(KvlModel *m, KvlCache *cache, const DistillArgs *a, const int *tokens, int n_tokens, int n_prefix,
                             const KvlProbe *probes, int n_probes)
{
    const KvlConfig *c = &m->config;
    KvlCache cartridge = {0}, untrained = {0};
    DistillProgress progress = {NULL, a->out, 0, 0, NULL, NULL};
    int P = (int)a->slots, rc = 1, use_kl = a->loss == 0;
    double before, after, last, t0 = now_seconds();
    char teacher_file[4200];
    snprintf(teacher_file, sizeof teacher_file, "%s.teacher.tmp", a->out);
    if (P >= n_tokens - n_prefix) return cli_error("--tokens %d: the context has only %d tokens", P, n_tokens - n_prefix);
    KvlDistillOptions opt = distill_options(a, &progress, a->teacher_mb ? (size_t)a->teacher_mb << 20 : 1, teacher_file);
    if (failed(cache_copy(&untrained, cache, c, n_prefix + P, 0) || kvl_cartridge_loss(m, cache, &untrained, probes, n_probes, use_kl, &before)))
        goto done;
    fprintf(stderr, "kvlora: cartridge of %d slots, %zu bytes as float32; %s loss over the probes before: %.6f\n", P,
            kvl_cache_bytes_per_token(c) * (size_t)P, use_kl ? "kl" : "mse", before);
    signal(SIGINT, request_stop);
    signal(SIGTERM, request_stop);
    if (failed(kvl_cartridge_distill(m, cache, n_prefix, P, probes, n_probes, &opt, &cartridge, &last) ||
               kvl_cache_save(&cartridge, m, tokens, n_prefix, KVL_F32, a->out)))
        goto done;
    if (stop_requested) {
        fprintf(stderr, "kvlora: interrupted after step %d of %lld; the cartridge as trained so far is in %s "
                "(the final loss over the probes is skipped)\n", progress.step, a->steps, a->out);
        rc = 130;
        goto done;
    }
    if (failed(kvl_cartridge_loss(m, cache, &cartridge, probes, n_probes, use_kl, &after))) goto done;
    size_t kv_bytes = kvl_cache_bytes_per_token(c) * (size_t)(n_tokens - n_prefix);
    fprintf(stderr, "kvlora: loss %.6f -> %.6f in %.1f s; wrote %s: %zu bytes of float32 cartridge for %zu bytes of float32 KV cache (%.1f%%)\n",
            before, after, now_seconds() - t0, a->out, kvl_cache_bytes_per_token(c) * (size_t)P, kv_bytes,
            100.0 * P / (n_tokens - n_prefix));
    rc = 0;
done:
    kvl_cache_free(&cartridge);
    kvl_cache_free(&untrained);
    return rc;
}

/* The adapter: initialised (or --init), trained, saved; the losses before and after. */
static int distill_train(KvlModel *m, KvlCache *cache, const DistillArgs *a, const int *has, const int *tokens, int n_tokens,
                         int n_prefix, const KvlProbe *probes, int n_probes)
{
    const KvlConfig *c = &m->config;
    KvlLora lora = {0};
    double before, after, last;
    int use_kl = a->loss == 0, rc = 1;
    if (failed(a->init ? kvl_lora_load(&lora, a->init, c)
                       : kvl_lora_init(&lora, c, (int)a->rank, a->alpha > 0 ? a->alpha : 2.0f * a->rank, a->rslora, has, (uint64_t)a->seed)))
        goto done;
    snprintf(lora.base_model, sizeof lora.base_model, "%s", a->dir);
    m->lora = &lora;
    size_t bytes = teacher_bytes(c->vocab_size, (int)a->teacher_topk, probes, n_probes);
    int sparse = teacher_topk((int)a->teacher_topk, c->vocab_size) > 0;
    /* the losses before and after from the rows the steps read (the teacher runs once),
       unless those rows are the top K or the method trains no steps from them */
    int losses_in_steps = a->method == KVL_METHOD_GRADIENT && !sparse;
    const char *loss_name = use_kl ? "kl" : "mse";
    DistillProgress progress = {&lora, a->out, a->every, 0, losses_in_steps ? &before : NULL, loss_name};
    if (!losses_in_steps && failed(kvl_distill_loss(m, cache, tokens, n_prefix, probes, n_probes, use_kl, &before))) goto done;
    if (losses_in_steps) fprintf(stderr, "kvlora: rank %d, alpha %g, %zu parameters\n", lora.rank, lora.alpha, lora.n_params);
    else fprintf(stderr, "kvlora: rank %d, alpha %g, %zu parameters; %s loss over the probes before: %.6f\n",
                 lora.rank, lora.alpha, lora.n_params, loss_name, before);
    char teacher_file[4200];
    snprintf(teacher_file, sizeof teacher_file, "%s.teacher.tmp", a->out);
    size_t teacher_memory = a->teacher_mb ? (size_t)a->teacher_mb << 20 : 1;
    if (a->method != KVL_METHOD_CLOSED_FORM && bytes > teacher_memory)
        fprintf(stderr, "kvlora: the teacher's %s (%.0f MB) exceed --teacher-memory: they go to %s, removed when done\n",
                sparse ? "top-K rows" : "logits", bytes / 1048576.0, teacher_file);
    if (sparse)
        fprintf(stderr, "kvlora: the teacher kept as its top %lld tokens and the rest's mass: the steps print the KL over those "
                "(below the exact KL); the losses before and after are exact\n", a->teacher_topk);
    KvlDistillOptions opt = distill_options(a, &progress, teacher_memory, teacher_file);
    if (losses_in_steps) {
        opt.loss_before = &before;
        opt.loss_after = &after;
    }
    signal(SIGINT, request_stop);
    signal(SIGTERM, request_stop);
    double t0 = now_seconds();
    if (a->method != KVL_METHOD_GRADIENT) {
        double solved;
        if (failed(kvl_distill_closed_form(m, cache, tokens, n_prefix, probes, n_probes, &lora, a->damping, (int)a->solve_tokens) ||
                   kvl_distill_loss(m, cache, tokens, n_prefix, probes, n_probes, use_kl, &solved))) goto done;
        fprintf(stderr, "kvlora: closed form in %.1f s: loss %.6f\n", now_seconds() - t0, solved);
    }
    if (failed(a->method != KVL_METHOD_CLOSED_FORM && kvl_distill(m, cache, tokens, n_prefix, probes, n_probes, &lora, &opt, &last))) goto done;
    /* the adapter first, the loss over every probe skipped; a stop that came during the
       loss after the steps (which then holds it, not NaN) changes nothing */
    if (stop_requested && (!losses_in_steps || isnan(after))) {
        if (failed(kvl_lora_save(&lora, a->out))) goto done;
        fprintf(stderr, "kvlora: interrupted after step %d of %lld; the adapter as trained so far is in %s "
                "(the final loss over the probes is skipped)\n", progress.step, a->steps, a->out);
        rc = 130;
        goto done;
    }
    if (losses_in_steps && progress.step == 0)    /* (no step said it) */
        fprintf(stderr, "kvlora: %s loss over the probes before: %.6f\n", loss_name, before);
    if (!losses_in_steps && failed(kvl_distill_loss(m, cache, tokens, n_prefix, probes, n_probes, use_kl, &after))) goto done;
    double seconds = now_seconds() - t0;
    if (failed(kvl_lora_save(&lora, a->out))) goto done;
    size_t kv_bytes = kvl_cache_bytes_per_token(c) * (size_t)(n_tokens - n_prefix);
    fprintf(stderr, "kvlora: loss %.6f -> %.6f in %.1f s; wrote %s: %zu bytes of float32 LoRA for %zu bytes of float32 KV cache (%.1f%%)\n",
            before, after, seconds, a->out, lora.n_params * 4, kv_bytes, 100.0 * lora.n_params * 4 / (kv_bytes ? kv_bytes : 1));
    rc = 0;
done:
    m->lora = NULL;
    kvl_lora_free(&lora);
    return rc;
}

static int cmd_distill(int argc, char **argv)
{
    DistillArgs a = {0};
    Option opts[] = {
        {.help = "the context:"},
        {"--cache", OPT_STRING, &a.cache, 0, 0, NULL, "CACHE", "a file from kvlora record (refused if made by another model)"},
        CONTEXT_OPTIONS(a.ca),
        {.help = "probes (any combination; without any, --context-chunks and --self-study 16):"},
        {"--queries", OPT_STRING, &a.queries, 0, 0, NULL, "FILE", "one probe per line, text: what later sessions will ask"},
        {"--query-ids", OPT_STRING, &a.query_ids, 0, 0, NULL, "FILE", "the same as comma-separated token ids"},
        {"--self-study", OPT_INT, &a.self_study, 0, 1 << 20, NULL, "N", "N continuations the teacher samples from the cached context, after\n"
                                                                      "generic prompts (\"Q:\", \"Question:\", ...) when the model has a tokenizer"},
        {"--self-study-len", OPT_INT, &a.self_study_len, 1, 1 << 20, "32", "L", "their length"},
        {"--context-chunks", OPT_FLAG, &a.chunks, 0, 0, NULL, NULL, "windows of the context itself, every chunk-len / 2 tokens"},
        {"--chunk-len", OPT_INT, &a.chunk_len, 1, 1 << 20, "32", "L", "their length"},
        {.help = "the adapter and its training:"},
        {"--rank", OPT_INT, &a.rank, 1, 65536, "8", "R", "the LoRA rank"},
        {"--alpha", OPT_POSITIVE, &a.alpha, 0, INFINITY, NULL, "A", "the LoRA alpha (default 2 R)"},
        {"--rslora", OPT_FLAG, &a.rslora, 0, 0, NULL, NULL, "scale alpha / sqrt(R) instead of alpha / R"},
        {"--targets", OPT_STRING, &a.targets, 0, 0, "all", "LIST", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all"},
        {"--loss", OPT_CHOICE, &a.loss, 0, 0, "kl", "kl|mse", "the distance between student and teacher"},
        {"--steps", OPT_INT, &a.steps, 0, 1 << 30, "100", "S", "AdamW steps"},
        {"--lr", OPT_POSITIVE, &a.lr, 0, INFINITY, "2e-3", "LR", "the learning rate"},
        {"--batch", OPT_INT, &a.batch, 1, 4096, "4", "B", "probes per step"},
        {"--pass-tokens", OPT_INT, &a.pass_tokens, 1, 1 << 20, "256", "N", "the most tokens the student reads in one pass (probes side by\n"
                                                                        "side, each weight read once for them all; at least the prefix\n"
                                                                        "and the longest probe): more is faster and takes more memory;\n"
                                                                        "the same adapter whatever N"},
        {"--weight-decay", OPT_FLOAT, &a.weight_decay, 0, INFINITY, "0", "W", "AdamW's weight decay"},
        {"--seed", OPT_INT, &a.seed, 0, INFINITY, "0", "S", "seed of the adapter, the samples and the batches"},
        {"--init", OPT_STRING, &a.init, 0, 0, NULL, "ADAPTER", "start from an existing adapter (its rank, alpha and targets)"},
        {"--method", OPT_CHOICE, &a.method, 0, 0, "gradient", "gradient|closed-form|hybrid|cartridge", "AdamW steps; a least-squares solve per layer;\n"
                                                                                                       "the solve, then the steps from it; a trained\n"
                                                                                                       "KV cache instead of an adapter"},
        {"--tokens", OPT_INT, &a.slots, 1, 1 << 20, "32", "P", "the cartridge's slots"},
        {"--damping", OPT_FLOAT, &a.damping, 0, INFINITY, "0.01", "D", "the solve's ridge: D x the mean of diag(X X^T)"},
        {"--solve-tokens", OPT_INT, &a.solve_tokens, 1, 1 << 30, "4096", "N", "the probe tokens the solve uses (whole probes, in order)"},
        {"--checkpoint-every", OPT_INT, &a.every, 1, 1 << 30, NULL, "N", "write the adapter every N steps (atomically: a crash or a kill\n"
                                                                      "leaves the last one whole)"},
        {"--teacher-memory", OPT_INT, &a.teacher_mb, 0, 1 << 30, "256", "MB", "the teacher's logits over the probes (computed once) stay in\n"
                                                                          "memory up to MB; beyond, in ADAPTER_DIR.teacher.tmp, removed\n"
                                                                          "when done (0: always the file)"},
        {"--teacher-topk", OPT_INT, &a.teacher_topk, 0, 1 << 24, "0", "K", "keep only the teacher's K most likely tokens per position and\n"
                                                                     "the rest's mass (Cartridges; KL only): far less memory, an\n"
                                                                     "approximation of the loss (0: every logit, exact)"},
        {"-o", OPT_STRING, &a.out, 0, 0, NULL, "ADAPTER_DIR", "where the adapter goes"},
    };
    KvlModel *m = NULL;
    KvlTokenizer *tok = NULL;                   /* loaded once, if any text needs it */
    KvlCache cache = {0};
    KvlProbe *probes = NULL;
    int *tokens = NULL, n_tokens = 0, n_prefix = 0, n_probes = 0, has[KVL_N_TARGETS], r;
    a.self_study = -1;                          /* not given */
    if ((r = parse_options("distill", distill_usage, opts, COUNT(opts), argc, argv, &a.dir, 1, 1)) != GO_ON) return r;
    if ((a.cache != NULL) + (a.ca.context_file != NULL) + (a.ca.context_ids != NULL) != 1)
        return usage_error("distill", "give the context as exactly one of --cache, --context or --context-ids");
    if (a.cache && (a.ca.prefix_ids || a.ca.prefix_text)) return usage_error("distill", "a cache holds its prefix: --prefix goes to kvlora record");
    if (a.query_ids && a.queries) return usage_error("distill", "give at most one of --queries and --query-ids");
    if (!a.out) return usage_error("distill", "missing -o ADAPTER_DIR");
    if (a.teacher_topk && a.loss != 0) return usage_error("distill", "--teacher-topk needs --loss kl (the squared difference needs every logit)");
    if (a.method == METHOD_CARTRIDGE && (a.init || a.every || a.rslora))
        return usage_error("distill", "--init, --checkpoint-every and --rslora are an adapter's: not for --method cartridge");
    if (kvl_lora_parse_targets(a.targets, has)) return usage_error("distill", "--targets: %s", kvl_last_error());
    if (a.self_study < 0 && !a.chunks && !a.query_ids && !a.queries) { a.self_study = 16; a.chunks = 1; }
    if (a.self_study < 0) a.self_study = 0;
    signal(SIGINT, quit_at_once);               /* until the steps begin */
    signal(SIGTERM, quit_at_once);
    double printed = 0.0;
    kvl_set_phase_progress(print_phase, &printed);
    r = 1;
    if (!failed(kvl_model_load(&m, a.dir) || distill_context(m, &a, &tok, &cache, &tokens, &n_tokens, &n_prefix) ||
                distill_probes(m, &cache, &tok, &a, tokens, n_tokens, n_prefix, &probes, &n_probes)))
        r = a.method == METHOD_CARTRIDGE ? distill_cartridge(m, &cache, &a, tokens, n_tokens, n_prefix, probes, n_probes)
                                         : distill_train(m, &cache, &a, has, tokens, n_tokens, n_prefix, probes, n_probes);
    for (int i = 0; i < n_probes; i++) free(probes[i].ids);
    free(probes);
    free(tokens);
    kvl_cache_free(&cache);
    kvl_tokenizer_free(tok);
    kvl_model_free(m);
    return r;
}

/* --- kvlora merge --- */

static const char *merge_usage =
    "usage: kvlora merge MODEL_DIR --adapter A [--adapter B ...] [--weights w1,w2,...] [--combine] -o DIR\n\n"
    "Without --combine: writes a model directory (config.json, model.safetensors in F32,\n"
    "tokenizer.json if the model has one) whose weights are W + sum_k w_k * scale_k * B_k A_k:\n"
    "its logits equal the base model's with the weighted adapters. With --combine: writes one\n"
    "adapter equal to the weighted sum (ranks concatenated, alpha = rank).\n\n";

/* --weights: one number per adapter, each as strtof reads it; 1 each without the option. */
static int parse_weights(const char *arg, float *weights, int n)
{
    const char *p = arg;
    int k = 0;
    for (int j = 0; j < n; j++) weights[j] = 1.0f;
    for (; arg && k < n && *p; k++) {
        char *end;
        weights[k] = strtof(p, &end);
        if (end == p || !isfinite(weights[k])) return usage_error("merge", "--weights: '%s' is not a list of numbers", arg);
        p = *end == ',' ? end + 1 : end;
    }
    if (arg && (k != n || *p)) return usage_error("merge", "--weights needs one number per --adapter (%d)", n);
    return GO_ON;
}

static int cmd_merge(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL, *weights_arg = NULL;
    Strings adapters = {0};
    int combine = 0, n_loaded = 0, r;
    float weights[64];
    Option opts[] = {
        {"--adapter", OPT_STRINGS, &adapters, 0, 0, NULL, "DIR", "an adapter in PEFT's layout; again for each more (at most 64)"},
        {"--weights", OPT_STRING, &weights_arg, 0, 0, NULL, "LIST", "one weight per --adapter, e.g. 1,0.5 (default: 1 each)"},
        {"--combine", OPT_FLAG, &combine, 0, 0, NULL, NULL, "write one adapter instead of a model"},
        {"-o", OPT_STRING, &out, 0, 0, NULL, "DIR", "the directory to write"},
    };
    if ((r = parse_options("merge", merge_usage, opts, COUNT(opts), argc, argv, &dir, 1, 1)) != GO_ON) return r;
    if (!adapters.n) return usage_error("merge", "missing --adapter");
    if (!out) return usage_error("merge", "missing -o OUT_DIR");
    if ((r = parse_weights(weights_arg, weights, adapters.n)) != GO_ON) return r;
    KvlModel *m = NULL;
    KvlLora loras[64], combined = {0};
    r = failed(kvl_model_load(&m, dir));
    for (; !r && n_loaded < adapters.n; n_loaded++)
        if ((r = failed(kvl_lora_load(&loras[n_loaded], adapters.v[n_loaded], &m->config)))) break;
    if (!r && combine && !(r = failed(kvl_lora_combine(&combined, loras, weights, adapters.n, &m->config) || kvl_lora_save(&combined, out))))
        fprintf(stderr, "kvlora: wrote %s: one adapter of rank %d from %d adapters\n", out, combined.rank, adapters.n);
    for (int k = 0; !r && !combine && k < adapters.n; k++) r = failed(kvl_lora_merge(m, &loras[k], weights[k]));
    if (!r && !combine && !(r = failed(kvl_model_save(m, dir, out))))
        fprintf(stderr, "kvlora: wrote %s: %s with %d adapter(s) merged into its weights\n", out, dir, adapters.n);
    for (int k = 0; k < n_loaded; k++) kvl_lora_free(&loras[k]);
    kvl_lora_free(&combined);
    kvl_model_free(m);
    return r;
}

/* --- kvlora corpus --- */

static const char *corpus_usage =
    "usage: kvlora corpus [--needles K] [--sentences N] [--seed S]\n\n"
    "Prints a needle-in-a-haystack document: N sentences of filler with K needles \"The secret\n"
    "code of NAME is DDDDD.\" spread through it, then a line per needle with its question and\n"
    "answer. The same seed gives the same text.\n\n";

static int cmd_corpus(int argc, char **argv)
{
    long long needles, sentences, seed;
    Option opts[] = {
        {"--needles", OPT_INT, &needles, 0, 300, "4", "K", "needles"},
        {"--sentences", OPT_INT, &sentences, 0, 1 << 20, "40", "N", "sentences of filler"},
        {"--seed", OPT_INT, &seed, 0, INFINITY, "0", "S", "seed of the text"},
    };
    int r = parse_options("corpus", corpus_usage, opts, COUNT(opts), argc, argv, NULL, 0, 0);
    KvlNeedle list[300];
    char *text, q[128];
    size_t len;
    if (r != GO_ON) return r;
    if (failed(kvl_needle_document(&text, &len, list, (int)needles, (int)sentences, NULL, (uint64_t)seed))) return 1;
    printf("%s\n\n", text);
    for (int k = 0; k < needles; k++) {
        kvl_needle_question(&list[k], q, sizeof q);
        printf("%s %s\n", q, list[k].code);
    }
    free(text);
    return 0;
}

/* --- kvlora pretrain --- */

static const char *pretrain_usage =
    "usage: kvlora pretrain -o DIR [options]\n"
    "       kvlora pretrain -o DIR --resume [--checkpoint-every N]\n\n"
    "Trains a small Llama-architecture model from nothing on the needle corpus (kvlora corpus):\n"
    "documents of filler sentences with 1-8 needles, each followed by its needles' questions and\n"
    "answers. A byte-level BPE tokenizer of V tokens is learnt from 2000 documents; then every\n"
    "weight is trained with next-token cross-entropy and AdamW (betas 0.9, 0.95; linear warmup,\n"
    "cosine decay to a tenth; gradients clipped). The documents start short (at most 3 filler\n"
    "sentences), so that the model learns to look needles up, then grow to T tokens.\n"
    "Writes DIR/config.json, tokenizer.json, model.safetensors (F32) and pretrain.json (the\n"
    "settings and the result). Same seed, same model, whatever the thread count. Every\n"
    "checkpoint, and Ctrl-C (exit 130), saves the model so far and DIR/pretrain_state.safetensors,\n"
    "from which --resume goes on bit for bit (the file is removed when the run completes).\n"
    "Each checkpoint also prints the loss on the answers of 64 held-out short texts (1.919 while\n"
    "the model only guesses digits, 0 when it looks every needle up) and the share of answers\n"
    "right, in all and by the text's number of needles K (a model that answers with any needle\n"
    "not yet asked about gets 100 75 61 52 46 41 37 34% for K = 1..8).\n\n";

typedef struct {
    const char *out;
    long long steps, seed, layers, dim, heads, kv_heads, ffn, vocab, seq_len, batch_tokens, short_steps, ramp_steps, warmup, every;
    float lr, weight_decay, clip;
    int resume;
} PretrainArgs;

typedef struct {
    KvlModel *m;
    KvlTokenizer *tok;
    const char *out;
    long long every;
    const KvlPretrainOptions *opt;
    KvlPretrainState *state;
    int first_step;
} PretrainProgress;

/* A checkpoint: the model, readable like any other, and the state to go on from
   (pretrain_state.safetensors, which holds the weights too). */
static int pretrain_checkpoint(PretrainProgress *p)
{
    char path[4096];
    path_join(path, sizeof path, p->out, "pretrain_state.safetensors");
    return kvl_pretrain_state_save(path, p->state, p->m, p->opt) || kvl_model_save(p->m, NULL, p->out);
}

static int pretrain_progress(void *ctx, int step, int steps, double loss, double elapsed, double eta, int tokens)
{
    PretrainProgress *p = ctx;
    double answer_loss, right;
    int by_needles[9][2];
    a_step_ended = 1;
    fprintf(stderr, "step %5d/%d  loss %.4f  %6d tokens  %7.0f tok/s  %7.1f s elapsed  %7.1f s left\n",
            step, steps, loss, tokens, tokens * (double)(step - p->first_step) / (elapsed + 1e-9), elapsed, eta);
    if (p->every <= 0 || step % p->every != 0 || step >= steps) return stop_requested != 0;
    if (pretrain_checkpoint(p)) fprintf(stderr, "kvlora: checkpoint failed: %s\n", kvl_last_error());
    else fprintf(stderr, "kvlora: checkpoint at step %d in %s\n", step, p->out);
    /* whether retrieval is being learnt shows here long before in the loss; a model that
       answers with a needle not yet asked about, not by its name, gets (1/K)(1 + 1/2 + ...
       + 1/K) right: 100 75 61 52 46 41 37 34% */
    if (kvl_pretrain_eval(p->m, p->tok, 64, 3, p->opt->seed, &answer_loss, &right, by_needles) == 0) {
        fprintf(stderr, "kvlora: held-out answers (64 short texts): loss %.3f (1.919: guessing digits), %.0f%% right;"
                " by the text's needles K = 1..8:", answer_loss, 100 * right);
        for (int k = 1; k <= 8; k++)
            if (by_needles[k][1]) fprintf(stderr, " %.0f%%", 100.0 * by_needles[k][0] / by_needles[k][1]);
            else fprintf(stderr, " -");
        fprintf(stderr, "\n");
    } else fprintf(stderr, "kvlora: held-out answers not measured: %s\n", kvl_last_error());
    return stop_requested != 0;
}

/* The tokenizer, learnt from the run's first 2000 documents, in DIR/tokenizer.json; then
   the untrained model: Llama's architecture with tied embeddings, in the shape asked for. */
static int pretrain_init(const PretrainArgs *a, KvlTokenizer **tok, KvlModel **m)
{
    Buf corpus = {0};
    char *json = NULL, path[4096];
    size_t json_len;
    KvlConfig c = {0};
    int r = 0;
    for (int i = 0; i < 2000 && !r; i++) {
        char *text;
        size_t len;
        r = kvl_pretrain_text(&text, &len, 20, kvl_document_seed((uint64_t)a->seed, (uint64_t)i, 0));
        if (!r) { r = buf_push(&corpus, text, len); free(text); }
    }
    path_join(path, sizeof path, a->out, "tokenizer.json");
    r = r || kvl_bpe_train(corpus.data, corpus.len, (int)a->vocab, &json, &json_len) || make_dir(a->out) ||
        write_text_file(path, json) || kvl_tokenizer_load(tok, path);
    if (!r) fprintf(stderr, "kvlora: learnt a tokenizer of %d tokens from %zu bytes: %s\n", kvl_tokenizer_vocab_size(*tok), corpus.len, path);
    free(corpus.data);
    free(json);
    if (r) return r;
    c.arch = KVL_LLAMA;
    c.n_layers = (int)a->layers; c.dim = (int)a->dim; c.n_heads = (int)a->heads; c.n_kv_heads = (int)a->kv_heads;
    c.head_dim = (int)(a->dim / a->heads); c.ffn_dim = (int)a->ffn; c.vocab_size = kvl_tokenizer_vocab_size(*tok);
    c.max_positions = a->seq_len > 2048 ? (int)a->seq_len : 2048;
    c.rms_eps = 1e-5f; c.rope_theta = 10000.0f; c.tie_embeddings = 1; c.bos_token_id = 0; c.eos_token_id = 1;
    return kvl_model_pretrain_init(m, &c, (uint64_t)a->seed);
}

/* DIR/pretrain.json: the settings and the result. */
static int pretrain_write_info(const char *dir, const KvlPretrainOptions *opt, int steps_done, int resumed_at, double loss, double seconds)
{
    Buf info = {0};
    char path[4096];
    path_join(path, sizeof path, dir, "pretrain.json");
    int r = buf_printf(&info, "{\n  \"made_by\": \"kvlora %s pretrain\",\n  \"steps\": %d,\n  \"steps_done\": %d,\n  \"resumed_at\": %d,\n",
                       KVL_VERSION, opt->steps, steps_done, resumed_at) ||
            buf_printf(&info, "  \"seed\": %llu,\n  \"batch_tokens\": %d,\n  \"seq_len\": %d,\n  \"short_steps\": %d,\n  \"ramp_steps\": %d,\n",
                       (unsigned long long)opt->seed, opt->batch_tokens, opt->seq_len, opt->short_steps, opt->ramp_steps) ||
            buf_printf(&info, "  \"lr\": %g,\n  \"warmup\": %d,\n  \"weight_decay\": %g,\n  \"clip\": %g,\n", opt->lr, opt->warmup,
                       opt->weight_decay, opt->clip) ||
            buf_printf(&info, "  \"final_loss\": %.6f,\n  \"seconds\": %.1f\n}\n", loss, seconds) || write_text_file(path, info.data);
    free(info.data);
    return r;
}

static int pretrain_run(const PretrainArgs *a)
{
    KvlTokenizer *tok = NULL;
    KvlModel *m = NULL;
    KvlPretrainState state = {0};
    KvlPretrainOptions opt = {(int)a->steps, (int)a->batch_tokens, (int)a->seq_len, (int)a->short_steps, (int)a->ramp_steps,
                              (int)a->warmup, a->lr, a->weight_decay, a->clip, (uint64_t)a->seed, NULL, NULL};
    char path[4096], state_path[4096];
    int rc = 1;
    path_join(state_path, sizeof state_path, a->out, "pretrain_state.safetensors");
    path_join(path, sizeof path, a->out, "tokenizer.json");
    if (a->resume) {
        if (kvl_model_load(&m, a->out) || kvl_tokenizer_load(&tok, path) || kvl_pretrain_state_load(state_path, &state, m, &opt)) {
            cli_error("cannot resume: %s", kvl_last_error());
            goto done;
        }
        fprintf(stderr, "kvlora: resuming %s at step %d of %d\n", a->out, state.step, opt.steps);
    } else if (failed(pretrain_init(a, &tok, &m) || kvl_pretrain_state_init(&state, m))) goto done;
    const KvlConfig *c = &m->config;
    fprintf(stderr, "kvlora: %d layers, dim %d, %d heads (%d KV), ffn %d, vocab %d: %zu parameters\n",
            c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->ffn_dim, c->vocab_size, m->n_params);
    PretrainProgress progress = {m, tok, a->out, a->every, &opt, &state, state.step};
    opt.progress = pretrain_progress;
    opt.progress_ctx = &progress;
    signal(SIGINT, request_stop);
    signal(SIGTERM, request_stop);
    double t0 = now_seconds(), loss = 0.0;
    if (failed(kvl_pretrain(m, tok, &opt, &state, &loss))) goto done;
    double seconds = now_seconds() - t0;
    if (failed(stop_requested ? pretrain_checkpoint(&progress) : kvl_model_save(m, NULL, a->out))) goto done;
    if (!stop_requested) remove(state_path);        /* the run is complete: nothing to go on from */
    if (failed(pretrain_write_info(a->out, &opt, state.step, progress.first_step, loss, seconds))) goto done;
    if (stop_requested)
        fprintf(stderr, "kvlora: interrupted at step %d after %.1f s; `kvlora pretrain -o %s --resume` goes on\n", state.step, seconds, a->out);
    else
        fprintf(stderr, "kvlora: done after %.1f s, last batch loss %.4f; wrote %s\n", seconds, loss, a->out);
    rc = stop_requested ? 130 : 0;
done:
    kvl_pretrain_state_free(&state);
    kvl_tokenizer_free(tok);
    kvl_model_free(m);
    return rc;
}

static int cmd_pretrain(int argc, char **argv)
{
    PretrainArgs a = {0};
    const char *setting = NULL;
    Option opts[] = {
        {"-o", OPT_STRING, &a.out, 0, 0, NULL, "DIR", "the model directory to write"},
        {"--steps", OPT_INT, &a.steps, 0, 1 << 30, "3600", "N", "optimiser steps (0 writes the untrained model, to replay the run\n"
                                                               "elsewhere: data/pretrain_search.py's start)"},
        {"--seed", OPT_INT, &a.seed, 0, INFINITY, "1", "S", "seed of the weights and the documents"},
        {"--layers", OPT_INT, &a.layers, 1, 256, "4", "L", "layers"},
        {"--dim", OPT_INT, &a.dim, 2, 65536, "128", "D", "hidden size"},
        {"--heads", OPT_INT, &a.heads, 1, 1024, "8", "H", "query heads"},
        {"--kv-heads", OPT_INT, &a.kv_heads, 1, 1024, "8", "K", "key/value heads"},
        {"--ffn", OPT_INT, &a.ffn, 1, 1 << 20, "384", "F", "feed-forward size"},
        {"--vocab", OPT_INT, &a.vocab, 258, 1 << 20, "1024", "V", "tokenizer size, 258 (bytes only) and up"},
        {"--seq-len", OPT_INT, &a.seq_len, 2, 1 << 20, "768", "T", "longest training sequence, the trained context"},
        {"--batch-tokens", OPT_INT, &a.batch_tokens, 1, 1 << 24, "8192", "N", "tokens per step, in whole documents"},
        {"--short-steps", OPT_INT, &a.short_steps, 0, 1 << 30, "1800", "N", "steps on short documents first"},
        {"--ramp-steps", OPT_INT, &a.ramp_steps, 0, 1 << 30, "1000", "N", "then steps over which documents grow to T"},
        {"--lr", OPT_POSITIVE, &a.lr, 0, INFINITY, "1e-3", "LR", "peak learning rate"},
        {"--warmup", OPT_INT, &a.warmup, 0, 1 << 30, "100", "W", "warmup steps"},
        {"--weight-decay", OPT_FLOAT, &a.weight_decay, 0, INFINITY, "0.1", "WD", "AdamW decay, on every weight"},
        {"--clip", OPT_FLOAT, &a.clip, 0, INFINITY, "1", "C", "global gradient-norm clip, 0 for none"},
        {"--checkpoint-every", OPT_INT, &a.every, 0, 1 << 30, "250", "N", "save the model and the state every N steps"},
        {"--resume", OPT_FLAG, &a.resume, 0, 0, NULL, NULL, "go on with the run in DIR, with its own settings"},
    };
    int r = parse_options("pretrain", pretrain_usage, opts, COUNT(opts), argc, argv, NULL, 0, 0);
    if (r != GO_ON) return r;
    for (int i = 0; i < argc; i++)          /* the last setting given; every option but --resume takes a value */
        if (strcmp(argv[i], "--resume")) { if (strcmp(argv[i], "-o") && strcmp(argv[i], "--checkpoint-every")) setting = argv[i]; i++; }
    if (!a.out) return usage_error("pretrain", "missing -o DIR");
    if (a.resume && setting) return usage_error("pretrain", "--resume goes on with the run's own settings; %s cannot change them", setting);
    if (a.dim % a.heads || a.heads % a.kv_heads || (a.dim / a.heads) % 2)
        return usage_error("pretrain", "--dim must split into --heads heads of even size, and --heads into --kv-heads groups");
    return pretrain_run(&a);
}

/* --- kvlora needle --- */

static const char *needle_usage =
    "usage: kvlora needle MODEL_DIR [options]\n\n"
    "The needle-in-a-haystack test of distillation. Each trial makes a fresh document of T\n"
    "tokens (seeds the pretraining never used) with K needles \"The secret code of NAME is\n"
    "DDDDD.\", records its KV cache, distils the cache into a LoRA adapter, and asks every\n"
    "needle's question \"Q: What is the secret code of NAME? A:\" three ways: with the full\n"
    "context (the teacher), with no context (the base model) and with the adapter and no\n"
    "context. An answer counts when the greedy answer is exactly the code. The probes hold\n"
    "no ground truth: self-study samples questions and answers from the teacher after \"Q:\";\n"
    "context probes are slices of the context. Needle k of trial t sits at depth\n"
    "D[(t K + k) mod |D|] (0 = the start of the document, 1 = its end).\n\n"
    "Several methods or ranks (--method gradient,closed-form --rank 2,8) compare adapters\n"
    "distilled from the same documents, caches and probes, each from the same initial\n"
    "adapter: one run per method and rank, at most 16. A run's time is its distillation\n"
    "alone; making the probes is timed apart.\n\n"
    "--sessions S studies many sessions over time: S documents of K needles each, learnt one\n"
    "after another (each cache dropped once distilled), combined by each --merge strategy:\n"
    "incremental (one adapter trained on), incremental-replay (and --replay of each batch\n"
    "from earlier sessions' probes and teacher rows), compose-sum (an adapter per session,\n"
    "summed), compose-orthogonal (the same, each A kept orthogonal to the earlier ones'),\n"
    "merge-weights (each adapter merged into the weights, which teach the next session) and\n"
    "joint (one adapter on all sessions at once: the ceiling). Reported per strategy: recall\n"
    "of each session's questions after the last session, the mean and the worst, backward\n"
    "transfer, drift on fresh text (in-context recall against the base model, and KL), bytes\n"
    "and time. --svg then draws the forgetting curves.\n\n"
    "--frontier sets recall against bytes: each trial's document kept every way, each asked\n"
    "the same questions: the cache in F32, F16 and BF16; KIVI-quantised (groups of 32 at 8, 4\n"
    "and 2 bits, and 2 bits with the last 32 tokens in float); evicted by StreamingLLM, H2O\n"
    "and SnapKV to 2, 5, 10, 20 and 50% of its tokens; LoRA adapters of rank 1 to 16; and\n"
    "cartridges (a KV cache of 2 to 128 slots trained like the adapters, from the same probes\n"
    "and teacher). Bytes count the context's share as stored (adapters and cartridges in\n"
    "float32, or as --dtype says); time is the making, not the asking; drift (adapters and\n"
    "cartridges) is the mean KL(base || with it) over fresh filler.\n\n";

typedef struct {
    const char *dir, *svg, *targets;
    long long needles, trials, steps, batch, self_study, self_study_len, chunk_len, seed, threads, teacher_topk;
    long long sessions, drift_docs, drift_tokens;
    float alpha, lr, damping, replay;
    int probes, json, frontier, frontier_dtype;   /* probes: 0 self-study, 1 context, 2 both; dtype: f32, f16, bf16 */
    Choices frontier_methods;           /* KVL_FRONTIER_* */
    long long solve_tokens;
    Numbers lens, depths, ranks;
    Choices methods;                    /* KVL_METHOD_* */
    Choices merges;                     /* KVL_MERGE_* */
} NeedleArgs;

static const char *const method_names[3] = {"gradient", "closed-form", "hybrid"};

static const char *const probe_names[3] = {"self-study", "context", "both"};

/* The answers, per cell (context length l, depth d: cell l |D| + d) and in all, in columns:
   with the context, without it, with each run's adapter. */
typedef struct {
    int (*hits)[2 + KVL_NEEDLE_RUNS], *asked;
    int total[2 + KVL_NEEDLE_RUNS], n_asked, n_trials;
    size_t kv_bytes, adapter_bytes[KVL_NEEDLE_RUNS];  /* float32: the context's cache (mean over trials), each adapter */
    double probe_seconds, seconds[KVL_NEEDLE_RUNS], loss[KVL_NEEDLE_RUNS];   /* summed over trials */
    double wall;                        /* the whole test */
} NeedleTally;

/* An SVG figure's opening: its size, a white page and the title at the top left. */
static int svg_open(Buf *b, int width, int height, const char *title)
{
    return buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n",
                      width, height) ||
           buf_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", width, height) ||
           buf_puts(b, "<text x=\"10\" y=\"22\" font-size=\"15\">") || buf_puts(b, title) || buf_puts(b, "</text>\n");
}

/* The heatmap: one panel per way of asking (the first run's adapter), context lengths
   across, depths down. */
static int needle_svg(const char *path, const Numbers *lens, const Numbers *depths, const NeedleTally *s, const char *title)
{
    static const char *const panel_titles[3] = {"with the context", "no context", "distilled adapter, no context"};
    int n_lens = lens->n, n_depths = depths->n, cell = 48, left = 70, top = 60, panel_w = n_lens * cell + 40;
    int width = left + 3 * panel_w + 20, height = top + n_depths * cell + 70;
    Buf b = {0};
    int r = svg_open(&b, width, height, title);
    for (int w = 0; w < 3 && !r; w++) {
        int x0 = left + w * panel_w;
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\">%s</text>\n", x0, top - 10, panel_titles[w]);
        for (int d = 0; d < n_depths && !r; d++)
            for (int l = 0; l < n_lens && !r; l++) {
                int i = l * n_depths + d, x = x0 + l * cell, y = top + d * cell;
                double f = s->asked[i] ? (double)s->hits[i][w] / s->asked[i] : 0.0;
                /* red (0) through yellow to green (1) */
                int red = f < 0.5 ? 230 : (int)(230 - (f - 0.5) * 2 * 190), green = f < 0.5 ? (int)(60 + f * 2 * 150) : 210;
                r = buf_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"white\"/>\n",
                               x, y, cell, cell, s->asked[i] ? "" : "#ddd") ||
                    (s->asked[i] && buf_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,70)\" stroke=\"white\"/>\n",
                                               x, y, cell, cell, red, green)) ||
                    (s->asked[i] && buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x + cell / 2, y + cell / 2 + 4, 100 * f));
            }
        for (int l = 0; l < n_lens && !r; l++)
            r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x0 + l * cell + cell / 2, top + n_depths * cell + 16, lens->v[l]);
        if (!r) r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">context tokens</text>\n", x0 + n_lens * cell / 2, top + n_depths * cell + 34);
    }
    for (int d = 0; d < n_depths && !r; d++)
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.0f%%</text>\n", left - 8, top + d * cell + cell / 2 + 4, 100 * depths->v[d]);
    if (!r) r = buf_printf(&b, "<text x=\"10\" y=\"%d\">depth</text>\n<text x=\"10\" y=\"%d\">recall in %%, exact code; grey: not asked</text>\n</svg>\n",
                           top - 10, height - 12);
    if (!r) r = write_text_file(path, b.data);
    free(b.data);
    return r;
}

/* Run u's method and rank: runs go through the methods, and for each through the ranks. */
static int run_method(const NeedleArgs *a, int u) { return a->methods.v[u / a->ranks.n]; }
static long long run_rank(const NeedleArgs *a, int u) { return (long long)a->ranks.v[u % a->ranks.n]; }

/* The result: one JSON object, or tables of recall in all, the bytes and recall by context
   length x depth; and the heatmap. The JSON's top level and the tables by depth hold the
   first run; "runs" and the first table hold every run. */
static int needle_report(const NeedleArgs *a, const NeedleTally *s)
{
    int n = s->n_asked, n_depths = a->depths.n, cells = a->lens.n * n_depths, n_runs = a->methods.n * a->ranks.n, T = s->n_trials;
    if (a->json) {
        printf("{\"with_context\": %.6f, \"no_context\": %.6f, \"distilled\": %.6f, \"questions\": %d, \"kv_cache_bytes\": %zu, \"adapter_bytes\": %zu, "
               "\"probe_seconds\": %.3f, \"distill_seconds\": %.3f, ", (double)s->total[0] / n, (double)s->total[1] / n, (double)s->total[2] / n, n,
               s->kv_bytes, s->adapter_bytes[0], s->probe_seconds / T, (s->probe_seconds + s->seconds[0]) / T);
        printf("\"needles\": %lld, \"trials\": %d, \"rank\": %lld, \"method\": \"%s\", \"steps\": %lld, \"probes\": \"%s\", \"runs\": [",
               a->needles, T, run_rank(a, 0), method_names[run_method(a, 0)], a->steps, probe_names[a->probes]);
        for (int u = 0; u < n_runs; u++)
            printf("%s{\"method\": \"%s\", \"rank\": %lld, \"recall\": %.6f, \"loss\": %.6g, \"seconds\": %.3f, \"adapter_bytes\": %zu}", u ? ", " : "",
                   method_names[run_method(a, u)], run_rank(a, u), (double)s->total[2 + u] / n, s->loss[u] / T, s->seconds[u] / T, s->adapter_bytes[u]);
        printf("], \"cells\": [");
        for (int i = 0; i < cells; i++) {
            printf("%s{\"context_len\": %g, \"depth\": %g, \"asked\": %d, \"with_context\": %d, \"no_context\": %d, \"distilled\": %d, \"distilled_runs\": [",
                   i ? ", " : "", a->lens.v[i / n_depths], a->depths.v[i % n_depths], s->asked[i], s->hits[i][0], s->hits[i][1], s->hits[i][2]);
            for (int u = 0; u < n_runs; u++) printf("%s%d", u ? ", " : "", s->hits[i][2 + u]);
            printf("]}");
        }
        printf("]}\n");
    } else {
        printf("\n  %-30s %9s %8s %10s %9s\n", "asked", "correct", "recall", "loss", "seconds");
        printf("  %-30s %4d/%-4d %7.1f%%\n", "with the context", s->total[0], n, 100.0 * s->total[0] / n);
        printf("  %-30s %4d/%-4d %7.1f%%\n", "no context", s->total[1], n, 100.0 * s->total[1] / n);
        for (int u = 0; u < n_runs; u++) {
            char label[64];
            int method = run_method(a, u);
            if (method == KVL_METHOD_CLOSED_FORM) snprintf(label, sizeof label, "distilled: closed form, r%lld", run_rank(a, u));
            else snprintf(label, sizeof label, "distilled: %s%lld steps, r%lld", method == KVL_METHOD_HYBRID ? "solve + " : "", a->steps, run_rank(a, u));
            printf("  %-30s %4d/%-4d %7.1f%% %10.4f %9.1f\n", label, s->total[2 + u], n, 100.0 * s->total[2 + u] / n, s->loss[u] / T, s->seconds[u] / T);
        }
        printf("  (loss: the distillation loss over the probes after distilling; seconds: per trial)\n");
        printf("\n  KV cache of the context  %9zu bytes (float32, mean over trials)\n", s->kv_bytes);
        printf("  adapter                  %9zu bytes (%.1f%% of the cache)%s\n", s->adapter_bytes[0], 100.0 * s->adapter_bytes[0] / (s->kv_bytes ? s->kv_bytes : 1),
               n_runs > 1 ? ", the first run" : "");
        printf("  probes                   %9.1f s per trial\n", s->probe_seconds / T);
        printf("\n  recall by depth (with / no context / distilled%s)\n  %-8s", n_runs > 1 ? ", the first run" : "", "tokens");
        for (int d = 0; d < n_depths; d++) printf(" %16.0f%%", 100 * a->depths.v[d]);
        for (int i = 0; i < cells; i++) {
            if (i % n_depths == 0) printf("\n  %-8.0f", a->lens.v[i / n_depths]);
            if (s->asked[i]) printf("   %3.0f /%3.0f /%3.0f", 100.0 * s->hits[i][0] / s->asked[i], 100.0 * s->hits[i][1] / s->asked[i], 100.0 * s->hits[i][2] / s->asked[i]);
            else printf(" %17s", "-");
        }
        printf("\n\n  %.1f s in all\n", s->wall);
    }
    if (a->svg) {
        char title[256];
        snprintf(title, sizeof title, "kvlora needle test: %lld needles, %s rank %lld, %lld steps, %d trials", a->needles,
                 method_names[run_method(a, 0)], run_rank(a, 0), a->steps, T);
        if (failed(needle_svg(a->svg, &a->lens, &a->depths, s, title))) return 1;
        fprintf(stderr, "kvlora: wrote %s\n", a->svg);
    }
    return 0;
}

/* Every trial: a document, its probes, an adapter per run, the answers every way. */
static int needle_run(const NeedleArgs *a, KvlNeedleOptions *o)
{
    KvlModel *m = NULL;
    KvlTokenizer *tok = NULL;
    int K = (int)a->needles, n_depths = a->depths.n, cells = a->lens.n * n_depths, rc = 1, ways = 2 + o->n_runs;
    NeedleTally s = {0};
    s.hits = xcalloc((size_t)cells, sizeof *s.hits);
    s.asked = xcalloc((size_t)cells, sizeof *s.asked);
    double t_start = now_seconds();
    if (failed(!s.hits || !s.asked || kvl_model_load(&m, a->dir) || load_tokenizer(a->dir, &tok))) goto done;
    if (!a->json) {
        printf("needle test: %s, %lld needles, %lld trial%s per context length, probes %s, on %s, %lld steps;", a->dir, a->needles, a->trials,
               a->trials == 1 ? "" : "s", probe_names[a->probes], a->targets, a->steps);
        for (int u = 0; u < o->n_runs; u++) printf("%s %s r%lld", u ? "," : "", method_names[run_method(a, u)], run_rank(a, u));
        printf("\n");
    }
    for (int l = 0; l < a->lens.n; l++)
        for (int t = 0; t < a->trials; t++) {
            float d[KVL_NEEDLE_MAX];
            KvlNeedleResult res;
            for (int k = 0; k < K; k++) d[k] = (float)a->depths.v[(t * K + k) % n_depths];
            o->context_len = (int)a->lens.v[l];
            o->distill.seed = (uint64_t)a->seed + (uint64_t)t;
            if (failed(kvl_needle_trial(m, tok, o, d, kvl_document_seed((uint64_t)a->seed, (uint64_t)l * 1000003u + t, 1), &res))) goto done;
            for (int k = 0; k < K; k++) {
                int cell = l * n_depths + (t * K + k) % n_depths;
                s.asked[cell]++;
                for (int w = 0; w < ways; w++) { s.hits[cell][w] += res.correct[k][w]; s.total[w] += res.correct[k][w]; }
            }
            s.n_asked += K;
            s.n_trials++;
            s.kv_bytes += res.kv_cache_bytes;
            s.probe_seconds += res.probe_seconds;
            int got[2 + KVL_NEEDLE_RUNS] = {0};
            for (int k = 0; k < K; k++)
                for (int w = 0; w < ways; w++) got[w] += res.correct[k][w];
            fprintf(stderr, "trial %d/%lld: %d-token context, %d probes (%.1f s): with context %d/%d, no context %d/%d, distilled",
                    s.n_trials, a->trials * a->lens.n, res.context_tokens, res.n_probes, res.probe_seconds, got[0], K, got[1], K);
            for (int u = 0; u < o->n_runs; u++) {
                s.adapter_bytes[u] = res.adapter_bytes[u];
                s.seconds[u] += res.distill_seconds[u];
                s.loss[u] += res.loss[u];
                fprintf(stderr, "%s %d/%d (%.1f s)", u ? "," : "", got[2 + u], K, res.distill_seconds[u]);
            }
            fprintf(stderr, "\n");
        }
    s.kv_bytes /= (size_t)s.n_trials;
    s.wall = now_seconds() - t_start;
    rc = needle_report(a, &s);
done:
    free(s.hits);
    free(s.asked);
    kvl_tokenizer_free(tok);
    kvl_model_free(m);
    return rc;
}

/* --- kvlora needle --sessions: merging strategies over many sessions --- */

static void sessions_progress(void *ctx, int merge, int session, int n_sessions, int right, int asked, double seconds)
{
    (void)ctx;
    if (merge == KVL_MERGE_JOINT)
        fprintf(stderr, "%s: %d sessions learnt at once, the last one's answers %d/%d (%.1f s)\n", kvl_merge_names[merge], n_sessions, right, asked, seconds);
    else fprintf(stderr, "%s: session %d/%d learnt, its answers %d/%d (%.1f s)\n", kvl_merge_names[merge], session, n_sessions, right, asked, seconds);
}

/* A strategy's figures: recall of session k at the end, the mean and worst over sessions,
   backward transfer (the mean of recall at the end minus recall just after learning;
   none for joint), drift in points of in-context recall. */
typedef struct { double mean, worst, backward, drift_points; } SessionsSummary;

static SessionsSummary sessions_summary(const KvlSessionsResult *r)
{
    SessionsSummary s = {0.0, 1.0, 0.0, 0.0};
    double K = r->n_needles;
    for (int k = 0; k < r->n_sessions; k++) {
        s.mean += r->kept[k] / K / r->n_sessions;
        s.backward += (r->kept[k] - r->learnt[k]) / K / r->n_sessions;
        if (r->kept[k] / K < s.worst) s.worst = r->kept[k] / K;
    }
    s.drift_points = r->drift_asked ? 100.0 * (r->drift_right - r->drift_base) / r->drift_asked : 0.0;
    return s;
}

/* The forgetting curves: recall at the end of each session's questions, oldest first, a
   line per strategy. */
static int sessions_svg(const char *path, const KvlSessionsResult *res, const int *merges, int n, const char *title)
{
    static const char *const colors[KVL_N_MERGES] = {"#d62728", "#ff7f0e", "#1f77b4", "#17becf", "#9467bd", "#2ca02c"};
    int S = res[0].n_sessions, left = 60, top = 50, plot_w = 520, plot_h = 260, width = left + plot_w + 190, height = top + plot_h + 60;
    Buf b = {0};
    int r = svg_open(&b, width, height, title) ||
            buf_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", left, top, plot_w, plot_h);
    for (int i = 0; i <= 4 && !r; i++)           /* recall 0, 25, ... 100% */
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d%%</text>\n", left - 6, top + plot_h - i * plot_h / 4 + 4, 25 * i);
    for (int k = 0; k < S && !r; k++)
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", left + (S > 1 ? k * plot_w / (S - 1) : plot_w / 2),
                       top + plot_h + 16, k + 1);
    if (!r) r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">session (oldest first)</text>\n", left + plot_w / 2,
                           top + plot_h + 36);
    for (int i = 0; i < n && !r; i++) {
        r = buf_printf(&b, "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"%s\" points=\"", colors[merges[i]]);
        for (int k = 0; k < S && !r; k++)
            r = buf_printf(&b, "%d,%d ", left + (S > 1 ? k * plot_w / (S - 1) : plot_w / 2),
                           top + plot_h - (int)(plot_h * (double)res[i].kept[k] / res[i].n_needles + 0.5));
        if (!r) r = buf_puts(&b, "\"/>\n") ||
                    buf_printf(&b, "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", left + plot_w + 14, top + 14 + 18 * i, colors[merges[i]],
                               kvl_merge_names[merges[i]]);
    }
    if (!r) r = buf_printf(&b, "<text x=\"10\" y=\"%d\">recall without context after the last session, exact code</text>\n</svg>\n", height - 8);
    if (!r) r = write_text_file(path, b.data);
    free(b.data);
    return r;
}

/* Each strategy over the same sessions (the same documents and seeds), then the table or
   the JSON, and the curves. */
static int sessions_run(const NeedleArgs *a, KvlNeedleOptions *o)
{
    KvlModel *m = NULL;
    KvlTokenizer *tok = NULL;
    KvlSessionsResult res[KVL_N_MERGES];
    int n = a->merges.n, rc = 1, joint = -1;
    KvlSessionsOptions so = {*o, (int)a->sessions, a->replay, (int)a->drift_docs, (int)a->drift_tokens, sessions_progress, NULL};
    so.needle.context_len = (int)a->lens.v[0];
    so.needle.distill.seed = (uint64_t)a->seed;
    if (failed(kvl_model_load(&m, a->dir) || load_tokenizer(a->dir, &tok))) goto done;
    for (int i = 0; i < n; i++)
        if (failed(kvl_needle_sessions(m, tok, &so, a->merges.v[i], (uint64_t)a->seed, &res[i]))) goto done;
    for (int i = 0; i < n; i++)
        if (a->merges.v[i] == KVL_MERGE_JOINT) joint = i;
    if (a->json) {
        printf("{\"sessions\": %lld, \"needles\": %lld, \"context_len\": %d, \"rank\": %lld, \"steps\": %lld, \"replay\": %g, \"strategies\": [",
               a->sessions, a->needles, so.needle.context_len, run_rank(a, 0), a->steps, a->replay);
        for (int i = 0; i < n; i++) {
            SessionsSummary s = sessions_summary(&res[i]);
            printf("%s{\"merge\": \"%s\", \"recall_by_session\": [", i ? ", " : "", kvl_merge_names[a->merges.v[i]]);
            for (int k = 0; k < res[i].n_sessions; k++) printf("%s%.6f", k ? ", " : "", (double)res[i].kept[k] / res[i].n_needles);
            printf("], \"learnt_by_session\": [");
            for (int k = 0; k < res[i].n_sessions; k++) printf("%s%.6f", k ? ", " : "", (double)res[i].learnt[k] / res[i].n_needles);
            printf("], \"mean_recall\": %.6f, \"worst_recall\": %.6f, \"backward_transfer\": ", s.mean, s.worst);
            if (a->merges.v[i] == KVL_MERGE_JOINT) printf("null");
            else printf("%.6f", s.backward);
            printf(", \"drift_recall_points\": %.3f, \"drift_kl\": %.6g, \"adapter_bytes\": %zu, \"seconds\": %.3f}", s.drift_points,
                   res[i].drift_kl, res[i].adapter_bytes, res[i].seconds);
        }
        printf("]}\n");
    } else {
        printf("sessions: %s, %lld sessions of %lld needles in %d tokens, rank %lld, %lld steps a session, self-study %lld x %lld, replay %g\n\n",
               a->dir, a->sessions, a->needles, so.needle.context_len, run_rank(a, 0), a->steps, a->self_study, a->self_study_len, a->replay);
        int width = 5 * (int)a->sessions > 32 ? 5 * (int)a->sessions : 32;     /* the recall column */
        printf("  %-20s %-*s %6s %6s %6s %8s %8s %8s %8s\n", "strategy", width - 1, "recall by session, oldest first", "mean",
               "worst", "BWT", "drift pt", "drift KL", "bytes", "seconds");
        for (int i = 0; i < n; i++) {
            SessionsSummary s = sessions_summary(&res[i]);
            printf("  %-20s", kvl_merge_names[a->merges.v[i]]);
            for (int k = 0; k < res[i].n_sessions; k++) printf(" %4.2f", (double)res[i].kept[k] / res[i].n_needles);
            printf("%*s", width - 5 * res[i].n_sessions, "");
            if (a->merges.v[i] == KVL_MERGE_JOINT) printf(" %6.2f %6.2f %6s", s.mean, s.worst, "-");
            else printf(" %6.2f %6.2f %+6.2f", s.mean, s.worst, s.backward);
            printf(" %+8.1f %8.4f %8zu %8.1f\n", s.drift_points, res[i].drift_kl, res[i].adapter_bytes, res[i].seconds);
        }
        printf("\n  recall: answers right without context after the last session; BWT: mean over sessions of that minus the\n"
               "  recall just after the session was learnt; drift: in-context recall on %lld fresh documents (points against\n"
               "  the base model's %d/%d) and mean KL(base || final) over %lld tokens of fresh filler",
               a->drift_docs, res[0].drift_base, res[0].drift_asked, a->drift_tokens);
        if (joint >= 0) {
            double ceiling = sessions_summary(&res[joint]).mean;
            printf(".\n  Mean recall against joint's, the ceiling (%.2f):", ceiling);
            for (int i = 0, first = 1; i < n; i++)
                if (i != joint) {
                    printf("%s %s %+.2f", first ? "" : ",", kvl_merge_names[a->merges.v[i]], sessions_summary(&res[i]).mean - ceiling);
                    first = 0;
                }
        }
        printf("\n");
    }
    if (a->svg) {
        char title[256];
        snprintf(title, sizeof title, "kvlora: %lld sessions of %lld needles, rank %lld, recall at the end by session", a->sessions,
                 a->needles, run_rank(a, 0));
        if (failed(sessions_svg(a->svg, res, a->merges.v, n, title))) goto done;
        fprintf(stderr, "kvlora: wrote %s\n", a->svg);
    }
    rc = 0;
done:
    kvl_tokenizer_free(tok);
    kvl_model_free(m);
    return rc;
}

/* --- needle --frontier --- */

typedef struct {
    int method;
    char setting[32];
    double bytes, seconds, drift;        /* summed over the trials, then means */
    int right, asked;
} FrontierTally;

static void frontier_progress(void *ctx, const KvlFrontierRow *row)
{
    (void)ctx;
    fprintf(stderr, "  %-10s %-16s %9zu bytes  %d/%d right  %.1f s\n", kvl_frontier_methods[row->method], row->setting, row->bytes,
            row->right, row->asked, row->seconds);
}

/* Recall against bytes on a log axis, one curve per method, the full cache's bytes marked. */
static int frontier_svg(const char *path, const FrontierTally *rows, int n, double cache_bytes, const char *title)
{
    static const char *const colors[KVL_N_FRONTIER] = {"#000000", "#7f7f7f", "#ff7f0e", "#d62728", "#9467bd", "#1f77b4", "#2ca02c"};
    int left = 60, top = 50, plot_w = 560, plot_h = 280, width = left + plot_w + 130, height = top + plot_h + 60;
    double lo = INFINITY, hi = 0.0;
    for (int i = 0; i < n; i++) {
        lo = fmin(lo, rows[i].bytes);
        hi = fmax(hi, rows[i].bytes);
    }
    lo = pow(10.0, floor(log10(lo > 0 ? lo : 1)));
    hi = pow(10.0, ceil(log10(hi > lo ? hi : lo * 10)));
#define FRONTIER_X(bytes) (left + (int)(plot_w * (log10(bytes) - log10(lo)) / (log10(hi) - log10(lo)) + 0.5))
#define FRONTIER_Y(row) (top + plot_h - (int)(plot_h * (double)(row).right / (row).asked + 0.5))
    Buf b = {0};
    int r = svg_open(&b, width, height, title) ||
            buf_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", left, top, plot_w, plot_h);
    for (int i = 0; i <= 4 && !r; i++)
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d%%</text>\n", left - 6, top + plot_h - i * plot_h / 4 + 4, 25 * i);
    for (double x = lo; x <= hi * 1.001 && !r; x *= 10)
        r = buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.0e</text>\n", FRONTIER_X(x), top + plot_h + 16, x);
    if (!r) r = buf_printf(&b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#bbb\" stroke-dasharray=\"4\"/>\n", FRONTIER_X(cache_bytes),
                           FRONTIER_X(cache_bytes), top, top + plot_h) ||
                buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">bytes as stored (dashed: the float32 cache)</text>\n",
                           left + plot_w / 2, top + plot_h + 36);
    for (int method = 0, shown = 0; method < KVL_N_FRONTIER && !r; method++) {
        int first = 1;
        for (int i = 0; i < n && !r; i++) {
            if (rows[i].method != method) continue;
            if (first) r = buf_printf(&b, "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"%s\" points=\"", colors[method]);
            if (!r) r = buf_printf(&b, "%d,%d ", FRONTIER_X(rows[i].bytes), FRONTIER_Y(rows[i]));
            first = 0;
        }
        if (first || r) continue;
        r = buf_puts(&b, "\"/>\n") || buf_printf(&b, "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", left + plot_w + 14, top + 14 + 18 * shown++,
                                                 colors[method], kvl_frontier_methods[method]);
        for (int i = 0; i < n && !r; i++)      /* a dot per setting */
            if (rows[i].method == method)
                r = buf_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>\n", FRONTIER_X(rows[i].bytes), FRONTIER_Y(rows[i]),
                               colors[method]);
    }
    if (!r) r = buf_printf(&b, "<text x=\"10\" y=\"%d\">recall: answers exactly right, without the context</text>\n</svg>\n", height - 8);
#undef FRONTIER_X
#undef FRONTIER_Y
    if (!r) r = write_text_file(path, b.data);
    free(b.data);
    return r;
}

static int frontier_run(const NeedleArgs *a, KvlNeedleOptions *o)
{
    KvlModel *m = NULL;
    KvlTokenizer *tok = NULL;
    static const KvlDtype dtypes[3] = {KVL_F32, KVL_F16, KVL_BF16};
    KvlFrontierOptions fo = {*o, 0, (int)a->drift_tokens, dtypes[a->frontier_dtype], frontier_progress, NULL};
    KvlFrontierResult res;
    FrontierTally rows[KVL_FRONTIER_MAX_ROWS];
    int K = (int)a->needles, n_rows = 0, rc = 1;
    double cache_bytes = 0.0, start = now_seconds();
    for (int i = 0; i < a->frontier_methods.n; i++) fo.methods |= 1u << a->frontier_methods.v[i];
    fo.needle.context_len = (int)a->lens.v[0];
    if (failed(kvl_model_load(&m, a->dir) || load_tokenizer(a->dir, &tok))) goto done;
    for (int t = 0; t < a->trials; t++) {
        float d[KVL_NEEDLE_MAX];
        for (int k = 0; k < K; k++) d[k] = (float)a->depths.v[(t * K + k) % a->depths.n];
        fo.needle.distill.seed = (uint64_t)a->seed + (uint64_t)t;
        fprintf(stderr, "trial %d/%lld:\n", t + 1, a->trials);
        if (failed(kvl_needle_frontier(m, tok, &fo, d, kvl_document_seed((uint64_t)a->seed, (uint64_t)t, 1), &res))) goto done;
        if (t == 0 && (n_rows = res.n_rows) == 0) { cli_error("no way of keeping the document was run"); goto done; }
        if (res.n_rows != n_rows) { cli_error("trial %d kept %d ways, the first %d (a shorter document?)", t + 1, res.n_rows, n_rows); goto done; }
        cache_bytes += (double)res.cache_bytes / a->trials;
        for (int i = 0; i < n_rows; i++) {
            const KvlFrontierRow *row = &res.rows[i];
            FrontierTally *s = &rows[i];
            if (t == 0) {
                memset(s, 0, sizeof *s);
                s->method = row->method;
                memcpy(s->setting, row->setting, sizeof s->setting);
            }
            s->bytes += (double)row->bytes / a->trials;
            s->seconds += row->seconds / a->trials;
            s->drift += row->drift_kl / a->trials;
            s->right += row->right;
            s->asked += row->asked;
        }
    }
    if (a->json) {
        printf("{\"cache_bytes\": %.0f, \"needles\": %lld, \"trials\": %lld, \"context_len\": %d, \"rows\": [", cache_bytes, a->needles,
               a->trials, fo.needle.context_len);
        for (int i = 0; i < n_rows; i++) {
            printf("%s{\"method\": \"%s\", \"setting\": \"%s\", \"bytes\": %.0f, \"share\": %.6f, \"recall\": %.6f, \"seconds\": %.3f, \"drift_kl\": ",
                   i ? ", " : "", kvl_frontier_methods[rows[i].method], rows[i].setting, rows[i].bytes, rows[i].bytes / cache_bytes,
                   (double)rows[i].right / rows[i].asked, rows[i].seconds);
            if (rows[i].drift >= 0.0) printf("%.6g}", rows[i].drift);
            else printf("null}");
        }
        printf("]}\n");
    } else {
        printf("frontier: %s, %lld needles in %d tokens, %lld trial%s, %lld steps, self-study %lld x %lld; the float32 cache: %.0f bytes\n\n",
               a->dir, a->needles, fo.needle.context_len, a->trials, a->trials == 1 ? "" : "s", a->steps, a->self_study, a->self_study_len,
               cache_bytes);
        printf("  %-10s %-16s %10s %8s %8s %8s %9s\n", "method", "setting", "bytes", "share", "recall", "seconds", "drift KL");
        for (int i = 0; i < n_rows; i++) {
            printf("  %-10s %-16s %10.0f %7.2f%% %8.2f %8.1f", kvl_frontier_methods[rows[i].method], rows[i].setting, rows[i].bytes,
                   100.0 * rows[i].bytes / cache_bytes, (double)rows[i].right / rows[i].asked, rows[i].seconds);
            if (rows[i].drift >= 0.0) printf(" %9.4f\n", rows[i].drift);
            else printf(" %9s\n", "-");
        }
        printf("\n  recall: answers exactly right over %d questions; bytes: the context's share as stored, the mean over the trials;\n"
               "  seconds: making it (mean); drift: mean KL(base || with it) over %lld fresh filler tokens. %.0f s in all.\n",
               rows[0].asked, a->drift_tokens, now_seconds() - start);
    }
    if (a->svg) {
        char title[256];
        snprintf(title, sizeof title, "kvlora: recall against bytes, %lld needles in %d tokens, %lld trials", a->needles,
                 fo.needle.context_len, a->trials);
        if (failed(frontier_svg(a->svg, rows, n_rows, cache_bytes, title))) goto done;
        fprintf(stderr, "kvlora: wrote %s\n", a->svg);
    }
    rc = 0;
done:
    kvl_tokenizer_free(tok);
    kvl_model_free(m);
    return rc;
}

static int cmd_needle(int argc, char **argv)
{
    static const int probe_sets[3] = {KVL_PROBES_SELF_STUDY, KVL_PROBES_CONTEXT, KVL_PROBES_SELF_STUDY | KVL_PROBES_CONTEXT};
    NeedleArgs a = {0};
    /* Why these defaults: the goal is 4 needles in 512 tokens, kept at 90% or more by an
       adapter of at most 10% of the cache's bytes. Rank 2 on every projection is 3.9% of
       the cache, and with 64 self-study probes and 200 steps at lr 1e-2 it keeps 99% of the
       answers on data/model (data/model/README.md). The probes are self-study because
       context probes alone never show the student a question, and lose every answer.
       5 trials put 4 needles at each of the 5 depths. */
    Option opts[] = {
        {"--needles", OPT_INT, &a.needles, 1, KVL_NEEDLE_MAX, "4", "K", "needles per document"},
        {"--trials", OPT_INT, &a.trials, 1, 1 << 20, "5", "N", "documents per context length"},
        {"--context-len", OPT_NUMBERS, &a.lens, 1, 1 << 20, "512", "T,...", "document lengths in tokens"},
        {"--depths", OPT_NUMBERS, &a.depths, 0, 1, "0,0.25,0.5,0.75,1", "D,...", "needle depths"},
        {"--probes", OPT_CHOICE, &a.probes, 0, 0, "self-study", "self-study|context|both", "what the adapter is distilled on"},
        {"--rank", OPT_NUMBERS, &a.ranks, 1, 65536, "2", "R,...", "the adapter's rank (several: one run each)"},
        {"--alpha", OPT_POSITIVE, &a.alpha, 0, INFINITY, NULL, "A", "its alpha (default 2 R)"},
        {"--targets", OPT_STRING, &a.targets, 0, 0, "all", "LIST", "adapted layers, e.g. q_proj,v_proj"},
        {"--method", OPT_CHOICES, &a.methods, 0, 0, "gradient", "gradient|closed-form|hybrid", "AdamW steps; a least-squares solve per layer;\n"
                                                                                              "the solve, then the steps (kvlora distill --help);\n"
                                                                                              "several, comma-separated: one run each"},
        {"--damping", OPT_FLOAT, &a.damping, 0, INFINITY, "0.01", "D", "the solve's ridge, relative to the mean of diag(X X^T)"},
        {"--solve-tokens", OPT_INT, &a.solve_tokens, 1, 1 << 30, "4096", "N", "the probe tokens the solve uses"},
        {"--steps", OPT_INT, &a.steps, 0, 1 << 30, "200", "S", "distillation steps"},
        {"--batch", OPT_INT, &a.batch, 1, 4096, "8", "B", "probes per step"},
        {"--lr", OPT_POSITIVE, &a.lr, 0, INFINITY, "1e-2", "LR", "AdamW learning rate"},
        {"--teacher-topk", OPT_INT, &a.teacher_topk, 0, 1 << 24, "0", "K", "keep only the teacher's top K tokens per position and the\n"
                                                                     "rest's mass (as distill; 0: every logit)"},
        {"--self-study", OPT_INT, &a.self_study, 0, 1 << 20, "64", "N", "teacher samples"},
        {"--self-study-len", OPT_INT, &a.self_study_len, 1, 1 << 20, "48", "L", "their length"},
        {"--chunk-len", OPT_INT, &a.chunk_len, 1, 1 << 20, "32", "L", "context probes' length"},
        {"--seed", OPT_INT, &a.seed, 0, INFINITY, "0", "S", "seed of the documents, samples and adapters"},
        {"--json", OPT_FLAG, &a.json, 0, 0, NULL, NULL, "print one JSON object instead of the tables"},
        {"--svg", OPT_STRING, &a.svg, 0, 0, NULL, "FILE", "draw recall by context length x depth, one panel per way of asking\n"
                                                     "(with --sessions: the forgetting curves)"},
        {"--threads", OPT_INT, &a.threads, 1, 1024, NULL, "N", "OpenMP threads (default: OpenMP's own choice)"},
        {.help = "many sessions:"},
        {"--sessions", OPT_INT, &a.sessions, 0, KVL_SESSIONS_MAX, "0", "S", "S sessions learnt in turn (0: the single-document test above)"},
        {"--merge", OPT_CHOICES, &a.merges, 0, 0, "incremental,incremental-replay,compose-sum,compose-orthogonal,merge-weights,joint",
         "incremental|incremental-replay|compose-sum|compose-orthogonal|merge-weights|joint", "how sessions' adapters are combined;\n"
                                                                                              "several, comma-separated"},
        {"--replay", OPT_FLOAT, &a.replay, 0, 0.99f, "0.25", "F", "incremental-replay: the share of each batch from earlier sessions"},
        {"--drift-docs", OPT_INT, &a.drift_docs, 0, KVL_SESSIONS_MAX, "2", "N", "fresh documents for the drift of in-context recall"},
        {"--drift-tokens", OPT_INT, &a.drift_tokens, 16, 1 << 20, "256", "T", "fresh filler tokens for the drift's KL"},
        {.help = "recall against bytes:"},
        {"--frontier", OPT_FLAG, &a.frontier, 0, 0, NULL, NULL, "every way of keeping the document, by its bytes (above)"},
        {"--methods", OPT_CHOICES, &a.frontier_methods, 0, 0, "cache,kivi,streaming,h2o,snapkv,lora,cartridge",
         "cache|kivi|streaming|h2o|snapkv|lora|cartridge", "the frontier's methods"},
        {"--dtype", OPT_CHOICE, &a.frontier_dtype, 0, 0, "f32", "f32|f16|bf16", "adapters and cartridges stored (and asked) in this type"},
    };
    int r = parse_options("needle", needle_usage, opts, COUNT(opts), argc, argv, &a.dir, 1, 1);
    KvlNeedleOptions o = {0};
    if (r != GO_ON) return r;
    if (kvl_lora_parse_targets(a.targets, o.targets)) return usage_error("needle", "--targets: %s", kvl_last_error());
    if (probe_sets[a.probes] & KVL_PROBES_SELF_STUDY && a.self_study == 0) return usage_error("needle", "self-study probes need --self-study N > 0");
    for (int i = 0; i < a.ranks.n; i++)
        if (a.ranks.v[i] != floor(a.ranks.v[i])) return usage_error("needle", "--rank: %g is not a whole number", a.ranks.v[i]);
    if (a.methods.n * a.ranks.n > KVL_NEEDLE_RUNS)
        return usage_error("needle", "%d methods x %d ranks make more than %d runs", a.methods.n, a.ranks.n, KVL_NEEDLE_RUNS);
#ifdef _OPENMP
    if (a.threads) omp_set_num_threads((int)a.threads);
#endif
    o.n_needles = (int)a.needles; o.probes = probe_sets[a.probes]; o.n_self_study = (int)a.self_study;
    o.self_study_len = (int)a.self_study_len; o.chunk_len = (int)a.chunk_len;
    o.n_runs = a.methods.n * a.ranks.n;
    for (int u = 0; u < o.n_runs; u++) {
        long long rank = run_rank(&a, u);
        o.runs[u] = (KvlNeedleRun){run_method(&a, u), (int)rank, a.alpha > 0 ? a.alpha : 2.0f * rank};
    }
    o.distill = (KvlDistillOptions){1, (int)a.steps, (int)a.batch, a.lr, 0.0f, (uint64_t)a.seed, NULL, NULL, 0, NULL, (int)a.teacher_topk, NULL, NULL, NULL, 0};
    o.damping = a.damping; o.solve_tokens = (int)a.solve_tokens;
    if (a.sessions && a.frontier) return usage_error("needle", "--sessions or --frontier, not both");
    if (a.sessions) {
        if (a.lens.n > 1 || o.n_runs > 1 || a.methods.v[0] != KVL_METHOD_GRADIENT)
            return usage_error("needle", "--sessions takes one --context-len, one --rank and the gradient method");
        for (int i = 0; i < a.merges.n; i++)
            for (int j = 0; j < i; j++)
                if (a.merges.v[i] == a.merges.v[j]) return usage_error("needle", "--merge names %s twice", kvl_merge_names[a.merges.v[i]]);
        return sessions_run(&a, &o);
    }
    if (a.frontier) {
        if (a.lens.n > 1 || o.n_runs > 1 || a.methods.v[0] != KVL_METHOD_GRADIENT)
            return usage_error("needle", "--frontier takes one --context-len, sets its own ranks, and trains by gradient");
        return frontier_run(&a, &o);
    }
    return needle_run(&a, &o);
}

/* --- kvlora compare --- */

static const char *compare_usage =
    "usage: kvlora compare A.safetensors B.safetensors [--atol X] [--rtol Y] [--tensor NAME ...]\n\n"
    "Compares two safetensors files tensor by tensor, as an optimised build checks its output\n"
    "against kvlora dump's. For each tensor in both files (or each --tensor) it prints the\n"
    "shape, max |a-b|, max |a-b| / max |b|, the worst element with both values, and OK when\n"
    "every element has |a-b| <= atol + rtol |b| (a NaN never has). A tensor in one file only,\n"
    "or with another shape or dtype, is NOT OK. Exit 0 when all are OK, 1 when one is not, 2\n"
    "on a wrong command line. The defaults suit float32 work that sums in another order: such\n"
    "sums part from kvlora's in the last digits (relative 1e-6 to 1e-5 over long products),\n"
    "while a real bug moves values far more. --atol 0 --rtol 0 asks for the same bits.\n\n";

/* A tensor's values as doubles: float tensors through float32, integer ones as they are. */
static int tensor_as_doubles(const KvlSafetensors *st, const KvlTensorInfo *t, double **out, size_t *n)
{
    int64_t numel = kvl_tensor_numel(t);
    int is_float = t->dtype == KVL_F32 || t->dtype == KVL_F16 || t->dtype == KVL_BF16;
    if (!is_float && t->dtype != KVL_I32 && t->dtype != KVL_I64) return fail("%s: tensor '%s' is neither float nor integer", st->path, t->name);
    float *f = is_float ? xmalloc(sizeof(float) * (size_t)(numel + 1)) : NULL;
    int32_t *i = is_float ? NULL : xmalloc(sizeof(int32_t) * (size_t)(numel + 1));
    *out = xmalloc(sizeof(double) * (size_t)(numel + 1));
    int r = !*out || (is_float ? !f || kvl_st_read_f32(st, t, f) : !i || kvl_st_read_i32(st, t, i));
    for (int64_t k = 0; !r && k < numel; k++) (*out)[k] = is_float ? f[k] : i[k];
    free(f);
    free(i);
    if (r) { free(*out); *out = NULL; return -1; }
    *n = (size_t)numel;
    return 0;
}

static void shape_text(const KvlTensorInfo *t, char *out, size_t cap)
{
    size_t at = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < t->n_dims && at < cap; d++) at += (size_t)snprintf(out + at, cap - at, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (at < cap) snprintf(out + at, cap - at, "]");
}

/* One tensor of both files: prints its line; returns 1 when it is OK. */
static int compare_tensor(const KvlSafetensors *a, const KvlSafetensors *b, const char *name, double atol, double rtol)
{
    const KvlTensorInfo *ta = kvl_st_find(a, name), *tb = kvl_st_find(b, name);
    char sa[128] = "", sb[128] = "";
    if (!ta || !tb) { printf("NOT OK  %s: only in %s\n", name, ta ? a->path : tb ? b->path : "neither file"); return 0; }
    shape_text(ta, sa, sizeof sa);
    shape_text(tb, sb, sizeof sb);
    if (strcmp(sa, sb) || ta->dtype != tb->dtype) {
        printf("NOT OK  %s: %s %s against %s %s\n", name, sa, dtype_table[ta->dtype].name, sb, dtype_table[tb->dtype].name);
        return 0;
    }
    double *va = NULL, *vb = NULL, max_diff = 0, max_b = 0;
    size_t n = 0, worst = 0, bad = 0;
    if (tensor_as_doubles(a, ta, &va, &n) || tensor_as_doubles(b, tb, &vb, &n)) {
        printf("NOT OK  %s: %s\n", name, kvl_last_error());
        free(va);
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        double d = fabs(va[k] - vb[k]);
        if (d != d) d = INFINITY;                   /* a NaN on either side is the worst there is */
        if (d > max_diff) { max_diff = d; worst = k; }
        if (fabs(vb[k]) > max_b) max_b = fabs(vb[k]);
        bad += !(fabs(va[k] - vb[k]) <= atol + rtol * fabs(vb[k]));
    }
    printf("%-6s  %s %s: max|a-b| %.3g, / max|b| %.3g", bad ? "NOT OK" : "OK", name, sa, max_diff, max_b > 0 ? max_diff / max_b : max_diff);
    if (n) printf(", worst at %zu: a %.9g b %.9g", worst, va[worst], vb[worst]);
    printf(bad ? "; %zu of %zu elements off\n" : "\n", bad, n);
    free(va);
    free(vb);
    return bad == 0;
}

static int cmd_compare(int argc, char **argv)
{
    float atol = 0, rtol = 0;
    Strings names = {0};
    Option opts[] = {
        {"--atol", OPT_FLOAT, &atol, 0, INFINITY, "1e-4", "X", "absolute tolerance"},
        {"--rtol", OPT_FLOAT, &rtol, 0, INFINITY, "1e-4", "Y", "relative tolerance, a multiple of |b|"},
        {"--tensor", OPT_STRINGS, &names, 0, 0, NULL, "NAME", "compare this tensor only; again for more"},
    };
    const char *path[2] = {NULL, NULL};
    int r = parse_options("compare", compare_usage, opts, COUNT(opts), argc, argv, path, 2, 2);
    if (r != GO_ON) return r;
    KvlSafetensors a, b;
    if (failed(kvl_st_open(&a, path[0]))) return 1;
    if (failed(kvl_st_open(&b, path[1]))) { kvl_st_close(&a); return 1; }
    int n = 0, ok = 0;
    for (int k = 0; k < names.n; k++, n++) ok += compare_tensor(&a, &b, names.v[k], atol, rtol);
    for (int k = 0; !names.n && k < a.n_tensors; k++, n++) ok += compare_tensor(&a, &b, a.tensors[k].name, atol, rtol);
    for (int k = 0; !names.n && k < b.n_tensors; k++)
        if (!kvl_st_find(&a, b.tensors[k].name)) n++, ok += compare_tensor(&a, &b, b.tensors[k].name, atol, rtol);
    printf("%d of %d tensors OK (atol %g, rtol %g)\n", ok, n, atol, rtol);
    kvl_st_close(&a);
    kvl_st_close(&b);
    return ok == n ? 0 : 1;
}

/* --- kvlora bench --- */

static const char *bench_usage =
    "usage: kvlora bench [MODEL_DIR] [--threads N] [--tokens T[,T...]] [--repeat R]\n\n"
    "Measures the forward pass: for each T, prefill of T tokens into an empty cache, then\n"
    "decoding 16 tokens after them one at a time, and 16 sequences decoded side by side\n"
    "after them (kvl_forward_batch, 8 tokens each); then, at the first T, the matmuls alone\n"
    "on the prefill's shapes. Without MODEL_DIR it uses a\n"
    "random model of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3 KV heads,\n"
    "ffn 1536, vocab 49152). GFLOP/s counts 2 flops per multiply-add of the linear layers\n"
    "and of attention (q.k and p.v); the best of R runs is reported. Then one distillation\n"
    "step (r 8, all seven targets, a 128-token probe after the T-token cache: teacher\n"
    "forward, student forward and backward, AdamW) and the peak RSS.\n\n";

/* Records the elapsed time after the first and after the last step. */
static int bench_progress(void *ctx, int step, int steps, double loss, double elapsed_s, double eta_s, int tokens)
{
    double *elapsed = ctx;
    (void)loss; (void)eta_s; (void)tokens;
    if (step == 1) elapsed[0] = elapsed_s;
    if (step == steps) elapsed[1] = elapsed_s;
    return 0;
}

/* A random model of SmolLM2-135M's shape. */
static int bench_model(KvlModel **m)
{
    KvlConfig c = {0};
    c.arch = KVL_LLAMA;
    snprintf(c.arch_name, sizeof c.arch_name, "LlamaForCausalLM");
    c.dim = 576; c.n_layers = 30; c.n_heads = 9; c.n_kv_heads = 3; c.head_dim = 64; c.ffn_dim = 1536;
    c.vocab_size = 49152; c.max_positions = 8192; c.rms_eps = 1e-5f; c.rope_theta = 100000.0f;
    c.tie_embeddings = 1; c.bos_token_id = c.eos_token_id = -1;
    fprintf(stderr, "kvlora: building a random SmolLM2-135M-shaped model\n");
    return kvl_model_random(m, &c, 1);
}

/* Multiply-adds of the linear layers for one token (lm_head not included). */
static double linear_macs_per_token(const KvlConfig *c)
{
    double D = c->dim, QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    return c->n_layers * (D * QD + 2 * D * KD + QD * D + 3 * D * c->ffn_dim);
}

/* Prefill of T tokens (the best of `repeat` runs); after the last one, 16 tokens decoded
   one at a time, and 16 sequences decoded side by side, 8 tokens each. */
static int bench_forward(KvlModel *m, const int *ids, int T, int repeat, float *logits)
{
    const KvlConfig *c = &m->config;
    enum { DECODE = 16, SEQS = 16, SEQ_TOKENS = 8 };
    double attn_macs = 0, best = 1e30;      /* q.k and p.v over the causal triangle, in every layer */
    for (int t = 0; t < T; t++) attn_macs += 2.0 * c->n_layers * c->n_heads * c->head_dim * (t + 1);
    double prefill_flops = 2.0 * (T * linear_macs_per_token(c) + attn_macs + (double)c->dim * c->vocab_size);
    float *batch_logits = xmalloc(sizeof(float) * SEQS * c->vocab_size);
    int r = batch_logits ? 0 : -1;
    for (int rep = 0; rep < repeat && !r; rep++) {
        KvlCache cache;
        KvlBatch batch;
        if (kvl_cache_init(&cache, c, T + DECODE)) { r = -1; break; }
        double t0 = now_seconds();
        r = kvl_forward(m, &cache, ids, T, logits, 1);
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
        if (!r && rep == repeat - 1) {
            printf("prefill           %d tokens in %.3f s: %.1f tokens/s, %.1f GFLOP/s\n", T, best, T / best, prefill_flops / best * 1e-9);
            if (!(r = kvl_batch_init(&batch, m, &cache, SEQS, SEQ_TOKENS))) {
                int next[SEQS];
                t0 = now_seconds();
                for (int s = 0; s < SEQ_TOKENS && !r; s++) {
                    for (int b = 0; b < SEQS; b++) next[b] = ids[(b * SEQ_TOKENS + s) % T];
                    r = kvl_forward_batch(m, &batch, next, batch_logits);
                }
                dt = now_seconds() - t0;
                kvl_batch_free(&batch);
            }
            if (!r) {
                double t1 = now_seconds();
                for (int s = 0; s < DECODE && !r; s++) r = kvl_forward(m, &cache, &ids[s], 1, logits, 1);
                printf("decode            %.1f tokens/s with a %d-token cache (%d tokens one at a time)\n", DECODE / (now_seconds() - t1), T, DECODE);
                printf("decode, batched   %.1f tokens/s with a %d-token cache (%d sequences side by side, %d tokens each)\n",
                       SEQS * SEQ_TOKENS / dt, T, SEQS, SEQ_TOKENS);
            }
        }
        kvl_cache_free(&cache);
    }
    free(batch_logits);
    return r;
}

/* The matmuls alone, on the prefill's shapes. */
static void bench_matmuls(const KvlModel *m, int T, int repeat)
{
    const KvlConfig *c = &m->config;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int shapes[4][2] = {{c->dim, QD}, {c->dim, KD}, {c->dim, c->ffn_dim}, {c->ffn_dim, c->dim}};
    const float *weights[4] = {m->w.wq, m->w.wk, m->w.w_gate, m->w.w_down};
    for (int s = 0; s < 4; s++) {
        int in = shapes[s][0], out = shapes[s][1];
        float *x = malloc(sizeof(float) * (size_t)T * in), *y = malloc(sizeof(float) * (size_t)T * out);
        double best = 1e30;
        if (!x || !y) { free(x); free(y); break; }
        for (size_t i = 0; i < (size_t)T * in; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (int r = 0; r < repeat + 2; r++) {
            double t0 = now_seconds();
            matmul(y, x, weights[s], NULL, T, in, out);
            double dt = now_seconds() - t0;
            if (dt < best) best = dt;
        }
        printf("matmul %4dx%-4dx%-5d %.1f GFLOP/s\n", T, in, out, 2.0 * T * in * out / best * 1e-9);
        free(x);
        free(y);
    }
}

/* One distillation step: r = 8 on all seven targets, a 128-token probe after a T-token
   cached context (teacher forward, student forward and backward, AdamW); and the memory. */
static void bench_distill(KvlModel *m, int *ids, int T, int repeat)
{
    const KvlConfig *c = &m->config;
    int n_probe = 128 < c->max_positions - T ? 128 : c->max_positions - T - 1, has[KVL_N_TARGETS], prefix = ids[0];
    KvlCache cache;
    KvlLora lora;
    KvlProbe probe = {ids, n_probe};
    Acts acts;                  /* (allocated, never touched: to read their size) */
    double elapsed[2] = {0, 0}, loss;
    KvlDistillOptions opt = {1, 2 + repeat, 1, 1e-4f, 0.0f, 1, bench_progress, elapsed, 0, NULL, 0, NULL, NULL, NULL, 0};
    kvl_lora_parse_targets("all", has);
    if (n_probe <= 0 || kvl_cache_init(&cache, c, T + n_probe)) return;
    kvl_forward(m, &cache, ids, T, NULL, 0);
    kvl_lora_init(&lora, c, 8, 16.0f, 0, has, 1);
    /* the first step pays for allocating and touching the activations; time the rest */
    if (kvl_distill(m, &cache, &prefix, 1, &probe, 1, &lora, &opt, &loss)) fprintf(stderr, "kvlora: %s\n", kvl_last_error());
    printf("distill step      %.3f s (r 8, all targets, %d probe tokens, %d cached tokens; mean of %d steps after the first)\n",
           (elapsed[1] - elapsed[0]) / (1 + repeat), n_probe, T, 1 + repeat);
    if (acts_init(&acts, c, 0, 1 + n_probe, 1 + n_probe, 8, 0) == 0) {
        printf("memory            weights %.1f MB, KV cache %.1f MB, the step's activations %.1f MB, teacher logits %.1f MB\n",
               m->n_params * 4e-6, kvl_cache_bytes_per_token(c) * (double)cache.max_tokens * 1e-6, acts.bytes * 1e-6,
               (double)n_probe * c->vocab_size * 4e-6);
        acts_free(&acts);
    }
    kvl_lora_free(&lora);
    kvl_cache_free(&cache);
}

static int cmd_bench(int argc, char **argv)
{
    const char *dir = NULL, *tokens_arg = "512";
    long long threads = 0, repeat;
    Option opts[] = {
        {"--threads", OPT_INT, &threads, 1, 1024, NULL, "N", "OpenMP threads (default: OpenMP's own choice; ignored without OpenMP)"},
        {"--tokens", OPT_STRING, &tokens_arg, 0, 0, "512", "T[,T...]", "tokens of the prefill, and of the cache when decoding"},
        {"--repeat", OPT_INT, &repeat, 1, 1000, "3", "R", "runs of each measurement (the best is reported)"},
    };
    KvlModel *m;
    int r = parse_options("bench", bench_usage, opts, COUNT(opts), argc, argv, &dir, 1, 0), *ids;
    float *logits;
    if (r != GO_ON) return r;
    int *lengths, n_lengths, T = 0;
    if (parse_ids(tokens_arg, &lengths, &n_lengths)) return usage_error("bench", "--tokens: %s", kvl_last_error());
    for (int i = 0; i < n_lengths; i++) {
        if (lengths[i] < 1 || lengths[i] > 1 << 20) {
            int bad = lengths[i];
            free(lengths);
            return usage_error("bench", "--tokens: %d is not in 1..%d", bad, 1 << 20);
        }
        if (lengths[i] > T) T = lengths[i];
    }
#ifdef _OPENMP
    if (threads) omp_set_num_threads((int)threads);
    int n_threads = omp_get_max_threads();
#else
    int n_threads = 1;
#endif
    if (failed(dir ? kvl_model_load(&m, dir) : bench_model(&m))) { free(lengths); return 1; }
    if (T + 16 > m->config.max_positions) { free(lengths); kvl_model_free(m); return cli_error("--tokens %d and 16 more exceed the model's positions", T); }
    ids = xmalloc(sizeof(int) * (size_t)(T + 128));        /* the prefill's T, and the probe's 128 of bench_distill */
    logits = xmalloc(sizeof(float) * m->config.vocab_size);
    if (!(r = failed(!ids || !logits))) {
        for (int t = 0; t < T + 128; t++) ids[t] = (int)((t * 7919u + 1) % (unsigned)m->config.vocab_size);
        printf("model             %s (%zu parameters)\n", dir ? dir : "random SmolLM2-135M shape", m->n_params);
        printf("threads           %d\n", n_threads);
        for (int i = 0; i < n_lengths && !r; i++) r = failed(bench_forward(m, ids, lengths[i], (int)repeat, logits));
    }
    if (!r) {
        bench_matmuls(m, lengths[0], (int)repeat);
        bench_distill(m, ids, lengths[0], (int)repeat);
        if (peak_memory_mb() >= 0) printf("peak RSS          %.1f MB\n", peak_memory_mb());
    }
    free(ids);
    free(logits);
    free(lengths);
    kvl_model_free(m);
    return r;
}

/* --- kvlora --- */

static const struct { const char *name, *args, *what; int (*run)(int argc, char **argv); } commands[] = {
    {"info", "MODEL_DIR", "what a model directory holds", cmd_info},
    {"generate", "MODEL_DIR --prompt TEXT -n N", "continue a prompt (or --ids 1,2,3)", cmd_generate},
    {"tokenize", "MODEL_DIR --text TEXT", "text to token ids (or from standard input)", cmd_tokenize},
    {"detokenize", "MODEL_DIR --ids 1,2,3", "token ids to text", cmd_detokenize},
    {"dump", "MODEL_DIR --tokens ... -o F", "write logits (the numerics contract)", cmd_dump},
    {"record", "MODEL_DIR --context-ids ... -o CACHE", "save a context's KV cache", cmd_record},
    {"distill", "MODEL_DIR --cache CACHE -o DIR", "distil a KV cache into a LoRA adapter", cmd_distill},
    {"merge", "MODEL_DIR --adapter A -o DIR", "merge adapters into the weights, or --combine them", cmd_merge},
    {"needle", "MODEL_DIR", "the needle-in-a-haystack test of distillation", cmd_needle},
    {"corpus", "[--needles K] [--seed S]", "a needle-in-a-haystack document and its questions", cmd_corpus},
    {"pretrain", "-o DIR [--steps N]", "train a small model on that corpus from nothing", cmd_pretrain},
    {"compare", "A.safetensors B.safetensors", "tensor by tensor, within tolerances (check a dump)", cmd_compare},
    {"bench", "[MODEL_DIR] [--threads N]", "forward-pass speed (default: SmolLM2-135M shape)", cmd_bench},
};

static void print_commands(FILE *f)
{
    fprintf(f, "kvlora " KVL_VERSION " — distil a KV cache into a LoRA adapter (plain C reference)\n\n"
               "usage: kvlora COMMAND [options]     (kvlora COMMAND --help for each)\n\ncommands:\n");
    for (int k = 0; k < COUNT(commands); k++) fprintf(f, "  %-10s %-36s %s\n", commands[k].name, commands[k].args, commands[k].what);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_commands(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("kvlora %s\n", KVL_VERSION); return 0; }
    for (int k = 0; k < COUNT(commands); k++)
        if (!strcmp(argv[1], commands[k].name)) return commands[k].run(argc - 2, argv + 2);
    fprintf(stderr, "kvlora: unknown command '%s'\n\n", argv[1]);
    print_commands(stderr);
    return 2;
}

#endif /* KVLORA_MAIN */

/* ------------------------------------------------------------------------------------ */
/* Appendix A. Fast kernels: the same sums, faster (packing, tiles, intrinsics)         */
/*                                                                                      */
/* Two kernels: the matmul, then attention in blocks (further down).                    */
/* gemm (declared in section 6) computes every output in the order of                   */
/* kvl_matmul_naive's loop: it starts at 0 and adds x[t][k] w(k, n) for k = 0, 1, ...   */
/* in turn. Only the loops around that sum are reordered. A panel of MM_COLS rows of w  */
/* is copied transposed into a buffer that stays in L1, so that the innermost loop runs */
/* along MM_COLS independent outputs, which the compiler turns into vector multiplies   */
/* and adds without reordering any sum; a register tile of several tokens reuses each   */
/* loaded panel row. OpenMP splits the panels, never a sum, so the result does not      */
/* depend on the thread count. test.c's test_matmul_matches_naive and                   */
/* test_gemm_tiles_match_loops check that every tile, edge and thread count gives the   */
/* naive loop's bits.                                                                   */

#define MM_COLS 16      /* outputs per panel: one to four vector registers wide */
#define MM_DEPTH 256    /* inputs per packed block: MM_DEPTH * MM_COLS floats = 16 KB */
#define MM_MAX_ROWS 8   /* tokens of the tallest register tile below */

/* The register tile: four tokens x MM_COLS outputs, resumed from and stored to out. The
   four rows are four separate arrays on purpose: GCC keeps these in vector registers but
   leaves a float[4][MM_COLS] in memory. Where GCC compiles it with 8-float vectors, as it
   does for AVX2 and, by its tuning, for many AVX-512 machines too, it keeps some of the
   accumulators on the stack, which is what the tiles below are for. (Measured speeds:
   data/BENCH.md.) */
static void matmul_tile4(float *out, int n_out, const float *x, int in, const float *panel, int panel_stride, int depth, int fresh)
{
    float a0[MM_COLS], a1[MM_COLS], a2[MM_COLS], a3[MM_COLS];
    float *o0 = out, *o1 = out + n_out, *o2 = out + 2 * (size_t)n_out, *o3 = out + 3 * (size_t)n_out;
    for (int j = 0; j < MM_COLS; j++) {
        a0[j] = fresh ? 0.0f : o0[j];
        a1[j] = fresh ? 0.0f : o1[j];
        a2[j] = fresh ? 0.0f : o2[j];
        a3[j] = fresh ? 0.0f : o3[j];
    }
    const float *x0 = x, *x1 = x + in, *x2 = x + 2 * (size_t)in, *x3 = x + 3 * (size_t)in;
    for (int i = 0; i < depth; i++) {
        const float *wi = panel + (size_t)i * panel_stride;
        float b0 = x0[i], b1 = x1[i], b2 = x2[i], b3 = x3[i];
        for (int j = 0; j < MM_COLS; j++) {
            a0[j] += b0 * wi[j];
            a1[j] += b1 * wi[j];
            a2[j] += b2 * wi[j];
            a3[j] += b3 * wi[j];
        }
    }
    for (int j = 0; j < MM_COLS; j++) {
        o0[j] = a0[j];
        o1[j] = a1[j];
        o2[j] = a2[j];
        o3[j] = a3[j];
    }
}

/* One token x MM_COLS outputs: the rows a tile of several tokens leaves over, and all of
   decoding, which has one token. (A bigger tile would compute rows of padding: decoding
   is bound by reading the weights once, and this reads them once and computes nothing
   more.) */
static void matmul_tile1(float *out, const float *x, const float *panel, int panel_stride, int depth, int fresh)
{
    float a[MM_COLS];
    for (int j = 0; j < MM_COLS; j++) a[j] = fresh ? 0.0f : out[j];
    for (int i = 0; i < depth; i++) {
        const float *wi = panel + (size_t)i * panel_stride;
        float b = x[i];
        for (int j = 0; j < MM_COLS; j++) a[j] += b * wi[j];
    }
    for (int j = 0; j < MM_COLS; j++) out[j] = a[j];
}

#if defined(__AVX__) && !defined(KVL_PLAIN_KERNELS)
#include <immintrin.h>
#define KVL_AVX_PACK 1
/* matmul_tile1 in two named 8-float registers: GCC vectorises the plain loop poorly (a mix
   of scalar and 4-wide products that kept decoding's arithmetic, not its reading of the
   weights, the larger cost). A multiply then an add per output and input, as the plain
   loop: the same floats (test gemm_tiles_match_loops covers the edges and one token). */
static void matmul_tile1_avx(float *out, const float *x, const float *panel, int panel_stride, int depth, int fresh)
{
    __m256 a0 = fresh ? _mm256_setzero_ps() : _mm256_loadu_ps(out), a1 = fresh ? _mm256_setzero_ps() : _mm256_loadu_ps(out + 8);
    for (int i = 0; i < depth; i++) {
        const float *wi = panel + (size_t)i * panel_stride;
        __m256 b = _mm256_set1_ps(x[i]);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(b, _mm256_loadu_ps(wi)));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(b, _mm256_loadu_ps(wi + 8)));
    }
    _mm256_storeu_ps(out, a0);
    _mm256_storeu_ps(out + 8, a1);
}
#define MATMUL_TILE1 matmul_tile1_avx
#if MM_COLS != 16
#error "matmul_tile1_avx holds MM_COLS = 16 outputs"
#endif
#else
#define MATMUL_TILE1 matmul_tile1
#endif

#if defined(__AVX__) && !defined(__AVX512F__) && !defined(KVL_PLAIN_KERNELS)
#define KVL_AVX_TILE 1
/* The same tile for AVX2-class machines, six tokens x 16 outputs in twelve named vector
   registers: with 16 vector registers GCC keeps the plain tile's accumulators in memory,
   and a 6x16 tile in named registers keeps them in registers.
   A multiply then an add, never a fused multiply-add, in the same order over i as the
   plain tile: every output is the very same float, so this path and the plain one agree
   bit for bit (test gemm_tiles_match_loops runs both). */
static void matmul_tile6_avx(float *out, int n_out, const float *x, int in, const float *panel, int panel_stride, int depth, int fresh)
{
    /* twelve named accumulators, not an array: GCC keeps an array of __m256 on the stack */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;      /* outputs 0..7 */
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;                       /* outputs 8..15 */
    float *o0 = out, *o1 = o0 + n_out, *o2 = o1 + n_out, *o3 = o2 + n_out, *o4 = o3 + n_out, *o5 = o4 + n_out;
    if (!fresh) {
        a0 = _mm256_loadu_ps(o0); a1 = _mm256_loadu_ps(o1); a2 = _mm256_loadu_ps(o2);
        a3 = _mm256_loadu_ps(o3); a4 = _mm256_loadu_ps(o4); a5 = _mm256_loadu_ps(o5);
        b0 = _mm256_loadu_ps(o0 + 8); b1 = _mm256_loadu_ps(o1 + 8); b2 = _mm256_loadu_ps(o2 + 8);
        b3 = _mm256_loadu_ps(o3 + 8); b4 = _mm256_loadu_ps(o4 + 8); b5 = _mm256_loadu_ps(o5 + 8);
    }
    const float *x0 = x, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in, *x4 = x3 + in, *x5 = x4 + in;
    for (int i = 0; i < depth; i++) {
        const float *wi = panel + (size_t)i * panel_stride;
        __m256 lo = _mm256_loadu_ps(wi), hi = _mm256_loadu_ps(wi + 8), s;
#define KVL_TILE_ROW(xr, ar, br)                             \
        s = _mm256_broadcast_ss(xr + i);                     \
        ar = _mm256_add_ps(ar, _mm256_mul_ps(s, lo));        \
        br = _mm256_add_ps(br, _mm256_mul_ps(s, hi));
        KVL_TILE_ROW(x0, a0, b0) KVL_TILE_ROW(x1, a1, b1) KVL_TILE_ROW(x2, a2, b2)
        KVL_TILE_ROW(x3, a3, b3) KVL_TILE_ROW(x4, a4, b4) KVL_TILE_ROW(x5, a5, b5)
#undef KVL_TILE_ROW
    }
    _mm256_storeu_ps(o0, a0); _mm256_storeu_ps(o1, a1); _mm256_storeu_ps(o2, a2);
    _mm256_storeu_ps(o3, a3); _mm256_storeu_ps(o4, a4); _mm256_storeu_ps(o5, a5);
    _mm256_storeu_ps(o0 + 8, b0); _mm256_storeu_ps(o1 + 8, b1); _mm256_storeu_ps(o2 + 8, b2);
    _mm256_storeu_ps(o3 + 8, b3); _mm256_storeu_ps(o4 + 8, b4); _mm256_storeu_ps(o5 + 8, b5);
}
#endif

#if defined(__AVX512F__) && !defined(KVL_PLAIN_KERNELS)
#define KVL_AVX512_TILE 1
/* The tile for AVX-512 machines: eight tokens x 16 outputs, one 16-float register each.
   Eight named accumulators stay in registers, and each panel row loaded serves eight
   tokens (measured speeds: data/BENCH.md). A multiply then an add,
   never fused, in the same order over i as the plain tile: the very same floats (test
   gemm_tiles_match_loops runs both). */
static void matmul_tile8_avx512(float *out, int n_out, const float *x, int in, const float *panel, int panel_stride, int depth,
                                int fresh)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    float *o0 = out, *o1 = o0 + n_out, *o2 = o1 + n_out, *o3 = o2 + n_out;
    float *o4 = o3 + n_out, *o5 = o4 + n_out, *o6 = o5 + n_out, *o7 = o6 + n_out;
    if (!fresh) {
        a0 = _mm512_loadu_ps(o0); a1 = _mm512_loadu_ps(o1); a2 = _mm512_loadu_ps(o2); a3 = _mm512_loadu_ps(o3);
        a4 = _mm512_loadu_ps(o4); a5 = _mm512_loadu_ps(o5); a6 = _mm512_loadu_ps(o6); a7 = _mm512_loadu_ps(o7);
    }
    const float *x0 = x, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in, *x4 = x3 + in, *x5 = x4 + in, *x6 = x5 + in, *x7 = x6 + in;
    for (int i = 0; i < depth; i++) {
        __m512 wi = _mm512_loadu_ps(panel + (size_t)i * panel_stride);
#define KVL_TILE_ROW(xr, ar) ar = _mm512_add_ps(ar, _mm512_mul_ps(_mm512_set1_ps(xr[i]), wi));
        KVL_TILE_ROW(x0, a0) KVL_TILE_ROW(x1, a1) KVL_TILE_ROW(x2, a2) KVL_TILE_ROW(x3, a3)
        KVL_TILE_ROW(x4, a4) KVL_TILE_ROW(x5, a5) KVL_TILE_ROW(x6, a6) KVL_TILE_ROW(x7, a7)
#undef KVL_TILE_ROW
    }
    _mm512_storeu_ps(o0, a0); _mm512_storeu_ps(o1, a1); _mm512_storeu_ps(o2, a2); _mm512_storeu_ps(o3, a3);
    _mm512_storeu_ps(o4, a4); _mm512_storeu_ps(o5, a5); _mm512_storeu_ps(o6, a6); _mm512_storeu_ps(o7, a7);
}
#if MM_COLS != 16
#error "matmul_tile8_avx512 holds MM_COLS = 16 outputs"
#endif
#endif

/* A panel of nn.Linear's weights: panel[k][j] = w[j][k0 + k] for j < n_cols (zeros beyond),
   k < depth, from rows of w K floats apart. Moving floats changes no sum, so the AVX path
   below is free to transpose 8x8 blocks in registers; it pays where the product has
   one or a few tokens (decoding), whose time goes into this copy rather than the tile. */
static void pack_panel(float *panel, const float *w, int K, int k0, int n_cols, int depth)
{
    int k = 0;
    w += k0;
#ifdef KVL_AVX_PACK
    for (; n_cols == MM_COLS && k + 8 <= depth; k += 8) {
        /* each row 64 floats ahead (within the row), once a cache line: MM_COLS rows read
           32 bytes at a time are more streams than the hardware prefetcher keeps up with,
           and decoding waits on these loads (data/BENCH.md) */
        if (k % 16 == 0 && k0 + k + 64 < K)
            for (int j = 0; j < MM_COLS; j++) _mm_prefetch((const char *)(w + (size_t)j * K + k + 64), _MM_HINT_T0);
        for (int j0 = 0; j0 < MM_COLS; j0 += 8) {
            const float *r = w + (size_t)j0 * K + k;
            __m256 r0 = _mm256_loadu_ps(r), r1 = _mm256_loadu_ps(r + K), r2 = _mm256_loadu_ps(r + 2 * (size_t)K);
            __m256 r3 = _mm256_loadu_ps(r + 3 * (size_t)K), r4 = _mm256_loadu_ps(r + 4 * (size_t)K);
            __m256 r5 = _mm256_loadu_ps(r + 5 * (size_t)K), r6 = _mm256_loadu_ps(r + 6 * (size_t)K);
            __m256 r7 = _mm256_loadu_ps(r + 7 * (size_t)K);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *p = panel + (size_t)k * MM_COLS + j0;
            _mm256_storeu_ps(p, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(p + MM_COLS, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(p + 2 * MM_COLS, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(p + 3 * MM_COLS, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(p + 4 * MM_COLS, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(p + 5 * MM_COLS, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(p + 6 * MM_COLS, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(p + 7 * MM_COLS, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
#endif
    for (int j = 0; j < MM_COLS; j++)               /* (loops in the order that reads w contiguously) */
        for (int kk = k; kk < depth; kk++) panel[kk * MM_COLS + j] = j < n_cols ? w[(size_t)j * K + kk] : 0.0f;
}

/* A register tile: rows tokens x MM_COLS outputs of out (row stride n_out) from rows rows
   of x (stride in) and depth rows of MM_COLS weights, panel_stride floats apart. */
typedef void (*MatmulTile)(float *out, int n_out, const float *x, int in, const float *panel, int panel_stride, int depth, int fresh);

/* The product behind matmul and its backward: out[t][n] (+)= sum_k x[t][k] w(k, n), for
   k = 0, 1, ... in turn, x [T][K]. w(k, n) is w[n][k] when w_is_nk (nn.Linear's [out][in]:
   the forward) and w[k][n] otherwise (the backward's dx = dy W). With accumulate, the sums
   continue from what out holds. tile and rows say which register tile computes it. */
static void gemm_tiled(float *out, const float *x, const float *w, int T, int K, int N, int w_is_nk, int accumulate,
                       MatmulTile tile, int rows)
{
    /* The work is shared out by panels; a product of few panels (a LoRA matrix's rank-R
       side) is also cut into blocks of 48 tokens, so that every thread has work. Either
       way each output is one thread's, summed in the same order. */
    if (T <= 0 || N <= 0) return;
    int n_panels = (N + MM_COLS - 1) / MM_COLS, block = n_panels >= 8 ? T : 48;
    int n_blocks = (T + block - 1) / block;
    PARALLEL_FOR
    for (int job = 0; job < n_panels * n_blocks; job++) {
        float panel[MM_DEPTH * MM_COLS];        /* panel[k][j] = w(k0 + k, n0 + j) */
        float edge[MM_COLS];                    /* one row of outputs of an edge */
        float edges[MM_MAX_ROWS * MM_COLS];     /* a tile of them */
        float x_pad[MM_MAX_ROWS * MM_DEPTH];    /* an edge's inputs, padded to the tile's rows */
        int p = job / n_blocks, n0 = p * MM_COLS, n_cols = N - n0 < MM_COLS ? N - n0 : MM_COLS;
        int t_begin = job % n_blocks * block, t_end = t_begin + block < T ? t_begin + block : T;
        for (int k0 = 0; k0 < K; k0 += MM_DEPTH) {
            int depth = K - k0 < MM_DEPTH ? K - k0 : MM_DEPTH, fresh = k0 == 0 && !accumulate;
            if (w_is_nk) pack_panel(panel, w + (size_t)n0 * K, K, k0, n_cols, depth);
            for (int k = 0; k < depth && !w_is_nk && n_cols < MM_COLS; k++)
                for (int j = 0; j < MM_COLS; j++)
                    panel[k * MM_COLS + j] = j < n_cols ? w[(size_t)(k0 + k) * N + n0 + j] : 0.0f;
            /* w[k][n] with a whole panel: its rows are already MM_COLS contiguous floats */
            const float *wp = !w_is_nk && n_cols == MM_COLS ? w + (size_t)k0 * N + n0 : panel;
            int wp_stride = !w_is_nk && n_cols == MM_COLS ? N : MM_COLS;
            int t0 = t_begin;
            for (; t0 + rows <= t_end && n_cols == MM_COLS; t0 += rows)
                tile(out + (size_t)t0 * N + n0, N, x + (size_t)t0 * K + k0, K, wp, wp_stride, depth, fresh);
            /* The edges, fewer tokens or outputs than the tile holds (a LoRA matrix's rank-R
               side, the last tokens of a student's pass): through the tile on padded copies,
               the same sums. The one-row tile, one chain of adds per output, runs them at a
               fraction of the tile's rate; it keeps a lone token (decoding: the weights'
               stream is the cost there). */
            for (; t0 + 1 < t_end; t0 += rows) {
                int n_rows = t_end - t0 < rows ? t_end - t0 : rows, x_stride = K;
                const float *xs = x + (size_t)t0 * K + k0;
                if (n_rows < rows) {            /* the tokens' inputs, then rows of zeros */
                    for (int i = 0; i < rows; i++)
                        for (int k = 0; k < depth; k++) x_pad[i * MM_DEPTH + k] = i < n_rows ? xs[(size_t)i * K + k] : 0.0f;
                    xs = x_pad;
                    x_stride = MM_DEPTH;
                }
                for (int i = 0; i < rows; i++)  /* the outputs in a whole tile of scratch */
                    for (int j = 0; j < MM_COLS; j++) edges[i * MM_COLS + j] = i < n_rows && j < n_cols ? out[(size_t)(t0 + i) * N + n0 + j] : 0.0f;
                tile(edges, MM_COLS, xs, x_stride, wp, wp_stride, depth, fresh);
                for (int i = 0; i < n_rows; i++) memcpy(out + (size_t)(t0 + i) * N + n0, edges + i * MM_COLS, sizeof(float) * n_cols);
            }
            if (t0 < t_end) {                   /* a lone token (decoding): the one-row tile */
                float *o = out + (size_t)t0 * N + n0;
                for (int j = 0; j < MM_COLS; j++) edge[j] = j < n_cols ? o[j] : 0.0f;
                MATMUL_TILE1(edge, x + (size_t)t0 * K + k0, wp, wp_stride, depth, fresh);
                for (int j = 0; j < n_cols; j++) o[j] = edge[j];
            }
        }
    }
}

/* The machine's register tile, and how many tokens it holds */
#if defined(KVL_AVX512_TILE)
#define MATMUL_TILE matmul_tile8_avx512
#define MATMUL_TILE_ROWS 8
#elif defined(KVL_AVX_TILE)
#define MATMUL_TILE matmul_tile6_avx
#define MATMUL_TILE_ROWS 6
#else
#define MATMUL_TILE matmul_tile4
#define MATMUL_TILE_ROWS 4
#endif

static void gemm(float *out, const float *x, const float *w, int T, int K, int N, int w_is_nk, int accumulate)
{
#ifdef KVL_AVX_PACK
    (void)matmul_tile1;                         /* the plain edge tile: other machines run it */
#endif
#if defined(KVL_AVX512_TILE) || defined(KVL_AVX_TILE)
    (void)matmul_tile4;                         /* the plain tile: the tests run it here too */
#endif
    gemm_tiled(out, x, w, T, K, N, w_is_nk, accumulate, MATMUL_TILE, MATMUL_TILE_ROWS);
}

/* ---- attention in blocks ---- */

/* attention_forward (section 6) computes, for each head and query, the scores q . k_j with
   dot(), their softmax, and sum_j p_j v_j by a loop over the keys. Here are the same sums,
   in the same order, regrouped. A job is up to ATT_QUERIES queries of the query heads of
   one key/value group that attention_job_heads allows (in prefill, consecutive tokens; in
   batched decoding, several sequences' tokens). Its keys
   are taken ATT_KEYS at a time and copied transposed, so that the job's queries compute
   ATT_KEYS scores at once along vectors, as matmul does, reading each key once per job
   rather than once per query. dot()'s eight partial sums stay what they are: lane l sums
   the products of the coordinates i = l, l + 8, l + 16, ... in turn, and the lanes are
   added pairwise at the end, as dot() adds them. Over the keys that all the job's
   queries see, sum_j p_j v_j is a product of the probability rows and the value rows,
   summed over j in turn: the matmul's register tile computes it; the other keys' terms
   are added before and after it, each coordinate's terms still in turn. Every float is
   the one the plain loop computes. */

#define ATT_KEYS 16             /* the keys of one tile: one 16-float vector of scores */

/* The scores of one query against a tile of keys: s[j] = dot(q, k_j) * scale, j < ATT_KEYS,
   from kt[i][j] = k_j[i]. HD is a multiple of 8: the caller pads q and the keys with zeros,
   which add +0 to a lane and leave it as it was (a lane that starts at +0 never becomes -0). */
static void attention_scores_tile(float *s, const float *q, const float *kt, int HD, float scale)
{
    float a0[ATT_KEYS] = {0}, a1[ATT_KEYS] = {0}, a2[ATT_KEYS] = {0}, a3[ATT_KEYS] = {0};
    float a4[ATT_KEYS] = {0}, a5[ATT_KEYS] = {0}, a6[ATT_KEYS] = {0}, a7[ATT_KEYS] = {0};
    for (int i = 0; i < HD; i += 8) {
        const float *k = kt + (size_t)i * ATT_KEYS;
        for (int j = 0; j < ATT_KEYS; j++) {
            a0[j] += q[i] * k[j];
            a1[j] += q[i + 1] * k[ATT_KEYS + j];
            a2[j] += q[i + 2] * k[2 * ATT_KEYS + j];
            a3[j] += q[i + 3] * k[3 * ATT_KEYS + j];
            a4[j] += q[i + 4] * k[4 * ATT_KEYS + j];
            a5[j] += q[i + 5] * k[5 * ATT_KEYS + j];
            a6[j] += q[i + 6] * k[6 * ATT_KEYS + j];
            a7[j] += q[i + 7] * k[7 * ATT_KEYS + j];
        }
    }
    for (int j = 0; j < ATT_KEYS; j++) s[j] = (((a0[j] + a4[j]) + (a1[j] + a5[j])) + ((a2[j] + a6[j]) + (a3[j] + a7[j]))) * scale;
}

#if defined(KVL_AVX512_TILE) && ATT_KEYS == 16
/* The same scores with each lane's 16 sums in one named 16-float register: GCC gives the
   plain tile 8-float vectors and keeps half its sums on the stack. The same multiplies and
   adds in the same order: the same floats (test attention_blocked_matches_plain). */
static void attention_scores_tile_avx512(float *s, const float *q, const float *kt, int HD, float scale)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int i = 0; i < HD; i += 8) {
        const float *k = kt + (size_t)i * ATT_KEYS;
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_set1_ps(q[i]), _mm512_loadu_ps(k)));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_set1_ps(q[i + 1]), _mm512_loadu_ps(k + ATT_KEYS)));
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(_mm512_set1_ps(q[i + 2]), _mm512_loadu_ps(k + 2 * ATT_KEYS)));
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(_mm512_set1_ps(q[i + 3]), _mm512_loadu_ps(k + 3 * ATT_KEYS)));
        a4 = _mm512_add_ps(a4, _mm512_mul_ps(_mm512_set1_ps(q[i + 4]), _mm512_loadu_ps(k + 4 * ATT_KEYS)));
        a5 = _mm512_add_ps(a5, _mm512_mul_ps(_mm512_set1_ps(q[i + 5]), _mm512_loadu_ps(k + 5 * ATT_KEYS)));
        a6 = _mm512_add_ps(a6, _mm512_mul_ps(_mm512_set1_ps(q[i + 6]), _mm512_loadu_ps(k + 6 * ATT_KEYS)));
        a7 = _mm512_add_ps(a7, _mm512_mul_ps(_mm512_set1_ps(q[i + 7]), _mm512_loadu_ps(k + 7 * ATT_KEYS)));
    }
    __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a4), _mm512_add_ps(a1, a5)),
                               _mm512_add_ps(_mm512_add_ps(a2, a6), _mm512_add_ps(a3, a7)));
    _mm512_storeu_ps(s, _mm512_mul_ps(sum, _mm512_set1_ps(scale)));
}
#define ATTENTION_SCORES_TILE attention_scores_tile_avx512
#define KVL_SCORES_PLAIN_UNUSED 1
#else
#define ATTENTION_SCORES_TILE attention_scores_tile
#endif

/* The keys and values of one key/value head, by position: below n from k and v (the
   cache), from n on at tail_k and tail_v (a sequence's own tokens in batched decoding). */
typedef struct {
    const float *k, *v, *tail_k, *tail_v;
    int n;
} AttentionKeys;

static const float *key_at(const AttentionKeys *a, int j, int HD)
{
    return j < a->n ? a->k + (size_t)j * HD : a->tail_k + (size_t)(j - a->n) * HD;
}

static const float *value_at(const AttentionKeys *a, int j, int HD)
{
    return j < a->n ? a->v + (size_t)j * HD : a->tail_v + (size_t)(j - a->n) * HD;
}

/* o += sum_j p[j] v_j over keys j = from .. to - 1 in turn: four keys' terms per pass over
   the coordinates, each coordinate's terms still added in turn. */
static void attention_values_add(float *o, const float *p, const AttentionKeys *keys, int from, int to, int HD)
{
    int j = from;
    for (; j + 4 <= to; j += 4) {
        const float *v0 = value_at(keys, j, HD), *v1 = value_at(keys, j + 1, HD);
        const float *v2 = value_at(keys, j + 2, HD), *v3 = value_at(keys, j + 3, HD);
        float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
        for (int d = 0; d < HD; d++) o[d] = (((o[d] + p0 * v0[d]) + p1 * v1[d]) + p2 * v2[d]) + p3 * v3[d];
    }
    for (; j < to; j++) {
        const float *vj = value_at(keys, j, HD);
        for (int d = 0; d < HD; d++) o[d] += p[j] * vj[d];
    }
}

/* A job is n_q queries of n_h query heads that share a key/value head (attention_job_heads):
   row i of head g has its vector at q + i * H * HD + g * HD (H heads of HD), its output at
   out likewise, its position pos[i] and its keys keys[i]. Below keys[i].n every row of a
   job reads the same arrays: one sequence's cache in prefill, the shared context in
   batched decoding (where each row's own tokens follow it). The scores, then the
   probabilities, of row i of head g go to rows0 + g * head_rows + i * row_stride, indexed by
   key position. */

#define ATT_VALUE_KEYS 256      /* the keys of one pass of the values' tile: its value rows and probabilities stay in cache */

/* out_i = sum_j p_ij v_j for a job's rows, each coordinate's terms added in turn from the
   row's first key. The keys that every row of the job sees from the same arrays, [lo, hi)
   (attention_job works it out), make a product of the probability rows and the value rows
   whose sums run over j in that same order: the matmul's register tile computes it,
   several rows by 16 coordinates, each value row loaded once for the tile's rows, and
   ATT_VALUE_KEYS keys at a time (the tile adds onto its outputs, so a pass continues the
   last one's sums). A row's keys before lo (a sliding window's) are added before, and its
   keys from hi on (the causal triangle's, or a sequence's own) after, one row at a time. */
static void attention_values(float *out, const int *pos, const AttentionKeys *keys, int n_q, int n_h, int lo, int hi,
                             const float *rows0, size_t head_rows, size_t row_stride, const KvlConfig *c)
{
    int QD = c->n_heads * c->head_dim, HD = c->head_dim;
    int tiled = n_q > 1 && HD % MM_COLS == 0 && lo < hi;
    for (int g = 0; g < n_h; g++)
        for (int i = 0; i < n_q; i++) {
            float *o = out + (size_t)i * QD + g * HD;
            for (int d = 0; d < HD; d++) o[d] = 0.0f;
            attention_values_add(o, rows0 + g * head_rows + i * row_stride, &keys[i], first_key(pos[i], c), tiled ? lo : pos[i] + 1, HD);
        }
    if (!tiled) return;
    for (int j0 = lo; j0 < hi; j0 += ATT_VALUE_KEYS) {
        int n_keys = hi - j0 < ATT_VALUE_KEYS ? hi - j0 : ATT_VALUE_KEYS;
        for (int d0 = 0; d0 < HD; d0 += MM_COLS) {
            const float *v = value_at(&keys[0], j0, HD) + d0;
            for (int g = 0; g < n_h; g++) {
                float *o = out + g * HD + d0;
                const float *p = rows0 + g * head_rows + j0;
                int i = 0;
                for (; i + MATMUL_TILE_ROWS <= n_q; i += MATMUL_TILE_ROWS)
                    MATMUL_TILE(o + (size_t)i * QD, QD, p + i * row_stride, (int)row_stride, v, HD, n_keys, 0);
                for (; i < n_q; i++) MATMUL_TILE1(o + (size_t)i * QD, p + i * row_stride, v, HD, n_keys, 0);
            }
        }
    }
    for (int g = 0; g < n_h; g++)
        for (int i = 0; i < n_q; i++)
            attention_values_add(out + (size_t)i * QD + g * HD, rows0 + g * head_rows + i * row_stride, &keys[i], hi, pos[i] + 1, HD);
}

/* One job (as above): scores, softmax, values. */
static void attention_job(float *out, const float *q, const int *pos, const AttentionKeys *keys, int n_q, int n_h, float *rows0,
                          size_t head_rows, size_t row_stride, const KvlConfig *c)
{
    int QD = c->n_heads * c->head_dim, HD = c->head_dim, HD8 = (HD + 7) / 8 * 8;
    int lo = INT_MAX, hi = 0, lo_all = 0, hi_all = INT_MAX;
    float scale = 1.0f / sqrtf((float)HD);
    float q_pad[ATT_QUERIES * ATT_MAX_HEAD_DIM], kt[ATT_MAX_HEAD_DIM * ATT_KEYS], tile[ATT_KEYS];
#ifdef KVL_SCORES_PLAIN_UNUSED
    (void)attention_scores_tile;                /* the plain tile: test.c checks the two agree */
#endif
    for (int i = 0; i < n_q; i++) {             /* of the keys the rows see from the arrays they share, */
        int first = first_key(pos[i], c), end = pos[i] + 1 < keys[i].n ? pos[i] + 1 : keys[i].n;
        lo = first < lo ? first : lo;           /* [lo, hi): those any row sees */
        hi = end > hi ? end : hi;
        lo_all = first > lo_all ? first : lo_all;       /* [lo_all, hi_all): those every row sees */
        hi_all = end < hi_all ? end : hi_all;
    }
    /* (a lone row gains nothing from copying the keys; n_h x HD8 fits ATT_MAX_HEAD_DIM) */
    int tiled = HD <= ATT_MAX_HEAD_DIM && n_q > 1;
    if (tiled) {
        for (int g = 0; g < n_h; g++)
            for (int i = 0; i < n_q; i++)
                for (int d = 0; d < HD8; d++) q_pad[(g * n_q + i) * HD8 + d] = d < HD ? q[(size_t)i * QD + g * HD + d] : 0.0f;
        for (int j0 = lo; j0 < hi; j0 += ATT_KEYS) {              /* the scores, a tile of keys at a time */
            int j1 = j0 + ATT_KEYS < hi ? j0 + ATT_KEYS : hi;
            if (j1 - j0 < ATT_KEYS || HD < HD8) memset(kt, 0, sizeof(float) * HD8 * ATT_KEYS);
            for (int j = 0; j < j1 - j0; j++) {
                const float *kj = key_at(&keys[0], j0 + j, HD);
                for (int d = 0; d < HD; d++) kt[d * ATT_KEYS + j] = kj[d];
            }
            for (int i = 0; i < n_q; i++) {
                int a = first_key(pos[i], c) > j0 ? first_key(pos[i], c) : j0, b = pos[i] + 1 < j1 ? pos[i] + 1 : j1;
                for (int g = 0; g < n_h && a < b; g++) {
                    ATTENTION_SCORES_TILE(tile, q_pad + (g * n_q + i) * HD8, kt, HD8, scale);
                    memcpy(rows0 + g * head_rows + i * row_stride + a, tile + (a - j0), sizeof(float) * (b - a));
                }
            }
        }
    }
    for (int g = 0; g < n_h; g++)
        for (int i = 0; i < n_q; i++) {         /* the keys the tiles left: a row's own tokens, or all */
            int first = first_key(pos[i], c), j = tiled && hi > first ? hi : first;
            float *p = rows0 + g * head_rows + i * row_stride;
            for (; j <= pos[i]; j++) p[j] = dot(q + (size_t)i * QD + g * HD, key_at(&keys[i], j, HD), HD) * scale;
        }
    for (int g = 0; g < n_h; g++)
        for (int i = 0; i < n_q; i++) {         /* the softmax of each row, as the plain loop */
            int first = first_key(pos[i], c);
            float *p = rows0 + g * head_rows + i * row_stride, lane_max[8], max_score = -INFINITY, sum = 0.0f;
            int j = first;
            for (int l = 0; l < 8; l++) lane_max[l] = -INFINITY;
            for (; j + 8 <= pos[i] + 1; j += 8)          /* the largest score, in eight lanes: */
                for (int l = 0; l < 8; l++) lane_max[l] = p[j + l] > lane_max[l] ? p[j + l] : lane_max[l];
            for (int l = 0; l < 8; l++)                  /* the same value in any order (NaN is skipped) */
                if (lane_max[l] > max_score) max_score = lane_max[l];
            for (; j <= pos[i]; j++)
                if (p[j] > max_score) max_score = p[j];
            for (j = first; j <= pos[i]; j++) {
                p[j] = expf(p[j] - max_score);
                sum += p[j];
            }
            for (int j = first; j <= pos[i]; j++) p[j] /= sum;
        }
    attention_values(out, pos, keys, n_q, n_h, lo_all, hi_all, rows0, head_rows, row_stride, c);
}

/* The jobs' heads: the n_chunks = ceil(group / job_heads) chunks of each key/value group's
   query heads; chunk k of group g starts at head *h0 and has *n_h heads. */
static void job_heads_at(int k, int g, int job_heads, const KvlConfig *c, int *h0, int *n_h)
{
    int group = c->n_heads / c->n_kv_heads;
    *h0 = g * group + k * job_heads;
    *n_h = group - k * job_heads < job_heads ? group - k * job_heads : job_heads;
}

/* Batched decoding's attention: a job is the heads of a key/value group (as many as
   attention_job_heads allows) over up to BATCH_QUERIES of the step's rows, each a
   sequence's token reading the shared keys and then its sequence's own, so that the
   shared keys are read once per job, not once per row and head. Score rows as
   attention_forward_blocked's without att. */
#define BATCH_QUERIES 16
#if BATCH_QUERIES > ATT_QUERIES
#error "a batch job's rows must fit the ATT_QUERIES score rows each thread has"
#endif
static void attention_forward_batch(float *out, float *att_rows, size_t head_stride, size_t row_stride, const float *q,
                                    const KvlBatch *batch, const int *seq, int layer, int T, const KvlConfig *c)
{
    int H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, group = H / KVH, QD = H * HD;
    int job_heads = attention_job_heads(c), n_chunks = (group + job_heads - 1) / job_heads;
    int n_blocks = (T + BATCH_QUERIES - 1) / BATCH_QUERIES;
    const KvlCache *shared = batch->shared, *tails = &batch->tails;
    PARALLEL_FOR_DYNAMIC
    for (int job = 0; job < KVH * n_chunks * n_blocks; job++) {
        int g = job % (KVH * n_chunks) / n_chunks, r0 = job / (KVH * n_chunks) * BATCH_QUERIES, h0, n_h;
        int n_q = T - r0 < BATCH_QUERIES ? T - r0 : BATCH_QUERIES, kv = layer * KVH + g;
        int pos[BATCH_QUERIES];
        AttentionKeys keys[BATCH_QUERIES];
        size_t shared_at = (size_t)kv * shared->max_tokens * HD;
        job_heads_at(job % n_chunks, g, job_heads, c, &h0, &n_h);
        for (int i = 0; i < n_q; i++) {
            int b = seq[r0 + i];
            size_t tail_at = ((size_t)kv * tails->max_tokens + (size_t)b * batch->max_tail) * HD;
            AttentionKeys k = {shared->k + shared_at, shared->v + shared_at, tails->k + tail_at, tails->v + tail_at, shared->n_tokens};
            keys[i] = k;
            pos[i] = shared->n_tokens + batch->tail_len[b];
        }
        attention_job(out + (size_t)r0 * QD + (size_t)h0 * HD, q + (size_t)r0 * QD + (size_t)h0 * HD, pos, keys, n_q, n_h,
                      att_rows + thread_index() * head_stride, (size_t)BATCH_QUERIES * row_stride, row_stride, c);
    }
}

static void attention_forward_blocked(float *out, float *att, float *att_rows, size_t head_stride, size_t row_stride,
                                      const float *q, const KvlCache *cache, int layer, int pos0, int T, const KvlConfig *c)
{
    int H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, group = H / KVH;
    /* (one token's heads are jobs of their own: it has no rows to share the keys with) */
    int job_heads = T > 1 ? attention_job_heads(c) : 1, n_chunks = (group + job_heads - 1) / job_heads;
    int n_blocks = (T + ATT_QUERIES - 1) / ATT_QUERIES;
    (void)attention_forward;                    /* the definition: test.c compares the two */
    PARALLEL_FOR_DYNAMIC
    for (int job = 0; job < KVH * n_chunks * n_blocks; job++) {
        /* the last query blocks first: they are the longest jobs, and the short ones fill in after */
        int g = job % (KVH * n_chunks) / n_chunks, t0 = (n_blocks - 1 - job / (KVH * n_chunks)) * ATT_QUERIES, h0, n_h;
        int n_q = T - t0 < ATT_QUERIES ? T - t0 : ATT_QUERIES;
        job_heads_at(job % n_chunks, g, job_heads, c, &h0, &n_h);
        size_t head_offset = ((size_t)layer * KVH + g) * cache->max_tokens * HD, at = ((size_t)t0 * H + h0) * HD;
        AttentionKeys head_keys = {cache->k + head_offset, cache->v + head_offset, NULL, NULL, INT_MAX}, keys[ATT_QUERIES];
        int pos[ATT_QUERIES];
        for (int i = 0; i < n_q; i++) {
            keys[i] = head_keys;
            pos[i] = pos0 + t0 + i;
        }
        if (att)
            attention_job(out + at, q + at, pos, keys, n_q, n_h, att + h0 * head_stride + t0 * row_stride, head_stride, row_stride, c);
        else
            attention_job(out + at, q + at, pos, keys, n_q, n_h, att_rows + thread_index() * head_stride, (size_t)ATT_QUERIES * row_stride,
                          row_stride, c);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Appendix B. Unicode tables                                                           */
/*                                                                                      */
/* The classes \p{L} (letters: Lu Ll Lt Lm Lo), \p{N} (numbers: Nd Nl No) and \s (the   */
/* White_Space property) that the pre-tokenizer regexes of section 4 use, as sorted     */
/* [first, last] code point ranges, looked up by binary search (ASCII is tested         */
/* directly); then the four tables of the NFC normalizer (section 4): combining         */
/* classes, canonical decompositions, the primary composites among them, and the        */
/* characters the quick check stops at. All from                                        */
/* data/tokenizers/make_unicode_tables.py, whose opening says how each is made.         */

/* Unicode 14.0.0, from data/tokenizers/make_unicode_tables.py */
static const uint32_t unicode_letters[][2] = {   /* 648 ranges */
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5},
    {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858},
    {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D},
    {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD},
    {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28},
    {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
    {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D},
    {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90},
    {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA},
    {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE},
    {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D},
    {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1},
    {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00},
    {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F}, {0x1050, 0x1055},
    {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070}, {0x1075, 0x1081}, {0x108E, 0x108E},
    {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D},
    {0x1250, 0x1256}, {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0},
    {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6}, {0x12D8, 0x1310},
    {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1401, 0x166C},
    {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8}, {0x1700, 0x1711}, {0x171F, 0x1731},
    {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC},
    {0x1820, 0x1878}, {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E},
    {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16}, {0x1A20, 0x1A54},
    {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF}, {0x1BBA, 0x1BE5},
    {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D},
    {0x212F, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67},
    {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6}, {0x2DB8, 0x2DBE},
    {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F}, {0x3005, 0x3006},
    {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF},
    {0x3105, 0x312F}, {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C},
    {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1}, {0xA7D3, 0xA7D3},
    {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A}, {0xA80C, 0xA822}, {0xA840, 0xA873},
    {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946},
    {0xA960, 0xA97C}, {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE},
    {0xAA00, 0xAA28}, {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF},
    {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2}, {0xAADB, 0xAADD},
    {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E}, {0xAB11, 0xAB16}, {0xAB20, 0xAB26},
    {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6},
    {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D},
    {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB}, {0xFE70, 0xFE74},
    {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF},
    {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D},
    {0x1003F, 0x1004D}, {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0}, {0x10300, 0x1031F},
    {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375}, {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF},
    {0x10400, 0x1049D}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563}, {0x10570, 0x1057A},
    {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595}, {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9},
    {0x105BB, 0x105BC}, {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C},
    {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2}, {0x108F4, 0x108F5}, {0x10900, 0x10915},
    {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF}, {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17},
    {0x10A19, 0x10A35}, {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35},
    {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x10D00, 0x10D23}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27}, {0x10F30, 0x10F45},
    {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075},
    {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147}, {0x11150, 0x11172},
    {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211},
    {0x11213, 0x1122B}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D}, {0x1129F, 0x112A8},
    {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333},
    {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11400, 0x11434}, {0x11447, 0x1144A},
    {0x1145F, 0x11461}, {0x11480, 0x114AF}, {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB},
    {0x11600, 0x1162F}, {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746},
    {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913}, {0x11915, 0x11916},
    {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7}, {0x119AA, 0x119D0}, {0x119E1, 0x119E1},
    {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32}, {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89},
    {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40}, {0x11C72, 0x11C8F},
    {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68},
    {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399}, {0x12480, 0x12543},
    {0x12F90, 0x12FF0}, {0x13000, 0x1342E}, {0x14400, 0x14646}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE},
    {0x16AD0, 0x16AED}, {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F},
    {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7},
    {0x18800, 0x18CD5}, {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122},
    {0x1B150, 0x1B152}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88},
    {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6},
    {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB}, {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A},
    {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C}, {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546},
    {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714},
    {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8}, {0x1D7AA, 0x1D7C2},
    {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD},
    {0x1E2C0, 0x1E2EB}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4},
    {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24},
    {0x1EE27, 0x1EE27}, {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42},
    {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52}, {0x1EE54, 0x1EE54},
    {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62},
    {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72}, {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E},
    {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF},
    {0x2A700, 0x2B738}, {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A},
};
static const uint32_t unicode_numbers[][2] = {   /* 134 ranges */
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x17F0, 0x17F9},
    {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89}, {0x1A90, 0x1A99}, {0x1B50, 0x1B59},
    {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},
    {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD},
    {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF}, {0xA830, 0xA835},
    {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9}, {0xAA50, 0xAA59}, {0xABF0, 0xABF9},
    {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178}, {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323},
    {0x10341, 0x10341}, {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F}, {0x10879, 0x1087F},
    {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF},
    {0x10A40, 0x10A48}, {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F}, {0x10B78, 0x10B7F},
    {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39}, {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54},
    {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x111E1, 0x111F4},
    {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B},
    {0x118E0, 0x118F2}, {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9}, {0x11FC0, 0x11FD4},
    {0x12400, 0x1246E}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16E80, 0x16E96},
    {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E8C7, 0x1E8CF},
    {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D},
    {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
static const uint32_t unicode_spaces[][2] = {   /* 10 ranges */
    {0x9, 0xD}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

/* Unicode 14.0.0 restricted to the characters of Unicode 9.0.0, from data/tokenizers/make_unicode_tables.py */
static const uint32_t nfc_classes[][3] = {   /* 333 entries */
    {0x300, 0x314, 0xE6}, {0x315, 0x315, 0xE8}, {0x316, 0x319, 0xDC}, {0x31A, 0x31A, 0xE8}, {0x31B, 0x31B, 0xD8},
    {0x31C, 0x320, 0xDC}, {0x321, 0x322, 0xCA}, {0x323, 0x326, 0xDC}, {0x327, 0x328, 0xCA}, {0x329, 0x333, 0xDC},
    {0x334, 0x338, 0x1}, {0x339, 0x33C, 0xDC}, {0x33D, 0x344, 0xE6}, {0x345, 0x345, 0xF0}, {0x346, 0x346, 0xE6},
    {0x347, 0x349, 0xDC}, {0x34A, 0x34C, 0xE6}, {0x34D, 0x34E, 0xDC}, {0x350, 0x352, 0xE6}, {0x353, 0x356, 0xDC},
    {0x357, 0x357, 0xE6}, {0x358, 0x358, 0xE8}, {0x359, 0x35A, 0xDC}, {0x35B, 0x35B, 0xE6}, {0x35C, 0x35C, 0xE9},
    {0x35D, 0x35E, 0xEA}, {0x35F, 0x35F, 0xE9}, {0x360, 0x361, 0xEA}, {0x362, 0x362, 0xE9}, {0x363, 0x36F, 0xE6},
    {0x483, 0x487, 0xE6}, {0x591, 0x591, 0xDC}, {0x592, 0x595, 0xE6}, {0x596, 0x596, 0xDC}, {0x597, 0x599, 0xE6},
    {0x59A, 0x59A, 0xDE}, {0x59B, 0x59B, 0xDC}, {0x59C, 0x5A1, 0xE6}, {0x5A2, 0x5A7, 0xDC}, {0x5A8, 0x5A9, 0xE6},
    {0x5AA, 0x5AA, 0xDC}, {0x5AB, 0x5AC, 0xE6}, {0x5AD, 0x5AD, 0xDE}, {0x5AE, 0x5AE, 0xE4}, {0x5AF, 0x5AF, 0xE6},
    {0x5B0, 0x5B0, 0xA}, {0x5B1, 0x5B1, 0xB}, {0x5B2, 0x5B2, 0xC}, {0x5B3, 0x5B3, 0xD}, {0x5B4, 0x5B4, 0xE},
    {0x5B5, 0x5B5, 0xF}, {0x5B6, 0x5B6, 0x10}, {0x5B7, 0x5B7, 0x11}, {0x5B8, 0x5B8, 0x12}, {0x5B9, 0x5BA, 0x13},
    {0x5BB, 0x5BB, 0x14}, {0x5BC, 0x5BC, 0x15}, {0x5BD, 0x5BD, 0x16}, {0x5BF, 0x5BF, 0x17}, {0x5C1, 0x5C1, 0x18},
    {0x5C2, 0x5C2, 0x19}, {0x5C4, 0x5C4, 0xE6}, {0x5C5, 0x5C5, 0xDC}, {0x5C7, 0x5C7, 0x12}, {0x610, 0x617, 0xE6},
    {0x618, 0x618, 0x1E}, {0x619, 0x619, 0x1F}, {0x61A, 0x61A, 0x20}, {0x64B, 0x64B, 0x1B}, {0x64C, 0x64C, 0x1C},
    {0x64D, 0x64D, 0x1D}, {0x64E, 0x64E, 0x1E}, {0x64F, 0x64F, 0x1F}, {0x650, 0x650, 0x20}, {0x651, 0x651, 0x21},
    {0x652, 0x652, 0x22}, {0x653, 0x654, 0xE6}, {0x655, 0x656, 0xDC}, {0x657, 0x65B, 0xE6}, {0x65C, 0x65C, 0xDC},
    {0x65D, 0x65E, 0xE6}, {0x65F, 0x65F, 0xDC}, {0x670, 0x670, 0x23}, {0x6D6, 0x6DC, 0xE6}, {0x6DF, 0x6E2, 0xE6},
    {0x6E3, 0x6E3, 0xDC}, {0x6E4, 0x6E4, 0xE6}, {0x6E7, 0x6E8, 0xE6}, {0x6EA, 0x6EA, 0xDC}, {0x6EB, 0x6EC, 0xE6},
    {0x6ED, 0x6ED, 0xDC}, {0x711, 0x711, 0x24}, {0x730, 0x730, 0xE6}, {0x731, 0x731, 0xDC}, {0x732, 0x733, 0xE6},
    {0x734, 0x734, 0xDC}, {0x735, 0x736, 0xE6}, {0x737, 0x739, 0xDC}, {0x73A, 0x73A, 0xE6}, {0x73B, 0x73C, 0xDC},
    {0x73D, 0x73D, 0xE6}, {0x73E, 0x73E, 0xDC}, {0x73F, 0x741, 0xE6}, {0x742, 0x742, 0xDC}, {0x743, 0x743, 0xE6},
    {0x744, 0x744, 0xDC}, {0x745, 0x745, 0xE6}, {0x746, 0x746, 0xDC}, {0x747, 0x747, 0xE6}, {0x748, 0x748, 0xDC},
    {0x749, 0x74A, 0xE6}, {0x7EB, 0x7F1, 0xE6}, {0x7F2, 0x7F2, 0xDC}, {0x7F3, 0x7F3, 0xE6}, {0x816, 0x819, 0xE6},
    {0x81B, 0x823, 0xE6}, {0x825, 0x827, 0xE6}, {0x829, 0x82D, 0xE6}, {0x859, 0x85B, 0xDC}, {0x8D4, 0x8E1, 0xE6},
    {0x8E3, 0x8E3, 0xDC}, {0x8E4, 0x8E5, 0xE6}, {0x8E6, 0x8E6, 0xDC}, {0x8E7, 0x8E8, 0xE6}, {0x8E9, 0x8E9, 0xDC},
    {0x8EA, 0x8EC, 0xE6}, {0x8ED, 0x8EF, 0xDC}, {0x8F0, 0x8F0, 0x1B}, {0x8F1, 0x8F1, 0x1C}, {0x8F2, 0x8F2, 0x1D},
    {0x8F3, 0x8F5, 0xE6}, {0x8F6, 0x8F6, 0xDC}, {0x8F7, 0x8F8, 0xE6}, {0x8F9, 0x8FA, 0xDC}, {0x8FB, 0x8FF, 0xE6},
    {0x93C, 0x93C, 0x7}, {0x94D, 0x94D, 0x9}, {0x951, 0x951, 0xE6}, {0x952, 0x952, 0xDC}, {0x953, 0x954, 0xE6},
    {0x9BC, 0x9BC, 0x7}, {0x9CD, 0x9CD, 0x9}, {0xA3C, 0xA3C, 0x7}, {0xA4D, 0xA4D, 0x9}, {0xABC, 0xABC, 0x7},
    {0xACD, 0xACD, 0x9}, {0xB3C, 0xB3C, 0x7}, {0xB4D, 0xB4D, 0x9}, {0xBCD, 0xBCD, 0x9}, {0xC4D, 0xC4D, 0x9},
    {0xC55, 0xC55, 0x54}, {0xC56, 0xC56, 0x5B}, {0xCBC, 0xCBC, 0x7}, {0xCCD, 0xCCD, 0x9}, {0xD4D, 0xD4D, 0x9},
    {0xDCA, 0xDCA, 0x9}, {0xE38, 0xE39, 0x67}, {0xE3A, 0xE3A, 0x9}, {0xE48, 0xE4B, 0x6B}, {0xEB8, 0xEB9, 0x76},
    {0xEC8, 0xECB, 0x7A}, {0xF18, 0xF19, 0xDC}, {0xF35, 0xF35, 0xDC}, {0xF37, 0xF37, 0xDC}, {0xF39, 0xF39, 0xD8},
    {0xF71, 0xF71, 0x81}, {0xF72, 0xF72, 0x82}, {0xF74, 0xF74, 0x84}, {0xF7A, 0xF7D, 0x82}, {0xF80, 0xF80, 0x82},
    {0xF82, 0xF83, 0xE6}, {0xF84, 0xF84, 0x9}, {0xF86, 0xF87, 0xE6}, {0xFC6, 0xFC6, 0xDC}, {0x1037, 0x1037, 0x7},
    {0x1039, 0x103A, 0x9}, {0x108D, 0x108D, 0xDC}, {0x135D, 0x135F, 0xE6}, {0x1714, 0x1714, 0x9}, {0x1734, 0x1734, 0x9},
    {0x17D2, 0x17D2, 0x9}, {0x17DD, 0x17DD, 0xE6}, {0x18A9, 0x18A9, 0xE4}, {0x1939, 0x1939, 0xDE}, {0x193A, 0x193A, 0xE6},
    {0x193B, 0x193B, 0xDC}, {0x1A17, 0x1A17, 0xE6}, {0x1A18, 0x1A18, 0xDC}, {0x1A60, 0x1A60, 0x9}, {0x1A75, 0x1A7C, 0xE6},
    {0x1A7F, 0x1A7F, 0xDC}, {0x1AB0, 0x1AB4, 0xE6}, {0x1AB5, 0x1ABA, 0xDC}, {0x1ABB, 0x1ABC, 0xE6}, {0x1ABD, 0x1ABD, 0xDC},
    {0x1B34, 0x1B34, 0x7}, {0x1B44, 0x1B44, 0x9}, {0x1B6B, 0x1B6B, 0xE6}, {0x1B6C, 0x1B6C, 0xDC}, {0x1B6D, 0x1B73, 0xE6},
    {0x1BAA, 0x1BAB, 0x9}, {0x1BE6, 0x1BE6, 0x7}, {0x1BF2, 0x1BF3, 0x9}, {0x1C37, 0x1C37, 0x7}, {0x1CD0, 0x1CD2, 0xE6},
    {0x1CD4, 0x1CD4, 0x1}, {0x1CD5, 0x1CD9, 0xDC}, {0x1CDA, 0x1CDB, 0xE6}, {0x1CDC, 0x1CDF, 0xDC}, {0x1CE0, 0x1CE0, 0xE6},
    {0x1CE2, 0x1CE8, 0x1}, {0x1CED, 0x1CED, 0xDC}, {0x1CF4, 0x1CF4, 0xE6}, {0x1CF8, 0x1CF9, 0xE6}, {0x1DC0, 0x1DC1, 0xE6},
    {0x1DC2, 0x1DC2, 0xDC}, {0x1DC3, 0x1DC9, 0xE6}, {0x1DCA, 0x1DCA, 0xDC}, {0x1DCB, 0x1DCC, 0xE6}, {0x1DCD, 0x1DCD, 0xEA},
    {0x1DCE, 0x1DCE, 0xD6}, {0x1DCF, 0x1DCF, 0xDC}, {0x1DD0, 0x1DD0, 0xCA}, {0x1DD1, 0x1DF5, 0xE6}, {0x1DFB, 0x1DFB, 0xE6},
    {0x1DFC, 0x1DFC, 0xE9}, {0x1DFD, 0x1DFD, 0xDC}, {0x1DFE, 0x1DFE, 0xE6}, {0x1DFF, 0x1DFF, 0xDC}, {0x20D0, 0x20D1, 0xE6},
    {0x20D2, 0x20D3, 0x1}, {0x20D4, 0x20D7, 0xE6}, {0x20D8, 0x20DA, 0x1}, {0x20DB, 0x20DC, 0xE6}, {0x20E1, 0x20E1, 0xE6},
    {0x20E5, 0x20E6, 0x1}, {0x20E7, 0x20E7, 0xE6}, {0x20E8, 0x20E8, 0xDC}, {0x20E9, 0x20E9, 0xE6}, {0x20EA, 0x20EB, 0x1},
    {0x20EC, 0x20EF, 0xDC}, {0x20F0, 0x20F0, 0xE6}, {0x2CEF, 0x2CF1, 0xE6}, {0x2D7F, 0x2D7F, 0x9}, {0x2DE0, 0x2DFF, 0xE6},
    {0x302A, 0x302A, 0xDA}, {0x302B, 0x302B, 0xE4}, {0x302C, 0x302C, 0xE8}, {0x302D, 0x302D, 0xDE}, {0x302E, 0x302F, 0xE0},
    {0x3099, 0x309A, 0x8}, {0xA66F, 0xA66F, 0xE6}, {0xA674, 0xA67D, 0xE6}, {0xA69E, 0xA69F, 0xE6}, {0xA6F0, 0xA6F1, 0xE6},
    {0xA806, 0xA806, 0x9}, {0xA8C4, 0xA8C4, 0x9}, {0xA8E0, 0xA8F1, 0xE6}, {0xA92B, 0xA92D, 0xDC}, {0xA953, 0xA953, 0x9},
    {0xA9B3, 0xA9B3, 0x7}, {0xA9C0, 0xA9C0, 0x9}, {0xAAB0, 0xAAB0, 0xE6}, {0xAAB2, 0xAAB3, 0xE6}, {0xAAB4, 0xAAB4, 0xDC},
    {0xAAB7, 0xAAB8, 0xE6}, {0xAABE, 0xAABF, 0xE6}, {0xAAC1, 0xAAC1, 0xE6}, {0xAAF6, 0xAAF6, 0x9}, {0xABED, 0xABED, 0x9},
    {0xFB1E, 0xFB1E, 0x1A}, {0xFE20, 0xFE26, 0xE6}, {0xFE27, 0xFE2D, 0xDC}, {0xFE2E, 0xFE2F, 0xE6}, {0x101FD, 0x101FD, 0xDC},
    {0x102E0, 0x102E0, 0xDC}, {0x10376, 0x1037A, 0xE6}, {0x10A0D, 0x10A0D, 0xDC}, {0x10A0F, 0x10A0F, 0xE6}, {0x10A38, 0x10A38, 0xE6},
    {0x10A39, 0x10A39, 0x1}, {0x10A3A, 0x10A3A, 0xDC}, {0x10A3F, 0x10A3F, 0x9}, {0x10AE5, 0x10AE5, 0xE6}, {0x10AE6, 0x10AE6, 0xDC},
    {0x11046, 0x11046, 0x9}, {0x1107F, 0x1107F, 0x9}, {0x110B9, 0x110B9, 0x9}, {0x110BA, 0x110BA, 0x7}, {0x11100, 0x11102, 0xE6},
    {0x11133, 0x11134, 0x9}, {0x11173, 0x11173, 0x7}, {0x111C0, 0x111C0, 0x9}, {0x111CA, 0x111CA, 0x7}, {0x11235, 0x11235, 0x9},
    {0x11236, 0x11236, 0x7}, {0x112E9, 0x112E9, 0x7}, {0x112EA, 0x112EA, 0x9}, {0x1133C, 0x1133C, 0x7}, {0x1134D, 0x1134D, 0x9},
    {0x11366, 0x1136C, 0xE6}, {0x11370, 0x11374, 0xE6}, {0x11442, 0x11442, 0x9}, {0x11446, 0x11446, 0x7}, {0x114C2, 0x114C2, 0x9},
    {0x114C3, 0x114C3, 0x7}, {0x115BF, 0x115BF, 0x9}, {0x115C0, 0x115C0, 0x7}, {0x1163F, 0x1163F, 0x9}, {0x116B6, 0x116B6, 0x9},
    {0x116B7, 0x116B7, 0x7}, {0x1172B, 0x1172B, 0x9}, {0x11C3F, 0x11C3F, 0x9}, {0x16AF0, 0x16AF4, 0x1}, {0x16B30, 0x16B36, 0xE6},
    {0x1BC9E, 0x1BC9E, 0x1}, {0x1D165, 0x1D166, 0xD8}, {0x1D167, 0x1D169, 0x1}, {0x1D16D, 0x1D16D, 0xE2}, {0x1D16E, 0x1D172, 0xD8},
    {0x1D17B, 0x1D182, 0xDC}, {0x1D185, 0x1D189, 0xE6}, {0x1D18A, 0x1D18B, 0xDC}, {0x1D1AA, 0x1D1AD, 0xE6}, {0x1D242, 0x1D244, 0xE6},
    {0x1E000, 0x1E006, 0xE6}, {0x1E008, 0x1E018, 0xE6}, {0x1E01B, 0x1E021, 0xE6}, {0x1E023, 0x1E024, 0xE6}, {0x1E026, 0x1E02A, 0xE6},
    {0x1E8D0, 0x1E8D6, 0xDC}, {0x1E944, 0x1E949, 0xE6}, {0x1E94A, 0x1E94A, 0x7},
};
static const uint32_t nfc_decompositions[][3] = {   /* 2060 entries */
    {0xC0, 0x41, 0x300}, {0xC1, 0x41, 0x301}, {0xC2, 0x41, 0x302}, {0xC3, 0x41, 0x303}, {0xC4, 0x41, 0x308},
    {0xC5, 0x41, 0x30A}, {0xC7, 0x43, 0x327}, {0xC8, 0x45, 0x300}, {0xC9, 0x45, 0x301}, {0xCA, 0x45, 0x302},
    {0xCB, 0x45, 0x308}, {0xCC, 0x49, 0x300}, {0xCD, 0x49, 0x301}, {0xCE, 0x49, 0x302}, {0xCF, 0x49, 0x308},
    {0xD1, 0x4E, 0x303}, {0xD2, 0x4F, 0x300}, {0xD3, 0x4F, 0x301}, {0xD4, 0x4F, 0x302}, {0xD5, 0x4F, 0x303},
    {0xD6, 0x4F, 0x308}, {0xD9, 0x55, 0x300}, {0xDA, 0x55, 0x301}, {0xDB, 0x55, 0x302}, {0xDC, 0x55, 0x308},
    {0xDD, 0x59, 0x301}, {0xE0, 0x61, 0x300}, {0xE1, 0x61, 0x301}, {0xE2, 0x61, 0x302}, {0xE3, 0x61, 0x303},
    {0xE4, 0x61, 0x308}, {0xE5, 0x61, 0x30A}, {0xE7, 0x63, 0x327}, {0xE8, 0x65, 0x300}, {0xE9, 0x65, 0x301},
    {0xEA, 0x65, 0x302}, {0xEB, 0x65, 0x308}, {0xEC, 0x69, 0x300}, {0xED, 0x69, 0x301}, {0xEE, 0x69, 0x302},
    {0xEF, 0x69, 0x308}, {0xF1, 0x6E, 0x303}, {0xF2, 0x6F, 0x300}, {0xF3, 0x6F, 0x301}, {0xF4, 0x6F, 0x302},
    {0xF5, 0x6F, 0x303}, {0xF6, 0x6F, 0x308}, {0xF9, 0x75, 0x300}, {0xFA, 0x75, 0x301}, {0xFB, 0x75, 0x302},
    {0xFC, 0x75, 0x308}, {0xFD, 0x79, 0x301}, {0xFF, 0x79, 0x308}, {0x100, 0x41, 0x304}, {0x101, 0x61, 0x304},
    {0x102, 0x41, 0x306}, {0x103, 0x61, 0x306}, {0x104, 0x41, 0x328}, {0x105, 0x61, 0x328}, {0x106, 0x43, 0x301},
    {0x107, 0x63, 0x301}, {0x108, 0x43, 0x302}, {0x109, 0x63, 0x302}, {0x10A, 0x43, 0x307}, {0x10B, 0x63, 0x307},
    {0x10C, 0x43, 0x30C}, {0x10D, 0x63, 0x30C}, {0x10E, 0x44, 0x30C}, {0x10F, 0x64, 0x30C}, {0x112, 0x45, 0x304},
    {0x113, 0x65, 0x304}, {0x114, 0x45, 0x306}, {0x115, 0x65, 0x306}, {0x116, 0x45, 0x307}, {0x117, 0x65, 0x307},
    {0x118, 0x45, 0x328}, {0x119, 0x65, 0x328}, {0x11A, 0x45, 0x30C}, {0x11B, 0x65, 0x30C}, {0x11C, 0x47, 0x302},
    {0x11D, 0x67, 0x302}, {0x11E, 0x47, 0x306}, {0x11F, 0x67, 0x306}, {0x120, 0x47, 0x307}, {0x121, 0x67, 0x307},
    {0x122, 0x47, 0x327}, {0x123, 0x67, 0x327}, {0x124, 0x48, 0x302}, {0x125, 0x68, 0x302}, {0x128, 0x49, 0x303},
    {0x129, 0x69, 0x303}, {0x12A, 0x49, 0x304}, {0x12B, 0x69, 0x304}, {0x12C, 0x49, 0x306}, {0x12D, 0x69, 0x306},
    {0x12E, 0x49, 0x328}, {0x12F, 0x69, 0x328}, {0x130, 0x49, 0x307}, {0x134, 0x4A, 0x302}, {0x135, 0x6A, 0x302},
    {0x136, 0x4B, 0x327}, {0x137, 0x6B, 0x327}, {0x139, 0x4C, 0x301}, {0x13A, 0x6C, 0x301}, {0x13B, 0x4C, 0x327},
    {0x13C, 0x6C, 0x327}, {0x13D, 0x4C, 0x30C}, {0x13E, 0x6C, 0x30C}, {0x143, 0x4E, 0x301}, {0x144, 0x6E, 0x301},
    {0x145, 0x4E, 0x327}, {0x146, 0x6E, 0x327}, {0x147, 0x4E, 0x30C}, {0x148, 0x6E, 0x30C}, {0x14C, 0x4F, 0x304},
    {0x14D, 0x6F, 0x304}, {0x14E, 0x4F, 0x306}, {0x14F, 0x6F, 0x306}, {0x150, 0x4F, 0x30B}, {0x151, 0x6F, 0x30B},
    {0x154, 0x52, 0x301}, {0x155, 0x72, 0x301}, {0x156, 0x52, 0x327}, {0x157, 0x72, 0x327}, {0x158, 0x52, 0x30C},
    {0x159, 0x72, 0x30C}, {0x15A, 0x53, 0x301}, {0x15B, 0x73, 0x301}, {0x15C, 0x53, 0x302}, {0x15D, 0x73, 0x302},
    {0x15E, 0x53, 0x327}, {0x15F, 0x73, 0x327}, {0x160, 0x53, 0x30C}, {0x161, 0x73, 0x30C}, {0x162, 0x54, 0x327},
    {0x163, 0x74, 0x327}, {0x164, 0x54, 0x30C}, {0x165, 0x74, 0x30C}, {0x168, 0x55, 0x303}, {0x169, 0x75, 0x303},
    {0x16A, 0x55, 0x304}, {0x16B, 0x75, 0x304}, {0x16C, 0x55, 0x306}, {0x16D, 0x75, 0x306}, {0x16E, 0x55, 0x30A},
    {0x16F, 0x75, 0x30A}, {0x170, 0x55, 0x30B}, {0x171, 0x75, 0x30B}, {0x172, 0x55, 0x328}, {0x173, 0x75, 0x328},
    {0x174, 0x57, 0x302}, {0x175, 0x77, 0x302}, {0x176, 0x59, 0x302}, {0x177, 0x79, 0x302}, {0x178, 0x59, 0x308},
    {0x179, 0x5A, 0x301}, {0x17A, 0x7A, 0x301}, {0x17B, 0x5A, 0x307}, {0x17C, 0x7A, 0x307}, {0x17D, 0x5A, 0x30C},
    {0x17E, 0x7A, 0x30C}, {0x1A0, 0x4F, 0x31B}, {0x1A1, 0x6F, 0x31B}, {0x1AF, 0x55, 0x31B}, {0x1B0, 0x75, 0x31B},
    {0x1CD, 0x41, 0x30C}, {0x1CE, 0x61, 0x30C}, {0x1CF, 0x49, 0x30C}, {0x1D0, 0x69, 0x30C}, {0x1D1, 0x4F, 0x30C},
    {0x1D2, 0x6F, 0x30C}, {0x1D3, 0x55, 0x30C}, {0x1D4, 0x75, 0x30C}, {0x1D5, 0xDC, 0x304}, {0x1D6, 0xFC, 0x304},
    {0x1D7, 0xDC, 0x301}, {0x1D8, 0xFC, 0x301}, {0x1D9, 0xDC, 0x30C}, {0x1DA, 0xFC, 0x30C}, {0x1DB, 0xDC, 0x300},
    {0x1DC, 0xFC, 0x300}, {0x1DE, 0xC4, 0x304}, {0x1DF, 0xE4, 0x304}, {0x1E0, 0x226, 0x304}, {0x1E1, 0x227, 0x304},
    {0x1E2, 0xC6, 0x304}, {0x1E3, 0xE6, 0x304}, {0x1E6, 0x47, 0x30C}, {0x1E7, 0x67, 0x30C}, {0x1E8, 0x4B, 0x30C},
    {0x1E9, 0x6B, 0x30C}, {0x1EA, 0x4F, 0x328}, {0x1EB, 0x6F, 0x328}, {0x1EC, 0x1EA, 0x304}, {0x1ED, 0x1EB, 0x304},
    {0x1EE, 0x1B7, 0x30C}, {0x1EF, 0x292, 0x30C}, {0x1F0, 0x6A, 0x30C}, {0x1F4, 0x47, 0x301}, {0x1F5, 0x67, 0x301},
    {0x1F8, 0x4E, 0x300}, {0x1F9, 0x6E, 0x300}, {0x1FA, 0xC5, 0x301}, {0x1FB, 0xE5, 0x301}, {0x1FC, 0xC6, 0x301},
    {0x1FD, 0xE6, 0x301}, {0x1FE, 0xD8, 0x301}, {0x1FF, 0xF8, 0x301}, {0x200, 0x41, 0x30F}, {0x201, 0x61, 0x30F},
    {0x202, 0x41, 0x311}, {0x203, 0x61, 0x311}, {0x204, 0x45, 0x30F}, {0x205, 0x65, 0x30F}, {0x206, 0x45, 0x311},
    {0x207, 0x65, 0x311}, {0x208, 0x49, 0x30F}, {0x209, 0x69, 0x30F}, {0x20A, 0x49, 0x311}, {0x20B, 0x69, 0x311},
    {0x20C, 0x4F, 0x30F}, {0x20D, 0x6F, 0x30F}, {0x20E, 0x4F, 0x311}, {0x20F, 0x6F, 0x311}, {0x210, 0x52, 0x30F},
    {0x211, 0x72, 0x30F}, {0x212, 0x52, 0x311}, {0x213, 0x72, 0x311}, {0x214, 0x55, 0x30F}, {0x215, 0x75, 0x30F},
    {0x216, 0x55, 0x311}, {0x217, 0x75, 0x311}, {0x218, 0x53, 0x326}, {0x219, 0x73, 0x326}, {0x21A, 0x54, 0x326},
    {0x21B, 0x74, 0x326}, {0x21E, 0x48, 0x30C}, {0x21F, 0x68, 0x30C}, {0x226, 0x41, 0x307}, {0x227, 0x61, 0x307},
    {0x228, 0x45, 0x327}, {0x229, 0x65, 0x327}, {0x22A, 0xD6, 0x304}, {0x22B, 0xF6, 0x304}, {0x22C, 0xD5, 0x304},
    {0x22D, 0xF5, 0x304}, {0x22E, 0x4F, 0x307}, {0x22F, 0x6F, 0x307}, {0x230, 0x22E, 0x304}, {0x231, 0x22F, 0x304},
    {0x232, 0x59, 0x304}, {0x233, 0x79, 0x304}, {0x340, 0x300, 0x0}, {0x341, 0x301, 0x0}, {0x343, 0x313, 0x0},
    {0x344, 0x308, 0x301}, {0x374, 0x2B9, 0x0}, {0x37E, 0x3B, 0x0}, {0x385, 0xA8, 0x301}, {0x386, 0x391, 0x301},
    {0x387, 0xB7, 0x0}, {0x388, 0x395, 0x301}, {0x389, 0x397, 0x301}, {0x38A, 0x399, 0x301}, {0x38C, 0x39F, 0x301},
    {0x38E, 0x3A5, 0x301}, {0x38F, 0x3A9, 0x301}, {0x390, 0x3CA, 0x301}, {0x3AA, 0x399, 0x308}, {0x3AB, 0x3A5, 0x308},
    {0x3AC, 0x3B1, 0x301}, {0x3AD, 0x3B5, 0x301}, {0x3AE, 0x3B7, 0x301}, {0x3AF, 0x3B9, 0x301}, {0x3B0, 0x3CB, 0x301},
    {0x3CA, 0x3B9, 0x308}, {0x3CB, 0x3C5, 0x308}, {0x3CC, 0x3BF, 0x301}, {0x3CD, 0x3C5, 0x301}, {0x3CE, 0x3C9, 0x301},
    {0x3D3, 0x3D2, 0x301}, {0x3D4, 0x3D2, 0x308}, {0x400, 0x415, 0x300}, {0x401, 0x415, 0x308}, {0x403, 0x413, 0x301},
    {0x407, 0x406, 0x308}, {0x40C, 0x41A, 0x301}, {0x40D, 0x418, 0x300}, {0x40E, 0x423, 0x306}, {0x419, 0x418, 0x306},
    {0x439, 0x438, 0x306}, {0x450, 0x435, 0x300}, {0x451, 0x435, 0x308}, {0x453, 0x433, 0x301}, {0x457, 0x456, 0x308},
    {0x45C, 0x43A, 0x301}, {0x45D, 0x438, 0x300}, {0x45E, 0x443, 0x306}, {0x476, 0x474, 0x30F}, {0x477, 0x475, 0x30F},
    {0x4C1, 0x416, 0x306}, {0x4C2, 0x436, 0x306}, {0x4D0, 0x410, 0x306}, {0x4D1, 0x430, 0x306}, {0x4D2, 0x410, 0x308},
    {0x4D3, 0x430, 0x308}, {0x4D6, 0x415, 0x306}, {0x4D7, 0x435, 0x306}, {0x4DA, 0x4D8, 0x308}, {0x4DB, 0x4D9, 0x308},
    {0x4DC, 0x416, 0x308}, {0x4DD, 0x436, 0x308}, {0x4DE, 0x417, 0x308}, {0x4DF, 0x437, 0x308}, {0x4E2, 0x418, 0x304},
    {0x4E3, 0x438, 0x304}, {0x4E4, 0x418, 0x308}, {0x4E5, 0x438, 0x308}, {0x4E6, 0x41E, 0x308}, {0x4E7, 0x43E, 0x308},
    {0x4EA, 0x4E8, 0x308}, {0x4EB, 0x4E9, 0x308}, {0x4EC, 0x42D, 0x308}, {0x4ED, 0x44D, 0x308}, {0x4EE, 0x423, 0x304},
    {0x4EF, 0x443, 0x304}, {0x4F0, 0x423, 0x308}, {0x4F1, 0x443, 0x308}, {0x4F2, 0x423, 0x30B}, {0x4F3, 0x443, 0x30B},
    {0x4F4, 0x427, 0x308}, {0x4F5, 0x447, 0x308}, {0x4F8, 0x42B, 0x308}, {0x4F9, 0x44B, 0x308}, {0x622, 0x627, 0x653},
    {0x623, 0x627, 0x654}, {0x624, 0x648, 0x654}, {0x625, 0x627, 0x655}, {0x626, 0x64A, 0x654}, {0x6C0, 0x6D5, 0x654},
    {0x6C2, 0x6C1, 0x654}, {0x6D3, 0x6D2, 0x654}, {0x929, 0x928, 0x93C}, {0x931, 0x930, 0x93C}, {0x934, 0x933, 0x93C},
    {0x958, 0x915, 0x93C}, {0x959, 0x916, 0x93C}, {0x95A, 0x917, 0x93C}, {0x95B, 0x91C, 0x93C}, {0x95C, 0x921, 0x93C},
    {0x95D, 0x922, 0x93C}, {0x95E, 0x92B, 0x93C}, {0x95F, 0x92F, 0x93C}, {0x9CB, 0x9C7, 0x9BE}, {0x9CC, 0x9C7, 0x9D7},
    {0x9DC, 0x9A1, 0x9BC}, {0x9DD, 0x9A2, 0x9BC}, {0x9DF, 0x9AF, 0x9BC}, {0xA33, 0xA32, 0xA3C}, {0xA36, 0xA38, 0xA3C},
    {0xA59, 0xA16, 0xA3C}, {0xA5A, 0xA17, 0xA3C}, {0xA5B, 0xA1C, 0xA3C}, {0xA5E, 0xA2B, 0xA3C}, {0xB48, 0xB47, 0xB56},
    {0xB4B, 0xB47, 0xB3E}, {0xB4C, 0xB47, 0xB57}, {0xB5C, 0xB21, 0xB3C}, {0xB5D, 0xB22, 0xB3C}, {0xB94, 0xB92, 0xBD7},
    {0xBCA, 0xBC6, 0xBBE}, {0xBCB, 0xBC7, 0xBBE}, {0xBCC, 0xBC6, 0xBD7}, {0xC48, 0xC46, 0xC56}, {0xCC0, 0xCBF, 0xCD5},
    {0xCC7, 0xCC6, 0xCD5}, {0xCC8, 0xCC6, 0xCD6}, {0xCCA, 0xCC6, 0xCC2}, {0xCCB, 0xCCA, 0xCD5}, {0xD4A, 0xD46, 0xD3E},
    {0xD4B, 0xD47, 0xD3E}, {0xD4C, 0xD46, 0xD57}, {0xDDA, 0xDD9, 0xDCA}, {0xDDC, 0xDD9, 0xDCF}, {0xDDD, 0xDDC, 0xDCA},
    {0xDDE, 0xDD9, 0xDDF}, {0xF43, 0xF42, 0xFB7}, {0xF4D, 0xF4C, 0xFB7}, {0xF52, 0xF51, 0xFB7}, {0xF57, 0xF56, 0xFB7},
    {0xF5C, 0xF5B, 0xFB7}, {0xF69, 0xF40, 0xFB5}, {0xF73, 0xF71, 0xF72}, {0xF75, 0xF71, 0xF74}, {0xF76, 0xFB2, 0xF80},
    {0xF78, 0xFB3, 0xF80}, {0xF81, 0xF71, 0xF80}, {0xF93, 0xF92, 0xFB7}, {0xF9D, 0xF9C, 0xFB7}, {0xFA2, 0xFA1, 0xFB7},
    {0xFA7, 0xFA6, 0xFB7}, {0xFAC, 0xFAB, 0xFB7}, {0xFB9, 0xF90, 0xFB5}, {0x1026, 0x1025, 0x102E}, {0x1B06, 0x1B05, 0x1B35},
    {0x1B08, 0x1B07, 0x1B35}, {0x1B0A, 0x1B09, 0x1B35}, {0x1B0C, 0x1B0B, 0x1B35}, {0x1B0E, 0x1B0D, 0x1B35}, {0x1B12, 0x1B11, 0x1B35},
    {0x1B3B, 0x1B3A, 0x1B35}, {0x1B3D, 0x1B3C, 0x1B35}, {0x1B40, 0x1B3E, 0x1B35}, {0x1B41, 0x1B3F, 0x1B35}, {0x1B43, 0x1B42, 0x1B35},
    {0x1E00, 0x41, 0x325}, {0x1E01, 0x61, 0x325}, {0x1E02, 0x42, 0x307}, {0x1E03, 0x62, 0x307}, {0x1E04, 0x42, 0x323},
    {0x1E05, 0x62, 0x323}, {0x1E06, 0x42, 0x331}, {0x1E07, 0x62, 0x331}, {0x1E08, 0xC7, 0x301}, {0x1E09, 0xE7, 0x301},
    {0x1E0A, 0x44, 0x307}, {0x1E0B, 0x64, 0x307}, {0x1E0C, 0x44, 0x323}, {0x1E0D, 0x64, 0x323}, {0x1E0E, 0x44, 0x331},
    {0x1E0F, 0x64, 0x331}, {0x1E10, 0x44, 0x327}, {0x1E11, 0x64, 0x327}, {0x1E12, 0x44, 0x32D}, {0x1E13, 0x64, 0x32D},
    {0x1E14, 0x112, 0x300}, {0x1E15, 0x113, 0x300}, {0x1E16, 0x112, 0x301}, {0x1E17, 0x113, 0x301}, {0x1E18, 0x45, 0x32D},
    {0x1E19, 0x65, 0x32D}, {0x1E1A, 0x45, 0x330}, {0x1E1B, 0x65, 0x330}, {0x1E1C, 0x228, 0x306}, {0x1E1D, 0x229, 0x306},
    {0x1E1E, 0x46, 0x307}, {0x1E1F, 0x66, 0x307}, {0x1E20, 0x47, 0x304}, {0x1E21, 0x67, 0x304}, {0x1E22, 0x48, 0x307},
    {0x1E23, 0x68, 0x307}, {0x1E24, 0x48, 0x323}, {0x1E25, 0x68, 0x323}, {0x1E26, 0x48, 0x308}, {0x1E27, 0x68, 0x308},
    {0x1E28, 0x48, 0x327}, {0x1E29, 0x68, 0x327}, {0x1E2A, 0x48, 0x32E}, {0x1E2B, 0x68, 0x32E}, {0x1E2C, 0x49, 0x330},
    {0x1E2D, 0x69, 0x330}, {0x1E2E, 0xCF, 0x301}, {0x1E2F, 0xEF, 0x301}, {0x1E30, 0x4B, 0x301}, {0x1E31, 0x6B, 0x301},
    {0x1E32, 0x4B, 0x323}, {0x1E33, 0x6B, 0x323}, {0x1E34, 0x4B, 0x331}, {0x1E35, 0x6B, 0x331}, {0x1E36, 0x4C, 0x323},
    {0x1E37, 0x6C, 0x323}, {0x1E38, 0x1E36, 0x304}, {0x1E39, 0x1E37, 0x304}, {0x1E3A, 0x4C, 0x331}, {0x1E3B, 0x6C, 0x331},
    {0x1E3C, 0x4C, 0x32D}, {0x1E3D, 0x6C, 0x32D}, {0x1E3E, 0x4D, 0x301}, {0x1E3F, 0x6D, 0x301}, {0x1E40, 0x4D, 0x307},
    {0x1E41, 0x6D, 0x307}, {0x1E42, 0x4D, 0x323}, {0x1E43, 0x6D, 0x323}, {0x1E44, 0x4E, 0x307}, {0x1E45, 0x6E, 0x307},
    {0x1E46, 0x4E, 0x323}, {0x1E47, 0x6E, 0x323}, {0x1E48, 0x4E, 0x331}, {0x1E49, 0x6E, 0x331}, {0x1E4A, 0x4E, 0x32D},
    {0x1E4B, 0x6E, 0x32D}, {0x1E4C, 0xD5, 0x301}, {0x1E4D, 0xF5, 0x301}, {0x1E4E, 0xD5, 0x308}, {0x1E4F, 0xF5, 0x308},
    {0x1E50, 0x14C, 0x300}, {0x1E51, 0x14D, 0x300}, {0x1E52, 0x14C, 0x301}, {0x1E53, 0x14D, 0x301}, {0x1E54, 0x50, 0x301},
    {0x1E55, 0x70, 0x301}, {0x1E56, 0x50, 0x307}, {0x1E57, 0x70, 0x307}, {0x1E58, 0x52, 0x307}, {0x1E59, 0x72, 0x307},
    {0x1E5A, 0x52, 0x323}, {0x1E5B, 0x72, 0x323}, {0x1E5C, 0x1E5A, 0x304}, {0x1E5D, 0x1E5B, 0x304}, {0x1E5E, 0x52, 0x331},
    {0x1E5F, 0x72, 0x331}, {0x1E60, 0x53, 0x307}, {0x1E61, 0x73, 0x307}, {0x1E62, 0x53, 0x323}, {0x1E63, 0x73, 0x323},
    {0x1E64, 0x15A, 0x307}, {0x1E65, 0x15B, 0x307}, {0x1E66, 0x160, 0x307}, {0x1E67, 0x161, 0x307}, {0x1E68, 0x1E62, 0x307},
    {0x1E69, 0x1E63, 0x307}, {0x1E6A, 0x54, 0x307}, {0x1E6B, 0x74, 0x307}, {0x1E6C, 0x54, 0x323}, {0x1E6D, 0x74, 0x323},
    {0x1E6E, 0x54, 0x331}, {0x1E6F, 0x74, 0x331}, {0x1E70, 0x54, 0x32D}, {0x1E71, 0x74, 0x32D}, {0x1E72, 0x55, 0x324},
    {0x1E73, 0x75, 0x324}, {0x1E74, 0x55, 0x330}, {0x1E75, 0x75, 0x330}, {0x1E76, 0x55, 0x32D}, {0x1E77, 0x75, 0x32D},
    {0x1E78, 0x168, 0x301}, {0x1E79, 0x169, 0x301}, {0x1E7A, 0x16A, 0x308}, {0x1E7B, 0x16B, 0x308}, {0x1E7C, 0x56, 0x303},
    {0x1E7D, 0x76, 0x303}, {0x1E7E, 0x56, 0x323}, {0x1E7F, 0x76, 0x323}, {0x1E80, 0x57, 0x300}, {0x1E81, 0x77, 0x300},
    {0x1E82, 0x57, 0x301}, {0x1E83, 0x77, 0x301}, {0x1E84, 0x57, 0x308}, {0x1E85, 0x77, 0x308}, {0x1E86, 0x57, 0x307},
    {0x1E87, 0x77, 0x307}, {0x1E88, 0x57, 0x323}, {0x1E89, 0x77, 0x323}, {0x1E8A, 0x58, 0x307}, {0x1E8B, 0x78, 0x307},
    {0x1E8C, 0x58, 0x308}, {0x1E8D, 0x78, 0x308}, {0x1E8E, 0x59, 0x307}, {0x1E8F, 0x79, 0x307}, {0x1E90, 0x5A, 0x302},
    {0x1E91, 0x7A, 0x302}, {0x1E92, 0x5A, 0x323}, {0x1E93, 0x7A, 0x323}, {0x1E94, 0x5A, 0x331}, {0x1E95, 0x7A, 0x331},
    {0x1E96, 0x68, 0x331}, {0x1E97, 0x74, 0x308}, {0x1E98, 0x77, 0x30A}, {0x1E99, 0x79, 0x30A}, {0x1E9B, 0x17F, 0x307},
    {0x1EA0, 0x41, 0x323}, {0x1EA1, 0x61, 0x323}, {0x1EA2, 0x41, 0x309}, {0x1EA3, 0x61, 0x309}, {0x1EA4, 0xC2, 0x301},
    {0x1EA5, 0xE2, 0x301}, {0x1EA6, 0xC2, 0x300}, {0x1EA7, 0xE2, 0x300}, {0x1EA8, 0xC2, 0x309}, {0x1EA9, 0xE2, 0x309},
    {0x1EAA, 0xC2, 0x303}, {0x1EAB, 0xE2, 0x303}, {0x1EAC, 0x1EA0, 0x302}, {0x1EAD, 0x1EA1, 0x302}, {0x1EAE, 0x102, 0x301},
    {0x1EAF, 0x103, 0x301}, {0x1EB0, 0x102, 0x300}, {0x1EB1, 0x103, 0x300}, {0x1EB2, 0x102, 0x309}, {0x1EB3, 0x103, 0x309},
    {0x1EB4, 0x102, 0x303}, {0x1EB5, 0x103, 0x303}, {0x1EB6, 0x1EA0, 0x306}, {0x1EB7, 0x1EA1, 0x306}, {0x1EB8, 0x45, 0x323},
    {0x1EB9, 0x65, 0x323}, {0x1EBA, 0x45, 0x309}, {0x1EBB, 0x65, 0x309}, {0x1EBC, 0x45, 0x303}, {0x1EBD, 0x65, 0x303},
    {0x1EBE, 0xCA, 0x301}, {0x1EBF, 0xEA, 0x301}, {0x1EC0, 0xCA, 0x300}, {0x1EC1, 0xEA, 0x300}, {0x1EC2, 0xCA, 0x309},
    {0x1EC3, 0xEA, 0x309}, {0x1EC4, 0xCA, 0x303}, {0x1EC5, 0xEA, 0x303}, {0x1EC6, 0x1EB8, 0x302}, {0x1EC7, 0x1EB9, 0x302},
    {0x1EC8, 0x49, 0x309}, {0x1EC9, 0x69, 0x309}, {0x1ECA, 0x49, 0x323}, {0x1ECB, 0x69, 0x323}, {0x1ECC, 0x4F, 0x323},
    {0x1ECD, 0x6F, 0x323}, {0x1ECE, 0x4F, 0x309}, {0x1ECF, 0x6F, 0x309}, {0x1ED0, 0xD4, 0x301}, {0x1ED1, 0xF4, 0x301},
    {0x1ED2, 0xD4, 0x300}, {0x1ED3, 0xF4, 0x300}, {0x1ED4, 0xD4, 0x309}, {0x1ED5, 0xF4, 0x309}, {0x1ED6, 0xD4, 0x303},
    {0x1ED7, 0xF4, 0x303}, {0x1ED8, 0x1ECC, 0x302}, {0x1ED9, 0x1ECD, 0x302}, {0x1EDA, 0x1A0, 0x301}, {0x1EDB, 0x1A1, 0x301},
    {0x1EDC, 0x1A0, 0x300}, {0x1EDD, 0x1A1, 0x300}, {0x1EDE, 0x1A0, 0x309}, {0x1EDF, 0x1A1, 0x309}, {0x1EE0, 0x1A0, 0x303},
    {0x1EE1, 0x1A1, 0x303}, {0x1EE2, 0x1A0, 0x323}, {0x1EE3, 0x1A1, 0x323}, {0x1EE4, 0x55, 0x323}, {0x1EE5, 0x75, 0x323},
    {0x1EE6, 0x55, 0x309}, {0x1EE7, 0x75, 0x309}, {0x1EE8, 0x1AF, 0x301}, {0x1EE9, 0x1B0, 0x301}, {0x1EEA, 0x1AF, 0x300},
    {0x1EEB, 0x1B0, 0x300}, {0x1EEC, 0x1AF, 0x309}, {0x1EED, 0x1B0, 0x309}, {0x1EEE, 0x1AF, 0x303}, {0x1EEF, 0x1B0, 0x303},
    {0x1EF0, 0x1AF, 0x323}, {0x1EF1, 0x1B0, 0x323}, {0x1EF2, 0x59, 0x300}, {0x1EF3, 0x79, 0x300}, {0x1EF4, 0x59, 0x323},
    {0x1EF5, 0x79, 0x323}, {0x1EF6, 0x59, 0x309}, {0x1EF7, 0x79, 0x309}, {0x1EF8, 0x59, 0x303}, {0x1EF9, 0x79, 0x303},
    {0x1F00, 0x3B1, 0x313}, {0x1F01, 0x3B1, 0x314}, {0x1F02, 0x1F00, 0x300}, {0x1F03, 0x1F01, 0x300}, {0x1F04, 0x1F00, 0x301},
    {0x1F05, 0x1F01, 0x301}, {0x1F06, 0x1F00, 0x342}, {0x1F07, 0x1F01, 0x342}, {0x1F08, 0x391, 0x313}, {0x1F09, 0x391, 0x314},
    {0x1F0A, 0x1F08, 0x300}, {0x1F0B, 0x1F09, 0x300}, {0x1F0C, 0x1F08, 0x301}, {0x1F0D, 0x1F09, 0x301}, {0x1F0E, 0x1F08, 0x342},
    {0x1F0F, 0x1F09, 0x342}, {0x1F10, 0x3B5, 0x313}, {0x1F11, 0x3B5, 0x314}, {0x1F12, 0x1F10, 0x300}, {0x1F13, 0x1F11, 0x300},
    {0x1F14, 0x1F10, 0x301}, {0x1F15, 0x1F11, 0x301}, {0x1F18, 0x395, 0x313}, {0x1F19, 0x395, 0x314}, {0x1F1A, 0x1F18, 0x300},
    {0x1F1B, 0x1F19, 0x300}, {0x1F1C, 0x1F18, 0x301}, {0x1F1D, 0x1F19, 0x301}, {0x1F20, 0x3B7, 0x313}, {0x1F21, 0x3B7, 0x314},
    {0x1F22, 0x1F20, 0x300}, {0x1F23, 0x1F21, 0x300}, {0x1F24, 0x1F20, 0x301}, {0x1F25, 0x1F21, 0x301}, {0x1F26, 0x1F20, 0x342},
    {0x1F27, 0x1F21, 0x342}, {0x1F28, 0x397, 0x313}, {0x1F29, 0x397, 0x314}, {0x1F2A, 0x1F28, 0x300}, {0x1F2B, 0x1F29, 0x300},
    {0x1F2C, 0x1F28, 0x301}, {0x1F2D, 0x1F29, 0x301}, {0x1F2E, 0x1F28, 0x342}, {0x1F2F, 0x1F29, 0x342}, {0x1F30, 0x3B9, 0x313},
    {0x1F31, 0x3B9, 0x314}, {0x1F32, 0x1F30, 0x300}, {0x1F33, 0x1F31, 0x300}, {0x1F34, 0x1F30, 0x301}, {0x1F35, 0x1F31, 0x301},
    {0x1F36, 0x1F30, 0x342}, {0x1F37, 0x1F31, 0x342}, {0x1F38, 0x399, 0x313}, {0x1F39, 0x399, 0x314}, {0x1F3A, 0x1F38, 0x300},
    {0x1F3B, 0x1F39, 0x300}, {0x1F3C, 0x1F38, 0x301}, {0x1F3D, 0x1F39, 0x301}, {0x1F3E, 0x1F38, 0x342}, {0x1F3F, 0x1F39, 0x342},
    {0x1F40, 0x3BF, 0x313}, {0x1F41, 0x3BF, 0x314}, {0x1F42, 0x1F40, 0x300}, {0x1F43, 0x1F41, 0x300}, {0x1F44, 0x1F40, 0x301},
    {0x1F45, 0x1F41, 0x301}, {0x1F48, 0x39F, 0x313}, {0x1F49, 0x39F, 0x314}, {0x1F4A, 0x1F48, 0x300}, {0x1F4B, 0x1F49, 0x300},
    {0x1F4C, 0x1F48, 0x301}, {0x1F4D, 0x1F49, 0x301}, {0x1F50, 0x3C5, 0x313}, {0x1F51, 0x3C5, 0x314}, {0x1F52, 0x1F50, 0x300},
    {0x1F53, 0x1F51, 0x300}, {0x1F54, 0x1F50, 0x301}, {0x1F55, 0x1F51, 0x301}, {0x1F56, 0x1F50, 0x342}, {0x1F57, 0x1F51, 0x342},
    {0x1F59, 0x3A5, 0x314}, {0x1F5B, 0x1F59, 0x300}, {0x1F5D, 0x1F59, 0x301}, {0x1F5F, 0x1F59, 0x342}, {0x1F60, 0x3C9, 0x313},
    {0x1F61, 0x3C9, 0x314}, {0x1F62, 0x1F60, 0x300}, {0x1F63, 0x1F61, 0x300}, {0x1F64, 0x1F60, 0x301}, {0x1F65, 0x1F61, 0x301},
    {0x1F66, 0x1F60, 0x342}, {0x1F67, 0x1F61, 0x342}, {0x1F68, 0x3A9, 0x313}, {0x1F69, 0x3A9, 0x314}, {0x1F6A, 0x1F68, 0x300},
    {0x1F6B, 0x1F69, 0x300}, {0x1F6C, 0x1F68, 0x301}, {0x1F6D, 0x1F69, 0x301}, {0x1F6E, 0x1F68, 0x342}, {0x1F6F, 0x1F69, 0x342},
    {0x1F70, 0x3B1, 0x300}, {0x1F71, 0x3AC, 0x0}, {0x1F72, 0x3B5, 0x300}, {0x1F73, 0x3AD, 0x0}, {0x1F74, 0x3B7, 0x300},
    {0x1F75, 0x3AE, 0x0}, {0x1F76, 0x3B9, 0x300}, {0x1F77, 0x3AF, 0x0}, {0x1F78, 0x3BF, 0x300}, {0x1F79, 0x3CC, 0x0},
    {0x1F7A, 0x3C5, 0x300}, {0x1F7B, 0x3CD, 0x0}, {0x1F7C, 0x3C9, 0x300}, {0x1F7D, 0x3CE, 0x0}, {0x1F80, 0x1F00, 0x345},
    {0x1F81, 0x1F01, 0x345}, {0x1F82, 0x1F02, 0x345}, {0x1F83, 0x1F03, 0x345}, {0x1F84, 0x1F04, 0x345}, {0x1F85, 0x1F05, 0x345},
    {0x1F86, 0x1F06, 0x345}, {0x1F87, 0x1F07, 0x345}, {0x1F88, 0x1F08, 0x345}, {0x1F89, 0x1F09, 0x345}, {0x1F8A, 0x1F0A, 0x345},
    {0x1F8B, 0x1F0B, 0x345}, {0x1F8C, 0x1F0C, 0x345}, {0x1F8D, 0x1F0D, 0x345}, {0x1F8E, 0x1F0E, 0x345}, {0x1F8F, 0x1F0F, 0x345},
    {0x1F90, 0x1F20, 0x345}, {0x1F91, 0x1F21, 0x345}, {0x1F92, 0x1F22, 0x345}, {0x1F93, 0x1F23, 0x345}, {0x1F94, 0x1F24, 0x345},
    {0x1F95, 0x1F25, 0x345}, {0x1F96, 0x1F26, 0x345}, {0x1F97, 0x1F27, 0x345}, {0x1F98, 0x1F28, 0x345}, {0x1F99, 0x1F29, 0x345},
    {0x1F9A, 0x1F2A, 0x345}, {0x1F9B, 0x1F2B, 0x345}, {0x1F9C, 0x1F2C, 0x345}, {0x1F9D, 0x1F2D, 0x345}, {0x1F9E, 0x1F2E, 0x345},
    {0x1F9F, 0x1F2F, 0x345}, {0x1FA0, 0x1F60, 0x345}, {0x1FA1, 0x1F61, 0x345}, {0x1FA2, 0x1F62, 0x345}, {0x1FA3, 0x1F63, 0x345},
    {0x1FA4, 0x1F64, 0x345}, {0x1FA5, 0x1F65, 0x345}, {0x1FA6, 0x1F66, 0x345}, {0x1FA7, 0x1F67, 0x345}, {0x1FA8, 0x1F68, 0x345},
    {0x1FA9, 0x1F69, 0x345}, {0x1FAA, 0x1F6A, 0x345}, {0x1FAB, 0x1F6B, 0x345}, {0x1FAC, 0x1F6C, 0x345}, {0x1FAD, 0x1F6D, 0x345},
    {0x1FAE, 0x1F6E, 0x345}, {0x1FAF, 0x1F6F, 0x345}, {0x1FB0, 0x3B1, 0x306}, {0x1FB1, 0x3B1, 0x304}, {0x1FB2, 0x1F70, 0x345},
    {0x1FB3, 0x3B1, 0x345}, {0x1FB4, 0x3AC, 0x345}, {0x1FB6, 0x3B1, 0x342}, {0x1FB7, 0x1FB6, 0x345}, {0x1FB8, 0x391, 0x306},
    {0x1FB9, 0x391, 0x304}, {0x1FBA, 0x391, 0x300}, {0x1FBB, 0x386, 0x0}, {0x1FBC, 0x391, 0x345}, {0x1FBE, 0x3B9, 0x0},
    {0x1FC1, 0xA8, 0x342}, {0x1FC2, 0x1F74, 0x345}, {0x1FC3, 0x3B7, 0x345}, {0x1FC4, 0x3AE, 0x345}, {0x1FC6, 0x3B7, 0x342},
    {0x1FC7, 0x1FC6, 0x345}, {0x1FC8, 0x395, 0x300}, {0x1FC9, 0x388, 0x0}, {0x1FCA, 0x397, 0x300}, {0x1FCB, 0x389, 0x0},
    {0x1FCC, 0x397, 0x345}, {0x1FCD, 0x1FBF, 0x300}, {0x1FCE, 0x1FBF, 0x301}, {0x1FCF, 0x1FBF, 0x342}, {0x1FD0, 0x3B9, 0x306},
    {0x1FD1, 0x3B9, 0x304}, {0x1FD2, 0x3CA, 0x300}, {0x1FD3, 0x390, 0x0}, {0x1FD6, 0x3B9, 0x342}, {0x1FD7, 0x3CA, 0x342},
    {0x1FD8, 0x399, 0x306}, {0x1FD9, 0x399, 0x304}, {0x1FDA, 0x399, 0x300}, {0x1FDB, 0x38A, 0x0}, {0x1FDD, 0x1FFE, 0x300},
    {0x1FDE, 0x1FFE, 0x301}, {0x1FDF, 0x1FFE, 0x342}, {0x1FE0, 0x3C5, 0x306}, {0x1FE1, 0x3C5, 0x304}, {0x1FE2, 0x3CB, 0x300},
    {0x1FE3, 0x3B0, 0x0}, {0x1FE4, 0x3C1, 0x313}, {0x1FE5, 0x3C1, 0x314}, {0x1FE6, 0x3C5, 0x342}, {0x1FE7, 0x3CB, 0x342},
    {0x1FE8, 0x3A5, 0x306}, {0x1FE9, 0x3A5, 0x304}, {0x1FEA, 0x3A5, 0x300}, {0x1FEB, 0x38E, 0x0}, {0x1FEC, 0x3A1, 0x314},
    {0x1FED, 0xA8, 0x300}, {0x1FEE, 0x385, 0x0}, {0x1FEF, 0x60, 0x0}, {0x1FF2, 0x1F7C, 0x345}, {0x1FF3, 0x3C9, 0x345},
    {0x1FF4, 0x3CE, 0x345}, {0x1FF6, 0x3C9, 0x342}, {0x1FF7, 0x1FF6, 0x345}, {0x1FF8, 0x39F, 0x300}, {0x1FF9, 0x38C, 0x0},
    {0x1FFA, 0x3A9, 0x300}, {0x1FFB, 0x38F, 0x0}, {0x1FFC, 0x3A9, 0x345}, {0x1FFD, 0xB4, 0x0}, {0x2000, 0x2002, 0x0},
    {0x2001, 0x2003, 0x0}, {0x2126, 0x3A9, 0x0}, {0x212A, 0x4B, 0x0}, {0x212B, 0xC5, 0x0}, {0x219A, 0x2190, 0x338},
    {0x219B, 0x2192, 0x338}, {0x21AE, 0x2194, 0x338}, {0x21CD, 0x21D0, 0x338}, {0x21CE, 0x21D4, 0x338}, {0x21CF, 0x21D2, 0x338},
    {0x2204, 0x2203, 0x338}, {0x2209, 0x2208, 0x338}, {0x220C, 0x220B, 0x338}, {0x2224, 0x2223, 0x338}, {0x2226, 0x2225, 0x338},
    {0x2241, 0x223C, 0x338}, {0x2244, 0x2243, 0x338}, {0x2247, 0x2245, 0x338}, {0x2249, 0x2248, 0x338}, {0x2260, 0x3D, 0x338},
    {0x2262, 0x2261, 0x338}, {0x226D, 0x224D, 0x338}, {0x226E, 0x3C, 0x338}, {0x226F, 0x3E, 0x338}, {0x2270, 0x2264, 0x338},
    {0x2271, 0x2265, 0x338}, {0x2274, 0x2272, 0x338}, {0x2275, 0x2273, 0x338}, {0x2278, 0x2276, 0x338}, {0x2279, 0x2277, 0x338},
    {0x2280, 0x227A, 0x338}, {0x2281, 0x227B, 0x338}, {0x2284, 0x2282, 0x338}, {0x2285, 0x2283, 0x338}, {0x2288, 0x2286, 0x338},
    {0x2289, 0x2287, 0x338}, {0x22AC, 0x22A2, 0x338}, {0x22AD, 0x22A8, 0x338}, {0x22AE, 0x22A9, 0x338}, {0x22AF, 0x22AB, 0x338},
    {0x22E0, 0x227C, 0x338}, {0x22E1, 0x227D, 0x338}, {0x22E2, 0x2291, 0x338}, {0x22E3, 0x2292, 0x338}, {0x22EA, 0x22B2, 0x338},
    {0x22EB, 0x22B3, 0x338}, {0x22EC, 0x22B4, 0x338}, {0x22ED, 0x22B5, 0x338}, {0x2329, 0x3008, 0x0}, {0x232A, 0x3009, 0x0},
    {0x2ADC, 0x2ADD, 0x338}, {0x304C, 0x304B, 0x3099}, {0x304E, 0x304D, 0x3099}, {0x3050, 0x304F, 0x3099}, {0x3052, 0x3051, 0x3099},
    {0x3054, 0x3053, 0x3099}, {0x3056, 0x3055, 0x3099}, {0x3058, 0x3057, 0x3099}, {0x305A, 0x3059, 0x3099}, {0x305C, 0x305B, 0x3099},
    {0x305E, 0x305D, 0x3099}, {0x3060, 0x305F, 0x3099}, {0x3062, 0x3061, 0x3099}, {0x3065, 0x3064, 0x3099}, {0x3067, 0x3066, 0x3099},
    {0x3069, 0x3068, 0x3099}, {0x3070, 0x306F, 0x3099}, {0x3071, 0x306F, 0x309A}, {0x3073, 0x3072, 0x3099}, {0x3074, 0x3072, 0x309A},
    {0x3076, 0x3075, 0x3099}, {0x3077, 0x3075, 0x309A}, {0x3079, 0x3078, 0x3099}, {0x307A, 0x3078, 0x309A}, {0x307C, 0x307B, 0x3099},
    {0x307D, 0x307B, 0x309A}, {0x3094, 0x3046, 0x3099}, {0x309E, 0x309D, 0x3099}, {0x30AC, 0x30AB, 0x3099}, {0x30AE, 0x30AD, 0x3099},
    {0x30B0, 0x30AF, 0x3099}, {0x30B2, 0x30B1, 0x3099}, {0x30B4, 0x30B3, 0x3099}, {0x30B6, 0x30B5, 0x3099}, {0x30B8, 0x30B7, 0x3099},
    {0x30BA, 0x30B9, 0x3099}, {0x30BC, 0x30BB, 0x3099}, {0x30BE, 0x30BD, 0x3099}, {0x30C0, 0x30BF, 0x3099}, {0x30C2, 0x30C1, 0x3099},
    {0x30C5, 0x30C4, 0x3099}, {0x30C7, 0x30C6, 0x3099}, {0x30C9, 0x30C8, 0x3099}, {0x30D0, 0x30CF, 0x3099}, {0x30D1, 0x30CF, 0x309A},
    {0x30D3, 0x30D2, 0x3099}, {0x30D4, 0x30D2, 0x309A}, {0x30D6, 0x30D5, 0x3099}, {0x30D7, 0x30D5, 0x309A}, {0x30D9, 0x30D8, 0x3099},
    {0x30DA, 0x30D8, 0x309A}, {0x30DC, 0x30DB, 0x3099}, {0x30DD, 0x30DB, 0x309A}, {0x30F4, 0x30A6, 0x3099}, {0x30F7, 0x30EF, 0x3099},
    {0x30F8, 0x30F0, 0x3099}, {0x30F9, 0x30F1, 0x3099}, {0x30FA, 0x30F2, 0x3099}, {0x30FE, 0x30FD, 0x3099}, {0xF900, 0x8C48, 0x0},
    {0xF901, 0x66F4, 0x0}, {0xF902, 0x8ECA, 0x0}, {0xF903, 0x8CC8, 0x0}, {0xF904, 0x6ED1, 0x0}, {0xF905, 0x4E32, 0x0},
    {0xF906, 0x53E5, 0x0}, {0xF907, 0x9F9C, 0x0}, {0xF908, 0x9F9C, 0x0}, {0xF909, 0x5951, 0x0}, {0xF90A, 0x91D1, 0x0},
    {0xF90B, 0x5587, 0x0}, {0xF90C, 0x5948, 0x0}, {0xF90D, 0x61F6, 0x0}, {0xF90E, 0x7669, 0x0}, {0xF90F, 0x7F85, 0x0},
    {0xF910, 0x863F, 0x0}, {0xF911, 0x87BA, 0x0}, {0xF912, 0x88F8, 0x0}, {0xF913, 0x908F, 0x0}, {0xF914, 0x6A02, 0x0},
    {0xF915, 0x6D1B, 0x0}, {0xF916, 0x70D9, 0x0}, {0xF917, 0x73DE, 0x0}, {0xF918, 0x843D, 0x0}, {0xF919, 0x916A, 0x0},
    {0xF91A, 0x99F1, 0x0}, {0xF91B, 0x4E82, 0x0}, {0xF91C, 0x5375, 0x0}, {0xF91D, 0x6B04, 0x0}, {0xF91E, 0x721B, 0x0},
    {0xF91F, 0x862D, 0x0}, {0xF920, 0x9E1E, 0x0}, {0xF921, 0x5D50, 0x0}, {0xF922, 0x6FEB, 0x0}, {0xF923, 0x85CD, 0x0},
    {0xF924, 0x8964, 0x0}, {0xF925, 0x62C9, 0x0}, {0xF926, 0x81D8, 0x0}, {0xF927, 0x881F, 0x0}, {0xF928, 0x5ECA, 0x0},
    {0xF929, 0x6717, 0x0}, {0xF92A, 0x6D6A, 0x0}, {0xF92B, 0x72FC, 0x0}, {0xF92C, 0x90CE, 0x0}, {0xF92D, 0x4F86, 0x0},
    {0xF92E, 0x51B7, 0x0}, {0xF92F, 0x52DE, 0x0}, {0xF930, 0x64C4, 0x0}, {0xF931, 0x6AD3, 0x0}, {0xF932, 0x7210, 0x0},
    {0xF933, 0x76E7, 0x0}, {0xF934, 0x8001, 0x0}, {0xF935, 0x8606, 0x0}, {0xF936, 0x865C, 0x0}, {0xF937, 0x8DEF, 0x0},
    {0xF938, 0x9732, 0x0}, {0xF939, 0x9B6F, 0x0}, {0xF93A, 0x9DFA, 0x0}, {0xF93B, 0x788C, 0x0}, {0xF93C, 0x797F, 0x0},
    {0xF93D, 0x7DA0, 0x0}, {0xF93E, 0x83C9, 0x0}, {0xF93F, 0x9304, 0x0}, {0xF940, 0x9E7F, 0x0}, {0xF941, 0x8AD6, 0x0},
    {0xF942, 0x58DF, 0x0}, {0xF943, 0x5F04, 0x0}, {0xF944, 0x7C60, 0x0}, {0xF945, 0x807E, 0x0}, {0xF946, 0x7262, 0x0},
    {0xF947, 0x78CA, 0x0}, {0xF948, 0x8CC2, 0x0}, {0xF949, 0x96F7, 0x0}, {0xF94A, 0x58D8, 0x0}, {0xF94B, 0x5C62, 0x0},
    {0xF94C, 0x6A13, 0x0}, {0xF94D, 0x6DDA, 0x0}, {0xF94E, 0x6F0F, 0x0}, {0xF94F, 0x7D2F, 0x0}, {0xF950, 0x7E37, 0x0},
    {0xF951, 0x964B, 0x0}, {0xF952, 0x52D2, 0x0}, {0xF953, 0x808B, 0x0}, {0xF954, 0x51DC, 0x0}, {0xF955, 0x51CC, 0x0},
    {0xF956, 0x7A1C, 0x0}, {0xF957, 0x7DBE, 0x0}, {0xF958, 0x83F1, 0x0}, {0xF959, 0x9675, 0x0}, {0xF95A, 0x8B80, 0x0},
    {0xF95B, 0x62CF, 0x0}, {0xF95C, 0x6A02, 0x0}, {0xF95D, 0x8AFE, 0x0}, {0xF95E, 0x4E39, 0x0}, {0xF95F, 0x5BE7, 0x0},
    {0xF960, 0x6012, 0x0}, {0xF961, 0x7387, 0x0}, {0xF962, 0x7570, 0x0}, {0xF963, 0x5317, 0x0}, {0xF964, 0x78FB, 0x0},
    {0xF965, 0x4FBF, 0x0}, {0xF966, 0x5FA9, 0x0}, {0xF967, 0x4E0D, 0x0}, {0xF968, 0x6CCC, 0x0}, {0xF969, 0x6578, 0x0},
    {0xF96A, 0x7D22, 0x0}, {0xF96B, 0x53C3, 0x0}, {0xF96C, 0x585E, 0x0}, {0xF96D, 0x7701, 0x0}, {0xF96E, 0x8449, 0x0},
    {0xF96F, 0x8AAA, 0x0}, {0xF970, 0x6BBA, 0x0}, {0xF971, 0x8FB0, 0x0}, {0xF972, 0x6C88, 0x0}, {0xF973, 0x62FE, 0x0},
    {0xF974, 0x82E5, 0x0}, {0xF975, 0x63A0, 0x0}, {0xF976, 0x7565, 0x0}, {0xF977, 0x4EAE, 0x0}, {0xF978, 0x5169, 0x0},
    {0xF979, 0x51C9, 0x0}, {0xF97A, 0x6881, 0x0}, {0xF97B, 0x7CE7, 0x0}, {0xF97C, 0x826F, 0x0}, {0xF97D, 0x8AD2, 0x0},
    {0xF97E, 0x91CF, 0x0}, {0xF97F, 0x52F5, 0x0}, {0xF980, 0x5442, 0x0}, {0xF981, 0x5973, 0x0}, {0xF982, 0x5EEC, 0x0},
    {0xF983, 0x65C5, 0x0}, {0xF984, 0x6FFE, 0x0}, {0xF985, 0x792A, 0x0}, {0xF986, 0x95AD, 0x0}, {0xF987, 0x9A6A, 0x0},
    {0xF988, 0x9E97, 0x0}, {0xF989, 0x9ECE, 0x0}, {0xF98A, 0x529B, 0x0}, {0xF98B, 0x66C6, 0x0}, {0xF98C, 0x6B77, 0x0},
    {0xF98D, 0x8F62, 0x0}, {0xF98E, 0x5E74, 0x0}, {0xF98F, 0x6190, 0x0}, {0xF990, 0x6200, 0x0}, {0xF991, 0x649A, 0x0},
    {0xF992, 0x6F23, 0x0}, {0xF993, 0x7149, 0x0}, {0xF994, 0x7489, 0x0}, {0xF995, 0x79CA, 0x0}, {0xF996, 0x7DF4, 0x0},
    {0xF997, 0x806F, 0x0}, {0xF998, 0x8F26, 0x0}, {0xF999, 0x84EE, 0x0}, {0xF99A, 0x9023, 0x0}, {0xF99B, 0x934A, 0x0},
    {0xF99C, 0x5217, 0x0}, {0xF99D, 0x52A3, 0x0}, {0xF99E, 0x54BD, 0x0}, {0xF99F, 0x70C8, 0x0}, {0xF9A0, 0x88C2, 0x0},
    {0xF9A1, 0x8AAA, 0x0}, {0xF9A2, 0x5EC9, 0x0}, {0xF9A3, 0x5FF5, 0x0}, {0xF9A4, 0x637B, 0x0}, {0xF9A5, 0x6BAE, 0x0},
    {0xF9A6, 0x7C3E, 0x0}, {0xF9A7, 0x7375, 0x0}, {0xF9A8, 0x4EE4, 0x0}, {0xF9A9, 0x56F9, 0x0}, {0xF9AA, 0x5BE7, 0x0},
    {0xF9AB, 0x5DBA, 0x0}, {0xF9AC, 0x601C, 0x0}, {0xF9AD, 0x73B2, 0x0}, {0xF9AE, 0x7469, 0x0}, {0xF9AF, 0x7F9A, 0x0},
    {0xF9B0, 0x8046, 0x0}, {0xF9B1, 0x9234, 0x0}, {0xF9B2, 0x96F6, 0x0}, {0xF9B3, 0x9748, 0x0}, {0xF9B4, 0x9818, 0x0},
    {0xF9B5, 0x4F8B, 0x0}, {0xF9B6, 0x79AE, 0x0}, {0xF9B7, 0x91B4, 0x0}, {0xF9B8, 0x96B8, 0x0}, {0xF9B9, 0x60E1, 0x0},
    {0xF9BA, 0x4E86, 0x0}, {0xF9BB, 0x50DA, 0x0}, {0xF9BC, 0x5BEE, 0x0}, {0xF9BD, 0x5C3F, 0x0}, {0xF9BE, 0x6599, 0x0},
    {0xF9BF, 0x6A02, 0x0}, {0xF9C0, 0x71CE, 0x0}, {0xF9C1, 0x7642, 0x0}, {0xF9C2, 0x84FC, 0x0}, {0xF9C3, 0x907C, 0x0},
    {0xF9C4, 0x9F8D, 0x0}, {0xF9C5, 0x6688, 0x0}, {0xF9C6, 0x962E, 0x0}, {0xF9C7, 0x5289, 0x0}, {0xF9C8, 0x677B, 0x0},
    {0xF9C9, 0x67F3, 0x0}, {0xF9CA, 0x6D41, 0x0}, {0xF9CB, 0x6E9C, 0x0}, {0xF9CC, 0x7409, 0x0}, {0xF9CD, 0x7559, 0x0},
    {0xF9CE, 0x786B, 0x0}, {0xF9CF, 0x7D10, 0x0}, {0xF9D0, 0x985E, 0x0}, {0xF9D1, 0x516D, 0x0}, {0xF9D2, 0x622E, 0x0},
    {0xF9D3, 0x9678, 0x0}, {0xF9D4, 0x502B, 0x0}, {0xF9D5, 0x5D19, 0x0}, {0xF9D6, 0x6DEA, 0x0}, {0xF9D7, 0x8F2A, 0x0},
    {0xF9D8, 0x5F8B, 0x0}, {0xF9D9, 0x6144, 0x0}, {0xF9DA, 0x6817, 0x0}, {0xF9DB, 0x7387, 0x0}, {0xF9DC, 0x9686, 0x0},
    {0xF9DD, 0x5229, 0x0}, {0xF9DE, 0x540F, 0x0}, {0xF9DF, 0x5C65, 0x0}, {0xF9E0, 0x6613, 0x0}, {0xF9E1, 0x674E, 0x0},
    {0xF9E2, 0x68A8, 0x0}, {0xF9E3, 0x6CE5, 0x0}, {0xF9E4, 0x7406, 0x0}, {0xF9E5, 0x75E2, 0x0}, {0xF9E6, 0x7F79, 0x0},
    {0xF9E7, 0x88CF, 0x0}, {0xF9E8, 0x88E1, 0x0}, {0xF9E9, 0x91CC, 0x0}, {0xF9EA, 0x96E2, 0x0}, {0xF9EB, 0x533F, 0x0},
    {0xF9EC, 0x6EBA, 0x0}, {0xF9ED, 0x541D, 0x0}, {0xF9EE, 0x71D0, 0x0}, {0xF9EF, 0x7498, 0x0}, {0xF9F0, 0x85FA, 0x0},
    {0xF9F1, 0x96A3, 0x0}, {0xF9F2, 0x9C57, 0x0}, {0xF9F3, 0x9E9F, 0x0}, {0xF9F4, 0x6797, 0x0}, {0xF9F5, 0x6DCB, 0x0},
    {0xF9F6, 0x81E8, 0x0}, {0xF9F7, 0x7ACB, 0x0}, {0xF9F8, 0x7B20, 0x0}, {0xF9F9, 0x7C92, 0x0}, {0xF9FA, 0x72C0, 0x0},
    {0xF9FB, 0x7099, 0x0}, {0xF9FC, 0x8B58, 0x0}, {0xF9FD, 0x4EC0, 0x0}, {0xF9FE, 0x8336, 0x0}, {0xF9FF, 0x523A, 0x0},
    {0xFA00, 0x5207, 0x0}, {0xFA01, 0x5EA6, 0x0}, {0xFA02, 0x62D3, 0x0}, {0xFA03, 0x7CD6, 0x0}, {0xFA04, 0x5B85, 0x0},
    {0xFA05, 0x6D1E, 0x0}, {0xFA06, 0x66B4, 0x0}, {0xFA07, 0x8F3B, 0x0}, {0xFA08, 0x884C, 0x0}, {0xFA09, 0x964D, 0x0},
    {0xFA0A, 0x898B, 0x0}, {0xFA0B, 0x5ED3, 0x0}, {0xFA0C, 0x5140, 0x0}, {0xFA0D, 0x55C0, 0x0}, {0xFA10, 0x585A, 0x0},
    {0xFA12, 0x6674, 0x0}, {0xFA15, 0x51DE, 0x0}, {0xFA16, 0x732A, 0x0}, {0xFA17, 0x76CA, 0x0}, {0xFA18, 0x793C, 0x0},
    {0xFA19, 0x795E, 0x0}, {0xFA1A, 0x7965, 0x0}, {0xFA1B, 0x798F, 0x0}, {0xFA1C, 0x9756, 0x0}, {0xFA1D, 0x7CBE, 0x0},
    {0xFA1E, 0x7FBD, 0x0}, {0xFA20, 0x8612, 0x0}, {0xFA22, 0x8AF8, 0x0}, {0xFA25, 0x9038, 0x0}, {0xFA26, 0x90FD, 0x0},
    {0xFA2A, 0x98EF, 0x0}, {0xFA2B, 0x98FC, 0x0}, {0xFA2C, 0x9928, 0x0}, {0xFA2D, 0x9DB4, 0x0}, {0xFA2E, 0x90DE, 0x0},
    {0xFA2F, 0x96B7, 0x0}, {0xFA30, 0x4FAE, 0x0}, {0xFA31, 0x50E7, 0x0}, {0xFA32, 0x514D, 0x0}, {0xFA33, 0x52C9, 0x0},
    {0xFA34, 0x52E4, 0x0}, {0xFA35, 0x5351, 0x0}, {0xFA36, 0x559D, 0x0}, {0xFA37, 0x5606, 0x0}, {0xFA38, 0x5668, 0x0},
    {0xFA39, 0x5840, 0x0}, {0xFA3A, 0x58A8, 0x0}, {0xFA3B, 0x5C64, 0x0}, {0xFA3C, 0x5C6E, 0x0}, {0xFA3D, 0x6094, 0x0},
    {0xFA3E, 0x6168, 0x0}, {0xFA3F, 0x618E, 0x0}, {0xFA40, 0x61F2, 0x0}, {0xFA41, 0x654F, 0x0}, {0xFA42, 0x65E2, 0x0},
    {0xFA43, 0x6691, 0x0}, {0xFA44, 0x6885, 0x0}, {0xFA45, 0x6D77, 0x0}, {0xFA46, 0x6E1A, 0x0}, {0xFA47, 0x6F22, 0x0},
    {0xFA48, 0x716E, 0x0}, {0xFA49, 0x722B, 0x0}, {0xFA4A, 0x7422, 0x0}, {0xFA4B, 0x7891, 0x0}, {0xFA4C, 0x793E, 0x0},
    {0xFA4D, 0x7949, 0x0}, {0xFA4E, 0x7948, 0x0}, {0xFA4F, 0x7950, 0x0}, {0xFA50, 0x7956, 0x0}, {0xFA51, 0x795D, 0x0},
    {0xFA52, 0x798D, 0x0}, {0xFA53, 0x798E, 0x0}, {0xFA54, 0x7A40, 0x0}, {0xFA55, 0x7A81, 0x0}, {0xFA56, 0x7BC0, 0x0},
    {0xFA57, 0x7DF4, 0x0}, {0xFA58, 0x7E09, 0x0}, {0xFA59, 0x7E41, 0x0}, {0xFA5A, 0x7F72, 0x0}, {0xFA5B, 0x8005, 0x0},
    {0xFA5C, 0x81ED, 0x0}, {0xFA5D, 0x8279, 0x0}, {0xFA5E, 0x8279, 0x0}, {0xFA5F, 0x8457, 0x0}, {0xFA60, 0x8910, 0x0},
    {0xFA61, 0x8996, 0x0}, {0xFA62, 0x8B01, 0x0}, {0xFA63, 0x8B39, 0x0}, {0xFA64, 0x8CD3, 0x0}, {0xFA65, 0x8D08, 0x0},
    {0xFA66, 0x8FB6, 0x0}, {0xFA67, 0x9038, 0x0}, {0xFA68, 0x96E3, 0x0}, {0xFA69, 0x97FF, 0x0}, {0xFA6A, 0x983B, 0x0},
    {0xFA6B, 0x6075, 0x0}, {0xFA6C, 0x242EE, 0x0}, {0xFA6D, 0x8218, 0x0}, {0xFA70, 0x4E26, 0x0}, {0xFA71, 0x51B5, 0x0},
    {0xFA72, 0x5168, 0x0}, {0xFA73, 0x4F80, 0x0}, {0xFA74, 0x5145, 0x0}, {0xFA75, 0x5180, 0x0}, {0xFA76, 0x52C7, 0x0},
    {0xFA77, 0x52FA, 0x0}, {0xFA78, 0x559D, 0x0}, {0xFA79, 0x5555, 0x0}, {0xFA7A, 0x5599, 0x0}, {0xFA7B, 0x55E2, 0x0},
    {0xFA7C, 0x585A, 0x0}, {0xFA7D, 0x58B3, 0x0}, {0xFA7E, 0x5944, 0x0}, {0xFA7F, 0x5954, 0x0}, {0xFA80, 0x5A62, 0x0},
    {0xFA81, 0x5B28, 0x0}, {0xFA82, 0x5ED2, 0x0}, {0xFA83, 0x5ED9, 0x0}, {0xFA84, 0x5F69, 0x0}, {0xFA85, 0x5FAD, 0x0},
    {0xFA86, 0x60D8, 0x0}, {0xFA87, 0x614E, 0x0}, {0xFA88, 0x6108, 0x0}, {0xFA89, 0x618E, 0x0}, {0xFA8A, 0x6160, 0x0},
    {0xFA8B, 0x61F2, 0x0}, {0xFA8C, 0x6234, 0x0}, {0xFA8D, 0x63C4, 0x0}, {0xFA8E, 0x641C, 0x0}, {0xFA8F, 0x6452, 0x0},
    {0xFA90, 0x6556, 0x0}, {0xFA91, 0x6674, 0x0}, {0xFA92, 0x6717, 0x0}, {0xFA93, 0x671B, 0x0}, {0xFA94, 0x6756, 0x0},
    {0xFA95, 0x6B79, 0x0}, {0xFA96, 0x6BBA, 0x0}, {0xFA97, 0x6D41, 0x0}, {0xFA98, 0x6EDB, 0x0}, {0xFA99, 0x6ECB, 0x0},
    {0xFA9A, 0x6F22, 0x0}, {0xFA9B, 0x701E, 0x0}, {0xFA9C, 0x716E, 0x0}, {0xFA9D, 0x77A7, 0x0}, {0xFA9E, 0x7235, 0x0},
    {0xFA9F, 0x72AF, 0x0}, {0xFAA0, 0x732A, 0x0}, {0xFAA1, 0x7471, 0x0}, {0xFAA2, 0x7506, 0x0}, {0xFAA3, 0x753B, 0x0},
    {0xFAA4, 0x761D, 0x0}, {0xFAA5, 0x761F, 0x0}, {0xFAA6, 0x76CA, 0x0}, {0xFAA7, 0x76DB, 0x0}, {0xFAA8, 0x76F4, 0x0},
    {0xFAA9, 0x774A, 0x0}, {0xFAAA, 0x7740, 0x0}, {0xFAAB, 0x78CC, 0x0}, {0xFAAC, 0x7AB1, 0x0}, {0xFAAD, 0x7BC0, 0x0},
    {0xFAAE, 0x7C7B, 0x0}, {0xFAAF, 0x7D5B, 0x0}, {0xFAB0, 0x7DF4, 0x0}, {0xFAB1, 0x7F3E, 0x0}, {0xFAB2, 0x8005, 0x0},
    {0xFAB3, 0x8352, 0x0}, {0xFAB4, 0x83EF, 0x0}, {0xFAB5, 0x8779, 0x0}, {0xFAB6, 0x8941, 0x0}, {0xFAB7, 0x8986, 0x0},
    {0xFAB8, 0x8996, 0x0}, {0xFAB9, 0x8ABF, 0x0}, {0xFABA, 0x8AF8, 0x0}, {0xFABB, 0x8ACB, 0x0}, {0xFABC, 0x8B01, 0x0},
    {0xFABD, 0x8AFE, 0x0}, {0xFABE, 0x8AED, 0x0}, {0xFABF, 0x8B39, 0x0}, {0xFAC0, 0x8B8A, 0x0}, {0xFAC1, 0x8D08, 0x0},
    {0xFAC2, 0x8F38, 0x0}, {0xFAC3, 0x9072, 0x0}, {0xFAC4, 0x9199, 0x0}, {0xFAC5, 0x9276, 0x0}, {0xFAC6, 0x967C, 0x0},
    {0xFAC7, 0x96E3, 0x0}, {0xFAC8, 0x9756, 0x0}, {0xFAC9, 0x97DB, 0x0}, {0xFACA, 0x97FF, 0x0}, {0xFACB, 0x980B, 0x0},
    {0xFACC, 0x983B, 0x0}, {0xFACD, 0x9B12, 0x0}, {0xFACE, 0x9F9C, 0x0}, {0xFACF, 0x2284A, 0x0}, {0xFAD0, 0x22844, 0x0},
    {0xFAD1, 0x233D5, 0x0}, {0xFAD2, 0x3B9D, 0x0}, {0xFAD3, 0x4018, 0x0}, {0xFAD4, 0x4039, 0x0}, {0xFAD5, 0x25249, 0x0},
    {0xFAD6, 0x25CD0, 0x0}, {0xFAD7, 0x27ED3, 0x0}, {0xFAD8, 0x9F43, 0x0}, {0xFAD9, 0x9F8E, 0x0}, {0xFB1D, 0x5D9, 0x5B4},
    {0xFB1F, 0x5F2, 0x5B7}, {0xFB2A, 0x5E9, 0x5C1}, {0xFB2B, 0x5E9, 0x5C2}, {0xFB2C, 0xFB49, 0x5C1}, {0xFB2D, 0xFB49, 0x5C2},
    {0xFB2E, 0x5D0, 0x5B7}, {0xFB2F, 0x5D0, 0x5B8}, {0xFB30, 0x5D0, 0x5BC}, {0xFB31, 0x5D1, 0x5BC}, {0xFB32, 0x5D2, 0x5BC},
    {0xFB33, 0x5D3, 0x5BC}, {0xFB34, 0x5D4, 0x5BC}, {0xFB35, 0x5D5, 0x5BC}, {0xFB36, 0x5D6, 0x5BC}, {0xFB38, 0x5D8, 0x5BC},
    {0xFB39, 0x5D9, 0x5BC}, {0xFB3A, 0x5DA, 0x5BC}, {0xFB3B, 0x5DB, 0x5BC}, {0xFB3C, 0x5DC, 0x5BC}, {0xFB3E, 0x5DE, 0x5BC},
    {0xFB40, 0x5E0, 0x5BC}, {0xFB41, 0x5E1, 0x5BC}, {0xFB43, 0x5E3, 0x5BC}, {0xFB44, 0x5E4, 0x5BC}, {0xFB46, 0x5E6, 0x5BC},
    {0xFB47, 0x5E7, 0x5BC}, {0xFB48, 0x5E8, 0x5BC}, {0xFB49, 0x5E9, 0x5BC}, {0xFB4A, 0x5EA, 0x5BC}, {0xFB4B, 0x5D5, 0x5B9},
    {0xFB4C, 0x5D1, 0x5BF}, {0xFB4D, 0x5DB, 0x5BF}, {0xFB4E, 0x5E4, 0x5BF}, {0x1109A, 0x11099, 0x110BA}, {0x1109C, 0x1109B, 0x110BA},
    {0x110AB, 0x110A5, 0x110BA}, {0x1112E, 0x11131, 0x11127}, {0x1112F, 0x11132, 0x11127}, {0x1134B, 0x11347, 0x1133E}, {0x1134C, 0x11347, 0x11357},
    {0x114BB, 0x114B9, 0x114BA}, {0x114BC, 0x114B9, 0x114B0}, {0x114BE, 0x114B9, 0x114BD}, {0x115BA, 0x115B8, 0x115AF}, {0x115BB, 0x115B9, 0x115AF},
    {0x1D15E, 0x1D157, 0x1D165}, {0x1D15F, 0x1D158, 0x1D165}, {0x1D160, 0x1D15F, 0x1D16E}, {0x1D161, 0x1D15F, 0x1D16F}, {0x1D162, 0x1D15F, 0x1D170},
    {0x1D163, 0x1D15F, 0x1D171}, {0x1D164, 0x1D15F, 0x1D172}, {0x1D1BB, 0x1D1B9, 0x1D165}, {0x1D1BC, 0x1D1BA, 0x1D165}, {0x1D1BD, 0x1D1BB, 0x1D16E},
    {0x1D1BE, 0x1D1BC, 0x1D16E}, {0x1D1BF, 0x1D1BB, 0x1D16F}, {0x1D1C0, 0x1D1BC, 0x1D16F}, {0x2F800, 0x4E3D, 0x0}, {0x2F801, 0x4E38, 0x0},
    {0x2F802, 0x4E41, 0x0}, {0x2F803, 0x20122, 0x0}, {0x2F804, 0x4F60, 0x0}, {0x2F805, 0x4FAE, 0x0}, {0x2F806, 0x4FBB, 0x0},
    {0x2F807, 0x5002, 0x0}, {0x2F808, 0x507A, 0x0}, {0x2F809, 0x5099, 0x0}, {0x2F80A, 0x50E7, 0x0}, {0x2F80B, 0x50CF, 0x0},
    {0x2F80C, 0x349E, 0x0}, {0x2F80D, 0x2063A, 0x0}, {0x2F80E, 0x514D, 0x0}, {0x2F80F, 0x5154, 0x0}, {0x2F810, 0x5164, 0x0},
    {0x2F811, 0x5177, 0x0}, {0x2F812, 0x2051C, 0x0}, {0x2F813, 0x34B9, 0x0}, {0x2F814, 0x5167, 0x0}, {0x2F815, 0x518D, 0x0},
    {0x2F816, 0x2054B, 0x0}, {0x2F817, 0x5197, 0x0}, {0x2F818, 0x51A4, 0x0}, {0x2F819, 0x4ECC, 0x0}, {0x2F81A, 0x51AC, 0x0},
    {0x2F81B, 0x51B5, 0x0}, {0x2F81C, 0x291DF, 0x0}, {0x2F81D, 0x51F5, 0x0}, {0x2F81E, 0x5203, 0x0}, {0x2F81F, 0x34DF, 0x0},
    {0x2F820, 0x523B, 0x0}, {0x2F821, 0x5246, 0x0}, {0x2F822, 0x5272, 0x0}, {0x2F823, 0x5277, 0x0}, {0x2F824, 0x3515, 0x0},
    {0x2F825, 0x52C7, 0x0}, {0x2F826, 0x52C9, 0x0}, {0x2F827, 0x52E4, 0x0}, {0x2F828, 0x52FA, 0x0}, {0x2F829, 0x5305, 0x0},
    {0x2F82A, 0x5306, 0x0}, {0x2F82B, 0x5317, 0x0}, {0x2F82C, 0x5349, 0x0}, {0x2F82D, 0x5351, 0x0}, {0x2F82E, 0x535A, 0x0},
    {0x2F82F, 0x5373, 0x0}, {0x2F830, 0x537D, 0x0}, {0x2F831, 0x537F, 0x0}, {0x2F832, 0x537F, 0x0}, {0x2F833, 0x537F, 0x0},
    {0x2F834, 0x20A2C, 0x0}, {0x2F835, 0x7070, 0x0}, {0x2F836, 0x53CA, 0x0}, {0x2F837, 0x53DF, 0x0}, {0x2F838, 0x20B63, 0x0},
    {0x2F839, 0x53EB, 0x0}, {0x2F83A, 0x53F1, 0x0}, {0x2F83B, 0x5406, 0x0}, {0x2F83C, 0x549E, 0x0}, {0x2F83D, 0x5438, 0x0},
    {0x2F83E, 0x5448, 0x0}, {0x2F83F, 0x5468, 0x0}, {0x2F840, 0x54A2, 0x0}, {0x2F841, 0x54F6, 0x0}, {0x2F842, 0x5510, 0x0},
    {0x2F843, 0x5553, 0x0}, {0x2F844, 0x5563, 0x0}, {0x2F845, 0x5584, 0x0}, {0x2F846, 0x5584, 0x0}, {0x2F847, 0x5599, 0x0},
    {0x2F848, 0x55AB, 0x0}, {0x2F849, 0x55B3, 0x0}, {0x2F84A, 0x55C2, 0x0}, {0x2F84B, 0x5716, 0x0}, {0x2F84C, 0x5606, 0x0},
    {0x2F84D, 0x5717, 0x0}, {0x2F84E, 0x5651, 0x0}, {0x2F84F, 0x5674, 0x0}, {0x2F850, 0x5207, 0x0}, {0x2F851, 0x58EE, 0x0},
    {0x2F852, 0x57CE, 0x0}, {0x2F853, 0x57F4, 0x0}, {0x2F854, 0x580D, 0x0}, {0x2F855, 0x578B, 0x0}, {0x2F856, 0x5832, 0x0},
    {0x2F857, 0x5831, 0x0}, {0x2F858, 0x58AC, 0x0}, {0x2F859, 0x214E4, 0x0}, {0x2F85A, 0x58F2, 0x0}, {0x2F85B, 0x58F7, 0x0},
    {0x2F85C, 0x5906, 0x0}, {0x2F85D, 0x591A, 0x0}, {0x2F85E, 0x5922, 0x0}, {0x2F85F, 0x5962, 0x0}, {0x2F860, 0x216A8, 0x0},
    {0x2F861, 0x216EA, 0x0}, {0x2F862, 0x59EC, 0x0}, {0x2F863, 0x5A1B, 0x0}, {0x2F864, 0x5A27, 0x0}, {0x2F865, 0x59D8, 0x0},
    {0x2F866, 0x5A66, 0x0}, {0x2F867, 0x36EE, 0x0}, {0x2F868, 0x36FC, 0x0}, {0x2F869, 0x5B08, 0x0}, {0x2F86A, 0x5B3E, 0x0},
    {0x2F86B, 0x5B3E, 0x0}, {0x2F86C, 0x219C8, 0x0}, {0x2F86D, 0x5BC3, 0x0}, {0x2F86E, 0x5BD8, 0x0}, {0x2F86F, 0x5BE7, 0x0},
    {0x2F870, 0x5BF3, 0x0}, {0x2F871, 0x21B18, 0x0}, {0x2F872, 0x5BFF, 0x0}, {0x2F873, 0x5C06, 0x0}, {0x2F874, 0x5F53, 0x0},
    {0x2F875, 0x5C22, 0x0}, {0x2F876, 0x3781, 0x0}, {0x2F877, 0x5C60, 0x0}, {0x2F878, 0x5C6E, 0x0}, {0x2F879, 0x5CC0, 0x0},
    {0x2F87A, 0x5C8D, 0x0}, {0x2F87B, 0x21DE4, 0x0}, {0x2F87C, 0x5D43, 0x0}, {0x2F87D, 0x21DE6, 0x0}, {0x2F87E, 0x5D6E, 0x0},
    {0x2F87F, 0x5D6B, 0x0}, {0x2F880, 0x5D7C, 0x0}, {0x2F881, 0x5DE1, 0x0}, {0x2F882, 0x5DE2, 0x0}, {0x2F883, 0x382F, 0x0},
    {0x2F884, 0x5DFD, 0x0}, {0x2F885, 0x5E28, 0x0}, {0x2F886, 0x5E3D, 0x0}, {0x2F887, 0x5E69, 0x0}, {0x2F888, 0x3862, 0x0},
    {0x2F889, 0x22183, 0x0}, {0x2F88A, 0x387C, 0x0}, {0x2F88B, 0x5EB0, 0x0}, {0x2F88C, 0x5EB3, 0x0}, {0x2F88D, 0x5EB6, 0x0},
    {0x2F88E, 0x5ECA, 0x0}, {0x2F88F, 0x2A392, 0x0}, {0x2F890, 0x5EFE, 0x0}, {0x2F891, 0x22331, 0x0}, {0x2F892, 0x22331, 0x0},
    {0x2F893, 0x8201, 0x0}, {0x2F894, 0x5F22, 0x0}, {0x2F895, 0x5F22, 0x0}, {0x2F896, 0x38C7, 0x0}, {0x2F897, 0x232B8, 0x0},
    {0x2F898, 0x261DA, 0x0}, {0x2F899, 0x5F62, 0x0}, {0x2F89A, 0x5F6B, 0x0}, {0x2F89B, 0x38E3, 0x0}, {0x2F89C, 0x5F9A, 0x0},
    {0x2F89D, 0x5FCD, 0x0}, {0x2F89E, 0x5FD7, 0x0}, {0x2F89F, 0x5FF9, 0x0}, {0x2F8A0, 0x6081, 0x0}, {0x2F8A1, 0x393A, 0x0},
    {0x2F8A2, 0x391C, 0x0}, {0x2F8A3, 0x6094, 0x0}, {0x2F8A4, 0x226D4, 0x0}, {0x2F8A5, 0x60C7, 0x0}, {0x2F8A6, 0x6148, 0x0},
    {0x2F8A7, 0x614C, 0x0}, {0x2F8A8, 0x614E, 0x0}, {0x2F8A9, 0x614C, 0x0}, {0x2F8AA, 0x617A, 0x0}, {0x2F8AB, 0x618E, 0x0},
    {0x2F8AC, 0x61B2, 0x0}, {0x2F8AD, 0x61A4, 0x0}, {0x2F8AE, 0x61AF, 0x0}, {0x2F8AF, 0x61DE, 0x0}, {0x2F8B0, 0x61F2, 0x0},
    {0x2F8B1, 0x61F6, 0x0}, {0x2F8B2, 0x6210, 0x0}, {0x2F8B3, 0x621B, 0x0}, {0x2F8B4, 0x625D, 0x0}, {0x2F8B5, 0x62B1, 0x0},
    {0x2F8B6, 0x62D4, 0x0}, {0x2F8B7, 0x6350, 0x0}, {0x2F8B8, 0x22B0C, 0x0}, {0x2F8B9, 0x633D, 0x0}, {0x2F8BA, 0x62FC, 0x0},
    {0x2F8BB, 0x6368, 0x0}, {0x2F8BC, 0x6383, 0x0}, {0x2F8BD, 0x63E4, 0x0}, {0x2F8BE, 0x22BF1, 0x0}, {0x2F8BF, 0x6422, 0x0},
    {0x2F8C0, 0x63C5, 0x0}, {0x2F8C1, 0x63A9, 0x0}, {0x2F8C2, 0x3A2E, 0x0}, {0x2F8C3, 0x6469, 0x0}, {0x2F8C4, 0x647E, 0x0},
    {0x2F8C5, 0x649D, 0x0}, {0x2F8C6, 0x6477, 0x0}, {0x2F8C7, 0x3A6C, 0x0}, {0x2F8C8, 0x654F, 0x0}, {0x2F8C9, 0x656C, 0x0},
    {0x2F8CA, 0x2300A, 0x0}, {0x2F8CB, 0x65E3, 0x0}, {0x2F8CC, 0x66F8, 0x0}, {0x2F8CD, 0x6649, 0x0}, {0x2F8CE, 0x3B19, 0x0},
    {0x2F8CF, 0x6691, 0x0}, {0x2F8D0, 0x3B08, 0x0}, {0x2F8D1, 0x3AE4, 0x0}, {0x2F8D2, 0x5192, 0x0}, {0x2F8D3, 0x5195, 0x0},
    {0x2F8D4, 0x6700, 0x0}, {0x2F8D5, 0x669C, 0x0}, {0x2F8D6, 0x80AD, 0x0}, {0x2F8D7, 0x43D9, 0x0}, {0x2F8D8, 0x6717, 0x0},
    {0x2F8D9, 0x671B, 0x0}, {0x2F8DA, 0x6721, 0x0}, {0x2F8DB, 0x675E, 0x0}, {0x2F8DC, 0x6753, 0x0}, {0x2F8DD, 0x233C3, 0x0},
    {0x2F8DE, 0x3B49, 0x0}, {0x2F8DF, 0x67FA, 0x0}, {0x2F8E0, 0x6785, 0x0}, {0x2F8E1, 0x6852, 0x0}, {0x2F8E2, 0x6885, 0x0},
    {0x2F8E3, 0x2346D, 0x0}, {0x2F8E4, 0x688E, 0x0}, {0x2F8E5, 0x681F, 0x0}, {0x2F8E6, 0x6914, 0x0}, {0x2F8E7, 0x3B9D, 0x0},
    {0x2F8E8, 0x6942, 0x0}, {0x2F8E9, 0x69A3, 0x0}, {0x2F8EA, 0x69EA, 0x0}, {0x2F8EB, 0x6AA8, 0x0}, {0x2F8EC, 0x236A3, 0x0},
    {0x2F8ED, 0x6ADB, 0x0}, {0x2F8EE, 0x3C18, 0x0}, {0x2F8EF, 0x6B21, 0x0}, {0x2F8F0, 0x238A7, 0x0}, {0x2F8F1, 0x6B54, 0x0},
    {0x2F8F2, 0x3C4E, 0x0}, {0x2F8F3, 0x6B72, 0x0}, {0x2F8F4, 0x6B9F, 0x0}, {0x2F8F5, 0x6BBA, 0x0}, {0x2F8F6, 0x6BBB, 0x0},
    {0x2F8F7, 0x23A8D, 0x0}, {0x2F8F8, 0x21D0B, 0x0}, {0x2F8F9, 0x23AFA, 0x0}, {0x2F8FA, 0x6C4E, 0x0}, {0x2F8FB, 0x23CBC, 0x0},
    {0x2F8FC, 0x6CBF, 0x0}, {0x2F8FD, 0x6CCD, 0x0}, {0x2F8FE, 0x6C67, 0x0}, {0x2F8FF, 0x6D16, 0x0}, {0x2F900, 0x6D3E, 0x0},
    {0x2F901, 0x6D77, 0x0}, {0x2F902, 0x6D41, 0x0}, {0x2F903, 0x6D69, 0x0}, {0x2F904, 0x6D78, 0x0}, {0x2F905, 0x6D85, 0x0},
    {0x2F906, 0x23D1E, 0x0}, {0x2F907, 0x6D34, 0x0}, {0x2F908, 0x6E2F, 0x0}, {0x2F909, 0x6E6E, 0x0}, {0x2F90A, 0x3D33, 0x0},
    {0x2F90B, 0x6ECB, 0x0}, {0x2F90C, 0x6EC7, 0x0}, {0x2F90D, 0x23ED1, 0x0}, {0x2F90E, 0x6DF9, 0x0}, {0x2F90F, 0x6F6E, 0x0},
    {0x2F910, 0x23F5E, 0x0}, {0x2F911, 0x23F8E, 0x0}, {0x2F912, 0x6FC6, 0x0}, {0x2F913, 0x7039, 0x0}, {0x2F914, 0x701E, 0x0},
    {0x2F915, 0x701B, 0x0}, {0x2F916, 0x3D96, 0x0}, {0x2F917, 0x704A, 0x0}, {0x2F918, 0x707D, 0x0}, {0x2F919, 0x7077, 0x0},
    {0x2F91A, 0x70AD, 0x0}, {0x2F91B, 0x20525, 0x0}, {0x2F91C, 0x7145, 0x0}, {0x2F91D, 0x24263, 0x0}, {0x2F91E, 0x719C, 0x0},
    {0x2F91F, 0x243AB, 0x0}, {0x2F920, 0x7228, 0x0}, {0x2F921, 0x7235, 0x0}, {0x2F922, 0x7250, 0x0}, {0x2F923, 0x24608, 0x0},
    {0x2F924, 0x7280, 0x0}, {0x2F925, 0x7295, 0x0}, {0x2F926, 0x24735, 0x0}, {0x2F927, 0x24814, 0x0}, {0x2F928, 0x737A, 0x0},
    {0x2F929, 0x738B, 0x0}, {0x2F92A, 0x3EAC, 0x0}, {0x2F92B, 0x73A5, 0x0}, {0x2F92C, 0x3EB8, 0x0}, {0x2F92D, 0x3EB8, 0x0},
    {0x2F92E, 0x7447, 0x0}, {0x2F92F, 0x745C, 0x0}, {0x2F930, 0x7471, 0x0}, {0x2F931, 0x7485, 0x0}, {0x2F932, 0x74CA, 0x0},
    {0x2F933, 0x3F1B, 0x0}, {0x2F934, 0x7524, 0x0}, {0x2F935, 0x24C36, 0x0}, {0x2F936, 0x753E, 0x0}, {0x2F937, 0x24C92, 0x0},
    {0x2F938, 0x7570, 0x0}, {0x2F939, 0x2219F, 0x0}, {0x2F93A, 0x7610, 0x0}, {0x2F93B, 0x24FA1, 0x0}, {0x2F93C, 0x24FB8, 0x0},
    {0x2F93D, 0x25044, 0x0}, {0x2F93E, 0x3FFC, 0x0}, {0x2F93F, 0x4008, 0x0}, {0x2F940, 0x76F4, 0x0}, {0x2F941, 0x250F3, 0x0},
    {0x2F942, 0x250F2, 0x0}, {0x2F943, 0x25119, 0x0}, {0x2F944, 0x25133, 0x0}, {0x2F945, 0x771E, 0x0}, {0x2F946, 0x771F, 0x0},
    {0x2F947, 0x771F, 0x0}, {0x2F948, 0x774A, 0x0}, {0x2F949, 0x4039, 0x0}, {0x2F94A, 0x778B, 0x0}, {0x2F94B, 0x4046, 0x0},
    {0x2F94C, 0x4096, 0x0}, {0x2F94D, 0x2541D, 0x0}, {0x2F94E, 0x784E, 0x0}, {0x2F94F, 0x788C, 0x0}, {0x2F950, 0x78CC, 0x0},
    {0x2F951, 0x40E3, 0x0}, {0x2F952, 0x25626, 0x0}, {0x2F953, 0x7956, 0x0}, {0x2F954, 0x2569A, 0x0}, {0x2F955, 0x256C5, 0x0},
    {0x2F956, 0x798F, 0x0}, {0x2F957, 0x79EB, 0x0}, {0x2F958, 0x412F, 0x0}, {0x2F959, 0x7A40, 0x0}, {0x2F95A, 0x7A4A, 0x0},
    {0x2F95B, 0x7A4F, 0x0}, {0x2F95C, 0x2597C, 0x0}, {0x2F95D, 0x25AA7, 0x0}, {0x2F95E, 0x25AA7, 0x0}, {0x2F95F, 0x7AEE, 0x0},
    {0x2F960, 0x4202, 0x0}, {0x2F961, 0x25BAB, 0x0}, {0x2F962, 0x7BC6, 0x0}, {0x2F963, 0x7BC9, 0x0}, {0x2F964, 0x4227, 0x0},
    {0x2F965, 0x25C80, 0x0}, {0x2F966, 0x7CD2, 0x0}, {0x2F967, 0x42A0, 0x0}, {0x2F968, 0x7CE8, 0x0}, {0x2F969, 0x7CE3, 0x0},
    {0x2F96A, 0x7D00, 0x0}, {0x2F96B, 0x25F86, 0x0}, {0x2F96C, 0x7D63, 0x0}, {0x2F96D, 0x4301, 0x0}, {0x2F96E, 0x7DC7, 0x0},
    {0x2F96F, 0x7E02, 0x0}, {0x2F970, 0x7E45, 0x0}, {0x2F971, 0x4334, 0x0}, {0x2F972, 0x26228, 0x0}, {0x2F973, 0x26247, 0x0},
    {0x2F974, 0x4359, 0x0}, {0x2F975, 0x262D9, 0x0}, {0x2F976, 0x7F7A, 0x0}, {0x2F977, 0x2633E, 0x0}, {0x2F978, 0x7F95, 0x0},
    {0x2F979, 0x7FFA, 0x0}, {0x2F97A, 0x8005, 0x0}, {0x2F97B, 0x264DA, 0x0}, {0x2F97C, 0x26523, 0x0}, {0x2F97D, 0x8060, 0x0},
    {0x2F97E, 0x265A8, 0x0}, {0x2F97F, 0x8070, 0x0}, {0x2F980, 0x2335F, 0x0}, {0x2F981, 0x43D5, 0x0}, {0x2F982, 0x80B2, 0x0},
    {0x2F983, 0x8103, 0x0}, {0x2F984, 0x440B, 0x0}, {0x2F985, 0x813E, 0x0}, {0x2F986, 0x5AB5, 0x0}, {0x2F987, 0x267A7, 0x0},
    {0x2F988, 0x267B5, 0x0}, {0x2F989, 0x23393, 0x0}, {0x2F98A, 0x2339C, 0x0}, {0x2F98B, 0x8201, 0x0}, {0x2F98C, 0x8204, 0x0},
    {0x2F98D, 0x8F9E, 0x0}, {0x2F98E, 0x446B, 0x0}, {0x2F98F, 0x8291, 0x0}, {0x2F990, 0x828B, 0x0}, {0x2F991, 0x829D, 0x0},
    {0x2F992, 0x52B3, 0x0}, {0x2F993, 0x82B1, 0x0}, {0x2F994, 0x82B3, 0x0}, {0x2F995, 0x82BD, 0x0}, {0x2F996, 0x82E6, 0x0},
    {0x2F997, 0x26B3C, 0x0}, {0x2F998, 0x82E5, 0x0}, {0x2F999, 0x831D, 0x0}, {0x2F99A, 0x8363, 0x0}, {0x2F99B, 0x83AD, 0x0},
    {0x2F99C, 0x8323, 0x0}, {0x2F99D, 0x83BD, 0x0}, {0x2F99E, 0x83E7, 0x0}, {0x2F99F, 0x8457, 0x0}, {0x2F9A0, 0x8353, 0x0},
    {0x2F9A1, 0x83CA, 0x0}, {0x2F9A2, 0x83CC, 0x0}, {0x2F9A3, 0x83DC, 0x0}, {0x2F9A4, 0x26C36, 0x0}, {0x2F9A5, 0x26D6B, 0x0},
    {0x2F9A6, 0x26CD5, 0x0}, {0x2F9A7, 0x452B, 0x0}, {0x2F9A8, 0x84F1, 0x0}, {0x2F9A9, 0x84F3, 0x0}, {0x2F9AA, 0x8516, 0x0},
    {0x2F9AB, 0x273CA, 0x0}, {0x2F9AC, 0x8564, 0x0}, {0x2F9AD, 0x26F2C, 0x0}, {0x2F9AE, 0x455D, 0x0}, {0x2F9AF, 0x4561, 0x0},
    {0x2F9B0, 0x26FB1, 0x0}, {0x2F9B1, 0x270D2, 0x0}, {0x2F9B2, 0x456B, 0x0}, {0x2F9B3, 0x8650, 0x0}, {0x2F9B4, 0x865C, 0x0},
    {0x2F9B5, 0x8667, 0x0}, {0x2F9B6, 0x8669, 0x0}, {0x2F9B7, 0x86A9, 0x0}, {0x2F9B8, 0x8688, 0x0}, {0x2F9B9, 0x870E, 0x0},
    {0x2F9BA, 0x86E2, 0x0}, {0x2F9BB, 0x8779, 0x0}, {0x2F9BC, 0x8728, 0x0}, {0x2F9BD, 0x876B, 0x0}, {0x2F9BE, 0x8786, 0x0},
    {0x2F9BF, 0x45D7, 0x0}, {0x2F9C0, 0x87E1, 0x0}, {0x2F9C1, 0x8801, 0x0}, {0x2F9C2, 0x45F9, 0x0}, {0x2F9C3, 0x8860, 0x0},
    {0x2F9C4, 0x8863, 0x0}, {0x2F9C5, 0x27667, 0x0}, {0x2F9C6, 0x88D7, 0x0}, {0x2F9C7, 0x88DE, 0x0}, {0x2F9C8, 0x4635, 0x0},
    {0x2F9C9, 0x88FA, 0x0}, {0x2F9CA, 0x34BB, 0x0}, {0x2F9CB, 0x278AE, 0x0}, {0x2F9CC, 0x27966, 0x0}, {0x2F9CD, 0x46BE, 0x0},
    {0x2F9CE, 0x46C7, 0x0}, {0x2F9CF, 0x8AA0, 0x0}, {0x2F9D0, 0x8AED, 0x0}, {0x2F9D1, 0x8B8A, 0x0}, {0x2F9D2, 0x8C55, 0x0},
    {0x2F9D3, 0x27CA8, 0x0}, {0x2F9D4, 0x8CAB, 0x0}, {0x2F9D5, 0x8CC1, 0x0}, {0x2F9D6, 0x8D1B, 0x0}, {0x2F9D7, 0x8D77, 0x0},
    {0x2F9D8, 0x27F2F, 0x0}, {0x2F9D9, 0x20804, 0x0}, {0x2F9DA, 0x8DCB, 0x0}, {0x2F9DB, 0x8DBC, 0x0}, {0x2F9DC, 0x8DF0, 0x0},
    {0x2F9DD, 0x208DE, 0x0}, {0x2F9DE, 0x8ED4, 0x0}, {0x2F9DF, 0x8F38, 0x0}, {0x2F9E0, 0x285D2, 0x0}, {0x2F9E1, 0x285ED, 0x0},
    {0x2F9E2, 0x9094, 0x0}, {0x2F9E3, 0x90F1, 0x0}, {0x2F9E4, 0x9111, 0x0}, {0x2F9E5, 0x2872E, 0x0}, {0x2F9E6, 0x911B, 0x0},
    {0x2F9E7, 0x9238, 0x0}, {0x2F9E8, 0x92D7, 0x0}, {0x2F9E9, 0x92D8, 0x0}, {0x2F9EA, 0x927C, 0x0}, {0x2F9EB, 0x93F9, 0x0},
    {0x2F9EC, 0x9415, 0x0}, {0x2F9ED, 0x28BFA, 0x0}, {0x2F9EE, 0x958B, 0x0}, {0x2F9EF, 0x4995, 0x0}, {0x2F9F0, 0x95B7, 0x0},
    {0x2F9F1, 0x28D77, 0x0}, {0x2F9F2, 0x49E6, 0x0}, {0x2F9F3, 0x96C3, 0x0}, {0x2F9F4, 0x5DB2, 0x0}, {0x2F9F5, 0x9723, 0x0},
    {0x2F9F6, 0x29145, 0x0}, {0x2F9F7, 0x2921A, 0x0}, {0x2F9F8, 0x4A6E, 0x0}, {0x2F9F9, 0x4A76, 0x0}, {0x2F9FA, 0x97E0, 0x0},
    {0x2F9FB, 0x2940A, 0x0}, {0x2F9FC, 0x4AB2, 0x0}, {0x2F9FD, 0x29496, 0x0}, {0x2F9FE, 0x980B, 0x0}, {0x2F9FF, 0x980B, 0x0},
    {0x2FA00, 0x9829, 0x0}, {0x2FA01, 0x295B6, 0x0}, {0x2FA02, 0x98E2, 0x0}, {0x2FA03, 0x4B33, 0x0}, {0x2FA04, 0x9929, 0x0},
    {0x2FA05, 0x99A7, 0x0}, {0x2FA06, 0x99C2, 0x0}, {0x2FA07, 0x99FE, 0x0}, {0x2FA08, 0x4BCE, 0x0}, {0x2FA09, 0x29B30, 0x0},
    {0x2FA0A, 0x9B12, 0x0}, {0x2FA0B, 0x9C40, 0x0}, {0x2FA0C, 0x9CFD, 0x0}, {0x2FA0D, 0x4CCE, 0x0}, {0x2FA0E, 0x4CED, 0x0},
    {0x2FA0F, 0x9D67, 0x0}, {0x2FA10, 0x2A0CE, 0x0}, {0x2FA11, 0x4CF8, 0x0}, {0x2FA12, 0x2A105, 0x0}, {0x2FA13, 0x2A20E, 0x0},
    {0x2FA14, 0x2A291, 0x0}, {0x2FA15, 0x9EBB, 0x0}, {0x2FA16, 0x4D56, 0x0}, {0x2FA17, 0x9EF9, 0x0}, {0x2FA18, 0x9EFE, 0x0},
    {0x2FA19, 0x9F05, 0x0}, {0x2FA1A, 0x9F0F, 0x0}, {0x2FA1B, 0x9F16, 0x0}, {0x2FA1C, 0x9F3B, 0x0}, {0x2FA1D, 0x2A600, 0x0},
};
static const uint16_t nfc_compositions[] = {   /* 940 entries */
    912, 909, 913, 0, 1, 2, 3, 53, 55, 238, 4, 572, 5, 165, 208, 210,
    570, 415, 57, 417, 419, 421, 59, 61, 63, 65, 6, 425, 67, 427, 431, 433,
    429, 7, 8, 9, 598, 69, 71, 73, 10, 596, 77, 212, 214, 594, 240, 75,
    439, 441, 445, 198, 79, 447, 81, 83, 187, 85, 87, 449, 453, 236, 451, 455,
    457, 11, 12, 13, 89, 91, 93, 97, 14, 610, 167, 216, 218, 612, 95, 459,
    98, 463, 189, 465, 100, 467, 102, 106, 469, 104, 475, 473, 477, 479, 481, 200,
    108, 15, 483, 112, 485, 110, 489, 487, 16, 17, 18, 19, 114, 116, 246, 20,
    616, 118, 169, 220, 222, 161, 614, 191, 499, 501, 120, 503, 124, 224, 226, 505,
    122, 509, 126, 128, 511, 132, 513, 232, 130, 521, 136, 523, 234, 134, 527, 525,
    21, 22, 23, 138, 140, 142, 24, 640, 144, 146, 171, 228, 230, 163, 638, 529,
    148, 533, 531, 539, 541, 543, 545, 150, 549, 547, 551, 553, 555, 652, 25, 152,
    658, 250, 557, 154, 656, 654, 155, 559, 157, 159, 561, 563, 26, 27, 28, 29,
    54, 56, 239, 30, 573, 31, 166, 209, 211, 571, 416, 58, 418, 420, 422, 60,
    62, 64, 66, 32, 426, 68, 428, 432, 434, 430, 33, 34, 35, 599, 70, 72,
    74, 36, 597, 78, 213, 215, 595, 241, 76, 440, 442, 446, 199, 80, 448, 82,
    84, 188, 86, 88, 450, 454, 237, 452, 456, 458, 565, 37, 38, 39, 90, 92,
    94, 40, 611, 168, 217, 219, 613, 96, 460, 99, 197, 464, 190, 466, 101, 468,
    103, 107, 470, 105, 476, 474, 478, 480, 482, 201, 109, 41, 484, 113, 486, 111,
    490, 488, 42, 43, 44, 45, 115, 117, 247, 46, 617, 119, 170, 221, 223, 162,
    615, 192, 500, 502, 121, 504, 125, 225, 227, 506, 123, 510, 127, 129, 512, 133,
    514, 233, 131, 522, 566, 137, 524, 235, 135, 528, 526, 47, 48, 49, 139, 141,
    143, 50, 641, 145, 147, 172, 229, 231, 164, 639, 530, 149, 534, 532, 540, 542,
    544, 546, 151, 550, 548, 567, 552, 554, 556, 653, 51, 153, 659, 251, 558, 52,
    657, 568, 655, 156, 560, 158, 160, 562, 564, 875, 258, 835, 576, 574, 580, 578,
    181, 202, 204, 185, 423, 602, 600, 606, 604, 461, 620, 618, 624, 622, 491, 244,
    493, 242, 206, 179, 175, 173, 177, 577, 575, 581, 579, 182, 203, 205, 186, 424,
    603, 601, 607, 605, 462, 621, 619, 625, 623, 492, 245, 494, 243, 207, 180, 176,
    174, 178, 586, 584, 590, 588, 587, 585, 591, 589, 435, 437, 436, 438, 495, 497,
    496, 498, 515, 516, 517, 518, 535, 536, 537, 538, 569, 630, 628, 634, 632, 636,
    631, 629, 635, 633, 637, 644, 642, 648, 646, 650, 645, 643, 649, 647, 651, 195,
    193, 194, 183, 184, 443, 444, 248, 249, 196, 831, 259, 830, 829, 668, 669, 833,
    841, 261, 682, 683, 843, 262, 696, 697, 845, 857, 263, 856, 855, 268, 712, 713,
    883, 264, 726, 727, 874, 872, 265, 871, 870, 269, 740, 885, 266, 752, 753, 887,
    826, 838, 760, 270, 823, 822, 660, 661, 827, 825, 762, 271, 676, 677, 764, 272,
    688, 689, 839, 837, 766, 273, 850, 849, 275, 704, 705, 853, 768, 277, 720, 721,
    866, 867, 770, 278, 863, 862, 276, 732, 733, 868, 772, 279, 744, 745, 881, 879,
    851, 267, 854, 864, 274, 869, 880, 280, 281, 285, 302, 304, 284, 282, 306, 283,
    300, 310, 312, 287, 314, 289, 316, 286, 318, 324, 288, 326, 328, 330, 332, 322,
    303, 305, 293, 291, 307, 292, 301, 311, 313, 296, 315, 290, 317, 295, 319, 325,
    297, 327, 329, 331, 333, 323, 294, 298, 299, 308, 309, 320, 321, 334, 335, 337,
    336, 338, 340, 341, 339, 342, 343, 344, 353, 354, 365, 364, 366, 369, 370, 372,
    371, 373, 374, 377, 375, 376, 378, 379, 381, 380, 382, 383, 385, 384, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 471, 472, 507, 508, 519, 520,
    582, 592, 583, 593, 608, 609, 626, 627, 662, 664, 666, 774, 663, 665, 667, 775,
    776, 777, 778, 779, 780, 781, 670, 672, 674, 782, 671, 673, 675, 783, 784, 785,
    786, 787, 788, 789, 678, 680, 679, 681, 684, 686, 685, 687, 690, 692, 694, 790,
    691, 693, 695, 791, 792, 793, 794, 795, 796, 797, 698, 700, 702, 798, 699, 701,
    703, 799, 800, 801, 802, 803, 804, 805, 706, 708, 710, 707, 709, 711, 714, 716,
    718, 715, 717, 719, 722, 724, 723, 725, 728, 730, 729, 731, 734, 736, 738, 735,
    737, 739, 741, 742, 743, 746, 748, 750, 806, 747, 749, 751, 807, 808, 809, 810,
    811, 812, 813, 754, 756, 758, 814, 755, 757, 759, 815, 816, 817, 818, 819, 820,
    821, 824, 836, 878, 828, 846, 847, 848, 840, 882, 859, 860, 861, 894, 895, 896,
    897, 899, 898, 900, 901, 902, 903, 904, 905, 906, 907, 908, 911, 910, 914, 915,
    916, 917, 918, 919, 920, 921, 930, 931, 922, 923, 924, 925, 932, 933, 926, 927,
    928, 929, 934, 935, 936, 937, 966, 941, 942, 943, 944, 945, 946, 947, 948, 949,
    950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965,
    967, 993, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981,
    982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 994, 995, 996, 997, 998,
    1493, 1494, 1495, 1496, 1497, 1498, 1499, 1501, 1500, 1502, 1503, 1504,
};
static const uint32_t nfc_unstable[][2] = {   /* 111 ranges */
    {0x300, 0x304}, {0x306, 0x30C}, {0x30F, 0x30F}, {0x311, 0x311}, {0x313, 0x314}, {0x31B, 0x31B},
    {0x323, 0x328}, {0x32D, 0x32E}, {0x330, 0x331}, {0x338, 0x338}, {0x340, 0x345}, {0x374, 0x374},
    {0x37E, 0x37E}, {0x387, 0x387}, {0x653, 0x655}, {0x93C, 0x93C}, {0x958, 0x95F}, {0x9BE, 0x9BE},
    {0x9D7, 0x9D7}, {0x9DC, 0x9DD}, {0x9DF, 0x9DF}, {0xA33, 0xA33}, {0xA36, 0xA36}, {0xA59, 0xA5B},
    {0xA5E, 0xA5E}, {0xB3E, 0xB3E}, {0xB56, 0xB57}, {0xB5C, 0xB5D}, {0xBBE, 0xBBE}, {0xBD7, 0xBD7},
    {0xC56, 0xC56}, {0xCC2, 0xCC2}, {0xCD5, 0xCD6}, {0xD3E, 0xD3E}, {0xD57, 0xD57}, {0xDCA, 0xDCA},
    {0xDCF, 0xDCF}, {0xDDF, 0xDDF}, {0xF43, 0xF43}, {0xF4D, 0xF4D}, {0xF52, 0xF52}, {0xF57, 0xF57},
    {0xF5C, 0xF5C}, {0xF69, 0xF69}, {0xF73, 0xF73}, {0xF75, 0xF76}, {0xF78, 0xF78}, {0xF81, 0xF81},
    {0xF93, 0xF93}, {0xF9D, 0xF9D}, {0xFA2, 0xFA2}, {0xFA7, 0xFA7}, {0xFAC, 0xFAC}, {0xFB9, 0xFB9},
    {0x102E, 0x102E}, {0x1161, 0x1175}, {0x11A8, 0x11C2}, {0x1B35, 0x1B35}, {0x1F71, 0x1F71}, {0x1F73, 0x1F73},
    {0x1F75, 0x1F75}, {0x1F77, 0x1F77}, {0x1F79, 0x1F79}, {0x1F7B, 0x1F7B}, {0x1F7D, 0x1F7D}, {0x1FBB, 0x1FBB},
    {0x1FBE, 0x1FBE}, {0x1FC9, 0x1FC9}, {0x1FCB, 0x1FCB}, {0x1FD3, 0x1FD3}, {0x1FDB, 0x1FDB}, {0x1FE3, 0x1FE3},
    {0x1FEB, 0x1FEB}, {0x1FEE, 0x1FEF}, {0x1FF9, 0x1FF9}, {0x1FFB, 0x1FFB}, {0x1FFD, 0x1FFD}, {0x2000, 0x2001},
    {0x2126, 0x2126}, {0x212A, 0x212B}, {0x2329, 0x232A}, {0x2ADC, 0x2ADC}, {0x3099, 0x309A}, {0xF900, 0xFA0D},
    {0xFA10, 0xFA10}, {0xFA12, 0xFA12}, {0xFA15, 0xFA1E}, {0xFA20, 0xFA20}, {0xFA22, 0xFA22}, {0xFA25, 0xFA26},
    {0xFA2A, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB1F}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C},
    {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44}, {0xFB46, 0xFB4E}, {0x110BA, 0x110BA}, {0x11127, 0x11127},
    {0x1133E, 0x1133E}, {0x11357, 0x11357}, {0x114B0, 0x114B0}, {0x114BA, 0x114BA}, {0x114BD, 0x114BD}, {0x115AF, 0x115AF},
    {0x1D15E, 0x1D164}, {0x1D1BB, 0x1D1C0}, {0x2F800, 0x2FA1D},
};

static int in_ranges(uint32_t cp, const uint32_t (*r)[2], int n)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

#define N_RANGES(t) ((int)(sizeof t / sizeof t[0]))
static int is_letter(uint32_t cp) { return cp < 0x80 ? ((cp | 32) >= 'a' && (cp | 32) <= 'z') : in_ranges(cp, unicode_letters, N_RANGES(unicode_letters)); }
static int is_number(uint32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : in_ranges(cp, unicode_numbers, N_RANGES(unicode_numbers)); }
static int is_space(uint32_t cp) { return in_ranges(cp, unicode_spaces, N_RANGES(unicode_spaces)); }
static int nfc_unstable_cp(uint32_t cp) { return in_ranges(cp, nfc_unstable, N_RANGES(nfc_unstable)); }

static int nfc_class(uint32_t cp)
{
    if (cp < 0x300) return 0;
    int lo = 0, hi = N_RANGES(nfc_classes) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < nfc_classes[mid][0]) hi = mid - 1;
        else if (cp > nfc_classes[mid][1]) lo = mid + 1;
        else return (int)nfc_classes[mid][2];
    }
    return 0;
}

/* The row {cp, first, second} of cp's canonical decomposition, or NULL. */
static const uint32_t *nfc_decomposition(uint32_t cp)
{
    int lo = 0, hi = N_RANGES(nfc_decompositions) - 1;
    if (cp < 0xC0) return NULL;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < nfc_decompositions[mid][0]) hi = mid - 1;
        else if (cp > nfc_decompositions[mid][0]) lo = mid + 1;
        else return nfc_decompositions[mid];
    }
    return NULL;
}

static uint32_t nfc_composition(uint32_t first, uint32_t second)
{
    int lo = 0, hi = N_RANGES(nfc_compositions) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const uint32_t *d = nfc_decompositions[nfc_compositions[mid]];
        if (first < d[1] || (first == d[1] && second < d[2])) hi = mid - 1;
        else if (first > d[1] || second > d[2]) lo = mid + 1;
        else return d[0];
    }
    return 0;
}
