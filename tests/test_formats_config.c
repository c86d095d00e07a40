// config.json: presets match spec §1, both rope forms parse (the hub's rope_scaling + rope_theta and transformers
// 5.x's rope_parameters), aliases and defaults behave as in transformers, validation refuses what the rest of
// the code cannot run, --set works by key, and writing then parsing gives back the same config.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/model_config.h"
#include "tests/test_util.h"

static int parse(ot_model_config *c, const char *text, ot_err *err) { return ot_model_config_parse(c, text, "inline", err); }

// Parse must fail with a message containing `needle`.
static void expect_bad(const char *what, const char *text, const char *needle) {
    ot_model_config c;
    ot_err err = {{0}};
    int rc = parse(&c, text, &err);
    CHECK(rc == -1, "%s: accepted", what);
    CHECK(rc == 0 || strstr(err.msg, needle), "%s: message '%s' lacks '%s'", what, err.msg, needle);
    if (rc) printf("refused (%s): %s\n", what, err.msg);
}

static int same_config(const ot_model_config *a, const ot_model_config *b) {
    int ok = a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
             a->num_hidden_layers == b->num_hidden_layers && a->num_attention_heads == b->num_attention_heads &&
             a->num_key_value_heads == b->num_key_value_heads && a->head_dim == b->head_dim &&
             a->num_local_experts == b->num_local_experts && a->num_experts_per_tok == b->num_experts_per_tok &&
             a->intermediate_size == b->intermediate_size && a->swiglu_limit == b->swiglu_limit &&
             a->swiglu_alpha == b->swiglu_alpha && a->rms_norm_eps == b->rms_norm_eps &&
             a->sliding_window == b->sliding_window && a->max_position_embeddings == b->max_position_embeddings &&
             a->initial_context_length == b->initial_context_length && a->rope.theta == b->rope.theta &&
             a->rope.factor == b->rope.factor && a->rope.beta_fast == b->rope.beta_fast &&
             a->rope.beta_slow == b->rope.beta_slow &&
             a->rope.original_max_position_embeddings == b->rope.original_max_position_embeddings &&
             a->rope.truncate == b->rope.truncate && a->rope.attention_factor == b->rope.attention_factor &&
             a->attention_bias == b->attention_bias && a->tie_word_embeddings == b->tie_word_embeddings &&
             a->pad_token_id == b->pad_token_id && a->eos_token_id == b->eos_token_id &&
             a->bos_token_id == b->bos_token_id && a->experts_mxfp4 == b->experts_mxfp4 &&
             a->initializer_range == b->initializer_range;
    for (int l = 0; l < a->num_hidden_layers; l++) ok &= a->layer_sliding[l] == b->layer_sliding[l];
    return ok;
}

static void test_presets(void) {
    ot_model_config c;
    ot_err err = {{0}};
    CHECK(ot_model_config_preset(&c, "20b", &err) == 0, "20b: %s", err.msg);
    // spec §1, every row.
    CHECK(c.vocab_size == 201088 && c.hidden_size == 2880 && c.num_hidden_layers == 24 && c.num_attention_heads == 64 &&
              c.num_key_value_heads == 8 && c.head_dim == 64 && c.num_local_experts == 32 &&
              c.num_experts_per_tok == 4 && c.intermediate_size == 2880,
          "20b sizes");
    CHECK(c.swiglu_limit == 7.0f && c.swiglu_alpha == 1.702f && c.rms_norm_eps == 1e-5f && c.sliding_window == 128 &&
              c.max_position_embeddings == 131072 && c.initial_context_length == 4096,
          "20b scalars");
    CHECK(c.rope.theta == 150000 && c.rope.factor == 32 && c.rope.beta_fast == 32 && c.rope.beta_slow == 1 &&
              c.rope.original_max_position_embeddings == 4096 && c.rope.truncate == 0,
          "20b yarn");
    CHECK(c.attention_bias == 1 && c.tie_word_embeddings == 0 && c.pad_token_id == 199999 && c.eos_token_id == 200002 &&
              c.experts_mxfp4 == 1 && c.initializer_range == 0.02f,
          "20b flags/ids");
    int alternate = 1;
    for (int l = 0; l < 24; l++) alternate &= c.layer_sliding[l] == (l % 2 == 0);
    CHECK(alternate, "20b: even layers slide");
    CHECK(ot_model_config_preset(&c, "120b", &err) == 0 && c.num_hidden_layers == 36 && c.num_local_experts == 128 &&
              c.hidden_size == 2880,
          "120b");
    CHECK(ot_model_config_preset(&c, "tiny", &err) == 0, "tiny: %s", err.msg);
    CHECK(c.vocab_size == 201088 && c.hidden_size == 64 && c.num_hidden_layers == 4 && c.num_attention_heads == 4 &&
              c.head_dim == 16 && c.num_key_value_heads == 2 && c.num_local_experts == 8 &&
              c.num_experts_per_tok == 2 && c.intermediate_size == 64 && c.sliding_window == 32 &&
              c.rope.factor == 32 && c.experts_mxfp4 == 1,
          "tiny sizes");
    CHECK(ot_model_config_preset(&c, "7b", &err) == -1 && strstr(err.msg, "'7b'"), "unknown preset: %s", err.msg);
}

static void test_fixture_files(void) {
    ot_model_config hub, preset, newer;
    ot_err err = {{0}};
    ot_model_config_preset(&preset, "20b", &err);
    // The hub form (rope_scaling + rope_theta, integer theta, no bos_token_id).
    CHECK(ot_model_config_load(&hub, "tests/fixtures/formats/gpt-oss-20b-config.json", &err) == 0, "hub config: %s", err.msg);
    preset.bos_token_id = hub.bos_token_id; // the hub file has no bos_token_id; everything else must agree
    CHECK(hub.bos_token_id == -1, "absent bos_token_id is none, as in transformers");
    CHECK(same_config(&hub, &preset), "hub config.json == the 20b preset");

    // The transformers 5.x form: rope_parameters with rope_theta inside, eos a list, 6 layers with custom types,
    // no quantization_config (dense experts).
    CHECK(ot_model_config_load(&newer, "tests/fixtures/formats/config_rope_parameters.json", &err) == 0, "5.x config: %s",
          err.msg);
    CHECK(newer.num_hidden_layers == 6 && newer.rope.theta == 150000 && newer.rope.factor == 32 &&
              newer.rope.truncate == 0 && newer.rope.original_max_position_embeddings == 4096,
          "5.x rope");
    CHECK(newer.eos_token_id == 200002 && newer.bos_token_id == -1, "eos list -> first, bos null -> -1");
    CHECK(newer.experts_mxfp4 == 0, "no quantization_config -> dense experts");
    static const unsigned char want[6] = {1, 1, 0, 1, 1, 0};
    CHECK(memcmp(newer.layer_sliding, want, 6) == 0, "custom layer_types");
    CHECK(ot_model_config_load(&newer, "tests/fixtures/formats/absent.json", &err) == -1 && strstr(err.msg, "absent.json"),
          "missing file names the path: %s", err.msg);
}

// A minimal valid config with one key replaced (or added) by `extra`, which is spliced in last: jansson rejects
// duplicate keys, so callers only pass keys not in the base.
static char *cfg(const char *extra) {
    static const char *base = "{\"model_type\":\"gpt_oss\",\"vocab_size\":1000,\"hidden_size\":64,\"num_hidden_layers\":2,"
                              "\"num_attention_heads\":4,\"intermediate_size\":64";
    char *s = malloc(strlen(base) + strlen(extra) + 8);
    sprintf(s, "%s%s%s}", base, *extra ? "," : "", extra);
    return s;
}

static void test_keys_and_defaults(void) {
    ot_model_config c;
    ot_err err = {{0}};
    char *t = cfg("\"num_experts\":8,\"num_local_experts\":8");
    CHECK(parse(&c, t, &err) == 0 && c.num_local_experts == 8, "both aliases, same value: %s", err.msg);
    free(t);
    t = cfg("\"num_experts\":8,\"experts_per_token\":2");
    CHECK(parse(&c, t, &err) == 0, "aliases: %s", err.msg);
    free(t);
    CHECK(c.num_local_experts == 8 && c.num_experts_per_tok == 2, "num_experts / experts_per_token aliases");
    CHECK(c.num_key_value_heads == 4 && c.head_dim == 16, "kv heads default to heads, head_dim to hidden/heads");
    CHECK(c.layer_sliding[0] == 1 && c.layer_sliding[1] == 0, "default layer_types");
    CHECK(c.rope.factor == 32 && c.rope.theta == 150000 && c.rope.truncate == 0, "no rope keys: gpt-oss yarn defaults");
    CHECK(c.experts_mxfp4 == 0, "no quantization_config");

    // rope_parameters without some yarn keys: transformers' defaults (truncate true, betas 32/1,
    // original_max = max_position_embeddings, factor = max / original).
    t = cfg("\"num_local_experts\":4,\"max_position_embeddings\":8192,\"rope_parameters\":{\"rope_type\":\"yarn\","
            "\"rope_theta\":10000.0,\"original_max_position_embeddings\":2048}");
    CHECK(parse(&c, t, &err) == 0, "partial yarn: %s", err.msg);
    free(t);
    CHECK(c.rope.theta == 10000 && c.rope.factor == 4 && c.rope.truncate == 1 && c.rope.beta_fast == 32 &&
              c.rope.beta_slow == 1 && c.rope.attention_factor == 0,
          "yarn defaults: factor %g truncate %d", c.rope.factor, c.rope.truncate);
    // rope_scaling wins over rope_parameters; a top-level rope_theta fills in when the object has none.
    t = cfg("\"num_local_experts\":4,\"rope_theta\":5000,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":8.0},"
            "\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":2.0,\"rope_theta\":1.0}");
    CHECK(parse(&c, t, &err) == 0 && c.rope.factor == 8 && c.rope.theta == 5000, "rope_scaling precedence: %s", err.msg);
    free(t);
    // Plain RoPE.
    t = cfg("\"num_local_experts\":4,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000.0}");
    CHECK(parse(&c, t, &err) == 0 && c.rope.factor == 1 && c.rope.theta == 10000, "default rope: %s", err.msg);
    free(t);
    // mscale / mscale_all_dim give the attention factor as HF computes it.
    t = cfg("\"num_local_experts\":4,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,\"mscale\":1.0,"
            "\"mscale_all_dim\":0.5}");
    CHECK(parse(&c, t, &err) == 0, "mscale: %s", err.msg);
    free(t);
    double want = (0.1 * log(4.0) + 1) / (0.05 * log(4.0) + 1);
    CHECK(fabs(c.rope.attention_factor - want) < 1e-12, "attention factor %g vs %g", c.rope.attention_factor, want);
    // eos as an int list, sliding_window null with only full layers, tied embeddings.
    t = cfg("\"num_local_experts\":4,\"eos_token_id\":[7,8],\"sliding_window\":null,"
            "\"layer_types\":[\"full_attention\",\"full_attention\"],\"tie_word_embeddings\":true");
    CHECK(parse(&c, t, &err) == 0 && c.eos_token_id == 7 && c.sliding_window == 0 && c.tie_word_embeddings == 1,
          "eos list / null window / tied: %s", err.msg);
    free(t);
    t = cfg("\"num_local_experts\":4,\"quantization_config\":{\"quant_method\":\"mxfp4\"}");
    CHECK(parse(&c, t, &err) == 0 && c.experts_mxfp4 == 1, "mxfp4: %s", err.msg);
    free(t);
}

static void test_validation(void) {
    char *t;
#define BAD(what, extra, needle)                                                                                      \
    t = cfg(extra);                                                                                                   \
    expect_bad(what, t, needle);                                                                                      \
    free(t)
    BAD("kv heads do not divide heads", "\"num_local_experts\":4,\"num_key_value_heads\":3", "not a multiple of num_key_value_heads");
    BAD("top-k above experts", "\"num_local_experts\":4,\"num_experts_per_tok\":5", "exceeds num_local_experts");
    BAD("no experts key", "\"num_key_value_heads\":2", "num_local_experts");
    BAD("negative head_dim", "\"num_local_experts\":4,\"head_dim\":-16", "head_dim = -16 must be positive");
    BAD("odd head_dim", "\"num_local_experts\":4,\"head_dim\":15", "head_dim = 15 must be even");
    BAD("layer_types length", "\"num_local_experts\":4,\"layer_types\":[\"full_attention\"]", "has 1 entries");
    BAD("layer_types value", "\"num_local_experts\":4,\"layer_types\":[\"full_attention\",\"local\"]", "layer_types[1]");
    BAD("sliding without window", "\"num_local_experts\":4,\"sliding_window\":null", "sliding_window = 0");
    BAD("other quantization", "\"num_local_experts\":4,\"quantization_config\":{\"quant_method\":\"fp8\"}", "\"fp8\" is not supported");
    BAD("unsupported rope", "\"num_local_experts\":4,\"rope_parameters\":{\"rope_type\":\"llama3\"}", "\"llama3\" is not supported");
    BAD("eos out of vocab", "\"num_local_experts\":4,\"eos_token_id\":5000", "eos_token_id = 5000 is outside");
    BAD("string where an int belongs", "\"num_local_experts\":\"4\"", "\"num_local_experts\" must be an integer");
    BAD("fractional int", "\"num_local_experts\":4.5", "\"num_local_experts\" must be an integer");
    // Sizes are checked before anything divides by them; aliases of one setting must agree; rope values make sense.
    expect_bad("zero heads, no head_dim",
               "{\"vocab_size\":1000,\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":0,"
               "\"intermediate_size\":64,\"num_local_experts\":4}",
               "num_attention_heads = 0 must be positive");
    BAD("conflicting aliases", "\"num_local_experts\":4,\"num_experts\":8", "\"num_experts\" = 8 disagree");
    BAD("conflicting top-k aliases", "\"num_local_experts\":4,\"num_experts_per_tok\":2,\"experts_per_token\":3",
        "disagree");
    BAD("negative beta_fast", "\"num_local_experts\":4,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
        "\"beta_fast\":-3.0}", "beta_fast = -3");
    BAD("size out of bounds", "\"num_local_experts\":100000", "num_local_experts = 100000 is outside");
#undef BAD
    expect_bad("not an object", "[1]", "not a JSON object");
    expect_bad("bad JSON", "{\"vocab_size\": }", "invalid JSON at line 1");
    expect_bad("model_type", "{\"model_type\":\"llama\"}", "not \"gpt_oss\"");
    expect_bad("missing hidden_size", "{\"vocab_size\":10}", "\"hidden_size\" is missing");
    expect_bad("too many layers",
               "{\"vocab_size\":1000,\"hidden_size\":64,\"num_hidden_layers\":300,\"num_attention_heads\":4,"
               "\"intermediate_size\":64,\"num_local_experts\":4}",
               "exceeds the supported maximum 256");
    expect_bad("mxfp4 needs multiples of 32",
               "{\"vocab_size\":1000,\"hidden_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
               "\"intermediate_size\":64,\"num_local_experts\":4,\"quantization_config\":{\"quant_method\":\"mxfp4\"}}",
               "multiples of 32");
}

static void test_set_and_roundtrip(void) {
    ot_model_config c, back;
    ot_err err = {{0}};
    ot_model_config_preset(&c, "tiny", &err);
    CHECK(ot_model_config_set(&c, "num_hidden_layers", "3", &err) == 0 && c.num_hidden_layers == 3, "set layers");
    CHECK(ot_model_config_set(&c, "num_experts", "16", &err) == 0 && c.num_local_experts == 16, "set alias");
    CHECK(ot_model_config_set(&c, "rope_theta", "10000.5", &err) == 0 && c.rope.theta == 10000.5, "set theta");
    CHECK(ot_model_config_set(&c, "rms_norm_eps", "1e-6", &err) == 0 && c.rms_norm_eps == 1e-6f, "set eps");
    CHECK(ot_model_config_set(&c, "attention_bias", "false", &err) == 0 && c.attention_bias == 0, "set bool");
    CHECK(ot_model_config_set(&c, "truncate", "1", &err) == 0 && c.rope.truncate == 1, "set truncate");
    CHECK(ot_model_config_set(&c, "hidden_size", "12x", &err) == -1 && strstr(err.msg, "not an integer"), "bad int: %s", err.msg);
    CHECK(ot_model_config_set(&c, "attention_bias", "maybe", &err) == -1 && strstr(err.msg, "not a boolean"), "bad bool");
    CHECK(ot_model_config_set(&c, "model_type", "x", &err) == -1 && strstr(err.msg, "'model_type'"), "unknown key");
    CHECK(ot_model_config_set(&c, "rope_theta", "inf", &err) == -1, "non-finite refused");
    CHECK(ot_model_config_validate(&c, &err) == 0, "still valid: %s", err.msg);
    c.layer_sliding[2] = 1; // make layer_types non-default to see it written
    c.pad_token_id = -1;
    c.rope.attention_factor = 1.25;

    char *json = ot_model_config_to_json(&c);
    CHECK(strstr(json, "\"rope_parameters\"") && strstr(json, "\"rope_scaling\"") && strstr(json, "\"GptOssForCausalLM\"") &&
              strstr(json, "\"quant_method\": \"mxfp4\"") && strstr(json, "\"pad_token_id\": null"),
          "written keys");
    CHECK(strstr(json, "\"rms_norm_eps\": 1e-06") || strstr(json, "\"rms_norm_eps\": 9.9999999999999995e-07") ||
              strstr(json, "\"rms_norm_eps\": 1e-6"),
          "float written as its short decimal");
    CHECK(parse(&back, json, &err) == 0, "parse what we wrote: %s", err.msg);
    CHECK(same_config(&c, &back), "to_json -> parse round trip");
    free(json);

    c.experts_mxfp4 = 0;
    c.sliding_window = 0;
    for (int l = 0; l < c.num_hidden_layers; l++) c.layer_sliding[l] = 0;
    c.rope.factor = 1; // plain RoPE: the yarn-only fields are not written, so give them their parse defaults
    c.rope.attention_factor = 0;
    c.rope.truncate = 0;
    json = ot_model_config_to_json(&c);
    CHECK(!strstr(json, "quantization_config") && strstr(json, "\"sliding_window\": null"), "dense / no window");
    back.rope.theta = 0;
    CHECK(parse(&back, json, &err) == 0 && same_config(&c, &back), "round trip, plain rope and no window: %s", err.msg);
    free(json);
}

int main(void) {
    test_presets();
    test_fixture_files();
    test_keys_and_defaults();
    test_validation();
    test_set_and_roundtrip();
    return ot_test_finish("test_formats_config");
}
