#include "ledger.h"
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/buf.h"

struct st_bench_ledger_t {
    FILE *f;
    pthread_mutex_t lock;
    int failed;
};

bench_ledger_t *bench_ledger_open(const char *path, char *err, size_t errlen)
{
    bench_ledger_t *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->f = fopen(path, "w")) == NULL) {
        snprintf(err, errlen, "cannot open the ledger %s", path);
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

static json_t *request_body(const char *req, size_t len)
{
    const char *p = memmem(req, len, "\r\n\r\n", 4);
    return p == NULL ? NULL : json_loadb(p + 4, len - (size_t)(p + 4 - req), 0, NULL);
}

/* The `version=` query value of the request line (the bench never escapes digits). */
static void request_version(const char *req, size_t len, char *out, size_t outlen)
{
    const char *eol = memmem(req, len, "\r\n", 2), *v = memmem(req, eol ? (size_t)(eol - req) : len, "version=", 8);
    size_t n = 0;
    if (v != NULL)
        for (v += 8; n + 1 < outlen && v[n] != ' ' && v[n] != '&' && v[n] != '\r'; n++)
            out[n] = v[n];
    out[n] = '\0';
}

static void uploads(mx_buf_t *out, json_t *body)
{
    json_t *dk = json_object_get(body, "device_keys");
    const char *user = json_string_value(json_object_get(dk, "user_id"));
    const char *device = json_string_value(json_object_get(dk, "device_id"));
    const char *id;
    json_t *v;
    if (user == NULL || device == NULL)
        return;
    json_object_foreach(json_object_get(body, "one_time_keys"), id, v)
        mx_buf_printf(out, "U\t%s\t%s\t%s\n", user, device, id);
}

static void claims(mx_buf_t *out, json_t *answer)
{
    const char *user, *device, *id;
    json_t *devices, *keys, *key;
    json_object_foreach(json_object_get(answer, "one_time_keys"), user, devices)
    {
        json_object_foreach(devices, device, keys)
        {
            json_object_foreach(keys, id, key)
            {
                int fallback = json_is_true(json_object_get(key, "fallback"));
                mx_buf_printf(out, "C\t%s\t%s\t%s\t%d\n", user, device, id, fallback);
            }
        }
    }
}

static void backups(mx_buf_t *out, const char *user, const char *version, json_t *body)
{
    const char *room, *session;
    json_t *r, *s;
    json_object_foreach(json_object_get(body, "rooms"), room, r)
    {
        json_object_foreach(json_object_get(r, "sessions"), session, s)
        {
            mx_buf_printf(out, "B\t%s\t%s\t%s\t%s\t%lld\n", user, version, room, session,
                          (long long)json_integer_value(json_object_get(s, "first_message_index")));
        }
    }
}

void bench_ledger_record(bench_ledger_t *l, bench_scenario_t sc, const char *user_id, const char *request,
                         size_t request_len, const char *response, size_t response_len)
{
    if (l == NULL || (sc != SC_UPLOAD && sc != SC_CLAIM && sc != SC_BACKUP_PUT))
        return;
    mx_buf_t out = {0};
    json_t *j = NULL;
    if (sc == SC_CLAIM) {
        j = json_loadb(response, response_len, 0, NULL);
        claims(&out, j);
    } else if ((j = request_body(request, request_len)) != NULL) {
        if (sc == SC_UPLOAD) {
            uploads(&out, j);
        } else {
            char version[64];
            request_version(request, request_len, version, sizeof(version));
            backups(&out, user_id != NULL ? user_id : "?", version, j);
        }
    } else {
        l->failed = 1; /* the bench's own request no longer parses: the ledger would be incomplete */
    }
    json_decref(j);
    if (out.len > 0) {
        pthread_mutex_lock(&l->lock);
        if (fwrite(out.data, 1, out.len, l->f) != out.len)
            l->failed = 1;
        pthread_mutex_unlock(&l->lock);
    }
    mx_buf_free(&out);
}

int bench_ledger_close(bench_ledger_t *l)
{
    if (l == NULL)
        return 0;
    int rc = l->failed || ferror(l->f) ? -1 : 0;
    if (fclose(l->f) != 0)
        rc = -1;
    pthread_mutex_destroy(&l->lock);
    free(l);
    return rc;
}
