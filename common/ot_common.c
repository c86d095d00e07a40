#include "common/ot_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ot_die_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "osstune: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " [%s:%d]\n", file, line);
    va_end(ap);
    fflush(stderr);
    exit(1);
}

int ot_fail(ot_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void ot_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "osstune: warning: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

void *ot_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) ot_die("out of memory allocating %zu bytes", n);
    return p;
}

void *ot_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ot_die("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *ot_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) ot_die("out of memory reallocating %zu bytes", n);
    return q;
}

char *ot_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = ot_malloc(n);
    memcpy(d, s, n);
    return d;
}

float ot_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)man, -24); // subnormal (or zero)
        return sign ? -f : f;
    }
    uint32_t u = exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112) << 23) | (man << 13));
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ot_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

uint64_t ot_hash64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void ot_rng_seed(ot_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        seed = ot_hash64(seed);
        r->s[i] = seed;
    }
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ot_rng_u64(ot_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

double ot_rng_uniform(ot_rng *r) { return (double)(ot_rng_u64(r) >> 11) * 0x1.0p-53; }

double ot_rng_normal(ot_rng *r) {
    double u1 = ot_rng_uniform(r), u2 = ot_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double ot_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ot_parse_size(const char *s, uint64_t *bytes) {
    static const struct {
        const char *unit;
        double factor;
    } units[] = {{"", 1},       {"B", 1},      {"K", 0x1p10},   {"KiB", 0x1p10}, {"KB", 1e3},
                 {"M", 0x1p20}, {"MiB", 0x1p20}, {"MB", 1e6},   {"G", 0x1p30},   {"GiB", 0x1p30},
                 {"GB", 1e9},   {"T", 0x1p40}, {"TiB", 0x1p40}, {"TB", 1e12}};
    // A digit or a point first: no sign, no space, no "inf" or "nan" (strtod would take them)
    if (!s || !((*s >= '0' && *s <= '9') || *s == '.')) return -1;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v)) return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].unit)) {
            double b = v * units[i].factor;
            if (!(b >= 1) || b > 0x1p62) return -1;
            *bytes = (uint64_t)b;
            return 0;
        }
    return -1;
}

int ot_check_gpu_memory_limit(uint64_t used, uint64_t limit, const char *when, const char *advice, ot_err *err) {
    if (!limit || used <= limit) return 0;
    char u[32], l[32];
    return ot_fail(err, "GPU memory: %s in use %s, over --gpu-memory-limit %s (what CUDA and its libraries allocate "
                   "at first use comes on top of the planned buffers): %s", ot_format_size(u, sizeof u, used), when,
                   ot_format_size(l, sizeof l, limit), advice);
}

const char *ot_format_size(char *buf, size_t n, uint64_t bytes) {
    const double b = (double)bytes;
    if (b >= 0x1p40) snprintf(buf, n, "%.2f TiB", b / 0x1p40);
    else if (b >= 0x1p30) snprintf(buf, n, "%.2f GiB", b / 0x1p30);
    else if (b >= 0x1p20) snprintf(buf, n, "%.1f MiB", b / 0x1p20);
    else if (b >= 0x1p10) snprintf(buf, n, "%.1f KiB", b / 0x1p10);
    else snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    return buf;
}
