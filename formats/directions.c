// The direction table (formats/directions.h).
#include "formats/directions.h"

#include <stdio.h>
#include <string.h>

const char OT_HARMONY_INSTRUCTION_ZH2NAN[] =
    "Translate Mandarin (華語) into Taiwanese Hokkien (台語) written in Han characters.";
const char OT_HARMONY_INSTRUCTION_NAN2ZH[] =
    "Translate Taiwanese Hokkien (台語) into Mandarin (華語) written in Traditional characters.";

const ot_direction_info ot_directions[OT_N_DIRECTIONS] = {
    {"zh2nan", OT_COL_ZH, OT_COL_NAN, OT_NAN2ZH, OT_HARMONY_INSTRUCTION_ZH2NAN,
     "Mandarin -> Taiwanese Hokkien", "Modelfile"},
    {"nan2zh", OT_COL_NAN, OT_COL_ZH, OT_ZH2NAN, OT_HARMONY_INSTRUCTION_NAN2ZH,
     "Taiwanese Hokkien -> Mandarin", "Modelfile.nan2zh"},
    {"zh2tl", OT_COL_ZH, OT_COL_TL, OT_TL2ZH,
     "Translate Mandarin (華語) into Taiwanese Hokkien (台語) written in Tâi-lô romanization.",
     "Mandarin -> Taiwanese Hokkien in Tâi-lô", "Modelfile.zh2tl"},
    {"tl2zh", OT_COL_TL, OT_COL_ZH, OT_ZH2TL,
     "Translate Taiwanese Hokkien (台語) written in Tâi-lô romanization into Mandarin (華語) written in Traditional "
     "characters.",
     "Taiwanese Hokkien in Tâi-lô -> Mandarin", "Modelfile.tl2zh"},
    {"nan2tl", OT_COL_NAN, OT_COL_TL, OT_TL2NAN,
     "Write this Taiwanese Hokkien (台語) text, given in Han characters, in Tâi-lô romanization.",
     "Taiwanese Hokkien: Han characters -> Tâi-lô", "Modelfile.nan2tl"},
    {"tl2nan", OT_COL_TL, OT_COL_NAN, OT_NAN2TL,
     "Write this Taiwanese Hokkien (台語) text, given in Tâi-lô romanization, in Han characters.",
     "Taiwanese Hokkien: Tâi-lô -> Han characters", "Modelfile.tl2nan"},
};

static const char *column_names[OT_N_COLUMNS] = {"zh", "nan", "nan_tl"};

const char *ot_column_name(ot_column c) { return c >= 0 && c < OT_N_COLUMNS ? column_names[c] : "?"; }

const char *ot_direction_name(ot_direction d) { return d >= 0 && d < OT_N_DIRECTIONS ? ot_directions[d].name : "?"; }

int ot_direction_parse(const char *name) {
    for (int d = 0; d < OT_N_DIRECTIONS; d++)
        if (strcmp(name, ot_directions[d].name) == 0) return d;
    return -1;
}

const char *ot_direction_names(void) { return "zh2nan, nan2zh, zh2tl, tl2zh, nan2tl, tl2nan"; }

int ot_directions_parse_list(const char *spec, ot_direction *dirs, char *why) {
    int n = 0;
    if (strcmp(spec, "both") == 0) {
        dirs[0] = OT_ZH2NAN, dirs[1] = OT_NAN2ZH;
        return 2;
    }
    if (strcmp(spec, "all") == 0) {
        for (int d = 0; d < OT_N_DIRECTIONS; d++) dirs[d] = (ot_direction)d;
        return OT_N_DIRECTIONS;
    }
    for (const char *p = spec;; p++) {
        size_t len = strcspn(p, ",");
        char name[32];
        int d = -1;
        if (len < sizeof name) {
            memcpy(name, p, len);
            name[len] = 0;
            d = ot_direction_parse(name);
        }
        if (d < 0) {
            snprintf(why, 160, "'%.*s' is not a direction (both, all, or a comma-separated list of: %s)",
                     (int)(len < 40 ? len : 40), p, ot_direction_names());
            return -1;
        }
        for (int k = 0; k < n; k++)
            if (dirs[k] == (ot_direction)d) {
                snprintf(why, 160, "direction %s is named twice", name);
                return -1;
            }
        dirs[n++] = (ot_direction)d;
        p += len;
        if (!*p) break;
    }
    return n;
}
