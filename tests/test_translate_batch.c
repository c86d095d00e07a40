// The batch scheduler (infer/generate_batch.c) on the CPU decoder behind the batched interface, against
// ot_translate one sentence at a time: on a tiny random model with the real vocabulary, five sources of different
// lengths must give the same outputs (text, new tokens, why they stopped) for 1, 2, 3 and 5 slots, with a step
// budget that cuts prompts into pieces, greedy and sampled (each sentence keeps its own random stream). Also: every
// sentence is reported finished exactly once, and bad set-ups are refused with a message.
// Usage: test_translate_batch MODEL_DIR TOKENIZER   (MODEL_DIR: osstune-init-model --preset tiny)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "infer/decode_cpu_batch.h"

#define N_SRC 5
static const char *const SOURCES[N_SRC] = {
    "今天天氣很好。", "我不知道。", "他昨天晚上在家裡看了一本很有意思的書，然後很早就睡覺了。", "好", "你要去哪裡？"};

static int g_done[N_SRC];
static void on_done(void *user, long index, const ot_translation *t) {
    (void)user;
    (void)t;
    if (index >= 0 && index < N_SRC) g_done[index]++;
}

// One configuration of the batch run against the sequential reference.
static void compare(const char *what, const ot_model *m, const ot_harmony *h, const ot_ids *prompts,
                    const ot_gen_options *o, const ot_translation *ref, int slots, int step_tokens) {
    ot_err err;
    ot_batch_decoder dec;
    int max_len = ot_batch_max_len(prompts, N_SRC, o);
    CHECK(ot_batch_decoder_open_cpu(&dec, m, NULL, slots, max_len, step_tokens, &err) == 0, "%s: open: %s", what,
          err.msg);
    ot_translation out[N_SRC];
    memset(out, 0, sizeof out);
    memset(g_done, 0, sizeof g_done);
    int rc = ot_translate_batch(&dec, h, prompts, N_SRC, o, 7, out, on_done, NULL, &err);
    CHECK(rc == 0, "%s: %s", what, rc ? err.msg : "");
    int same = 0;
    for (int i = 0; i < N_SRC && rc == 0; i++) {
        CHECK(g_done[i] == 1, "%s: sentence %d reported finished %d times", what, i, g_done[i]);
        int ok = out[i].text && strcmp(out[i].text, ref[i].text) == 0 && out[i].new_tokens == ref[i].new_tokens &&
                 out[i].stop == ref[i].stop && out[i].answer == ref[i].answer &&
                 out[i].prompt_tokens == ref[i].prompt_tokens;
        CHECK(ok, "%s: sentence %d: '%s' (%d tokens, stop %d) vs one at a time '%s' (%d tokens, stop %d)", what, i,
              out[i].text ? out[i].text : "(null)", out[i].new_tokens, out[i].stop, ref[i].text, ref[i].new_tokens,
              ref[i].stop);
        same += ok;
    }
    printf("%s %-60s %d of %d sentences equal\n", same == N_SRC ? "ok  " : "FAIL", what, same, N_SRC);
    for (int i = 0; i < N_SRC; i++) free(out[i].text);
    ot_batch_decoder_close(&dec);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_translate_batch MODEL_DIR TOKENIZER\n");
        return 2;
    }
    ot_err err;
    ot_model m;
    if (ot_model_load(&m, argv[1], &err)) {
        fprintf(stderr, "test_translate_batch: %s\n", err.msg);
        return 1;
    }
    ot_tokenizer *tok = ot_tokenizer_load(argv[2], &err);
    if (!tok) {
        fprintf(stderr, "test_translate_batch: %s\n", err.msg);
        return 1;
    }
    ot_harmony h;
    if (ot_harmony_init(&h, tok, NULL, NULL, NULL, &err)) {
        fprintf(stderr, "test_translate_batch: %s\n", err.msg);
        return 1;
    }
    ot_ids prompts[N_SRC];
    memset(prompts, 0, sizeof prompts);
    for (int i = 0; i < N_SRC; i++)
        CHECK(ot_harmony_render_prompt(&h, OT_ZH2NAN, SOURCES[i], strlen(SOURCES[i]), &prompts[i], &err) == 0, "%s",
              err.msg);
    printf("prompt lengths: %d %d %d %d %d tokens\n", prompts[0].n, prompts[1].n, prompts[2].n, prompts[3].n,
           prompts[4].n);

    for (int sampled = 0; sampled <= 1; sampled++) {
        ot_gen_options o;
        ot_gen_options_default(&o);
        o.max_new_tokens = 10;
        if (sampled) {
            o.temperature = 1.0f;
            o.top_p = 0.9f;
        }
        // The reference: ot_translate on one CPU decoder, in input order (with prefix re-use).
        ot_decoder dec;
        CHECK(ot_decoder_open_cpu(&dec, &m, NULL, &err) == 0, "%s", err.msg);
        ot_translation ref[N_SRC];
        for (int i = 0; i < N_SRC; i++)
            CHECK(ot_translate(&dec, &h, OT_ZH2NAN, SOURCES[i], strlen(SOURCES[i]), &o, 7, i, &ref[i], &err) == 0,
                  "%s", err.msg);
        ot_decoder_close(&dec);
        const char *mode = sampled ? "sampled" : "greedy";
        char what[96];
        // budget > slots; 9 extra tokens cut every prompt into many pieces, 2048 takes all prompts in one step
        const int cases[][2] = {{1, 2048}, {2, 11}, {3, 12}, {3, 2048}, {5, 2048}};
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            snprintf(what, sizeof what, "%s, %d slots, %d tokens per step", mode, cases[c][0], cases[c][1]);
            compare(what, &m, &h, prompts, &o, ref, cases[c][0], cases[c][1]);
        }
        for (int i = 0; i < N_SRC; i++) free(ref[i].text);
    }

    // Refusals: a step budget not above the slots, a decoder too short for a prompt.
    ot_batch_decoder dec;
    CHECK(ot_batch_decoder_open_cpu(&dec, &m, NULL, 3, 100, 3, &err) != 0, "a budget equal to the slots was accepted");
    printf("ok   refused: %s\n", err.msg);
    ot_gen_options o;
    ot_gen_options_default(&o);
    o.max_new_tokens = 4;
    CHECK(ot_batch_decoder_open_cpu(&dec, &m, NULL, 2, prompts[2].n, 64, &err) == 0, "%s", err.msg);
    ot_translation out[N_SRC];
    memset(out, 0, sizeof out);
    int rc = ot_translate_batch(&dec, &h, prompts, N_SRC, &o, 0, out, NULL, NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "input 2"), "a prompt longer than the decoder was not refused (rc %d)", rc);
    if (rc) printf("ok   refused: %s\n", err.msg);
    ot_batch_decoder_close(&dec);

    for (int i = 0; i < N_SRC; i++) ot_ids_free(&prompts[i]);
    ot_harmony_free(&h);
    ot_tokenizer_free(tok);
    ot_model_free(&m);
    return ot_test_finish("test_translate_batch");
}
