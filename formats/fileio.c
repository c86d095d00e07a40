#include "formats/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *ot_read_file(const char *path, size_t *len_out, ot_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = ot_malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = ot_realloc(buf, cap *= 2);
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        ot_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[len] = 0;
    if (len_out) *len_out = len;
    return buf;
}

int ot_fsync_dir(const char *dir, ot_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ot_fail(err, "cannot open directory %s to fsync it: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : ot_fail(err, "cannot fsync directory %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int ot_mkdir_p(const char *path, ot_err *err) {
    char *buf = ot_strdup(path);
    int rc = 0;
    for (char *p = buf + 1; *p && !rc; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) rc = ot_fail(err, "cannot create directory %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (!rc && mkdir(buf, 0755) != 0) {
        struct stat sb;
        if (errno != EEXIST) rc = ot_fail(err, "cannot create directory %s: %s", buf, strerror(errno));
        else if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)) rc = ot_fail(err, "%s exists but is not a directory", buf);
    }
    free(buf);
    return rc;
}

int ot_fsync_parent_dir(const char *path, ot_err *err) {
    char *dir = ot_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0) rc = ot_fail(err, "%s: cannot fsync directory: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

int ot_write_file_atomic(const char *path, const void *data, size_t len, ot_err *err) {
    size_t n = strlen(path) + 8;
    char *tmp = ot_malloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        ot_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            ot_fail(err, "%s: write failed: %s", tmp, strerror(errno));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        ot_fail(err, "%s: fsync failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        ot_fail(err, "%s: close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        ot_fail(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    free(tmp);
    return ot_fsync_parent_dir(path, err);
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
}
