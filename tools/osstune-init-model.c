// osstune-init-model: write a random gpt-oss checkpoint in the HF layout (config.json, generation_config.json,
// model.safetensors.index.json, model-0000K-of-0000N.safetensors), for tests and for trying the pipeline without
// downloading 13 GB. Deterministic from --seed: every tensor draws from its own RNG, seeded by (seed, tensor name),
// so the bytes of a tensor do not depend on the shard count or on which shard it lands in.
//
// Each shard's header is written first (all sizes are known from the config), then its tensors, generated a few at
// a time on parallel threads (memory: about 4 GB of tensors at once, or the largest tensor when it is bigger).
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include "formats/checkpoint.h"
#include "formats/fileio.h"
#include "formats/json_util.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "kernels/ops.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: osstune-init-model --preset tiny|20b|120b --seed N --out DIR [options]\n"
            "\n"
            "Writes a randomly initialised gpt-oss checkpoint in the Hugging Face layout into DIR (which must not\n"
            "exist; it is built in DIR.tmp and renamed when complete).\n"
            "\n"
            "  --preset NAME       tiny (real 201,088-token vocabulary, hidden 64, 4 layers, 8 experts), 20b, 120b\n"
            "  --seed N            RNG seed (unsigned integer); same seed, same bytes\n"
            "  --out DIR           output directory\n"
            "  --set KEY=VALUE     override a numeric/boolean config.json key (repeatable), e.g. --set num_hidden_layers=2\n"
            "  --shards N          number of safetensors shards (default: 2, or more to keep shards under ~5 GB)\n"
            "  --dense-experts     store experts as bf16 gate_up_proj [E, H, 2I] / down_proj [E, I, H] (the layout\n"
            "                      transformers dequantizes to) instead of MXFP4 blocks/scales; the values are the\n"
            "                      exact dequantization of the MXFP4 experts the same seed gives\n"
            "  --tokenizer PATH    copy this tokenizer.json into DIR\n"
            "  --threads N         tensors generated at once (default: the online CPUs, at most 16); same bytes\n"
            "  --help              this text\n");
}

// ---- per-tensor RNG ---------------------------------------------------------------------------------------------
static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static void rng_for_tensor(ot_rng *r, uint64_t seed, const char *name) {
    ot_rng_seed(r, ot_hash64(seed) ^ fnv1a64(name));
}

// ---- value distributions ------------------------------------------------------------------------------------------
// Why these numbers: the model should compute something non-trivial (different tokens give clearly different
// logits, routing differs between tokens, attention is not uniform) while every activation stays O(1) in bf16.
// - embedding σ = 1: RMSNorm rescales the residual stream to unit RMS anyway; unit entries keep it there.
// - q/k/v σ = 1/√H, o σ = 1/√(heads·head_dim), expert weights std ≈ 1/√in: each projection maps unit-RMS inputs
//   to unit-RMS outputs (variance-preserving), so nothing explodes or vanishes through the layers.
// - lm_head σ = 2/√H: logits with std ≈ 2, so the softmax over 201k tokens is peaked but not one-hot.
// - router σ = 2/√H, bias σ 0.5: router logits with std ≈ 2, so different tokens pick different experts.
// - attention / expert biases σ 0.1: present (so bias code paths matter in tests) but small.
// - norm weights 1 + 0.1·N(0,1): near the trained-model scale, not exactly 1 (which would hide a missing multiply).
// - sinks N(0,1): comparable to the attention scores, so the sink column changes the softmax visibly.
// - MXFP4 experts: uniform random nibbles (FP4 values have E[v²] = 68.5/8 = 8.5625) and E8M0 scale bytes chosen
//   per group between 127+f and 127+f+1, with f and the probability set so E[w²] = 1/in exactly:
//   4^k · 8.5625 = 1/in  →  k = −½·log2(8.5625·in), f = ⌊k⌋, P(f+1) = (4^(k−f) − 1)/3.
typedef struct {
    double mean, sigma;
} normal_spec;

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static normal_spec float_spec(const ot_model_config *c, const char *name) {
    const double H = c->hidden_size, Q = (double)c->num_attention_heads * c->head_dim;
    if (strcmp(name, "model.embed_tokens.weight") == 0) return (normal_spec){0, 1};
    if (strcmp(name, "lm_head.weight") == 0) return (normal_spec){0, 2 / sqrt(H)};
    if (ends_with(name, "layernorm.weight") || strcmp(name, "model.norm.weight") == 0) return (normal_spec){1, 0.1};
    if (ends_with(name, "self_attn.sinks")) return (normal_spec){0, 1};
    if (ends_with(name, "self_attn.o_proj.weight")) return (normal_spec){0, 1 / sqrt(Q)};
    if (ends_with(name, "_proj.weight")) return (normal_spec){0, 1 / sqrt(H)}; // q, k, v
    if (ends_with(name, "router.weight")) return (normal_spec){0, 2 / sqrt(H)};
    if (ends_with(name, "router.bias")) return (normal_spec){0, 0.5};
    if (ends_with(name, "bias")) return (normal_spec){0, 0.1}; // attention and expert biases
    ot_die("no value distribution for tensor '%s'", name);
}

// Scale bytes of an MXFP4 tensor whose rows have `in` inputs (see above): the exponent f and the probability of
// f + 1 depend on `in` only, so they are worked out once per tensor, not per byte.
typedef struct {
    int base;   // 127 + f
    double p_up; // P(127 + f + 1)
} scale_rule;

static scale_rule mxfp4_scale_rule(int in) {
    double k = -0.5 * log2(8.5625 * in), f = floor(k);
    scale_rule q = {127 + (int)f, (pow(4.0, k - f) - 1.0) / 3.0};
    if (q.base < 0 || q.base + (q.p_up > 0) > 254)
        ot_die("MXFP4 scale byte %d out of range for in = %d", q.base < 0 ? q.base : q.base + 1, in);
    return q;
}

static uint8_t mxfp4_scale_byte(ot_rng *r, const scale_rule *q) {
    return (uint8_t)(q->base + (ot_rng_uniform(r) < q->p_up ? 1 : 0));
}

// Random bytes, 8 per RNG draw (n is a multiple of 8 for every call, so chunking does not change the stream).
static void fill_random_bytes(ot_rng *r, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = ot_rng_u64(r);
        for (int b = 0; b < 8 && i + b < n; b++) out[i + b] = (uint8_t)(v >> (8 * b));
    }
}

// ---- generating one tensor ----------------------------------------------------------------------------------------
// A tensor is generated whole into memory (its safetensors bytes), so several can be generated at once on separate
// threads (each from its own RNG: the bytes do not depend on the thread count) and then written in order.
static void put_bf16(uint8_t *p, float f) {
    uint16_t h = ot_f32_to_bf16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

// Dense expert tensor [E, in, out] = the transpose of the dequantized MXFP4 [E, out, in] that the *_blocks and
// *_scales names of the same projection would hold with this seed.
static void gen_dense_expert(uint8_t *dst, const ot_expected_tensor *t, uint64_t seed) {
    const int E = (int)t->shape[0], in = (int)t->shape[1], out = (int)t->shape[2], G = in / 32;
    char name[200];
    ot_rng rb, rs;
    snprintf(name, sizeof name, "%s_blocks", t->name);
    rng_for_tensor(&rb, seed, name);
    snprintf(name, sizeof name, "%s_scales", t->name);
    rng_for_tensor(&rs, seed, name);
    const scale_rule q = mxfp4_scale_rule(in);
    const size_t row_bytes = (size_t)G * 16;
    float *dense = ot_malloc((size_t)out * in * sizeof(float));
    uint8_t *blk = ot_malloc((size_t)out * row_bytes), *scl = ot_malloc((size_t)out * G);
    for (int e = 0; e < E; e++) {
        fill_random_bytes(&rb, blk, (size_t)out * row_bytes);
        for (size_t i = 0; i < (size_t)out * G; i++) scl[i] = mxfp4_scale_byte(&rs, &q);
        for (int r = 0; r < out; r++)
            ot_mxfp4_dequant_row(dense + (size_t)r * in, blk + r * row_bytes, scl + (size_t)r * G, in);
        uint8_t *de = dst + (size_t)e * in * out * 2; // [out, in] -> [in, out]
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++) put_bf16(de + ((size_t)i * out + o) * 2, dense[(size_t)o * in + i]);
    }
    free(dense);
    free(blk);
    free(scl);
}

// Elements [e0, e1) of a tensor into dst (the whole tensor's bytes), drawing from r. A part of a bf16 tensor gets
// the tensor's RNG moved on by 2·e0 steps (a normal draw takes two), so the parts of a big tensor run on separate
// threads and give the bytes one pass would. Other tensors are made in one part, r = the tensor's own RNG.
static void gen_tensor(uint8_t *dst, const ot_model_config *c, const ot_expected_tensor *t, int dense_experts,
                       uint64_t seed, ot_rng r, size_t e0, size_t e1) {
    if (dense_experts && (ends_with(t->name, "experts.gate_up_proj") || ends_with(t->name, "experts.down_proj"))) {
        gen_dense_expert(dst, t, seed);
        return;
    }
    if (t->kind == OT_TK_U8 && ends_with(t->name, "_blocks")) {
        fill_random_bytes(&r, dst, e1);
    } else if (t->kind == OT_TK_U8 && ends_with(t->name, "_scales")) {
        const scale_rule q = mxfp4_scale_rule((int)t->shape[2] * 32); // [E, out, in/32]
        for (size_t i = 0; i < e1; i++) dst[i] = mxfp4_scale_byte(&r, &q);
    } else {
        normal_spec ns = float_spec(c, t->name);
        for (size_t i = e0; i < e1; i++) put_bf16(dst + 2 * i, (float)(ns.mean + ns.sigma * ot_rng_normal(&r)));
    }
}

static int splittable(const ot_expected_tensor *t, int dense_experts) {
    if (t->kind == OT_TK_U8) return 0;
    return !(dense_experts && (ends_with(t->name, "experts.gate_up_proj") || ends_with(t->name, "experts.down_proj")));
}

typedef struct {
    uint8_t *dst;
    const ot_model_config *c;
    const ot_expected_tensor *t;
    int dense_experts;
    uint64_t seed;
    ot_rng rng; // the RNG at element e0
    size_t e0, e1;
    int tensor, last_part; // index in the tensor list; whether this job completes it
} gen_job;

// The jobs: one per tensor, bf16 tensors of more than PART_ELEMS elements in parts (each part's RNG found by
// stepping the previous part's on: about a second per billion elements, on the calling thread).
#define PART_ELEMS ((size_t)1 << 25)
static gen_job *plan_jobs(const ot_model_config *c, const ot_expected_tensor *tensors, int n, int dense, uint64_t seed,
                          int *n_jobs) {
    int nj = 0, cap = n;
    gen_job *jobs = ot_malloc((size_t)cap * sizeof(gen_job));
    for (int t = 0; t < n; t++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[t].ndim; d++) numel *= (size_t)tensors[t].shape[d];
        const size_t part = splittable(&tensors[t], dense) ? PART_ELEMS : numel;
        ot_rng r;
        rng_for_tensor(&r, seed, tensors[t].name);
        size_t e0 = 0, e1;
        do { // at least one job, also for an empty tensor
            e1 = numel - e0 <= part ? numel : e0 + part;
            if (nj == cap) jobs = ot_realloc(jobs, (size_t)(cap *= 2) * sizeof(gen_job));
            jobs[nj++] = (gen_job){NULL, c, &tensors[t], dense, seed, r, e0, e1, t, e1 == numel};
            if (e1 < numel)
                for (size_t i = e0; i < e1; i++) ot_rng_u64(&r), ot_rng_u64(&r); // two steps per normal draw
            e0 = e1;
        } while (e1 < numel);
    }
    *n_jobs = nj;
    return jobs;
}

static void *gen_job_run(void *arg) {
    gen_job *j = arg;
    gen_tensor(j->dst, j->c, j->t, j->dense_experts, j->seed, j->rng, j->e0, j->e1);
    return NULL;
}

// ---- directory plumbing --------------------------------------------------------------------------------------------
// Whether `name` is a file this tool writes into DIR (or its temporary form, "<name>.tmp").
static int written_here(const char *name) {
    static const char *fixed[] = {"config.json", "generation_config.json", "tokenizer.json",
                                  "model.safetensors.index.json"};
    char base[256];
    snprintf(base, sizeof base, "%s", name);
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".tmp") == 0) base[n - 4] = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(base, fixed[i]) == 0) return 1;
    int a, b, used = 0;
    return sscanf(base, "model-%5d-of-%5d.safetensors%n", &a, &b, &used) == 2 && base[used] == 0;
}

// Removes the files this tool writes from dir (leaving anything else), then dir itself. 0, or -1 with errno set.
static int remove_written_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!written_here(de->d_name)) continue;
        char *p = ot_path_join(dir, de->d_name);
        if (unlink(p) != 0) rc = -1;
        free(p);
    }
    closedir(d);
    return rmdir(dir) != 0 || rc ? -1 : 0;
}

// A DIR.tmp left by an interrupted run holds only files this tool writes: remove them and the directory. Anything
// else there (a link in DIR.tmp's place, a file this tool does not write, the --tokenizer being copied) means it is
// not such a leftover, and nothing is removed.
static void remove_stale_tmp_dir(const char *tmp, const char *tokenizer) {
    struct stat st;
    if (lstat(tmp, &st) != 0) return;
    if (!S_ISDIR(st.st_mode))
        ot_die("%s is in the way (it is not a directory an interrupted run left); remove it or choose another --out", tmp);
    DIR *d = opendir(tmp);
    if (!d) ot_die("%s: cannot read: %s", tmp, strerror(errno));
    const ot_path_role inputs[] = {{"--tokenizer", tokenizer}};
    ot_err err;
    struct dirent *de;
    while ((de = readdir(d))) { // everything is checked before anything is removed
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char *p = ot_path_join(tmp, de->d_name);
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode) || !written_here(de->d_name))
            ot_die("%s holds %s, which osstune-init-model does not write: it is not a leftover of an interrupted "
                   "run; remove it yourself or choose another --out", tmp, de->d_name);
        if (ot_check_output("a leftover file", p, inputs, 1, &err)) ot_die("%s", err.msg);
        free(p);
    }
    closedir(d);
    if (remove_written_files(tmp) != 0) ot_die("%s: cannot remove it: %s", tmp, strerror(errno));
    ot_warn("removed %s left by an interrupted run", tmp);
}

// The directory this run is building: removed when the run ends any way but by finishing (an error exits through
// ot_die), so a failure -- a full disk included -- leaves nothing behind. A kill leaves it for the next run.
static char *g_building;

static void remove_unfinished(void) {
    if (g_building) remove_written_files(g_building);
}

static int copy_file(const char *src, const char *dst, ot_err *err) {
    size_t len;
    char *buf = ot_read_file(src, &len, err);
    if (!buf) return -1;
    int rc = ot_write_file_atomic(dst, buf, len, err);
    free(buf);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text, ot_err *err) {
    char *p = ot_path_join(dir, name);
    int rc = ot_write_file_atomic(p, text, strlen(text), err);
    free(p);
    return rc;
}

// generation_config.json as the gpt-oss repo has it: stop on <|return|>, <|endoftext|> and <|call|> (200012).
static char *generation_config_json(const ot_model_config *c) {
    json_t *j = json_object();
    json_t *eos = json_array();
    int ids[3] = {c->eos_token_id, c->pad_token_id, 200012};
    for (int i = 0; i < 3; i++)
        if (ids[i] >= 0 && ids[i] < c->vocab_size) json_array_append_new(eos, json_integer(ids[i]));
    json_object_set_new(j, "eos_token_id", eos);
    json_object_set_new(j, "bos_token_id", c->bos_token_id >= 0 ? json_integer(c->bos_token_id) : json_null());
    json_object_set_new(j, "pad_token_id", c->pad_token_id >= 0 ? json_integer(c->pad_token_id) : json_null());
    json_object_set_new(j, "do_sample", json_true());
    char *s = ot_json_dump_pretty(j);
    json_decref(j);
    return s;
}

// ---- sharding -----------------------------------------------------------------------------------------------------
// Contiguous runs of the tensor list, balanced by bytes: tensor i goes to the shard its byte midpoint falls in,
// never skipping a shard and leaving enough tensors for the shards after it (so none is empty).
static void assign_shards(int n, const size_t *bytes, int n_shards, int *shard_of) {
    double total = 0;
    for (int i = 0; i < n; i++) total += (double)bytes[i];
    double cum = 0;
    int s = 0;
    for (int i = 0; i < n; i++) {
        int want = total > 0 ? (int)((cum + 0.5 * (double)bytes[i]) * n_shards / total) : 0;
        if (i > 0 && want > s) s++;
        int must = n_shards - (n - i); // shards still to fill need one tensor each
        if (s < must) s = must;
        if (s > n_shards - 1) s = n_shards - 1;
        shard_of[i] = s;
        cum += (double)bytes[i];
    }
}

// ---- main -----------------------------------------------------------------------------------------------------------
#define MAX_SETS 64

// A validation message names the setting at fault ("config: KEY = ..."). When that is not a key the user gave with
// --set, its value is the preset's, which another --set made wrong (--set vocab_size=1000 against the preset's
// pad_token_id 199999): say so, so the message does not seem to blame an option never given.
static void explain_preset_value(const char *msg, const char *preset, const char **sets, int n_sets) {
    char key[64];
    if (sscanf(msg, "config: %63[a-z_] =", key) != 1) return;
    for (int i = 0; i < n_sets; i++)
        if (strncmp(sets[i], key, strlen(key)) == 0 && sets[i][strlen(key)] == '=') return;
    fprintf(stderr, "osstune-init-model: %s is the '%s' preset's value, not one you set%s; change it with --set %s=VALUE\n",
            key, preset, n_sets ? " (your --set options made it invalid)" : "", key);
}

// An integer option 1..max into *v; -1 with a message otherwise.
static int parse_count(const char *flag, const char *text, long max, int *v) {
    char *end;
    long x = strtol(text, &end, 10);
    if (*end || !*text || x < 1 || x > max) {
        fprintf(stderr, "osstune-init-model: %s %s: need an integer 1..%ld\n", flag, text, max);
        return -1;
    }
    *v = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    const char *preset = NULL, *out = NULL, *tokenizer = NULL, *seed_str = NULL;
    const char *sets[MAX_SETS];
    int n_sets = 0, n_shards = 0, dense = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--dense-experts") == 0) {
            dense = 1;
        } else if (has_val && strcmp(a, "--preset") == 0) {
            preset = argv[++i];
        } else if (has_val && strcmp(a, "--seed") == 0) {
            seed_str = argv[++i];
        } else if (has_val && strcmp(a, "--out") == 0) {
            out = argv[++i];
        } else if (has_val && strcmp(a, "--tokenizer") == 0) {
            tokenizer = argv[++i];
        } else if (has_val && strcmp(a, "--set") == 0) {
            if (n_sets == MAX_SETS) ot_die("too many --set options (at most %d)", MAX_SETS);
            sets[n_sets++] = argv[++i];
        } else if (has_val && strcmp(a, "--shards") == 0) {
            if (parse_count("--shards", argv[++i], 99999, &n_shards)) return 2;
        } else if (has_val && strcmp(a, "--threads") == 0) {
            if (parse_count("--threads", argv[++i], 256, &threads)) return 2;
        } else {
            fprintf(stderr, "osstune-init-model: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!preset || !out || !seed_str) {
        fprintf(stderr, "osstune-init-model: --preset, --seed and --out are required\n\n");
        usage(stderr);
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(seed_str, &end, 10);
    if (errno || *end || !*seed_str || seed_str[0] == '-') {
        fprintf(stderr, "osstune-init-model: --seed %s: need an unsigned integer\n", seed_str);
        return 2;
    }

    if (threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu < 1 ? 1 : ncpu > 16 ? 16 : (int)ncpu;
    }

    ot_err err;
    ot_model_config c;
    if (ot_model_config_preset(&c, preset, &err)) ot_die("%s", err.msg);
    for (int i = 0; i < n_sets; i++) {
        char *kv = ot_strdup(sets[i]), *eq = strchr(kv, '=');
        if (!eq) ot_die("--set %s: expected KEY=VALUE", sets[i]);
        *eq = 0;
        if (ot_model_config_set(&c, kv, eq + 1, &err)) ot_die("%s", err.msg);
        free(kv);
    }
    c.experts_mxfp4 = !dense;
    if (ot_model_config_validate(&c, &err)) {
        fprintf(stderr, "osstune-init-model: %s\n", err.msg);
        explain_preset_value(err.msg, preset, sets, n_sets);
        return 1;
    }
    // Both expert forms are generated through MXFP4 (dense = its dequantization), so both need the 32-multiples.
    if (c.hidden_size % 32 || c.intermediate_size % 32)
        ot_die("hidden_size (%d) and intermediate_size (%d) must be multiples of 32 (experts are generated as MXFP4)",
               c.hidden_size, c.intermediate_size);

    ot_expected_tensor *tensors;
    int n = ot_gptoss_expected_tensors(&c, !dense, &tensors);
    size_t *bytes = ot_malloc((size_t)n * sizeof(size_t));
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        bytes[i] = numel * (tensors[i].kind == OT_TK_U8 ? 1 : 2);
        total += bytes[i];
    }
    if (n_shards == 0) {
        n_shards = (int)((total + 4999999999ull) / 5000000000ull); // keep shards under ~5 GB, as HF does
        if (n_shards < 2) n_shards = 2;
    }
    if (n_shards > n) ot_die("--shards %d: the model has only %d tensors", n_shards, n);
    int *shard_of = ot_malloc((size_t)n * sizeof(int));
    assign_shards(n, bytes, n_shards, shard_of);

    // Build everything in DIR.tmp, then rename: DIR either does not exist or is complete. (A run that dies
    // midway leaves DIR.tmp; the next run removes it.) Check what can be checked before creating anything.
    struct stat sb;
    if (stat(out, &sb) == 0) ot_die("%s already exists; refusing to overwrite it", out);
    if (tokenizer && access(tokenizer, R_OK) != 0) ot_die("--tokenizer %s: %s", tokenizer, strerror(errno));
    size_t tl = strlen(out) + 8;
    char *tmp = ot_malloc(tl);
    snprintf(tmp, tl, "%s.tmp", out);
    remove_stale_tmp_dir(tmp, tokenizer);
    if (mkdir(tmp, 0755) != 0) ot_die("%s: cannot create directory: %s", tmp, strerror(errno));
    g_building = tmp;
    atexit(remove_unfinished);

    char *text = ot_model_config_to_json(&c);
    if (write_text(tmp, "config.json", text, &err)) ot_die("%s", err.msg);
    free(text);
    text = generation_config_json(&c);
    if (write_text(tmp, "generation_config.json", text, &err)) ot_die("%s", err.msg);
    free(text);
    if (tokenizer) {
        char *dst = ot_path_join(tmp, "tokenizer.json");
        if (copy_file(tokenizer, dst, &err)) ot_die("--tokenizer: %s", err.msg);
        free(dst);
    }

    // Tensors are generated a window of jobs at a time, one thread per job (at most `threads` jobs, and new tensors
    // of about 4 GB at most, a single larger one alone), and written in order as they complete.
    const size_t window_bytes = (size_t)4 << 30;
    const int progress = total > ((size_t)1 << 30);
    const double t0 = ot_now_seconds();
    size_t written = 0;
    json_t *weight_map = json_object();
    char fname[64];
    int n_jobs;
    gen_job *jobs = plan_jobs(&c, tensors, n, dense, seed, &n_jobs);
    // The shards' files, for the index.
    for (int t = 0; t < n; t++) {
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", shard_of[t] + 1, n_shards);
        json_object_set_new(weight_map, tensors[t].name, json_string(fname));
    }
    pthread_t *tids = ot_malloc((size_t)threads * sizeof(pthread_t));
    ot_st_stream *st = NULL;
    uint8_t *buf_of_open = NULL; // the tensor whose parts span windows keeps its buffer
    for (int j0 = 0; j0 < n_jobs;) {
        int nj = 0;
        size_t in_window = 0;
        while (j0 + nj < n_jobs && nj < threads) {
            const gen_job *g = &jobs[j0 + nj];
            size_t b = g->e0 == 0 ? bytes[g->tensor] : 0; // a tensor's buffer counts where its first part is
            if (nj > 0 && in_window + b > window_bytes) break;
            in_window += b;
            nj++;
        }
        for (int j = 0; j < nj; j++) {
            gen_job *g = &jobs[j0 + j];
            if (g->e0 == 0) buf_of_open = ot_malloc(bytes[g->tensor] ? bytes[g->tensor] : 1);
            g->dst = buf_of_open;
            if (nj > 1 && pthread_create(&tids[j], NULL, gen_job_run, g) != 0)
                ot_die("cannot start a generator thread (use --threads 1)");
        }
        if (nj == 1) gen_job_run(&jobs[j0]);
        for (int j = 0; j < nj; j++) {
            const gen_job *g = &jobs[j0 + j];
            if (nj > 1) pthread_join(tids[j], NULL);
            if (!g->last_part) continue;
            const int ti = g->tensor, k = shard_of[ti];
            if (ti == 0 || shard_of[ti - 1] != k) { // this shard's first tensor: its header, then its data
                ot_st_writer *w = ot_st_writer_new();
                for (int u = ti; u < n && shard_of[u] == k; u++)
                    ot_st_writer_add(w, tensors[u].name, tensors[u].kind == OT_TK_U8 ? OT_DT_U8 : OT_DT_BF16,
                                     tensors[u].ndim, tensors[u].shape, NULL);
                snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
                char *path = ot_path_join(tmp, fname);
                st = ot_st_stream_begin(w, path, &err);
                free(path);
                if (!st) ot_die("%s", err.msg);
            }
            if (ot_st_stream_write(st, g->dst, bytes[ti], &err)) {
                ot_st_stream_abort(st);
                ot_die("%s (tensor '%s')", err.msg, tensors[ti].name);
            }
            free(g->dst);
            written += bytes[ti];
            if (ti == n - 1 || shard_of[ti + 1] != k) {
                if (ot_st_stream_finish(st, &err)) ot_die("%s", err.msg);
                st = NULL;
            }
            if (progress) {
                double now = ot_now_seconds();
                fprintf(stderr, "\rosstune-init-model: tensor %d of %d, %.0f of %.0f MB, %.0f MB/s   ", ti + 1, n,
                        written / 1e6, total / 1e6, written / 1e6 / (now - t0 + 1e-9));
            }
        }
        j0 += nj;
    }
    free(jobs);
    free(tids);
    if (progress) fprintf(stderr, "\n");

    json_t *index = json_object();
    json_object_set_new(index, "metadata", json_pack("{sI}", "total_size", (json_int_t)total));
    json_object_set_new(index, "weight_map", weight_map);
    text = ot_json_dump_pretty(index);
    json_decref(index);
    if (write_text(tmp, "model.safetensors.index.json", text, &err)) ot_die("%s", err.msg);
    free(text);

    if (rename(tmp, out) != 0) ot_die("cannot rename %s to %s: %s", tmp, out, strerror(errno));
    g_building = NULL;
    if (ot_fsync_parent_dir(out, &err)) ot_die("%s", err.msg);

    free(shard_of);
    free(bytes);
    free(tensors);
    free(tmp);
    return 0;
}
