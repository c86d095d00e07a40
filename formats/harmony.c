// Harmony rendering: the conversation is built once as a list of pieces (special tokens by name, text pieces),
// then turned into ids or into text. Keeping both outputs on the same list is what makes prep, translate and the
// exported template agree.
#include "formats/harmony.h"

#include <stdio.h>
#include <stdlib.h>

const char OT_HARMONY_SYSTEM_DEFAULT[] =
    "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: low\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.";
// ---- the conversation as pieces -------------------------------------------------------------------------------
enum { S_TEXT = 0, S_START, S_END, S_MESSAGE, S_CHANNEL, S_RETURN }; // the formatting tokens harmony uses here
typedef struct {
    int kind;         // S_TEXT: ordinary text; otherwise a formatting token, text is its name
    const char *text;
    size_t len;
} piece;

enum { P_PREFIX_END = 10, P_MAX = 24 }; // pieces 0..9 are the system and developer messages

#define SPECIAL(kind, name) (piece){kind, name, sizeof(name) - 1}
#define TEXT(s, n) (piece){S_TEXT, s, n}

// Fills p with the whole conversation; returns the number of pieces. *loss_piece is the index of the first
// loss-bearing piece (only with a target). developer is the full developer content ("# Instructions\n\n...").
static int conversation(piece *p, const char *system, const char *developer, const char *source, size_t source_len,
                        const char *target, size_t target_len, int *loss_piece) {
    int n = 0;
    p[n++] = SPECIAL(S_START, "<|start|>");
    p[n++] = TEXT("system", 6);
    p[n++] = SPECIAL(S_MESSAGE, "<|message|>");
    p[n++] = TEXT(system, strlen(system));
    p[n++] = SPECIAL(S_END, "<|end|>");
    p[n++] = SPECIAL(S_START, "<|start|>");
    p[n++] = TEXT("developer", 9);
    p[n++] = SPECIAL(S_MESSAGE, "<|message|>");
    p[n++] = TEXT(developer, strlen(developer));
    p[n++] = SPECIAL(S_END, "<|end|>"); // n == P_PREFIX_END
    p[n++] = SPECIAL(S_START, "<|start|>");
    p[n++] = TEXT("user", 4);
    p[n++] = SPECIAL(S_MESSAGE, "<|message|>");
    p[n++] = TEXT(source, source_len);
    p[n++] = SPECIAL(S_END, "<|end|>");
    p[n++] = SPECIAL(S_START, "<|start|>");
    p[n++] = TEXT("assistant", 9);
    if (!target) return n;
    // What the model generates after the prompt: it learns to answer on the final channel directly.
    if (loss_piece) *loss_piece = n;
    p[n++] = SPECIAL(S_CHANNEL, "<|channel|>");
    p[n++] = TEXT("final", 5);
    p[n++] = SPECIAL(S_MESSAGE, "<|message|>");
    p[n++] = TEXT(target, target_len);
    p[n++] = SPECIAL(S_RETURN, "<|return|>"); // the training target ends with <|return|>, history messages with <|end|>
    return n;
}

// Developer content per harmony's DeveloperContent: "# Instructions", a blank line, the text, no trailing newline.
static char *developer_content(const char *instruction) {
    static const char head[] = "# Instructions\n\n";
    char *s = ot_malloc(sizeof head + strlen(instruction));
    strcpy(s, head);
    strcat(s, instruction);
    return s;
}

static int special_id(const ot_harmony *h, int kind) {
    switch (kind) {
    case S_START: return h->id_start;
    case S_END: return h->id_end;
    case S_MESSAGE: return h->id_message;
    case S_CHANNEL: return h->id_channel;
    default: return h->id_return;
    }
}

// Appends the ids of pieces [from, to); starts[i] receives the token index where piece i starts (optional).
static int pieces_to_ids(const ot_harmony *h, const piece *p, int from, int to, ot_ids *out, int *starts, ot_err *err) {
    for (int i = from; i < to; i++) {
        if (starts) starts[i] = out->n;
        if (p[i].kind != S_TEXT) ot_ids_push(out, special_id(h, p[i].kind));
        else if (ot_tokenizer_encode(h->tok, p[i].text, p[i].len, out, err) != 0) return -1;
    }
    return 0;
}

// ---- public ---------------------------------------------------------------------------------------------------
int ot_harmony_init_all(ot_harmony *h, const ot_tokenizer *tok, const char *system,
                        const char *const *instructions, ot_err *err) {
    memset(h, 0, sizeof *h);
    h->tok = tok;
    struct {
        const char *name;
        int *id;
    } need[] = {{"<|start|>", &h->id_start}, {"<|end|>", &h->id_end}, {"<|message|>", &h->id_message},
                {"<|channel|>", &h->id_channel}, {"<|return|>", &h->id_return}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if ((*need[i].id = ot_tokenizer_special_id(tok, need[i].name)) < 0)
            return ot_fail(err, "tokenizer %s has no special token %s, which harmony needs", ot_tokenizer_file(tok),
                           need[i].name);
    h->system = ot_strdup(system ? system : OT_HARMONY_SYSTEM_DEFAULT);
    for (int d = 0; d < OT_N_DIRECTIONS; d++) {
        const char *given = instructions ? instructions[d] : NULL;
        h->instruction[d] = ot_strdup(given ? given : ot_directions[d].instruction);
    }
    for (int d = 0; d < OT_N_DIRECTIONS; d++) {
        piece p[P_MAX];
        char *dev = developer_content(h->instruction[d]);
        conversation(p, h->system, dev, "", 0, NULL, 0, NULL);
        ot_err why = {{0}};
        int rc = pieces_to_ids(h, p, 0, P_PREFIX_END, &h->prefix[d], NULL, &why);
        free(dev);
        if (rc != 0) {
            ot_harmony_free(h);
            return ot_fail(err, "cannot encode the system or %s developer text: %s", ot_directions[d].name, why.msg);
        }
    }
    return 0;
}

int ot_harmony_init(ot_harmony *h, const ot_tokenizer *tok, const char *system, const char *instruction_zh2nan,
                    const char *instruction_nan2zh, ot_err *err) {
    const char *instructions[OT_N_DIRECTIONS] = {0};
    instructions[OT_ZH2NAN] = instruction_zh2nan;
    instructions[OT_NAN2ZH] = instruction_nan2zh;
    return ot_harmony_init_all(h, tok, system, instructions, err);
}

void ot_harmony_free(ot_harmony *h) {
    free(h->system);
    for (int d = 0; d < OT_N_DIRECTIONS; d++) {
        free(h->instruction[d]);
        ot_ids_free(&h->prefix[d]);
    }
    memset(h, 0, sizeof *h);
}

// The prefix is the same for every sample of a direction, so it is copied from the cache; the remaining pieces
// come from the same conversation() list as the text form.
static int render(const ot_harmony *h, ot_direction dir, const char *source, size_t source_len, const char *target,
                  size_t target_len, ot_ids *out, int *loss_start, ot_err *err) {
    if (dir < 0 || dir >= OT_N_DIRECTIONS) return ot_fail(err, "harmony: unknown direction %d", (int)dir);
    piece p[P_MAX];
    int starts[P_MAX], loss_piece = -1;
    int n = conversation(p, h->system, "", source, source_len, target, target_len, &loss_piece);
    int base = out->n;
    ot_ids_append(out, h->prefix[dir].v, h->prefix[dir].n);
    if (pieces_to_ids(h, p, P_PREFIX_END, n, out, starts, err) != 0) {
        out->n = base;
        return -1;
    }
    if (loss_start) *loss_start = loss_piece >= 0 ? starts[loss_piece] - base : out->n - base;
    return 0;
}

int ot_harmony_render_sample(const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                             const char *target, size_t target_len, ot_ids *out, int *loss_start, ot_err *err) {
    return render(h, dir, source, source_len, target, target_len, out, loss_start, err);
}

int ot_harmony_render_prompt(const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                             ot_ids *out, ot_err *err) {
    return render(h, dir, source, source_len, NULL, 0, out, NULL, err);
}

char *ot_harmony_render_text(const char *system, const char *instruction, const char *source, const char *target) {
    piece p[P_MAX];
    char *dev = developer_content(instruction);
    int n = conversation(p, system, dev, source, strlen(source), target, target ? strlen(target) : 0, NULL);
    size_t total = 1;
    for (int i = 0; i < n; i++) total += p[i].len;
    char *s = ot_malloc(total), *at = s;
    for (int i = 0; i < n; i++) {
        memcpy(at, p[i].text, p[i].len);
        at += p[i].len;
    }
    *at = 0;
    free(dev);
    return s;
}
