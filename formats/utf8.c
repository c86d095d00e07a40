#include "formats/utf8.h"

#include <stdint.h>

int ot_utf8_valid(const char *s, size_t len, size_t *n_chars, size_t *bad_at) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, chars = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) { // ASCII fast path: most bytes of most inputs
            i++, chars++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) need = 3, cp = c & 0x07, min = 0x10000;
        else goto bad; // continuation byte without a lead, or 0xf8..0xff
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len || (p[i + k] & 0xc0) != 0x80) goto bad;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto bad;
        i += need + 1, chars++;
    }
    if (n_chars) *n_chars = chars;
    return 1;
bad:
    if (bad_at) *bad_at = i;
    return 0;
}
