// The benchmark's work model (benchmarks/step_work.c, the FLOPs and bytes of the roofline table) against numbers
// found without it: the model's active parameters, attention keys counted by hand, and how recomputation and the
// LoRA targets change the work.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "benchmarks/step_work.h"
#include "formats/peft_adapter.h"
#include "tests/test_util.h"

static const unsigned ATTN = 1u << OT_LORA_Q | 1u << OT_LORA_K | 1u << OT_LORA_V | 1u << OT_LORA_O;
static const unsigned EXPERTS = 1u << OT_LORA_GATE_UP | 1u << OT_LORA_DOWN;

// A batch of samples of the given lengths (token ids do not matter), the loss at every next-token position.
static void batch_of(ot_batch *b, const int *lens, int n) {
    ot_batch_init(b);
    for (int i = 0; i < n; i++) {
        int32_t *ids = calloc((size_t)lens[i], sizeof(int32_t));
        ot_batch_add_sample(b, ids, lens[i], 0);
        free(ids);
    }
}

int main(void) {
    ot_model_config cfg;
    ot_err err;
    CHECK(ot_model_config_preset(&cfg, "20b", &err) == 0, "preset 20b: %s", err.msg);
    ot_op_work w[OT_WORK_N], w2[OT_WORK_N];

    // 1. One sample of 2048 tokens, LoRA r16 on q, k, v, o, activations kept. The products apart from attention
    //    make 4 FLOPs per active parameter and token (forward, and the input gradient of the frozen base):
    //    gpt-oss-20b's 3.6 billion active parameters with the output head, 14.4 GFLOP per token (bench_train's
    //    MFU constant, from the model card, not from this model).
    const int one[1] = {2048};
    ot_batch b;
    batch_of(&b, one, 1);
    ot_step_shape s = {ATTN, 16, 0, 1000};
    ot_step_work(&cfg, &b, &s, w);
    const double products = (w[OT_WORK_MOE_MATMUL].flop + w[OT_WORK_DENSE_MATMUL].flop + w[OT_WORK_LM_HEAD].flop) /
                            b.T / 1e9;
    printf("info products %.3f GFLOP per token\n", products);
    ot_check_close("GFLOP per token of the products (20b)", fabs(products - 14.4) / 14.4, 0.01);
    CHECK(w[OT_WORK_MOE_LORA].flop == 0 && w[OT_WORK_MOE_LORA].bytes == 0, "expert LoRA work without its targets");
    CHECK(w[OT_WORK_LORA].flop > 0 && w[OT_WORK_OPTIMIZER].bytes == 32000, "attention LoRA / optimizer work");
    for (int k = 0; k < OT_WORK_N; k++)
        CHECK(k == OT_WORK_MOE_LORA || (w[k].bytes > 0 && isfinite(w[k].flop)),
              "%s: no bytes or a non-finite FLOP count", ot_work_names[k]);

    // 2. Recomputation runs each layer's forward again up to the SwiGLU: the gate_up product's FLOPs go from 2 to
    //    3 forwards' worth (it has two thirds of the expert FLOPs), the down product's and the output head's stay.
    s.recompute = 1;
    ot_step_work(&cfg, &b, &s, w2);
    ot_check_close("expert FLOPs recomputing / kept",
                   fabs(w2[OT_WORK_MOE_MATMUL].flop / w[OT_WORK_MOE_MATMUL].flop - 4.0 / 3), 1e-12);
    CHECK(w2[OT_WORK_LM_HEAD].flop == w[OT_WORK_LM_HEAD].flop, "the output head runs once either way");
    //    Recomputing the attention blocks only: the expert products as with kept activations, attention's forward
    //    twice (2 + 2.5 forwards' worth against 1 + 2.5).
    s.recompute = 2;
    ot_op_work w3[OT_WORK_N];
    ot_step_work(&cfg, &b, &s, w3);
    CHECK(w3[OT_WORK_MOE_MATMUL].flop == w[OT_WORK_MOE_MATMUL].flop, "attention recomputation: expert FLOPs changed");
    ot_check_close("attention FLOPs recomputing the attention blocks / kept",
                   fabs(w3[OT_WORK_ATTENTION].flop / w[OT_WORK_ATTENTION].flop - 4.5 / 3.5), 1e-12);

    // 3. The expert targets: their LoRA appears, proportional to the rank in FLOPs.
    s.recompute = 0;
    s.targets = ATTN | EXPERTS;
    ot_step_work(&cfg, &b, &s, w);
    s.r = 32;
    ot_step_work(&cfg, &b, &s, w2);
    CHECK(w[OT_WORK_MOE_LORA].flop > 0 && w[OT_WORK_MOE_LORA].bytes > 0, "no expert LoRA work with its targets");
    ot_check_close("expert LoRA FLOPs at r 32 / r 16", fabs(w2[OT_WORK_MOE_LORA].flop / w[OT_WORK_MOE_LORA].flop - 2),
                   1e-12);
    CHECK(w2[OT_WORK_MOE_LORA].bytes == w[OT_WORK_MOE_LORA].bytes, "the expert LoRA's bytes do not depend on r");
    ot_batch_free(&b);

    // 4. Attention keys by hand: samples of 5 and 3 tokens attend to 1+2+3+4+5 + 1+2+3 = 21 keys in the full
    //    layers; with a window of 2, 1+2+2+2+2 + 1+2+2 = 14 in the sliding ones. Forward 4·D FLOPs per head and
    //    key, backward 2.5 times that.
    cfg.sliding_window = 2;
    const int two[2] = {5, 3};
    batch_of(&b, two, 2);
    s.targets = ATTN;
    s.r = 16;
    ot_step_work(&cfg, &b, &s, w);
    double keys = 0;
    for (int l = 0; l < cfg.num_hidden_layers; l++) keys += cfg.layer_sliding[l] ? 14 : 21;
    const double expect = 3.5 * 4 * cfg.num_attention_heads * cfg.head_dim * keys;
    ot_check_close("attention FLOPs of two short samples", fabs(w[OT_WORK_ATTENTION].flop - expect) / expect, 1e-12);
    ot_batch_free(&b);
    return ot_test_finish("test_bench_step_work");
}
