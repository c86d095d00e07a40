// adapter_config.json: reads what peft 0.21 writes (fixture made by peft itself, with "all-linear" expanded into
// per-layer names), writes what peft reads (formats_python_check.py loads the file this test leaves in
// SCRATCH_DIR/adapter with peft), and refuses the options osstune does not implement.
//
// usage: test_formats_peft SCRATCH_DIR
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "formats/peft.h"
#include "tests/test_formats_util.h"
#include "tests/test_util.h"

static const char *scratch;

static int has_module(const ot_peft_config *c, const char *m) {
    for (int i = 0; i < c->n_target_modules; i++)
        if (strcmp(c->target_modules[i], m) == 0) return 1;
    return 0;
}

static void expect_bad(const char *what, const char *json, const char *needle) {
    const char *p = fmt_path(scratch, "bad_adapter_config.json");
    fmt_write_file(p, json, strlen(json));
    ot_peft_config c;
    ot_err err = {{0}};
    int rc = ot_peft_config_read(&c, p, &err);
    CHECK(rc == -1, "%s: accepted", what);
    if (rc == 0) return;
    printf("refused (%s): %s\n", what, err.msg);
    CHECK(fmt_has(err.msg, p), "%s: names the file", what);
    CHECK(fmt_has(err.msg, needle), "%s", what);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    fmt_fresh_dir(scratch);
    ot_peft_config c, back;
    ot_err err = {{0}};

    // What peft wrote for r=2, alpha=4, all-linear, two expert parameters of layer 1, on a 2-layer model.
    CHECK(ot_peft_config_read(&c, "tests/fixtures/formats/peft_adapter_config.json", &err) == 0, "peft fixture: %s", err.msg);
    CHECK(c.r == 2 && c.lora_alpha == 4.0f && c.use_rslora == 0, "r, alpha, rslora");
    CHECK(c.n_target_modules == 4 && has_module(&c, "q_proj") && has_module(&c, "k_proj") && has_module(&c, "v_proj") &&
              has_module(&c, "o_proj"),
          "per-layer names reduce to the 4 projections (%d)", c.n_target_modules);
    CHECK(c.n_target_parameters == 2 && strcmp(c.target_parameters[0], "1.mlp.experts.gate_up_proj") == 0 &&
              strcmp(c.target_parameters[1], "1.mlp.experts.down_proj") == 0,
          "target_parameters in the given order");
    CHECK(c.base_model_name_or_path[0] == 0, "null base model -> empty");
    CHECK(ot_peft_scaling(&c) == 2.0f, "scaling alpha/r = %g", (double)ot_peft_scaling(&c));
    c.use_rslora = 1;
    CHECK(fabsf(ot_peft_scaling(&c) - 4.0f / sqrtf(2.0f)) < 1e-6f, "rsLoRA scaling alpha/sqrt(r)");

    // Write, read back; the file the python check loads with peft.
    memset(&c, 0, sizeof c);
    c.r = 8;
    c.lora_alpha = 16;
    c.use_rslora = 0;
    c.n_target_modules = 4;
    strcpy(c.target_modules[0], "q_proj");
    strcpy(c.target_modules[1], "k_proj");
    strcpy(c.target_modules[2], "v_proj");
    strcpy(c.target_modules[3], "o_proj");
    c.n_target_parameters = 2;
    strcpy(c.target_parameters[0], "7.mlp.experts.gate_up_proj");
    strcpy(c.target_parameters[1], "7.mlp.experts.down_proj");
    strcpy(c.base_model_name_or_path, "openai/gpt-oss-20b");
    const char *dir = fmt_path(scratch, "adapter");
    fmt_fresh_dir(dir);
    const char *path = fmt_path(dir, "adapter_config.json");
    CHECK(ot_peft_config_write(&c, path, &err) == 0, "write: %s", err.msg);
    struct stat sb;
    CHECK(stat(fmt_path(dir, "adapter_config.json.tmp"), &sb) != 0, "written atomically (no temp file left)");
    CHECK(ot_peft_config_read(&back, path, &err) == 0, "read back: %s", err.msg);
    CHECK(memcmp(&c, &back, sizeof c) == 0, "write -> read round trip");
    char *text = ot_test_read_file(path, NULL);
    CHECK(text && strstr(text, "\"lora_alpha\": 16,") && strstr(text, "\"r\": 8,") && strstr(text, "\"peft_type\": \"LORA\"") &&
              strstr(text, "\"task_type\": \"CAUSAL_LM\"") && strstr(text, "\"use_rslora\": false"),
          "keys and types as peft writes them");
    free(text);
    // A non-integral alpha is written as a real.
    c.lora_alpha = 2.5f;
    const char *p2 = fmt_path(scratch, "alpha.json");
    CHECK(ot_peft_config_write(&c, p2, &err) == 0 && ot_peft_config_read(&back, p2, &err) == 0 && back.lora_alpha == 2.5f,
          "real alpha round trip");
    c.r = 0;
    CHECK(ot_peft_config_write(&c, p2, &err) == -1, "r = 0 refused on write");

    // Accepted shorthands.
    const char *p3 = fmt_path(scratch, "short.json");
    const char *allp = "{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": \"all-linear\"}";
    fmt_write_file(p3, allp, strlen(allp));
    CHECK(ot_peft_config_read(&c, p3, &err) == 0 && c.n_target_modules == 4 && c.n_target_parameters == 0,
          "\"all-linear\" string: %s", err.msg);
    const char *one = "{\"r\": 4, \"target_modules\": \"v_proj\", \"target_parameters\": [\"mlp.experts.down_proj\"]}";
    fmt_write_file(p3, one, strlen(one));
    CHECK(ot_peft_config_read(&c, p3, &err) == 0 && c.n_target_modules == 1 && c.lora_alpha == 8.0f &&
              c.n_target_parameters == 1,
          "single module string, default alpha 8: %s", err.msg);

    // Refused.
    expect_bad("regex target_modules", "{\"r\": 4, \"target_modules\": \".*q_proj\"}", "regular expression");
    expect_bad("missing r", "{\"lora_alpha\": 4, \"target_modules\": [\"q_proj\"]}", "\"r\"");
    expect_bad("zero r", "{\"r\": 0, \"target_modules\": [\"q_proj\"]}", "must be positive");
    expect_bad("dora", "{\"r\": 4, \"use_dora\": true, \"target_modules\": [\"q_proj\"]}", "use_dora");
    expect_bad("bias", "{\"r\": 4, \"bias\": \"all\", \"target_modules\": [\"q_proj\"]}", "\"bias\"");
    expect_bad("rank_pattern", "{\"r\": 4, \"rank_pattern\": {\"q_proj\": 2}, \"target_modules\": [\"q_proj\"]}", "rank_pattern");
    expect_bad("lm_head", "{\"r\": 4, \"target_modules\": [\"q_proj\", \"lm_head\"]}", "\"lm_head\" is not supported");
    expect_bad("some layers only",
               "{\"r\": 4, \"target_modules\": [\"model.layers.0.self_attn.q_proj\", \"model.layers.1.self_attn.q_proj\","
               " \"model.layers.1.self_attn.k_proj\"]}",
               "names k_proj in some layers but not in layer 0");
    expect_bad("not an expert parameter", "{\"r\": 4, \"target_parameters\": [\"mlp.router.weight\"]}", "mlp.router.weight");
    expect_bad("nothing targeted", "{\"r\": 4, \"target_modules\": null}", "neither target_modules");
    expect_bad("other peft type", "{\"peft_type\": \"IA3\", \"r\": 4}", "\"IA3\"");
    expect_bad("not JSON", "{\"r\": 4,", "invalid JSON");
    return ot_test_finish("test_formats_peft");
}
