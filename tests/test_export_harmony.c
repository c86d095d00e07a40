// Test helper for the export tests, two modes:
//   test_export_harmony TOKENIZER_PATH zh2nan|nan2zh SOURCE_TEXT
//     prints, as one JSON object, the harmony inference prompt that formats/harmony.h renders for a source text — its
//     text (special tokens by name) and its token ids — plus the default system and instruction texts. The python
//     tests compare the exported templates (Ollama Modelfile, GGUF chat template) and llama.cpp's tokenizer against
//     it, so the single definition of the prompt stays the reference.
//   test_export_harmony TOKENIZER_PATH --answer ID,ID,...
//     prints the line osstune-translate prints for these generated ids (ot_harmony_answer, then one line), so ids
//     another engine generated can be compared with osstune-translate's output.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/harmony.h"
#include "formats/tokenizer.h"
#include "infer/generate.h"

static int print_answer(const ot_harmony *h, const char *list) {
    ot_ids ids = {0};
    for (const char *p = list; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            fprintf(stderr, "test_export_harmony: --answer takes comma-separated token ids, not '%s'\n", list);
            return 2;
        }
        ot_ids_push(&ids, (int32_t)v);
        p = *end ? end + 1 : end;
    }
    ot_err err;
    int kind;
    char *text = ot_harmony_answer(h, ids.v, ids.n, &kind, &err);
    ot_ids_free(&ids);
    if (!text) {
        fprintf(stderr, "test_export_harmony: %s\n", err.msg);
        return 1;
    }
    ot_text_one_line(text);
    puts(text);
    free(text);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_export_harmony TOKENIZER_PATH DIRECTION SOURCE_TEXT\n"
                        "       test_export_harmony TOKENIZER_PATH --answer ID,ID,...\n");
        return 2;
    }
    const int answer = strcmp(argv[2], "--answer") == 0;
    int dir = answer ? OT_ZH2NAN : ot_direction_parse(argv[2]);
    if (dir < 0) {
        fprintf(stderr, "test_export_harmony: unknown direction '%s'\n", argv[2]);
        return 2;
    }
    ot_err err;
    ot_tokenizer *tok = ot_tokenizer_load(argv[1], &err);
    if (!tok) {
        fprintf(stderr, "test_export_harmony: %s\n", err.msg);
        return 1;
    }
    ot_harmony h;
    if (ot_harmony_init(&h, tok, NULL, NULL, NULL, &err)) {
        fprintf(stderr, "test_export_harmony: %s\n", err.msg);
        return 1;
    }
    if (answer) {
        int rc = print_answer(&h, argv[3]);
        ot_harmony_free(&h);
        ot_tokenizer_free(tok);
        return rc;
    }
    ot_ids ids = {0};
    if (ot_harmony_render_prompt(&h, (ot_direction)dir, argv[3], strlen(argv[3]), &ids, &err)) {
        fprintf(stderr, "test_export_harmony: %s\n", err.msg);
        return 1;
    }
    const char *instruction = ot_directions[dir].instruction;
    char *text = ot_harmony_render_text(OT_HARMONY_SYSTEM_DEFAULT, instruction, argv[3], NULL);
    json_t *j = json_object(), *arr = json_array();
    for (int i = 0; i < ids.n; i++) json_array_append_new(arr, json_integer(ids.v[i]));
    json_object_set_new(j, "system", json_string(OT_HARMONY_SYSTEM_DEFAULT));
    json_object_set_new(j, "instruction", json_string(instruction));
    json_object_set_new(j, "text", json_string(text));
    json_object_set_new(j, "ids", arr);
    char *out = json_dumps(j, JSON_COMPACT);
    puts(out);
    free(out);
    json_decref(j);
    free(text);
    ot_ids_free(&ids);
    ot_harmony_free(&h);
    ot_tokenizer_free(tok);
    return 0;
}
