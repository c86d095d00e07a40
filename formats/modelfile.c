// Ollama Modelfiles (see modelfile.h).
#include "formats/modelfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/harmony.h"

char *ot_modelfile_text(ot_direction d) {
    const char *fmt =
        "# Ollama Modelfile written by osstune-export: gpt-oss fine-tuned for %s translation.\n"
        "#   ollama create NAME -f %s\n"
        "# The TEMPLATE renders exactly the harmony prompt the model was trained on: the system message, the\n"
        "# developer instruction (the SYSTEM text below), the user's source text, then <|start|>assistant.\n"
        "# Other direction: %s (or `/set system` / the API's \"system\" field with that file's SYSTEM text).\n"
        "FROM ./model.gguf\n"
        "\n"
        "# The unmerged alternative: the base model plus the LoRA adapter (write base.gguf with\n"
        "# `osstune-export --model BASE_DIR --out DIR --only base`), needs an Ollama that accepts ADAPTER for gpt-oss:\n"
        "# FROM ./base.gguf\n"
        "# ADAPTER ./adapter.gguf\n"
        "\n"
        "TEMPLATE \"\"\"<|start|>system<|message|>%s<|end|><|start|>developer<|message|># Instructions\n"
        "\n"
        "{{ .System }}<|end|>{{ range .Messages }}{{ if eq .Role \"user\" }}<|start|>user<|message|>{{ .Content }}<|end|>"
        "{{ else if eq .Role \"assistant\" }}<|start|>assistant<|channel|>final<|message|>{{ .Content }}<|end|>{{ end }}"
        "{{ end }}<|start|>assistant\"\"\"\n"
        "SYSTEM \"\"\"%s\"\"\"\n"
        "# Stop at the end of the answer or of a tool call; never on <|end|>, which closes an analysis message\n"
        "# before the final one.\n"
        "PARAMETER stop \"<|return|>\"\n"
        "PARAMETER stop \"<|call|>\"\n";
    const ot_direction_info *info = &ot_directions[d];
    const char *instruction = info->instruction;
    size_t n = strlen(fmt) + strlen(OT_HARMONY_SYSTEM_DEFAULT) + strlen(instruction) + 256;
    char *s = ot_malloc(n);
    snprintf(s, n, fmt, info->title, info->modelfile, ot_directions[info->reverse].modelfile, OT_HARMONY_SYSTEM_DEFAULT,
             instruction);
    return s;
}

static int check_template_text(const char *what, const char *text, ot_err *err) {
    static const char *bad[] = {"{{", "}}", "{%", "%}", "{#", "\"\"\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (strstr(text, bad[i]))
            return ot_fail(err, "the %s text contains '%s', which cannot go into a chat template verbatim", what, bad[i]);
    return 0;
}

int ot_modelfile_check_texts(ot_err *err) {
    int rc = check_template_text("harmony system", OT_HARMONY_SYSTEM_DEFAULT, err);
    for (int d = 0; d < OT_N_DIRECTIONS && !rc; d++)
        rc = check_template_text(ot_directions[d].name, ot_directions[d].instruction, err);
    return rc;
}
