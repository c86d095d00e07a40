// Test helper for the export tests: prints, as one JSON object, the harmony inference prompt that formats/harmony.h
// renders for a source text — its text (special tokens by name) and its token ids — plus the default system and
// instruction texts. The python tests compare the exported templates (Ollama Modelfile, GGUF chat template) and
// llama.cpp's tokenizer against it, so the single definition of the prompt stays the reference.
//
// usage: test_export_harmony TOKENIZER_PATH zh2nan|nan2zh SOURCE_TEXT
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/harmony.h"
#include "formats/tokenizer.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_export_harmony TOKENIZER_PATH zh2nan|nan2zh SOURCE_TEXT\n");
        return 2;
    }
    int dir = ot_direction_parse(argv[2]);
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
    ot_ids ids = {0};
    if (ot_harmony_render_prompt(&h, (ot_direction)dir, argv[3], strlen(argv[3]), &ids, &err)) {
        fprintf(stderr, "test_export_harmony: %s\n", err.msg);
        return 1;
    }
    const char *instruction = dir == OT_ZH2NAN ? OT_HARMONY_INSTRUCTION_ZH2NAN : OT_HARMONY_INSTRUCTION_NAN2ZH;
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
