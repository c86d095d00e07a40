// MXFP4 dequantisation (spec §3.4): FP4 E2M1 codes in nibbles, one E8M0 power-of-two scale per 32 elements.
// A number format like bf16, so it lives here: the kernels read expert rows with it, and the file writers
// (GGUF export, init-model) need it without depending on the kernels.
#include <math.h>

#include "common/ot_common.h"

// Bit 3 is the sign; bits 2..1 the exponent (bias 1, 0 = subnormal), bit 0 the mantissa.
const float ot_fp4_values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

void ot_mxfp4_dequant_row(float *out, const uint8_t *blocks, const uint8_t *scales, int cols) {
    if (cols <= 0 || cols % 32)
        ot_die("ot_mxfp4_dequant_row: row length %d is not a positive multiple of 32", cols);
    for (int g = 0; g < cols / 32; g++) {
        // The 16 possible values of this group, each LUT · 2^(s − 127) as ldexp computes it (exact, and no
        // inf · 0 for the extreme scale bytes).
        float table[16];
        int e = (int)scales[g] - 127;
        for (int c = 0; c < 16; c++)
            table[c] = ldexpf(ot_fp4_values[c], e);
        const uint8_t *b = blocks + (size_t)g * 16;
        float *o = out + (size_t)g * 32;
        for (int j = 0; j < 16; j++) {
            o[2 * j] = table[b[j] & 0x0F];   // low nibble: the even element
            o[2 * j + 1] = table[b[j] >> 4]; // high nibble: the odd element
        }
    }
}
