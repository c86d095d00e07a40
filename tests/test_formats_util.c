#include "tests/test_formats_util.h"

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include "common/ot_common.h"

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    if (remove(p) != 0) ot_die("cannot remove %s: %s", p, strerror(errno));
    return 0;
}

void fmt_rm_rf(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkdir_p(const char *dir) {
    char *p = ot_strdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) ot_die("cannot create %s: %s", p, strerror(errno));
    free(p);
}

void fmt_fresh_dir(const char *dir) {
    fmt_rm_rf(dir);
    mkdir_p(dir);
}

const char *fmt_path(const char *dir, const char *name) {
    static char ring[8][4096];
    static int k = 0;
    char *b = ring[k++ % 8];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

int fmt_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

void fmt_copy_dir(const char *src, const char *dst) {
    fmt_fresh_dir(dst);
    DIR *d = opendir(src);
    if (!d) ot_die("cannot open directory %s", src);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dst, e->d_name);
        FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
        if (!in || !out) ot_die("cannot copy %s to %s", from, to);
        char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            if (fwrite(buf, 1, n, out) != n) ot_die("write error on %s", to);
        fclose(in);
        if (fclose(out) != 0) ot_die("write error on %s", to);
    }
    closedir(d);
}

int fmt_write_raw_safetensors(const char *path, const char *header, const void *data, size_t len) {
    size_t n = strlen(header), padded = n + (8 - (8 + n) % 8) % 8;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = n; i < padded; i++) fputc(' ', f);
    if (len) fwrite(data, 1, len, f);
    return fclose(f);
}

int fmt_run(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int fmt_has(const char *haystack, const char *needle) {
    if (strstr(haystack, needle)) return 1;
    fprintf(stderr, "  message: %s\n  lacks:   %s\n", haystack, needle);
    return 0;
}
