#include "formats/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// What a non-regular file is, for messages.
const char *ot_file_kind(mode_t m) {
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
                         : "a special file";
}

// The directory part of path ("." when it has none) and, in *base (may be NULL), where its last component starts.
static char *split_dir(const char *path, const char **base) {
    char *dir = ot_strdup(path);
    char *slash = strrchr(dir, '/');
    if (base) *base = slash ? path + (slash - dir) + 1 : path;
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    return dir;
}

int ot_open_regular(const char *path, struct stat *st, const char *expected, ot_err *err) {
    // O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever; regular files ignore the flag.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        ot_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        ot_fail(err, "%s is %s, not a regular file%s", path, ot_file_kind(st->st_mode), expected ? expected : "");
        close(fd);
        return -1;
    }
    return fd;
}

char *ot_read_file(const char *path, size_t *len_out, ot_err *err) {
    struct stat st;
    int fd = ot_open_regular(path, &st, NULL, err);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
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
        ot_fail(err, "%s: read error: %s", path, strerror(errno));
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
    char *dir = split_dir(path, NULL);
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
    int fd = ot_open_temp(path, tmp, err);
    if (fd < 0) {
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

// ---- outputs never destroy inputs -------------------------------------------------------------------------------
// The identity of a path: its device and inode when it exists (symlinks followed), else its directory's device and
// inode plus its last component (what it will be once created).
typedef struct {
    int exists;
    dev_t dev;
    ino_t ino;
    char *name; // !exists: the last component
} path_id;

static int get_path_id(const char *path, path_id *id) {
    memset(id, 0, sizeof *id);
    struct stat st;
    if (stat(path, &st) == 0) {
        id->exists = 1, id->dev = st.st_dev, id->ino = st.st_ino;
        return 0;
    }
    if (errno != ENOENT) return -1;
    char *trimmed = ot_strdup(path);
    size_t n = strlen(trimmed);
    while (n > 1 && trimmed[n - 1] == '/') trimmed[--n] = 0; // "out/" names "out"
    const char *base;
    char *dir = split_dir(trimmed, &base);
    id->name = ot_strdup(base);
    free(trimmed);
    int rc = stat(dir, &st);
    free(dir);
    if (rc != 0) { // a directory still to be created (peft/ of a first export): nothing there can be an input
        int missing = errno == ENOENT;
        free(id->name);
        id->name = NULL;
        return missing ? 0 : -1;
    }
    id->dev = st.st_dev, id->ino = st.st_ino;
    return 0;
}

static int same_path_id(const path_id *a, const path_id *b) {
    if (a->exists != b->exists || a->dev != b->dev || a->ino != b->ino) return 0;
    return a->exists || (a->name && b->name && strcmp(a->name, b->name) == 0);
}

int ot_check_output(const char *out_role, const char *out, const ot_path_role *inputs, int n_inputs, ot_err *err) {
    path_id o;
    if (get_path_id(out, &o) != 0) return ot_fail(err, "%s %s: cannot be written: %s", out_role, out, strerror(errno));
    int rc = 0;
    struct stat st;
    if (o.exists && stat(out, &st) == 0 && !S_ISREG(st.st_mode))
        rc = ot_fail(err, "%s %s is %s, not a regular file: refusing to replace it (name a file to write)", out_role, out,
                     ot_file_kind(st.st_mode));
    for (int i = 0; i < n_inputs && !rc; i++) {
        const char *in = inputs[i].path;
        if (!in) continue;
        path_id p;
        if (get_path_id(in, &p) != 0) continue; // unreadable: reading it will say so
        if (same_path_id(&o, &p)) {
            rc = ot_fail(err, "%s %s is the same file as %s %s; refusing to write over it (choose another path)",
                         out_role, out, inputs[i].role, in);
        } else if (o.exists && p.exists && stat(in, &st) == 0 && S_ISDIR(st.st_mode)) {
            // A directory input stands for the files in it.
            DIR *d = opendir(in);
            struct dirent *e;
            while (d && !rc && (e = readdir(d))) {
                size_t n = strlen(in) + strlen(e->d_name) + 2;
                char *f = ot_malloc(n);
                snprintf(f, n, "%s/%s", in, e->d_name);
                struct stat fs;
                if (stat(f, &fs) == 0 && S_ISREG(fs.st_mode) && fs.st_dev == o.dev && fs.st_ino == o.ino)
                    rc = ot_fail(err, "%s %s is %s, a file of %s %s; refusing to write over it (choose another path)",
                                 out_role, out, f, inputs[i].role, in);
                free(f);
            }
            if (d) closedir(d);
        }
        free(p.name);
    }
    free(o.name);
    return rc;
}

int ot_open_temp(const char *final, const char *tmp, ot_err *err) {
    struct stat st;
    if (stat(final, &st) == 0 && !S_ISREG(st.st_mode))
        return ot_fail(err, "%s is %s, not a regular file: refusing to replace it", final, ot_file_kind(st.st_mode));
    if (lstat(tmp, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return ot_fail(err, "%s: a directory is in the way of this temporary file", tmp);
        if (unlink(tmp) != 0 && errno != ENOENT) return ot_fail(err, "%s: cannot remove a stale file: %s", tmp, strerror(errno));
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return ot_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    return fd;
}

char *ot_temp_path_pid(const char *path) {
    size_t n = strlen(path) + 32;
    char *tmp = ot_malloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    return tmp;
}

int ot_remove_stale_temps(const char *path) {
    const char *base;
    char *dir = split_dir(path, &base);
    const int named_dir = base != path; // messages name the files the way the user named the path
    size_t nb = strlen(base);
    int removed = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *s = e->d_name;
        if (strncmp(s, base, nb) != 0 || strncmp(s + nb, ".tmp.", 5) != 0) continue;
        const char *digits = s + nb + 5;
        char *end;
        long pid = strtol(digits, &end, 10);
        if (end == digits || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; // alive (or not ours to judge): leave it
        size_t n = strlen(dir) + strlen(s) + 2;
        char *f = ot_malloc(n);
        snprintf(f, n, "%s%s%s", named_dir ? dir : "", named_dir && strcmp(dir, "/") != 0 ? "/" : "", s);
        struct stat st;
        if (lstat(f, &st) == 0 && !S_ISDIR(st.st_mode) && unlink(f) == 0) {
            ot_warn("removed %s, left by an interrupted run (process %ld is gone)", f, pid);
            removed++;
        }
        free(f);
    }
    if (d) closedir(d);
    free(dir);
    return removed;
}

char *ot_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ot_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

int ot_remove_tree(const char *path, ot_err *err) {
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ot_fail(err, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}
