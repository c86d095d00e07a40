// Checkpoint directories, end to end with osstune-init-model: the generated models load (MXFP4 and dense expert
// forms, any shard count), are deterministic in the seed, have the value scales the tool promises, and every
// kind of damage to a copy is refused with a message naming the file and the tensor.
//
// usage: test_formats_checkpoint PATH/TO/osstune-init-model SCRATCH_DIR
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/checkpoint.h"
#include "kernels/ops.h"
#include "tests/test_formats_util.h"
#include "tests/test_util.h"

static const char *tool, *scratch;

// A small model: the tiny preset with a 1024-token vocabulary (token ids moved inside it) so copies are cheap.
static int gen_small(const char *name, const char *seed, const char *extra1, const char *extra2) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)tool;
    argv[n++] = "--preset";
    argv[n++] = "tiny";
    argv[n++] = "--seed";
    argv[n++] = (char *)seed;
    argv[n++] = "--out";
    argv[n++] = (char *)fmt_path(scratch, name);
    const char *sets[] = {"vocab_size=1024", "pad_token_id=1000", "eos_token_id=1001", "bos_token_id=1002"};
    for (int i = 0; i < 4; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)sets[i];
    }
    if (extra1) argv[n++] = (char *)extra1;
    if (extra2) argv[n++] = (char *)extra2;
    argv[n] = NULL;
    return fmt_run(argv);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int files_equal(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    char *x = ot_test_read_file(a, &la), *y = ot_test_read_file(b, &lb);
    int eq = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return eq;
}

static const char *shard_names2[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

// Which shard of `dir` holds tensor `name` (per the index).
static const char *shard_of(const char *dir, const char *name) {
    static char out[256];
    json_t *j = json_load_file(fmt_path(dir, "model.safetensors.index.json"), 0, NULL);
    const char *f = json_string_value(json_object_get(json_object_get(j, "weight_map"), name));
    snprintf(out, sizeof out, "%s", f ? f : "?");
    json_decref(j);
    return out;
}

static void expect_open_fails(const char *what, const char *dir, const char *n1, const char *n2) {
    ot_checkpoint ck;
    ot_err err = {{0}};
    int rc = ot_checkpoint_open(&ck, dir, &err);
    CHECK(rc == -1, "%s: damaged checkpoint opened", what);
    if (rc == 0) {
        ot_checkpoint_close(&ck);
        return;
    }
    printf("refused (%s): %s\n", what, err.msg);
    if (n1) CHECK(fmt_has(err.msg, n1), "%s", what);
    if (n2) CHECK(fmt_has(err.msg, n2), "%s", what);
}

// Rewrite a shard's header JSON through `edit`, keeping the data buffer as it is.
typedef void (*header_edit)(json_t *root, void *ctx);
static void rewrite_header(const char *path, header_edit edit, void *ctx) {
    size_t len = 0;
    char *raw = ot_test_read_file(path, &len);
    if (!raw) ot_die("cannot read %s", path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)raw[i];
    json_t *root = json_loadb(raw + 8, hlen, JSON_PRESERVE_ORDER, NULL);
    if (!root) ot_die("cannot parse the header of %s", path);
    edit(root, ctx);
    char *h = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fmt_write_raw_safetensors(path, h, raw + 8 + hlen, len - 8 - hlen);
    free(h);
    json_decref(root);
    free(raw);
}

typedef struct {
    const char *name;
    const char *other;
    const char *dtype;
} edit_args;

static void set_dtype(json_t *root, void *ctx) {
    edit_args *a = ctx;
    json_object_set_new(json_object_get(root, a->name), "dtype", json_string(a->dtype));
}

// Give `name` the data_offsets of `other` (same byte size): an overlap.
static void copy_offsets(json_t *root, void *ctx) {
    edit_args *a = ctx;
    json_t *o = json_object_get(json_object_get(root, a->other), "data_offsets");
    json_object_set(json_object_get(root, a->name), "data_offsets", o);
}

// Re-write a shard without `drop` and/or with one extra tensor (through the library's writer).
static void rewrite_shard(const char *path, const char *drop, const char *add) {
    ot_safetensors st;
    ot_err err;
    if (ot_safetensors_open(&st, path, &err)) ot_die("%s", err.msg);
    ot_st_writer *w = ot_st_writer_new();
    for (int i = 0; i < st.n_tensors; i++) {
        const ot_tensor *t = &st.tensors[i];
        if (drop && strcmp(t->name, drop) == 0) continue;
        ot_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    static const uint16_t extra[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
    if (add) ot_st_writer_add(w, add, OT_DT_BF16, 1, (int64_t[]){4}, extra);
    if (ot_st_writer_finish(w, path, &err)) ot_die("%s", err.msg);
    ot_safetensors_close(&st);
}

static void index_set(const char *dir, const char *tensor, const char *file) {
    const char *p = fmt_path(dir, "model.safetensors.index.json");
    json_t *j = json_load_file(p, 0, NULL);
    json_t *wm = json_object_get(j, "weight_map");
    if (file) json_object_set_new(wm, tensor, json_string(file));
    else json_object_del(wm, tensor);
    json_dump_file(j, p, JSON_INDENT(2));
    json_decref(j);
}

static void test_determinism(void) {
    CHECK(gen_small("a", "7", NULL, NULL) == 0, "generate a");
    CHECK(gen_small("a2", "7", NULL, NULL) == 0, "generate a2");
    CHECK(gen_small("b", "8", NULL, NULL) == 0, "generate b");
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors.index.json", shard_names2[0],
                           shard_names2[1]};
    for (int i = 0; i < 5; i++)
        CHECK(files_equal(fmt_path(fmt_path(scratch, "a"), files[i]), fmt_path(fmt_path(scratch, "a2"), files[i])),
              "same seed, same bytes: %s", files[i]);
    for (int i = 3; i < 5; i++)
        CHECK(!files_equal(fmt_path(fmt_path(scratch, "a"), files[i]), fmt_path(fmt_path(scratch, "b"), files[i])),
              "different seed, different bytes: %s", files[i]);
    struct stat sb;
    CHECK(stat(fmt_path(scratch, "a.tmp"), &sb) != 0, "the temp directory is renamed away");
    CHECK(gen_small("a", "7", NULL, NULL) != 0, "refuses to overwrite an existing directory");

    // Three shards: the same tensors, byte for byte.
    CHECK(gen_small("a3", "7", "--shards", "3") == 0, "generate with 3 shards");
    ot_checkpoint a, a3;
    ot_err err = {{0}};
    CHECK(ot_checkpoint_open(&a, fmt_path(scratch, "a"), &err) == 0, "open a: %s", err.msg);
    CHECK(ot_checkpoint_open(&a3, fmt_path(scratch, "a3"), &err) == 0, "open a3: %s", err.msg);
    CHECK(a.n_files == 2 && a3.n_files == 3, "shard counts %d %d", a.n_files, a3.n_files);
    CHECK(a.n_tensors == 4 * 19 + 3 && a.experts_mxfp4 == 1, "79 tensors, MXFP4 (%d)", a.n_tensors);
    int same = a.n_tensors == a3.n_tensors;
    for (int i = 0; same && i < a.n_tensors; i++) {
        const ot_tensor *x = a.by_name[i], *y = ot_checkpoint_find(&a3, x->name);
        same = y && x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0;
    }
    CHECK(same, "tensor bytes do not depend on the shard count");
    ot_checkpoint_close(&a3);

    // Dense experts: exactly the dequantized MXFP4 experts, transposed to [E, in, out]; the rest identical.
    CHECK(gen_small("d", "7", "--dense-experts", NULL) == 0, "generate dense");
    ot_checkpoint d;
    CHECK(ot_checkpoint_open(&d, fmt_path(scratch, "d"), &err) == 0, "open dense: %s", err.msg);
    CHECK(d.experts_mxfp4 == 0 && d.n_tensors == 4 * 17 + 3 && d.config.experts_mxfp4 == 0, "dense form detected");
    const int E = 8, H = 64, I = 64;
    float *dense = malloc(sizeof(float) * E * H * 2 * I), *row = malloc(sizeof(float) * 64);
    int exact = 1, other_same = 1;
    for (int l = 0; l < 4; l++) {
        char name[160], bn[200], sn[200];
        const char *proj[2] = {"gate_up_proj", "down_proj"};
        for (int p = 0; p < 2; p++) {
            int out = p == 0 ? 2 * I : H, in = p == 0 ? H : I;
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, proj[p]);
            snprintf(bn, sizeof bn, "%s_blocks", name);
            snprintf(sn, sizeof sn, "%s_scales", name);
            const ot_tensor *td = ot_checkpoint_find(&d, name), *tb = ot_checkpoint_find(&a, bn),
                            *ts = ot_checkpoint_find(&a, sn);
            if (!td || !tb || !ts || ot_tensor_to_f32(td, dense, &err)) {
                exact = 0;
                continue;
            }
            for (int e = 0; e < E; e++)
                for (int r = 0; r < out; r++) {
                    size_t rr = (size_t)e * out + r;
                    ot_mxfp4_dequant_row(row, tb->data + rr * (in / 32) * 16, ts->data + rr * (in / 32), in);
                    for (int i = 0; i < in; i++) exact &= dense[((size_t)e * in + i) * out + r] == row[i];
                }
        }
    }
    for (int i = 0; i < d.n_tensors; i++) {
        const ot_tensor *x = d.by_name[i], *y = ot_checkpoint_find(&a, x->name);
        if (ends_with(x->name, "experts.gate_up_proj") || ends_with(x->name, "experts.down_proj")) continue;
        other_same &= y && y->nbytes == x->nbytes && memcmp(x->data, y->data, x->nbytes) == 0;
    }
    CHECK(exact, "dense experts == dequantized MXFP4 experts of the same seed, exactly");
    CHECK(other_same, "non-expert tensors identical in both forms");
    free(dense);
    free(row);
    ot_checkpoint_close(&d);
    ot_checkpoint_close(&a);
}

// Mean and standard deviation of a float tensor.
static void stats(const ot_tensor *t, double *mean, double *sd) {
    float *v = malloc(sizeof(float) * (size_t)t->numel);
    ot_err err;
    if (ot_tensor_to_f32(t, v, &err)) ot_die("%s", err.msg);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t->numel; i++) s += v[i], s2 += (double)v[i] * v[i];
    *mean = s / (double)t->numel;
    *sd = sqrt(s2 / (double)t->numel - *mean * *mean);
    free(v);
}

static void test_tiny_preset(void) {
    char *argv[] = {(char *)tool, "--preset", "tiny", "--seed", "1", "--out", (char *)fmt_path(scratch, "tiny"), NULL};
    CHECK(fmt_run(argv) == 0, "generate the tiny preset");
    ot_checkpoint ck;
    ot_err err = {{0}};
    CHECK(ot_checkpoint_open(&ck, fmt_path(scratch, "tiny"), &err) == 0, "open tiny: %s", err.msg);
    if (ck.n_files == 0) return;
    ot_model_config want;
    ot_model_config_preset(&want, "tiny", &err);
    CHECK(ck.config.vocab_size == 201088 && ck.config.hidden_size == 64 && ck.config.num_hidden_layers == 4 &&
              ck.config.num_local_experts == 8 && ck.config.experts_mxfp4 == 1 && ck.config.sliding_window == 32 &&
              ck.config.rope.factor == want.rope.factor && ck.config.eos_token_id == 200002,
          "config.json of the tiny model");
    CHECK(ck.n_tensors == 79 && ck.n_files == 2, "79 tensors in 2 shards");
    double m, sd;
    // The scales promised in osstune-init-model.c; tolerances ≈ 4–5 standard errors of the sample statistic.
    stats(ot_checkpoint_find(&ck, "model.embed_tokens.weight"), &m, &sd);
    CHECK(fabs(m) < 0.002 && fabs(sd - 1) < 0.01, "embedding N(0,1): mean %g sd %g", m, sd);
    stats(ot_checkpoint_find(&ck, "lm_head.weight"), &m, &sd);
    CHECK(fabs(sd - 0.25) < 0.0025, "lm_head sd 2/sqrt(H): %g", sd);
    stats(ot_checkpoint_find(&ck, "model.layers.2.self_attn.q_proj.weight"), &m, &sd);
    CHECK(fabs(sd - 0.125) < 0.125 * 0.05, "q_proj sd 1/sqrt(H): %g", sd);
    stats(ot_checkpoint_find(&ck, "model.layers.2.mlp.router.weight"), &m, &sd);
    CHECK(fabs(sd - 0.25) < 0.25 * 0.15, "router sd 2/sqrt(H): %g", sd);
    stats(ot_checkpoint_find(&ck, "model.layers.1.input_layernorm.weight"), &m, &sd);
    CHECK(fabs(m - 1) < 0.05 && fabs(sd - 0.1) < 0.05, "norm weights 1 + 0.1 N: mean %g sd %g", m, sd);
    // MXFP4 experts dequantize to sd ≈ 1/sqrt(in) = 1/8.
    const ot_tensor *b = ot_checkpoint_find(&ck, "model.layers.0.mlp.experts.gate_up_proj_blocks"),
                    *s = ot_checkpoint_find(&ck, "model.layers.0.mlp.experts.gate_up_proj_scales");
    double s2 = 0;
    float row[64];
    int rows = 8 * 128;
    for (int r = 0; r < rows; r++) {
        ot_mxfp4_dequant_row(row, b->data + (size_t)r * 2 * 16, s->data + (size_t)r * 2, 64);
        for (int i = 0; i < 64; i++) s2 += (double)row[i] * row[i];
    }
    double rms = sqrt(s2 / (rows * 64.0));
    CHECK(fabs(rms - 0.125) < 0.125 * 0.03, "MXFP4 experts rms 1/sqrt(in): %g", rms);
    ot_checkpoint_close(&ck);
}

static void test_damage(void) {
    char a[4096], dir[4096]; // own copies: fmt_path's buffers are reused
    snprintf(a, sizeof a, "%s", fmt_path(scratch, "a"));
    const char *sinks = "model.layers.1.self_attn.sinks";
    char sinks_shard[256];
    snprintf(sinks_shard, sizeof sinks_shard, "%s", shard_of(a, sinks));

    // Truncated shard: the last tensor of the file now runs past its end.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_trunc"));
    fmt_copy_dir(a, dir);
    {
        const char *p = fmt_path(dir, shard_names2[1]);
        struct stat sb;
        stat(p, &sb);
        CHECK(truncate(p, sb.st_size - 100) == 0, "truncate");
        ot_safetensors st;
        ot_err err;
        ot_safetensors_open(&st, fmt_path(a, shard_names2[1]), &err);
        const char *last = st.tensors[st.n_tensors - 1].name;
        expect_open_fails("truncated shard", dir, shard_names2[1], last);
        ot_safetensors_close(&st);
    }
    // Header length past the end of the file.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_hlen"));
    fmt_copy_dir(a, dir);
    {
        FILE *f = fopen(fmt_path(dir, shard_names2[0]), "r+b");
        uint8_t big[8] = {0, 0, 0, 0, 0, 1, 0, 0};
        fwrite(big, 1, 8, f);
        fclose(f);
        expect_open_fails("header length past the end", dir, shard_names2[0], "runs past the end of the file");
    }
    // Overlapping ranges: the sinks of layer 1 claim the bytes of layer 0's sinks (same size).
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_overlap"));
    fmt_copy_dir(a, dir);
    {
        edit_args e = {sinks, "model.layers.0.self_attn.sinks", NULL};
        CHECK(strcmp(shard_of(a, e.other), sinks_shard) == 0, "both sinks in one shard");
        rewrite_header(fmt_path(dir, sinks_shard), copy_offsets, &e);
        expect_open_fails("overlapping ranges", dir, sinks_shard, "overlaps tensor 'model.layers.0.self_attn.sinks'");
    }
    // Unknown dtype.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_dtype"));
    fmt_copy_dir(a, dir);
    {
        edit_args e = {sinks, NULL, "BF61"};
        rewrite_header(fmt_path(dir, sinks_shard), set_dtype, &e);
        expect_open_fails("unknown dtype", dir, sinks_shard, "tensor 'model.layers.1.self_attn.sinks': unknown dtype");
    }
    // A known dtype of the right size but the wrong kind.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_kind"));
    fmt_copy_dir(a, dir);
    {
        edit_args e = {sinks, NULL, "I16"};
        rewrite_header(fmt_path(dir, sinks_shard), set_dtype, &e);
        expect_open_fails("integer dtype for a float tensor", dir, sinks, "has dtype I16");
    }
    // A tensor missing everywhere.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_missing"));
    fmt_copy_dir(a, dir);
    rewrite_shard(fmt_path(dir, sinks_shard), sinks, NULL);
    index_set(dir, sinks, NULL);
    expect_open_fails("missing tensor", dir, "tensor 'model.layers.1.self_attn.sinks' is missing", "config.json implies");
    // In the index but not in its shard.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_notinshard"));
    fmt_copy_dir(a, dir);
    rewrite_shard(fmt_path(dir, sinks_shard), sinks, NULL);
    expect_open_fails("index names a tensor its shard lacks", dir, sinks_shard, "'model.layers.1.self_attn.sinks' is missing");
    // In a shard but not in the index.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_unlisted"));
    fmt_copy_dir(a, dir);
    index_set(dir, sinks, NULL);
    expect_open_fails("tensor not in the index", dir, sinks_shard, "'model.layers.1.self_attn.sinks' is in this file but");
    // An unexpected extra tensor, consistently listed.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_extra"));
    fmt_copy_dir(a, dir);
    rewrite_shard(fmt_path(dir, shard_names2[0]), NULL, "model.layers.0.mlp.shared_expert.weight");
    index_set(dir, "model.layers.0.mlp.shared_expert.weight", shard_names2[0]);
    expect_open_fails("unexpected extra tensor", dir, shard_names2[0], "unexpected tensor 'model.layers.0.mlp.shared_expert.weight'");
    // A shape that disagrees with config.json: one KV head fewer in the config.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_shape"));
    fmt_copy_dir(a, dir);
    {
        const char *p = fmt_path(dir, "config.json");
        json_t *j = json_load_file(p, 0, NULL);
        json_object_set_new(j, "num_key_value_heads", json_integer(1));
        json_dump_file(j, p, JSON_INDENT(2));
        json_decref(j);
        expect_open_fails("shape vs config.json", dir, "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, 64]",
                          "config.json implies [16, 64]");
    }
    // A shard missing on disk.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_noshard"));
    fmt_copy_dir(a, dir);
    unlink(fmt_path(dir, shard_names2[1]));
    expect_open_fails("shard missing on disk", dir, shard_names2[1], "cannot open");
    // weight_map pointing outside the directory.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_escape"));
    fmt_copy_dir(a, dir);
    index_set(dir, sinks, "../a/model-00001-of-00002.safetensors");
    expect_open_fails("weight_map escapes the directory", dir, "'model.layers.1.self_attn.sinks'", "\"../a/model-00001");
    // No weights at all; no config.json.
    snprintf(dir, sizeof dir, "%s", fmt_path(scratch, "bad_empty"));
    fmt_fresh_dir(dir);
    expect_open_fails("no config.json", dir, "config.json", "cannot open");
    fmt_copy_dir(a, dir);
    unlink(fmt_path(dir, "model.safetensors.index.json"));
    expect_open_fails("no index, no model.safetensors", dir, "neither model.safetensors.index.json nor model.safetensors", NULL);

    // The single-file layout: every tensor in model.safetensors, no index.
    {
        ot_checkpoint ck;
        ot_err err = {{0}};
        CHECK(ot_checkpoint_open(&ck, a, &err) == 0, "open a: %s", err.msg);
        ot_st_writer *w = ot_st_writer_new();
        for (int i = 0; i < ck.n_tensors; i++) {
            const ot_tensor *t = ck.by_name[i];
            ot_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        CHECK(ot_st_writer_finish(w, fmt_path(dir, "model.safetensors"), &err) == 0, "write single file: %s", err.msg);
        unlink(fmt_path(dir, shard_names2[0]));
        unlink(fmt_path(dir, shard_names2[1]));
        ot_checkpoint one;
        CHECK(ot_checkpoint_open(&one, dir, &err) == 0, "single model.safetensors opens: %s", err.msg);
        CHECK(one.n_files == 1 && one.n_tensors == ck.n_tensors, "all tensors in one file");
        const ot_tensor *x = ot_checkpoint_find(&one, sinks), *y = ot_checkpoint_find(&ck, sinks);
        CHECK(x && y && memcmp(x->data, y->data, x->nbytes) == 0, "same bytes");
        CHECK(ot_checkpoint_find(&one, "no.such.tensor") == NULL, "find of an absent name");
        ot_checkpoint_close(&one);
        ot_checkpoint_close(&ck);
    }
}

static void test_tool_usage(void) {
    char *help[] = {(char *)tool, "--help", NULL};
    CHECK(fmt_run(help) == 0, "--help exits 0");
    char *bad_preset[] = {(char *)tool, "--preset", "7b", "--seed", "1", "--out", (char *)fmt_path(scratch, "x"), NULL};
    CHECK(fmt_run(bad_preset) != 0, "unknown preset fails");
    char *no_seed[] = {(char *)tool, "--preset", "tiny", "--out", (char *)fmt_path(scratch, "x"), NULL};
    CHECK(fmt_run(no_seed) == 2, "missing --seed is a usage error");
    char *bad_set[] = {(char *)tool, "--preset", "tiny", "--seed", "1", "--out", (char *)fmt_path(scratch, "x"), "--set",
                       "num_key_value_heads=3", NULL};
    CHECK(fmt_run(bad_set) != 0, "--set that breaks validation fails");
    struct stat sb;
    CHECK(stat(fmt_path(scratch, "x"), &sb) != 0, "nothing written by failed runs");

    // --tokenizer copies the file unchanged.
    const char *tok_src = fmt_path(scratch, "tokenizer_src.json");
    const char *tok_text = "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}\n";
    fmt_write_file(tok_src, tok_text, strlen(tok_text));
    char src_copy[4096];
    snprintf(src_copy, sizeof src_copy, "%s", tok_src);
    CHECK(gen_small("with_tok", "3", "--tokenizer", src_copy) == 0, "generate with --tokenizer");
    CHECK(files_equal(src_copy, fmt_path(fmt_path(scratch, "with_tok"), "tokenizer.json")), "tokenizer.json copied");
    CHECK(gen_small("bad_tok", "3", "--tokenizer", fmt_path(scratch, "no_such_tokenizer.json")) != 0, "missing --tokenizer file fails");
    CHECK(stat(fmt_path(scratch, "bad_tok"), &sb) != 0 && stat(fmt_path(scratch, "bad_tok.tmp"), &sb) != 0,
          "nothing written when --tokenizer is missing");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OSSTUNE_INIT_MODEL SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    tool = argv[1];
    scratch = argv[2];
    fmt_fresh_dir(scratch);
    test_tool_usage();
    test_determinism();
    test_tiny_preset();
    test_damage();
    return ot_test_finish("test_formats_checkpoint");
}
