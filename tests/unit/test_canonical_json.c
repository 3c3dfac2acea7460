/* Canonical JSON and the strict parser: hand-written cases for the escape rules, then the vectors produced by
 * Debian's python3-canonicaljson (tests/vectors/generate.py). Runs with the working directory tests/ (meson sets it);
 * an optional argument names another vectors directory. */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include "check.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"

static const char *vectors = "vectors";

/* Reads a whole file; NULL when it cannot be read. */
static char *read_file(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    mx_buf_t b = MX_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        mx_buf_append(&b, chunk, n);
    fclose(f);
    mx_buf_reserve(&b, 0); /* a zero-length file still gets a buffer */
    *len = b.len;
    return b.data;
}

/* Calls `fn` with each line of a JSON Lines file parsed as an object; returns the number of lines. */
static int each_vector(const char *name, void (*fn)(json_t *row))
{
    size_t len;
    char *text = read_file(vectors, name, &len);
    CHECK(text != NULL);
    if (text == NULL)
        return 0;
    int count = 0;
    for (char *line = text, *end; line < text + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(text + len - line));
        if (end == NULL)
            end = text + len;
        if (end == line)
            continue;
        json_error_t err;
        json_t *row = json_loadb(line, (size_t)(end - line), 0, &err);
        CHECK(row != NULL);
        if (row != NULL) {
            fn(row);
            json_decref(row);
            count++;
        }
    }
    free(text);
    return count;
}

static void check_escape(const char *in, size_t len, const char *expected)
{
    mx_buf_t out = MX_BUF_INIT;
    mx_json_escape(&out, in, len);
    CHECK_STREQ(out.data ? out.data : "", expected);
    mx_buf_free(&out);
}

static void test_escape(void)
{
    check_escape("", 0, "");
    check_escape("plain text", 10, "plain text");
    check_escape("\"\\", 2, "\\\"\\\\");
    check_escape("\b\f\n\r\t", 5, "\\b\\f\\n\\r\\t");
    check_escape("/", 1, "/");
    check_escape("\x7f", 1, "\x7f");
    check_escape("\xe2\x80\xa8\xe2\x80\xa9", 6, "\xe2\x80\xa8\xe2\x80\xa9");
    check_escape("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    check_escape("a\0b", 3, "a\\u0000b");
    /* Every control character: the five short forms, the rest \u00XX with lowercase hex. */
    for (int c = 0; c < 0x20; c++) {
        char in = (char)c, expected[8];
        const char *shortform = c == '\b'   ? "\\b"
                                : c == '\f' ? "\\f"
                                : c == '\n' ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                            : NULL;
        if (shortform)
            snprintf(expected, sizeof(expected), "%s", shortform);
        else
            snprintf(expected, sizeof(expected), "\\u%04x", c);
        check_escape(&in, 1, expected);
    }
    /* Runs between escapes are copied intact. */
    check_escape("ab\ncd\x1f"
                 "ef",
                 8, "ab\\ncd\\u001fef");
}

static void expect_canonical(const json_t *v, const char *expected)
{
    mx_buf_t out = MX_BUF_INIT;
    const char *why = NULL;
    CHECK(mx_canonical_json(v, &out, &why) == 0);
    CHECK_STREQ(out.data, expected);
    mx_buf_free(&out);
}

static void expect_refused(const json_t *v, const char *path_expected)
{
    mx_buf_t out = MX_BUF_INIT;
    const char *why = NULL;
    CHECK(mx_canonical_json(v, &out, &why) == -1);
    CHECK(why != NULL && strlen(why) > 10);
    mx_buf_free(&out);
    char path[256];
    why = NULL;
    CHECK(mx_canonical_json_check(v, path, sizeof(path), &why) == -1);
    CHECK(why != NULL);
    CHECK_STREQ(path, path_expected);
}

static void test_built_values(void)
{
    /* Values built in code rather than parsed: the encoder sees jansson's own types. */
    json_t *v = json_pack("{s:I, s:I, s:b, s:n, s:[], s:{}}", "max", (json_int_t)MX_JSON_MAX_SAFE_INT, "min",
                          (json_int_t)-MX_JSON_MAX_SAFE_INT, "t", 1, "z", "e", "o");
    expect_canonical(v, "{\"e\":[],\"max\":9007199254740991,\"min\":-9007199254740991,\"o\":{},\"t\":true,\"z\":null}");
    char path[256];
    const char *why = NULL;
    CHECK(mx_canonical_json_check(v, path, sizeof(path), &why) == 0);
    CHECK(mx_canonical_json_check(v, NULL, 0, NULL) == 0);
    json_decref(v);

    v = json_pack("{s:{s:[i,f]}}", "a", "b", 1, 1.0);
    expect_refused(v, "a.b[1]");
    json_decref(v);
    v = json_pack("{s:I}", "k", (json_int_t)MX_JSON_MAX_SAFE_INT + 1);
    expect_refused(v, "k");
    json_decref(v);
    v = json_pack("{s:I}", "k", (json_int_t)INT64_MIN);
    expect_refused(v, "k");
    json_decref(v);
    v = json_real(0.0);
    expect_refused(v, "");
    json_decref(v);

    /* A path longer than the caller's buffer is cut short, marked, and never overflows. */
    v = json_pack("{s:{s:f}}", "a_rather_long_key_name", "another_long_key", 2.5);
    char small[12];
    memset(small, 'X', sizeof(small));
    CHECK(mx_canonical_json_check(v, small, sizeof(small), &why) == -1);
    CHECK(strlen(small) == sizeof(small) - 1);
    CHECK(strcmp(small + sizeof(small) - 4, "...") == 0);
    json_decref(v);
    /* A sibling that did not fit leaves no trace in the path of a later offender. */
    v = json_pack("{s:{s:i}, s:[i,f]}", "a_rather_long_key_name", "another_long_key", 1, "b", 1, 0.5);
    CHECK(mx_canonical_json_check(v, small, sizeof(small), &why) == -1);
    CHECK_STREQ(small, "b[1]");
    json_decref(v);
    v = json_pack("{s:{s:[f]}}", "abcd", "efgh", 0.5);
    CHECK(mx_canonical_json_check(v, small, sizeof(small), &why) == -1);
    CHECK_STREQ(small, "abcd.efg...");
    json_decref(v);

    /* A failing encode may leave partial output but must not crash, and the static reason names the cause. */
    v = json_pack("[i,f]", 1, 0.5);
    mx_buf_t out = MX_BUF_INIT;
    CHECK(mx_canonical_json(v, &out, &why) == -1);
    CHECK(strstr(why, "float") != NULL);
    CHECK(mx_canonical_json(v, &out, NULL) == -1);
    mx_buf_free(&out);
    json_decref(v);

    /* mx_canonical_json_except drops top-level members only. */
    v = json_pack("{s:i, s:{s:i}, s:i}", "skip", 1, "keep", "skip", 2, "b", 3);
    const char *const skip[] = {"skip", NULL};
    CHECK(mx_canonical_json_except(v, skip, &out, &why) == 0);
    CHECK_STREQ(out.data, "{\"b\":3,\"keep\":{\"skip\":2}}");
    mx_buf_free(&out);
    CHECK(mx_canonical_json_except(json_object_get(v, "b"), skip, &out, &why) == -1);
    mx_buf_free(&out);
    json_decref(v);
}

static void on_canonical(json_t *row)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    const json_t *input = json_object_get(row, "input"), *expected = json_object_get(row, "canonical");
    char why[200] = "";
    json_t *v = mx_json_parse(json_string_value(input), json_string_length(input), why, sizeof(why));
    CHECK(v != NULL);
    if (v == NULL) {
        fprintf(stderr, "  vector '%s' did not parse: %s\n", name, why);
        return;
    }
    mx_buf_t out = MX_BUF_INIT;
    const char *reason = NULL;
    CHECK(mx_canonical_json(v, &out, &reason) == 0);
    size_t len = json_string_length(expected);
    bool same = out.len == len && memcmp(out.data, json_string_value(expected), len) == 0;
    CHECK(same);
    if (!same)
        fprintf(stderr, "  vector '%s':\n  got:      %.*s\n  expected: %s\n", name, (int)out.len, out.data,
                json_string_value(expected));
    CHECK(mx_canonical_json_check(v, NULL, 0, &reason) == 0);

    /* Canonical output is a fixed point: parsing and encoding it again gives the same bytes. */
    json_t *again = mx_json_parse(out.data, out.len, why, sizeof(why));
    CHECK(again != NULL);
    if (again) {
        mx_buf_t out2 = MX_BUF_INIT;
        CHECK(mx_canonical_json(again, &out2, &reason) == 0);
        CHECK(out2.len == out.len && memcmp(out2.data, out.data, out.len) == 0);
        mx_buf_free(&out2);
        json_decref(again);
    }
    mx_buf_free(&out);
    json_decref(v);
}

static void on_canonical_reject(json_t *row)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    const json_t *input = json_object_get(row, "input"), *path = json_object_get(row, "path");
    char why[200] = "";
    json_t *v = mx_json_parse(json_string_value(input), json_string_length(input), why, sizeof(why));
    if (json_is_null(path)) {
        /* Out of every parser's comfort zone: refused at parse time or at encode time, never encoded. */
        if (v != NULL) {
            mx_buf_t out = MX_BUF_INIT;
            const char *reason;
            CHECK(mx_canonical_json(v, &out, &reason) == -1);
            mx_buf_free(&out);
            json_decref(v);
        }
        return;
    }
    CHECK(v != NULL);
    if (v == NULL) {
        fprintf(stderr, "  vector '%s' did not parse: %s\n", name, why);
        return;
    }
    expect_refused(v, json_string_value(path));
    json_decref(v);
}

/* The reason goes into a 400 response: one line of printable ASCII. */
static bool printable_line(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static void test_parse_rejects(void)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/parse_reject", vectors);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (d == NULL)
        return;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t len;
        char *text = read_file(dir, e->d_name, &len);
        CHECK(text != NULL);
        if (text == NULL)
            continue;
        char why[160];
        memset(why, 'X', sizeof(why));
        json_t *v = mx_json_parse(text, len, why, sizeof(why));
        CHECK(v == NULL);
        if (v != NULL) {
            fprintf(stderr, "  %s was accepted\n", e->d_name);
            json_decref(v);
        }
        CHECK(memchr(why, '\0', sizeof(why)) != NULL && printable_line(why));
        count++;
        free(text);
    }
    closedir(d);
    CHECK(count >= 25);
}

static void expect_parse_reason(const char *text, const char *fragment)
{
    char why[160] = "";
    json_t *v = mx_json_parse(text, strlen(text), why, sizeof(why));
    CHECK(v == NULL);
    json_decref(v);
    CHECK(strstr(why, fragment) != NULL);
    if (strstr(why, fragment) == NULL)
        fprintf(stderr, "  reason for %s: %s\n", text, why);
}

static void test_parse(void)
{
    expect_parse_reason("{\"a\":1,\"a\":2}", "duplicate");
    expect_parse_reason("{\"a\":1} x", "after the JSON value");
    expect_parse_reason("{\"a\":\"\\u0000\"}", "\\u0000");
    expect_parse_reason("{\"a\":\"\xff\"}", "UTF-8");
    expect_parse_reason("{\"a\":", "truncated");
    /* Non-printable input bytes never reach the reason text. */
    char why[160];
    json_t *v = mx_json_parse("{\"a\":\"x\x01\"}", 9, why, sizeof(why));
    CHECK(v == NULL && printable_line(why));
    /* A tiny reason buffer is still NUL-terminated; no buffer at all is fine too. */
    char tiny[8];
    CHECK(mx_json_parse("[", 1, tiny, sizeof(tiny)) == NULL && strlen(tiny) == sizeof(tiny) - 1);
    CHECK(mx_json_parse("[", 1, NULL, 0) == NULL);

    /* Parsing is strict about syntax, not about canonical rules: floats, any top-level value, whitespace. */
    const char *ok[] = {"{\"a\": 1.5}", "[]", "\"s\"", "3", " {\"a\" : [ 1 , 2 ] } \n", "{\"a\":\"\\ud83d\\ude00\"}"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = mx_json_parse(ok[i], strlen(ok[i]), why, sizeof(why));
        CHECK(v != NULL);
        json_decref(v);
    }
    /* The length is honoured: bytes after it are not looked at. */
    v = mx_json_parse("{}garbage", 2, why, sizeof(why));
    CHECK(json_is_object(v));
    json_decref(v);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        vectors = argv[1];
    test_escape();
    test_built_values();
    test_parse();
    test_parse_rejects();
    CHECK(each_vector("canonical.jsonl", on_canonical) >= 30);
    CHECK(each_vector("canonical_reject.jsonl", on_canonical_reject) >= 10);
    return check_finish("canonical_json");
}
