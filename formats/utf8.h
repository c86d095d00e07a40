// Strict UTF-8 checking (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
// The tokenizer and the pair reader both rely on it, so that bad bytes are reported where they enter.
#ifndef OT_FORMATS_UTF8_H
#define OT_FORMATS_UTF8_H

#include <stddef.h>

// Returns 1 if s[0..len) is valid UTF-8, else 0 and *bad_at = byte offset of the first bad sequence.
// n_chars (may be NULL) receives the number of code points when valid.
int ot_utf8_valid(const char *s, size_t len, size_t *n_chars, size_t *bad_at);

#endif
