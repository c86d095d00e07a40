// osstune: small things every layer needs — error reporting, allocation, number formats (bf16, f16, MXFP4), the
// RoPE parameters of a model config, a seeded RNG, a clock.
// No I/O beyond stderr, so kernels/ may include it too.
#ifndef OT_COMMON_H
#define OT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- errors -------------------------------------------------------------------------------------------------
// Fatal errors print "osstune: <file>:<line>: message" and exit(1). Library code that can recover returns an
// int status (0 = ok) and fills an ot_err buffer instead; the tools turn that into a message and an exit code.
#define OT_ERR_LEN 1024
typedef struct {
    char msg[OT_ERR_LEN];
} ot_err;

void ot_die_at(const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
#define ot_die(...) ot_die_at(__FILE__, __LINE__, __VA_ARGS__)
// Fill err (when non-NULL) and return -1: `return ot_fail(err, "bad %s", x);`
int ot_fail(ot_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Print a warning line to stderr.
void ot_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void *ot_malloc(size_t n);             // dies on failure; n == 0 gives a valid pointer
void *ot_calloc(size_t n, size_t size); // zeroed; dies on failure
void *ot_realloc(void *p, size_t n);
char *ot_strdup(const char *s);

// ---- bf16 -----------------------------------------------------------------------------------------------------
// bf16 is the upper half of an IEEE float32. Conversion to bf16 rounds to nearest even (what torch does).
static inline float ot_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t ot_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float ot_f16_to_f32(uint16_t h);
uint16_t ot_f32_to_f16(float f);

// ---- MXFP4 (spec §3.4) ---------------------------------------------------------------------------------------
// A row of `cols` elements is cols/32 groups; group g has 16 bytes (element 32g+2j in the low nibble of byte j,
// 32g+2j+1 in the high nibble) and one E8M0 scale byte s: value = FP4[nibble] · 2^(s − 127).
extern const float ot_fp4_values[16];
void ot_mxfp4_dequant_row(float *out, const uint8_t *blocks, const uint8_t *scales, int cols);

// ---- RoPE / YaRN parameters (config.json's rope_theta and rope_scaling) ---------------------------------------
// What the model config holds; kernels/ops.h turns it into inverse frequencies (ot_rope_inv_freq).
typedef struct {
    double theta;            // rope_theta
    double factor;           // rope_scaling.factor (1 = plain RoPE, no YaRN)
    double beta_fast, beta_slow;
    int original_max_position_embeddings;
    int truncate;            // round the correction range (floor/ceil) as llama.cpp does; gpt-oss: 0
    double attention_factor; // <= 0: the default 0.1·ln(factor) + 1
} ot_rope_params;

// ---- deterministic RNG ---------------------------------------------------------------------------------------
// splitmix64 seeding + xoshiro256** stream. Same seed, same numbers on every machine.
typedef struct {
    uint64_t s[4];
} ot_rng;
void ot_rng_seed(ot_rng *r, uint64_t seed);
uint64_t ot_rng_u64(ot_rng *r);
double ot_rng_uniform(ot_rng *r);          // [0, 1)
double ot_rng_normal(ot_rng *r);           // standard normal (Box–Muller, no cached second value)
uint64_t ot_hash64(uint64_t x);            // splitmix64 finaliser, for deriving sub-seeds

// ---- carving one allocation into aligned pieces ----------------------------------------------------------------
// Lay a set of buffers out twice with the same code: first with base == NULL to measure (every piece comes back
// NULL, off ends at the bytes needed), then over the real allocation. Each piece starts `align`-aligned.
typedef struct {
    char *base; // NULL while measuring
    size_t off;
    size_t align;
} ot_carve;
static inline void *ot_carve_take(ot_carve *c, size_t bytes) {
    size_t o = (c->off + c->align - 1) / c->align * c->align;
    c->off = o + bytes;
    return c->base ? c->base + o : NULL;
}

// ---- time -----------------------------------------------------------------------------------------------------
double ot_now_seconds(void); // monotonic

// ---- sizes ----------------------------------------------------------------------------------------------------
// A memory size as users write it: a number (decimals allowed) and a unit, K, M, G or T with or without "iB"
// (powers of 1024, as nvidia-smi and Slurm count), KB, MB, GB or TB (powers of 1000), or B / none (bytes).
// "24GiB", "24G", "1.5GiB", "8000MiB". 0 on success; -1 for anything else: no number, an unknown unit, a value
// that is negative, not finite, below one byte or above 2^62 bytes.
int ot_parse_size(const char *s, uint64_t *bytes);
// bytes for a message, in the largest binary unit that keeps the number at 1 or more: "24.00 GiB", "512.0 MiB",
// "300 B". Returns buf.
const char *ot_format_size(char *buf, size_t n, uint64_t bytes);
// --gpu-memory-limit after the work (a training step, a translated sentence): 0 when `used` bytes of GPU memory in
// use are within `limit` (0: no limit); else -1 with a message naming the flag, the figures, when (`when`, e.g.
// "after step 12") and what to do (`advice`). The planned buffers are refused at allocation; what CUDA and its
// libraries take by themselves at first use is seen only here.
int ot_check_gpu_memory_limit(uint64_t used, uint64_t limit, const char *when, const char *advice, ot_err *err);

#ifdef __cplusplus
}
#endif
#endif
