// Pair input: TSV and JSONL reading (column order, extra columns/keys, CRLF, BOM, format sniffing) and every kind
// of bad line or file reported as FILE:LINE with its reason, reading going on after a bad line.
#include <stdio.h>
#include <stdlib.h>

#include "formats/pairs_input.h"
#include "tests/test_util.h"

static char tmpdir[256];

static const char *write_tmp(const char *name, const char *content, size_t len) {
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", tmpdir, name);
    FILE *f = fopen(path[k], "wb");
    fwrite(content, 1, len, f);
    fclose(f);
    return path[k];
}
#define WRITE(name, literal) write_tmp(name, literal, sizeof(literal) - 1)

// One expected result of ot_pairs_next: a pair (zh, nan at line) or a bad line whose message has needle.
typedef struct {
    int kind;
    long line;
    const char *zh, *nan, *needle;
} expect;

static void run(const char *path, long max_chars, const expect *e, int n, const char *format) {
    ot_err err = {{0}};
    ot_pairs_reader *r = ot_pairs_open(path, max_chars, &err);
    CHECK(r != NULL, "open %s: %s", path, err.msg);
    if (!r) return;
    CHECK(strcmp(ot_pairs_format(r), format) == 0, "%s read as %s", path, ot_pairs_format(r));
    for (int k = 0; k <= n; k++) {
        ot_pair p;
        err.msg[0] = 0;
        int got = ot_pairs_next(r, &p, &err);
        if (k == n) {
            CHECK(got == OT_PAIRS_END, "%s: expected the end after %d results, got %d", path, n, got);
            break;
        }
        CHECK(got == e[k].kind && p.line == e[k].line, "%s result %d: kind %d line %ld (expected %d line %ld) %s", path,
              k, got, p.line, e[k].kind, e[k].line, err.msg);
        if (got == OT_PAIRS_OK && e[k].kind == OT_PAIRS_OK)
            CHECK(strcmp(p.zh, e[k].zh) == 0 && strcmp(p.nan, e[k].nan) == 0 && p.zh_len == strlen(e[k].zh) &&
                      p.nan_len == strlen(e[k].nan),
                  "%s line %ld: got (%s, %s)", path, p.line, p.zh, p.nan);
        if (got == OT_PAIRS_BAD && e[k].kind == OT_PAIRS_BAD) {
            char where[600];
            snprintf(where, sizeof where, "%s:%ld: ", path, e[k].line);
            CHECK(strncmp(err.msg, where, strlen(where)) == 0 && strstr(err.msg, e[k].needle),
                  "message '%s' should start with '%s' and mention '%s'", err.msg, where, e[k].needle);
        }
    }
    ot_pairs_close(r);
}

static void test_tsv(void) {
    // Columns in another order plus extra ones, a BOM, CRLF line ends.
    const char *p = WRITE("good.tsv", "\xef\xbb\xbfsource\tnan\textra\tzh\r\n"
                                      "moe\t汝好\tx\t你好\r\n"
                                      "moe\t食飽未\t\t吃飽了沒\n"
                                      "icorpus\tOK 啦\ty\tOK 啦");
    expect e[] = {{OT_PAIRS_OK, 2, "你好", "汝好", 0}, {OT_PAIRS_OK, 3, "吃飽了沒", "食飽未", 0},
                  {OT_PAIRS_OK, 4, "OK 啦", "OK 啦", 0}};
    run(p, 0, e, 3, "tsv");

    char bad[1024];
    int n = snprintf(bad, sizeof bad,
                     "zh\tnan\n"
                     "一\t一\n"          // 2 ok
                     "only zh\n"         // 3 missing column
                     "\t汝\n"            // 4 empty zh
                     "你\t\n"            // 5 empty nan
                     "%s\t汝\n"          // 6 invalid UTF-8 in zh (a lone continuation byte)
                     "一二三四五\t一\n"  // 7 over 4 characters
                     "\n"                // 8 empty line
                     "一二三四\t四\n",   // 9 ok: exactly at the limit
                     "\x80");
    p = write_tmp("bad.tsv", bad, (size_t)n);
    expect b[] = {{OT_PAIRS_OK, 2, "一", "一", 0},
                  {OT_PAIRS_BAD, 3, 0, 0, "missing column 'nan'"},
                  {OT_PAIRS_BAD, 4, 0, 0, "empty zh"},
                  {OT_PAIRS_BAD, 5, 0, 0, "empty nan"},
                  {OT_PAIRS_BAD, 6, 0, 0, "zh is not valid UTF-8"},
                  {OT_PAIRS_BAD, 7, 0, 0, "zh has 5 characters, over the limit of 4"},
                  {OT_PAIRS_BAD, 8, 0, 0, "empty line"},
                  {OT_PAIRS_OK, 9, "一二三四", "四", 0}};
    run(p, 4, b, 8, "tsv");

    // A NUL byte inside a line: that line is bad, the next one is read normally.
    const char nul[] = "zh\tnan\na\0b\tc\nd\te\n";
    p = write_tmp("nul.tsv", nul, sizeof nul - 1);
    expect c[] = {{OT_PAIRS_BAD, 2, 0, 0, "NUL byte"}, {OT_PAIRS_OK, 3, "d", "e", 0}};
    run(p, 0, c, 2, "tsv");
}

static void test_jsonl(void) {
    const char *p = WRITE("good.jsonl", "{\"zh\": \"你好\", \"nan\": \"汝好\", \"source\": \"moe\"}\n"
                                        "{\"nan\": \"\\u98df\\u98fd\\u672a\", \"zh\": \"吃飽了沒\"}\r\n"
                                        "{\"zh\": \"tab\\there\", \"nan\": \"x\"}");
    expect e[] = {{OT_PAIRS_OK, 1, "你好", "汝好", 0}, {OT_PAIRS_OK, 2, "吃飽了沒", "食飽未", 0},
                  {OT_PAIRS_OK, 3, "tab\there", "x", 0}};
    run(p, 0, e, 3, "jsonl");

    char bad[1024];
    int n = snprintf(bad, sizeof bad,
                     "{\"zh\": \"一\", \"nan\": \"一\"}\n"       // 1 ok
                     "{\"zh\": \"一\", \"nan\": \n"              // 2 broken JSON
                     "[\"一\", \"一\"]\n"                        // 3 not an object
                     "{\"zh\": \"一\"}\n"                        // 4 missing nan
                     "{\"zh\": 5, \"nan\": \"一\"}\n"            // 5 not a string
                     "{\"zh\": \"\", \"nan\": \"一\"}\n"         // 6 empty zh
                     "{\"zh\": \"%s\", \"nan\": \"一\"}\n"       // 7 invalid UTF-8
                     "{\"zh\": \"一\", \"nan\": \"一二三四五\"}\n" // 8 too long
                     "{\"zh\": \"a\\u0000b\", \"nan\": \"一\"}\n", // 9 NUL escape (refused by the JSON reader)
                     "\xc3\x28");
    p = write_tmp("bad.jsonl", bad, (size_t)n);
    expect b[] = {{OT_PAIRS_OK, 1, "一", "一", 0},
                  {OT_PAIRS_BAD, 2, 0, 0, "not valid JSON"},
                  {OT_PAIRS_BAD, 3, 0, 0, "not a JSON object"},
                  {OT_PAIRS_BAD, 4, 0, 0, "missing key 'nan'"},
                  {OT_PAIRS_BAD, 5, 0, 0, "'zh' is not a string"},
                  {OT_PAIRS_BAD, 6, 0, 0, "empty zh"},
                  {OT_PAIRS_BAD, 7, 0, 0, "not valid UTF-8"},
                  {OT_PAIRS_BAD, 8, 0, 0, "nan has 5 characters"},
                  {OT_PAIRS_BAD, 9, 0, 0, "not valid JSON"}};
    run(p, 4, b, 9, "jsonl");
}

static void expect_open_error(const char *path, const char *needle) {
    ot_err err = {{0}};
    ot_pairs_reader *r = ot_pairs_open(path, 0, &err);
    if (r) { // a directory opens on some systems and fails on the first read
        ot_pair p;
        int got = ot_pairs_next(r, &p, &err);
        CHECK(got == -1, "%s: reading should fail (%d)", path, got);
        ot_pairs_close(r);
    }
    CHECK(strstr(err.msg, path) && strstr(err.msg, needle), "%s: expected '%s' in '%s'", path, needle, err.msg);
}

static void test_bad_files(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/absent.tsv", tmpdir);
    expect_open_error(path, "cannot open");
    expect_open_error(WRITE("nonan.tsv", "zh\tnan_tl\n一\t一\n"), ":1: the header has no 'nan' column");
    expect_open_error(WRITE("twice.tsv", "zh\tnan\tzh\n"), ":1: the header names column 'zh' twice");
    expect_open_error(WRITE("empty.tsv", ""), "empty file");
    expect_open_error(tmpdir, "is a directory"); // refused by name (it used to say "read error: Success")
    // Sniffing: no known extension, '{' first -> JSONL; otherwise TSV.
    const char *p = WRITE("pairs.txt", "{\"zh\": \"一\", \"nan\": \"二\"}\n");
    expect e[] = {{OT_PAIRS_OK, 1, "一", "二", 0}};
    run(p, 0, e, 1, "jsonl");
    p = WRITE("pairs.dat", "nan\tzh\n二\t一\n");
    expect t[] = {{OT_PAIRS_OK, 2, "一", "二", 0}};
    run(p, 0, t, 1, "tsv");
}

int main(void) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/ot_pairs_XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_tsv();
    test_jsonl();
    test_bad_files();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return ot_test_finish("test_data_pairs_input");
}
