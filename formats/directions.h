// The translation directions: for each, the column of a pairs file that is the source, the column that is the
// target, and the developer instruction that names the task. This table is the one place that says so:
// osstune-prep (which samples go into the HDF5), osstune-translate (which TSV columns are input and reference)
// and osstune-export (one Ollama Modelfile per direction) all read it.
//
//   name     source  target  what
//   zh2nan   zh      nan     Mandarin -> Taiwanese Hokkien in Han characters
//   nan2zh   nan     zh      Taiwanese Hokkien in Han characters -> Mandarin
//   zh2tl    zh      nan_tl  Mandarin -> Taiwanese Hokkien in Tâi-lô romanization
//   tl2zh    nan_tl  zh      Tâi-lô -> Mandarin
//   nan2tl   nan     nan_tl  Han-character Taiwanese -> Tâi-lô (transliteration)
//   tl2nan   nan_tl  nan     Tâi-lô -> Han-character Taiwanese
//
// The numbers are stored in pairs files (the `direction` dataset): never renumber an entry, only append.
#ifndef OT_FORMATS_DIRECTIONS_H
#define OT_FORMATS_DIRECTIONS_H

typedef enum { OT_COL_ZH = 0, OT_COL_NAN = 1, OT_COL_TL = 2, OT_N_COLUMNS = 3 } ot_column;

typedef enum {
    OT_ZH2NAN = 0,
    OT_NAN2ZH = 1,
    OT_ZH2TL = 2,
    OT_TL2ZH = 3,
    OT_NAN2TL = 4,
    OT_TL2NAN = 5,
    OT_N_DIRECTIONS = 6
} ot_direction;

typedef struct {
    const char *name;        // "zh2nan": the value of --direction / --directions
    ot_column source, target;
    ot_direction reverse;    // the direction that swaps source and target
    const char *instruction; // the default developer instruction
    const char *title;       // for people: "Mandarin -> Taiwanese Hokkien" (Han characters unless it says Tâi-lô)
    const char *modelfile;   // the Ollama Modelfile osstune-export writes for it
} ot_direction_info;

extern const ot_direction_info ot_directions[OT_N_DIRECTIONS];

// The default instructions of the first two directions, by name (templates and tests use them directly).
extern const char OT_HARMONY_INSTRUCTION_ZH2NAN[];
extern const char OT_HARMONY_INSTRUCTION_NAN2ZH[];

const char *ot_column_name(ot_column c);       // "zh", "nan", "nan_tl"
const char *ot_direction_name(ot_direction d); // "zh2nan", ...; "?" outside the table
int ot_direction_parse(const char *name);      // the direction, or -1

// A --directions value: "both" (zh2nan then nan2zh, the default of osstune-prep), "all" (every direction, in table
// order), or a comma-separated list of names (in the order given, each at most once). Fills dirs[] (room for
// OT_N_DIRECTIONS) and returns the count, or -1 with a reason in why (room for 160 bytes).
int ot_directions_parse_list(const char *spec, ot_direction *dirs, char *why);

// The names accepted by ot_direction_parse, comma-separated ("zh2nan, nan2zh, ..."), for messages.
const char *ot_direction_names(void);

#endif
