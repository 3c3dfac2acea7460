/* Streaming JSON splicer: hand-written cases (each fed whole, byte by byte and split in two at every position, all
 * of which must give the same bytes), generated documents checked against the same edit done on a jansson tree, and
 * one 20 MB /sync-like body in 64 KiB chunks. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include "check.h"
#include "mxkeys/json_splice.h"

#define TEXT(s) .text = (s), .len = sizeof(s) - 1

#define OTK "{\"signed_curve25519\":50}"
#define FB "[\"signed_curve25519\"]"
#define OTKN "\"device_one_time_keys_count\":"
#define FBN "\"device_unused_fallback_key_types\":"
#define MSCN "\"org.matrix.msc2732.device_unused_fallback_key_types\":"

/* What /sync rewriting uses: two members added when missing, the unstable name only replaced. */
static const mx_splice_rule_t sync_rules[] = {
    {.path = {"device_one_time_keys_count"}, .depth = 1, TEXT(OTK), .add_if_missing = true},
    {.path = {"device_unused_fallback_key_types"}, .depth = 1, TEXT(FB), .add_if_missing = true},
    {.path = {"org.matrix.msc2732.device_unused_fallback_key_types"}, .depth = 1, TEXT(FB)},
};

static const mx_splice_rule_t ss_rules[] = {
    {.path = {"extensions", "e2ee", "device_one_time_keys_count"}, .depth = 3, TEXT("{\"x\":1}"), .add_if_missing = 1},
};

static const mx_splice_rule_t depth2_rules[] = {
    {.path = {"a", "b"}, .depth = 2, TEXT("2")},
};

#define DK "\"@u:x\":{\"D\":{}}"
static const mx_splice_rule_t append_rules[] = {
    {.path = {"device_keys"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT(DK), .add_if_missing = true},
    {.path = {"master_keys"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT("\"@u:x\":{}")},
};

/* Names that need decoding: a surrogate pair, short escapes, a quote (escaped again when added). */
static const mx_splice_rule_t name_rules[] = {
    {.path = {"k\xF0\x9D\x84\x9E"}, .depth = 1, TEXT("0")},
    {.path = {"a/b\nc"}, .depth = 1, TEXT("1")},
    {.path = {"q\"\\\xC3\xA9"}, .depth = 1, TEXT("2"), .add_if_missing = true},
};

typedef struct {
    mx_buf_t out;
    int rc;
    unsigned applied[MX_SPLICE_MAX_RULES];
} result_t;

/* Feeds `in` in pieces ending at cuts[0..ncuts) (ascending) and then at len, then finishes. */
static void splice(const mx_splice_rule_t *rules, size_t nrules, const char *in, size_t len, const size_t *cuts,
                   size_t ncuts, result_t *res)
{
    mx_splice_t s;
    mx_buf_reset(&res->out);
    mx_buf_reserve(&res->out, 0); /* data is never NULL, even for empty output */
    int rc = mx_splice_init(&s, rules, nrules);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        int r = mx_splice_feed(&s, in + at, to - at, &res->out);
        if (rc != 0)
            CHECK(r == -1); /* once failed, failed for good */
        rc |= r;
        at = to;
    }
    int r = mx_splice_finish(&s, &res->out);
    if (rc != 0)
        CHECK(r == -1);
    res->rc = rc | r;
    for (size_t i = 0; i < MX_SPLICE_MAX_RULES; i++)
        res->applied[i] = mx_splice_applied(&s, i);
}

static bool same_result(const result_t *a, const result_t *b)
{
    return a->rc == b->rc && a->out.len == b->out.len && memcmp(a->out.data, b->out.data, a->out.len) == 0 &&
           memcmp(a->applied, b->applied, sizeof(a->applied)) == 0;
}

/* `want` NULL: the output must be the input. `applied` NULL: counts not checked (they must still agree). */
static void check_case(const mx_splice_rule_t *rules, size_t nrules, const char *in, const char *want, int want_rc,
                       const unsigned *applied)
{
    static result_t whole, part;
    size_t len = strlen(in);
    if (want == NULL)
        want = in;
    splice(rules, nrules, in, len, NULL, 0, &whole);
    bool ok = whole.rc == want_rc && strcmp(whole.out.data, want) == 0;
    for (size_t i = 0; applied && i < nrules; i++)
        ok = ok && whole.applied[i] == applied[i];
    if (!ok)
        fprintf(stderr, "case %s\n  rc %d (want %d)\n  got  %s\n  want %s\n  applied %u %u %u\n", in, whole.rc, want_rc,
                whole.out.data, want, whole.applied[0], whole.applied[1], whole.applied[2]);
    CHECK(ok);

    size_t *cuts = malloc((len + 1) * sizeof(*cuts));
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    splice(rules, nrules, in, len, cuts, len ? len - 1 : 0, &part);
    if (!same_result(&whole, &part))
        fprintf(stderr, "case %s\n  byte by byte: %s (rc %d)\n", in, part.out.data, part.rc);
    CHECK(same_result(&whole, &part));
    /* Long inputs are cut at about 200 places, short ones at every one. */
    size_t step = len > 200 ? len / 200 : 1, bad = 0;
    for (size_t i = 1; i < len; i += step) {
        splice(rules, nrules, in, len, &i, 1, &part);
        if (!same_result(&whole, &part) && bad++ == 0)
            fprintf(stderr, "case %s\n  cut at %zu: %s (rc %d)\n", in, i, part.out.data, part.rc);
    }
    CHECK(bad == 0);
    free(cuts);
}

#define N(rules) (sizeof(rules) / sizeof(rules[0]))
#define APPLIED(...) ((const unsigned[]){__VA_ARGS__})

static void test_sync(void)
{
    const mx_splice_rule_t *r = sync_rules;
    size_t n = N(sync_rules);
    /* missing members are added, with a comma only after existing members, right before the brace */
    check_case(r, n, "{}", "{" OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
    check_case(r, n, "{ }", "{ " OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
    check_case(r, n, " {\"next_batch\":\"s1\"} \n", " {\"next_batch\":\"s1\"," OTKN OTK "," FBN FB "} \n", 0,
               APPLIED(1, 1, 0));
    check_case(r, n, "{ \"x\":1 \n}", "{ \"x\":1 \n," OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
    /* replaced values of every kind; name, whitespace and colon stay as they were */
    check_case(r, n, "{\"device_one_time_keys_count\":{\"signed_curve25519\":3},\"next_batch\":\"s\"}",
               "{" OTKN OTK ",\"next_batch\":\"s\"," FBN FB "}", 0, APPLIED(1, 1, 0));
    check_case(r, n,
               "{\"device_one_time_keys_count\" : \n {\"a\":[1,{\"b\":\"}\"}]} ,"
               "\"device_unused_fallback_key_types\"\t:[]\n}",
               "{\"device_one_time_keys_count\" : \n " OTK " ,\"device_unused_fallback_key_types\"\t:" FB "\n}", 0,
               APPLIED(1, 1, 0));
    static const char *const values[] = {
        "\"\\\\\\\"\"",
        "\"}\"",
        "\"\\u005c\"",
        "\"\\\"}]\\\\\"",
        "-1.5e+3",
        "0",
        "true",
        "false",
        "null",
        "[[[]],[{}]]",
        "[\"]\",{\"device_one_time_keys_count\":1}]",
        "{\"}\":\"{\",\"\\\"\":[]}",
        "\"\"",
        "12345678901234567890",
    };
    for (size_t i = 0; i < N(values); i++) {
        char in[256], want[256];
        snprintf(in, sizeof(in), "{\"a\":%s,\"device_unused_fallback_key_types\":%s,\"b\":%s}", values[i], values[i],
                 values[i]);
        snprintf(want, sizeof(want), "{\"a\":%s," FBN FB ",\"b\":%s," OTKN OTK "}", values[i], values[i]);
        check_case(r, n, in, want, 0, APPLIED(1, 1, 0));
        /* as the last member, and as a whole document (not an object: nothing applies) */
        snprintf(in, sizeof(in), "{\"device_one_time_keys_count\":%s}", values[i]);
        check_case(r, n, in, "{" OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
        if (values[i][0] != '{')
            check_case(r, n, values[i], NULL, 0, APPLIED(0, 0, 0));
    }
    /* escaped names are the same names; near misses are not */
    check_case(r, n, "{\"\\u0064evice_one_time_keys_count\":5}",
               "{\"\\u0064evice_one_time_keys_count\":" OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
    check_case(
        r, n,
        "{\"device_unused_fallback_key_type\\u0073\":5,\"org.matrix.msc2732\\/device_unused_fallback_key_types\":1}",
        "{\"device_unused_fallback_key_type\\u0073\":" FB
        ",\"org.matrix.msc2732\\/device_unused_fallback_key_types\":1," OTKN OTK "}",
        0, APPLIED(1, 1, 0));
    check_case(
        r, n, "{\"device_one_time_keys_count\\u0000\":5,\"device_one_time_keys\":1,\"device_one_time_keys_count_\":2}",
        "{\"device_one_time_keys_count\\u0000\":5,\"device_one_time_keys\":1,\"device_one_time_keys_count_\":2," OTKN
            OTK "," FBN FB "}",
        0, APPLIED(1, 1, 0));
    /* every duplicate is replaced; the unstable name only when present */
    check_case(r, n, "{\"device_one_time_keys_count\":1,\"device_one_time_keys_count\":[2]}",
               "{" OTKN OTK "," OTKN OTK "," FBN FB "}", 0, APPLIED(2, 1, 0));
    check_case(r, n, "{\"org.matrix.msc2732.device_unused_fallback_key_types\":[\"x\"]}",
               "{" MSCN FB "," OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 1));
    /* the same names inside arrays or deeper objects are not the member */
    check_case(r, n,
               "{\"rooms\":{\"join\":{\"!r\":{\"timeline\":{\"events\":[{\"device_one_time_keys_count\":1}]}}}},"
               "\"x\":[{\"device_one_time_keys_count\":2}],\"a\":{\"device_unused_fallback_key_types\":3}}",
               "{\"rooms\":{\"join\":{\"!r\":{\"timeline\":{\"events\":[{\"device_one_time_keys_count\":1}]}}}},"
               "\"x\":[{\"device_one_time_keys_count\":2}],\"a\":{\"device_unused_fallback_key_types\":3}," OTKN OTK
               "," FBN FB "}",
               0, APPLIED(1, 1, 0));
    check_case(r, n, "[{\"device_one_time_keys_count\":1}]", NULL, 0, APPLIED(0, 0, 0));
    check_case(r, n, "  null  ", NULL, 0, APPLIED(0, 0, 0));
    check_case(r, n, "\"device_one_time_keys_count\"", NULL, 0, APPLIED(0, 0, 0));
    /* a value that is a name's lookalike string is not a name */
    check_case(r, n, "{\"a\":\"device_one_time_keys_count\"}",
               "{\"a\":\"device_one_time_keys_count\"," OTKN OTK "," FBN FB "}", 0, APPLIED(1, 1, 0));
}

static void test_paths(void)
{
    const mx_splice_rule_t *r = ss_rules;
    size_t n = N(ss_rules);
    check_case(r, n, "{\"extensions\":{\"e2ee\":{\"device_one_time_keys_count\":{\"a\":1},\"device_lists\":{}}}}",
               "{\"extensions\":{\"e2ee\":{\"device_one_time_keys_count\":{\"x\":1},\"device_lists\":{}}}}", 0,
               APPLIED(1));
    check_case(r, n, "{\"extensions\":{\"e2ee\":{}}}",
               "{\"extensions\":{\"e2ee\":{\"device_one_time_keys_count\":{\"x\":1}}}}", 0, APPLIED(1));
    check_case(r, n, "{\"extensions\" :{ \"e2ee\" : { \"device_lists\" : {} } } }",
               "{\"extensions\" :{ \"e2ee\" : { \"device_lists\" : {} ,\"device_one_time_keys_count\":{\"x\":1}} } }",
               0, APPLIED(1));
    /* no parent object, no addition */
    check_case(r, n, "{\"extensions\":{}}", NULL, 0, APPLIED(0));
    check_case(r, n, "{\"extensions\":{\"e2ee\":[]}}", NULL, 0, APPLIED(0));
    check_case(r, n, "{\"extensions\":{\"e2ee\":\"{}\"}}", NULL, 0, APPLIED(0));
    check_case(r, n, "{\"extensions\":[{\"e2ee\":{}}]}", NULL, 0, APPLIED(0));
    check_case(r, n, "{\"e2ee\":{\"device_one_time_keys_count\":1}}", NULL, 0, APPLIED(0));
    check_case(r, n, "[{\"extensions\":{\"e2ee\":{}}}]", NULL, 0, APPLIED(0));
    check_case(r, n, "{\"lists\":{\"extensions\":{\"e2ee\":{}}},\"extensions\":{\"e2ee\":{\"x\":1} }}",
               "{\"lists\":{\"extensions\":{\"e2ee\":{}}},\"extensions\":{\"e2ee\":{\"x\":1,"
               "\"device_one_time_keys_count\":{\"x\":1}} }}",
               0, APPLIED(1));
    check_case(r, n, "{\"extensions\":{\"e2ee\":{},\"e2ee\":{\"device_one_time_keys_count\":0}}}",
               "{\"extensions\":{\"e2ee\":{\"device_one_time_keys_count\":{\"x\":1}},"
               "\"e2ee\":{\"device_one_time_keys_count\":{\"x\":1}}}}",
               0, APPLIED(2));

    check_case(depth2_rules, 1, "{\"a\":{\"b\":1,\"c\":{\"b\":3}},\"b\":4,\"c\":{\"a\":{\"b\":5}}}",
               "{\"a\":{\"b\":2,\"c\":{\"b\":3}},\"b\":4,\"c\":{\"a\":{\"b\":5}}}", 0, APPLIED(1));
    check_case(depth2_rules, 1, "{\"a\":{}}", NULL, 0, APPLIED(0));

    static const mx_splice_rule_t depth4[] = {
        {.path = {"a", "b", "c", "d"}, .depth = 4, TEXT("[]"), .add_if_missing = true},
    };
    check_case(depth4, 1, "{\"a\":{\"b\":{\"c\":{\"d\":{\"d\":1}}}}}", "{\"a\":{\"b\":{\"c\":{\"d\":[]}}}}", 0,
               APPLIED(1));
    check_case(depth4, 1, "{\"a\":{\"b\":{\"c\":{\"e\":{\"d\":1}}}}}",
               "{\"a\":{\"b\":{\"c\":{\"e\":{\"d\":1},\"d\":[]}}}}", 0, APPLIED(1));

    r = name_rules;
    n = N(name_rules);
    check_case(r, n, "{\"k\\uD834\\uDD1E\":9,\"a\\/b\\nc\":9,\"q\\\"\\\\\\u00e9\":9}",
               "{\"k\\uD834\\uDD1E\":0,\"a\\/b\\nc\":1,\"q\\\"\\\\\\u00e9\":2}", 0, APPLIED(1, 1, 1));
    check_case(r, n, "{\"k\xF0\x9D\x84\x9E\":9,\"k\\ud834\\udd1e\":9,\"a/b\\u000Ac\":9}",
               "{\"k\xF0\x9D\x84\x9E\":0,\"k\\ud834\\udd1e\":0,\"a/b\\u000Ac\":1,\"q\\\"\\\\\xC3\xA9\":2}", 0,
               APPLIED(2, 1, 1));
    /* lone or reversed surrogates, bad escapes: no match, and not an error either */
    check_case(r, n,
               "{\"k\\uD834\":9,\"k\\uD834x\":9,\"k\\uDD1E\\uD834\":9,\"k\\uD834\\u0041\":9,\"a\\/b\\qc\":9,"
               "\"k\\uD83\":9}",
               "{\"k\\uD834\":9,\"k\\uD834x\":9,\"k\\uDD1E\\uD834\":9,\"k\\uD834\\u0041\":9,\"a\\/b\\qc\":9,"
               "\"k\\uD83\":9,\"q\\\"\\\\\xC3\xA9\":2}",
               0, APPLIED(0, 0, 1));
}

static void test_append(void)
{
    const mx_splice_rule_t *r = append_rules;
    size_t n = N(append_rules);
    check_case(r, n, "{\"device_keys\":{}}", "{\"device_keys\":{" DK "}}", 0, APPLIED(1, 0));
    check_case(r, n, "{\"device_keys\":{ }}", "{\"device_keys\":{ " DK "}}", 0, APPLIED(1, 0));
    check_case(r, n, "{\"device_keys\":{\"@a:b\":{\"X\":{\"keys\":{}}}} ,\"master_keys\":{\"@a:b\":{}\n}}",
               "{\"device_keys\":{\"@a:b\":{\"X\":{\"keys\":{}}}," DK "} ,\"master_keys\":{\"@a:b\":{}\n,\"@u:x\":{}}}",
               0, APPLIED(1, 1));
    check_case(r, n, "{\"failures\":{}}", "{\"failures\":{},\"device_keys\":{" DK "}}", 0, APPLIED(1, 0));
    /* not an object: left alone, and not added either (the member was there) */
    check_case(r, n, "{\"device_keys\":[1],\"master_keys\":\"{}\"}", NULL, 0, APPLIED(0, 0));
    check_case(r, n, "{\"device_keys\":null}", NULL, 0, APPLIED(0, 0));

    static const mx_splice_rule_t empty[] = {
        {.path = {"device_keys"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, .text = "", .add_if_missing = true},
    };
    check_case(empty, 1, "{\"device_keys\":{}}", NULL, 0, APPLIED(0));
    check_case(empty, 1, "{}", NULL, 0, APPLIED(0));

    /* appending to an object and replacing inside it; a replaced value hides deeper rules */
    static const mx_splice_rule_t nested[] = {
        {.path = {"device_keys"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT(DK)},
        {.path = {"device_keys", "@a:b"}, .depth = 2, TEXT("{}"), .add_if_missing = true},
        {.path = {"a"}, .depth = 1, TEXT("1")},
        {.path = {"a", "b"}, .depth = 2, TEXT("2"), .add_if_missing = true},
    };
    check_case(nested, 4, "{\"device_keys\":{\"@a:b\":{\"D\":1}},\"a\":{\"b\":0}}",
               "{\"device_keys\":{\"@a:b\":{}," DK "},\"a\":1}", 0, APPLIED(1, 1, 1, 0));
    check_case(nested, 4, "{\"device_keys\":{}}", "{\"device_keys\":{" DK ",\"@a:b\":{}}}", 0, APPLIED(1, 1, 0, 0));

    /* rules on one member: the first REPLACE wins, every APPEND appends, an addition happens once */
    static const mx_splice_rule_t same[] = {
        {.path = {"m"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT("\"p\":1"), .add_if_missing = true},
        {.path = {"m"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT("\"q\":2"), .add_if_missing = true},
        {.path = {"r"}, .depth = 1, TEXT("1"), .add_if_missing = true},
        {.path = {"r"}, .depth = 1, TEXT("2"), .add_if_missing = true},
    };
    check_case(same, 4, "{\"m\":{},\"r\":0}", "{\"m\":{\"p\":1,\"q\":2},\"r\":1}", 0, APPLIED(1, 1, 1, 0));
    check_case(same, 4, "{}", "{\"m\":{\"p\":1},\"r\":1}", 0, APPLIED(1, 0, 1, 0));
}

static void test_malformed(void)
{
    const mx_splice_rule_t *r = sync_rules;
    size_t n = N(sync_rules);
    static const char *const bad[] = {
        "",
        "   ",
        "{\"a\":1",
        "{\"a\":1]",
        "{\"a\":[1}",
        "[1,2}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\":\"abc",
        "{\"a\":\"abc\\",
        "}",
        "]",
        "{\"a\":@}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":}",
        "\"abc",
        "[",
        "{\"device_one_time_keys_count\":",
        "{\"device_one_time_keys_count\"",
        "{\"device_one_time_keys_count",
        "{\"a\"::1}",
        "1 2",
    };
    for (size_t i = 0; i < N(bad); i++)
        check_case(r, n, bad[i], NULL, -1, APPLIED(0, 0, 0));
    /* what was already rewritten stays rewritten; the rest is copied from the offending byte on */
    static const char *const trailing[] = {" x", "{}", "}", "\x01", ",", " 1"};
    for (size_t i = 0; i < N(trailing); i++) {
        char in[64], want[256];
        snprintf(in, sizeof(in), "{\"a\":{\"b\":1}}%s", trailing[i]);
        snprintf(want, sizeof(want), "{\"a\":{\"b\":1}," OTKN OTK "," FBN FB "}%s", trailing[i]);
        check_case(r, n, in, want, -1, APPLIED(1, 1, 0));
    }
    check_case(r, n, "{\"device_one_time_keys_count\":1,\"x\":]}", "{" OTKN OTK ",\"x\":]}", -1, APPLIED(1, 0, 0));
    check_case(r, n, "{\"device_one_time_keys_count\":1,", "{" OTKN OTK ",", -1, APPLIED(1, 0, 0));
    check_case(r, n, "{\"device_one_time_keys_count\":[1}  ", "{" OTKN OTK "}  ", -1, APPLIED(1, 0, 0));

    /* nesting: as deep as jansson accepts, and no deeper */
    static char deep[2 * MX_SPLICE_MAX_NESTING + 64], want[sizeof(deep) + 128];
    size_t k = 0;
    k += (size_t)sprintf(deep, "{\"a\":");
    for (int i = 0; i < MX_SPLICE_MAX_NESTING - 1; i++)
        deep[k++] = '[';
    for (int i = 0; i < MX_SPLICE_MAX_NESTING - 1; i++)
        deep[k++] = ']';
    strcpy(deep + k, ",\"device_one_time_keys_count\":0}");
    memcpy(want, deep, k);
    strcpy(want + k, "," OTKN OTK "," FBN FB "}");
    check_case(r, n, deep, want, 0, APPLIED(1, 1, 0));
    memset(deep, '[', MX_SPLICE_MAX_NESTING + 1);
    deep[MX_SPLICE_MAX_NESTING + 1] = '\0';
    check_case(r, n, deep, NULL, -1, APPLIED(0, 0, 0));

    /* rules out of range: refused, and the splicer copies through */
    static const mx_splice_rule_t bad_rules[] = {
        {.path = {"a"}, .depth = 0, TEXT("1")},
        {.path = {"a"}, .depth = 2, TEXT("1")},
        {.path = {"a"}, .depth = 1, .text = ""},
        {.path = {"a"}, .depth = MX_SPLICE_MAX_DEPTH + 1, TEXT("1")},
    };
    for (size_t i = 0; i < N(bad_rules); i++) {
        mx_splice_t s;
        mx_buf_t out = MX_BUF_INIT;
        CHECK(mx_splice_init(&s, &bad_rules[i], 1) == -1);
        CHECK(mx_splice_feed(&s, "{\"a\":0}", 7, &out) == -1);
        CHECK(mx_splice_finish(&s, &out) == -1);
        CHECK(out.len == 7 && memcmp(out.data, "{\"a\":0}", 7) == 0);
        mx_buf_free(&out);
    }
    mx_splice_t s;
    CHECK(mx_splice_init(&s, sync_rules, MX_SPLICE_MAX_RULES + 1) == -1);
}

/* ---- generated documents ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    /* splitmix64: deterministic across platforms */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static void put_ws(mx_buf_t *b)
{
    if (below(4) != 0)
        return;
    for (unsigned i = below(3) + 1; i; i--)
        mx_buf_putc(b, " \t\n\r"[below(4)]);
}

static void put_u(mx_buf_t *b, unsigned v)
{
    mx_buf_printf(b, below(2) ? "\\u%04x" : "\\u%04X", v);
}

/* A JSON string for the UTF-8 `s`, each character escaped at random (and always where it must be). */
static void put_string(mx_buf_t *b, const char *s)
{
    static const char shorts[] = "\"\"\\\\//\bb\ff\nn\rr\tt";
    mx_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        unsigned cp = *p, n = 1;
        if (cp >= 0xF0)
            cp &= 0x07, n = 4;
        else if (cp >= 0xE0)
            cp &= 0x0F, n = 3;
        else if (cp >= 0xC0)
            cp &= 0x1F, n = 2;
        for (unsigned i = 1; i < n; i++)
            cp = cp << 6 | (p[i] & 0x3F);
        const char *sh = NULL;
        for (size_t i = 0; i + 1 < sizeof(shorts); i += 2)
            if ((unsigned char)shorts[i] == cp)
                sh = &shorts[i + 1];
        if (cp == '"' || cp == '\\' || cp < 0x20 || below(6) == 0) {
            if (sh && below(2)) {
                mx_buf_putc(b, '\\');
                mx_buf_putc(b, *sh);
            } else if (cp >= 0x10000) {
                put_u(b, 0xD800 + ((cp - 0x10000) >> 10));
                put_u(b, 0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else {
                put_u(b, cp);
            }
        } else {
            mx_buf_append(b, p, n);
        }
        p += n;
    }
    mx_buf_putc(b, '"');
}

/* Names along the rule paths, by depth, so that generated documents often have the targets. */
static const char *const path_names[4][7] = {
    {"device_one_time_keys_count", "device_unused_fallback_key_types",
     "org.matrix.msc2732.device_unused_fallback_key_types", "extensions", "device_keys", "master_keys", "a"},
    {"e2ee", "@alice:x", "b", "e2ee", "@alice:x", "b", "device_one_time_keys_count"},
    {"device_one_time_keys_count", "k\xF0\x9D\x84\x9E", "e2ee", "device_one_time_keys_count", "k\xF0\x9D\x84\x9E", "x",
     "y"},
    {"x\"y", "x\"y", "x\"y", "device_one_time_keys_count", "z", "x\"y", "x\"y"},
};
static const char *const other_names[] = {
    "rooms",
    "join",
    "events",
    "type",
    "content",
    "device_one_time_keys",
    "device_one_time_keys_count2",
    "",
    "\xC3\xA9t\xC3\xA9",
    "x\"y",
    "k\xF0\x9D\x84\x9E",
    "}",
    "a\\b",
    "signed_curve25519",
};
static const char *const string_bits[] = {
    "a",
    "}",
    "]",
    "{",
    "[",
    ",",
    ":",
    "\"",
    "\\",
    "/",
    "\n",
    "\xC3\xA9",
    "\xF0\x9D\x84\x9E",
    "\\u005c",
    "device_one_time_keys_count",
    " ",
    "\x01",
    "\"}",
};
static const char *const scalars[] = {
    "0", "-1", "42", "3.25", "-1.5e+3", "1E-2", "true", "false", "null", "9007199254740991", "-0.0",
};

static unsigned gen_nodes;
static const mx_splice_rule_t *gen_rules;
static size_t gen_nrules;
static bool gen_object_next; /* the name was on the way to a rule's target: make its value an object */

/* A member name for an object at `depth`: often the next name on a path of the rules in use. */
static const char *gen_name(unsigned depth)
{
    unsigned pick = below(4);
    if (pick < 2) {
        const mx_splice_rule_t *r = &gen_rules[below((unsigned)gen_nrules)];
        if (depth < r->depth) {
            gen_object_next = depth + 1 < r->depth && below(4);
            return r->path[depth];
        }
    }
    if (pick == 2 && depth < 4)
        return path_names[depth][below(7)];
    return other_names[below(sizeof(other_names) / sizeof(other_names[0]))];
}

static void gen_value(mx_buf_t *b, unsigned depth)
{
    unsigned kind = gen_nodes++ > 150 || depth > 7 ? below(3) : below(10);
    if (gen_object_next)
        kind = 3;
    gen_object_next = false;
    put_ws(b);
    if (kind == 0) {
        mx_buf_puts(b, scalars[below(sizeof(scalars) / sizeof(scalars[0]))]);
    } else if (kind <= 2) {
        char text[128] = "";
        for (unsigned i = below(6); i; i--)
            strcat(text, string_bits[below(sizeof(string_bits) / sizeof(string_bits[0]))]);
        put_string(b, text);
    } else if (kind <= 7) {
        mx_buf_putc(b, '{');
        put_ws(b);
        for (unsigned i = 0, n = below(5); i < n; i++) {
            if (i)
                mx_buf_putc(b, ',');
            put_ws(b);
            put_string(b, gen_name(depth));
            put_ws(b);
            mx_buf_putc(b, ':');
            gen_value(b, depth + 1);
        }
        mx_buf_putc(b, '}');
    } else {
        mx_buf_putc(b, '[');
        put_ws(b);
        for (unsigned i = 0, n = below(4); i < n; i++) {
            if (i)
                mx_buf_putc(b, ',');
            gen_value(b, depth + 1);
        }
        mx_buf_putc(b, ']');
    }
    put_ws(b);
}

/* The edit the splicer should make, done on a tree. Deeper rules first: each rule sees the document as it came
 * in, never what another rule added. With duplicate names jansson keeps the last, which the splicer rewrote alike. */
static void expect_edit(json_t *root, const mx_splice_rule_t *rules, size_t n)
{
    for (size_t depth = MX_SPLICE_MAX_DEPTH; depth >= 1; depth--) {
        for (size_t i = 0; i < n; i++) {
            const mx_splice_rule_t *r = &rules[i];
            if (r->depth != depth)
                continue;
            json_t *parent = root;
            for (size_t d = 0; d + 1 < depth && json_is_object(parent); d++)
                parent = json_object_get(parent, r->path[d]);
            if (!json_is_object(parent))
                continue;
            const char *name = r->path[depth - 1];
            json_t *v = json_object_get(parent, name);
            if (r->action == MX_SPLICE_REPLACE) {
                if (v || r->add_if_missing)
                    json_object_set_new(parent, name, json_loadb(r->text, r->len, JSON_DECODE_ANY, NULL));
                continue;
            }
            char text[256];
            snprintf(text, sizeof(text), "{%.*s}", (int)r->len, r->text);
            json_t *members = json_loads(text, 0, NULL);
            if (json_is_object(v))
                json_object_update(v, members);
            else if (!v && r->add_if_missing)
                json_object_set(parent, name, members);
            json_decref(members);
        }
    }
}

static const mx_splice_rule_t gen_rules_ss[] = {
    {.path = {"extensions", "e2ee", "device_one_time_keys_count"}, .depth = 3, TEXT("[1,\"}\"]"), .add_if_missing = 1},
    {.path = {"device_one_time_keys_count"}, .depth = 1, TEXT("\"\\u005c\"")},
    {.path = {"extensions", "e2ee", "x"}, .depth = 3, TEXT("-12.5e1")},
};
static const mx_splice_rule_t gen_rules_keys[] = {
    {.path = {"device_keys"},
     .depth = 1,
     .action = MX_SPLICE_APPEND_MEMBERS,
     TEXT("\"@new:x\":{\"N\":null}"),
     .add_if_missing = true},
    {.path = {"master_keys"}, .depth = 1, .action = MX_SPLICE_APPEND_MEMBERS, TEXT("\"@new:x\":1,\"@new2:x\":[]")},
    {.path = {"device_keys", "@alice:x"}, .depth = 2, TEXT("{\"r\":0}"), .add_if_missing = true},
    {.path = {"a", "b", "k\xF0\x9D\x84\x9E", "x\"y"}, .depth = 4, TEXT("null"), .add_if_missing = true},
};
static const struct {
    const mx_splice_rule_t *rules;
    size_t n;
} gen_sets[] = {{sync_rules, N(sync_rules)}, {gen_rules_ss, N(gen_rules_ss)}, {gen_rules_keys, N(gen_rules_keys)}};

static void test_generated(void)
{
    mx_buf_t doc = MX_BUF_INIT;
    static result_t whole, part, plain;
    unsigned hits[3][MX_SPLICE_MAX_RULES] = {{0}}, parsed = 0, mutants_valid = 0;
    size_t cuts[4096];
    for (int iter = 0; iter < 3000; iter++) {
        size_t set = (size_t)iter % 3;
        const mx_splice_rule_t *rules = gen_sets[set].rules;
        size_t n = gen_sets[set].n;
        gen_rules = rules;
        gen_nrules = n;
        mx_buf_reset(&doc);
        gen_nodes = 0;
        if (below(10) == 0) {
            gen_value(&doc, 0);
        } else {
            /* a top-level object, with room for more members than gen_value gives */
            mx_buf_putc(&doc, '{');
            for (unsigned i = 0, m = below(8); i < m; i++) {
                if (i)
                    mx_buf_putc(&doc, ',');
                put_ws(&doc);
                put_string(&doc, gen_name(0));
                mx_buf_putc(&doc, ':');
                gen_value(&doc, 1);
            }
            mx_buf_putc(&doc, '}');
        }
        bool mutated = iter % 4 == 3 && doc.len > 1;
        if (mutated) {
            /* one byte dropped, doubled or overwritten with a structural one */
            size_t at = below((unsigned)doc.len);
            char c = "{}[]\",:\\ 1"[below(10)];
            unsigned how = below(3);
            if (how == 0) {
                memmove(doc.data + at, doc.data + at + 1, doc.len - at - 1);
                doc.len--;
            } else if (how == 1) {
                mx_buf_putc(&doc, 0);
                memmove(doc.data + at + 1, doc.data + at, doc.len - at - 1);
                doc.data[at] = c;
            } else {
                doc.data[at] = c;
            }
        }
        json_t *tree = json_loadb(doc.data, doc.len, JSON_DECODE_ANY, NULL);
        if (!mutated)
            CHECK(tree != NULL);
        mutants_valid += mutated && tree;

        splice(rules, n, doc.data, doc.len, NULL, 0, &whole);
        size_t ncuts = 0;
        for (size_t at = 0; ncuts < sizeof(cuts) / sizeof(cuts[0]);) {
            unsigned kind = below(4);
            at += kind == 0 ? 1 : kind == 1 ? below(8) + 1 : kind == 2 ? below(64) + 1 : below(1024) + 1;
            if (at >= doc.len)
                break;
            cuts[ncuts++] = at;
        }
        splice(rules, n, doc.data, doc.len, cuts, ncuts, &part);
        CHECK(same_result(&whole, &part));
        /* without rules every byte comes out as it went in */
        splice(NULL, 0, doc.data, doc.len, cuts, ncuts, &plain);
        CHECK(plain.out.len == doc.len && memcmp(plain.out.data, doc.data, doc.len) == 0);
        CHECK(plain.rc == whole.rc);
        if (tree == NULL)
            continue;
        CHECK(whole.rc == 0);
        unsigned applied = 0;
        for (size_t i = 0; i < n; i++) {
            hits[set][i] += whole.applied[i];
            applied += whole.applied[i];
        }
        if (applied == 0)
            CHECK(whole.out.len == doc.len && memcmp(whole.out.data, doc.data, doc.len) == 0);
        json_error_t err;
        json_t *got = json_loadb(whole.out.data, whole.out.len, JSON_DECODE_ANY, &err);
        CHECK(got != NULL);
        expect_edit(tree, rules, n);
        bool equal = got && json_equal(got, tree);
        if (!equal) {
            fprintf(stderr, "generated %d:\n  in  %.*s\n  out %s\n", iter, (int)doc.len, doc.data, whole.out.data);
            if (got == NULL)
                fprintf(stderr, "  parse: %s at %d\n", err.text, err.position);
        }
        CHECK(equal);
        parsed++;
        json_decref(got);
        json_decref(tree);
    }
    /* the generator reaches every rule, and some mutants stay valid JSON */
    for (size_t set = 0; set < 3; set++)
        for (size_t i = 0; i < gen_sets[set].n; i++)
            if (!(set == 0 && i == 2)) {
                if (hits[set][i] <= 20)
                    fprintf(stderr, "rule %zu of set %zu: %u hits\n", i, set, hits[set][i]);
                CHECK(hits[set][i] > 20);
            }
    CHECK(hits[0][2] > 5);
    CHECK(parsed > 2000);
    CHECK(mutants_valid > 10);
    mx_buf_free(&doc);
    mx_buf_free(&whole.out);
    mx_buf_free(&part.out);
    mx_buf_free(&plain.out);
}

/* ~20 MB of timeline with lookalike names and tricky strings, the targets at the end, in 64 KiB chunks. */
static void test_large(void)
{
    static const char event[] =
        "{\"type\":\"m.room.message\",\"sender\":\"@alice:example.org\",\"event_id\":\"$Xy7_aBcDeFgHiJkLmNoPqRsTuV\","
        "\"origin_server_ts\":1700000000000,\"content\":{\"msgtype\":\"m.text\",\"body\":\"a \\\"quoted\\\" } ] { [ "
        "\\\\u005c \\u00e9 text that goes on for a while to look like a real message body\","
        "\"device_one_time_keys_count\":{\"signed_curve25519\":1},\"m.relates_to\":{\"rel_type\":\"m.thread\"}},"
        "\"unsigned\":{\"age\":1234,\"transaction_id\":\"m1700000000.0\",\"device_unused_fallback_key_types\":[]},"
        "\"list\":[[1,2,3],[true,false,null],[{\"e2ee\":{}}],-1.5e3]}";
    mx_buf_t in = MX_BUF_INIT, want = MX_BUF_INIT, out = MX_BUF_INIT;
    mx_buf_reserve(&in, 21u << 20);
    mx_buf_reserve(&want, 21u << 20);
    mx_buf_puts(&in, "{\"next_batch\":\"s72594_4483_1934\",\"rooms\":{\"join\":{\"!room:example.org\":{\"timeline\":"
                     "{\"events\":[");
    size_t count = (20u << 20) / (sizeof(event) - 1);
    for (size_t i = 0; i < count; i++) {
        if (i)
            mx_buf_putc(&in, ',');
        mx_buf_append(&in, event, sizeof(event) - 1);
    }
    mx_buf_puts(&in, "],\"limited\":false}}}},");
    mx_buf_append(&want, in.data, in.len);
    mx_buf_puts(&in, "\"device_one_time_keys_count\":{\"signed_curve25519\":3},"
                     "\"org.matrix.msc2732.device_unused_fallback_key_types\":[\"x\"],\"presence\":{}}\n");
    mx_buf_puts(&want, OTKN OTK "," MSCN FB ",\"presence\":{}," FBN FB "}\n");

    mx_splice_t s;
    int rc = mx_splice_init(&s, sync_rules, N(sync_rules));
    for (size_t at = 0; at < in.len; at += 65536) {
        size_t n = in.len - at < 65536 ? in.len - at : 65536;
        rc |= mx_splice_feed(&s, in.data + at, n, &out);
    }
    rc |= mx_splice_finish(&s, &out);
    CHECK(rc == 0);
    CHECK(in.len > (20u << 20) - 1024);
    CHECK(out.len == want.len && memcmp(out.data, want.data, want.len) == 0);
    CHECK(mx_splice_applied(&s, 0) == 1 && mx_splice_applied(&s, 1) == 1 && mx_splice_applied(&s, 2) == 1);
    mx_buf_free(&in);
    mx_buf_free(&want);
    mx_buf_free(&out);
}

int main(void)
{
    test_sync();
    test_paths();
    test_append();
    test_malformed();
    test_generated();
    test_large();
    return check_finish("json_splice");
}
