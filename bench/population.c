#include "population.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

char *bench_strdup(const char *s)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL) {
        fputs("mxkeys-bench: out of memory\n", stderr);
        abort();
    }
    return d;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) {
        fputs("mxkeys-bench: out of memory\n", stderr);
        abort();
    }
    return p;
}

int bench_population_minted(bench_population_t *p, const char *prefix, const char *server, unsigned users,
                            unsigned devices, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (strlen(prefix) + strlen(server) > 200) {
        snprintf(err, errlen, "--user-prefix and --server-name are too long");
        return -1;
    }
    p->prefix = bench_strdup(prefix);
    p->server = bench_strdup(server);
    p->nusers = users;
    p->ndevices = (size_t)users * devices;
    p->users = xcalloc(p->nusers, sizeof(*p->users));
    p->devices = xcalloc(p->ndevices, sizeof(*p->devices));
    for (unsigned u = 0; u < users; u++) {
        bench_user_t *user = &p->users[u];
        char buf[512];
        snprintf(buf, sizeof(buf), "@%s-%u:%s", prefix, u, server);
        user->user_id = bench_strdup(buf);
        user->first_device = (size_t)u * devices;
        user->ndevices = devices;
        for (unsigned d = 0; d < devices; d++) {
            bench_device_t *dev = &p->devices[user->first_device + d];
            dev->user_id = bench_strdup(user->user_id);
            snprintf(buf, sizeof(buf), "DEV%u", d);
            dev->device_id = bench_strdup(buf);
        }
    }
    return 0;
}

int bench_population_add_upload(bench_population_t *p, size_t n, const char *nonce, char *err, size_t errlen)
{
    if (p->prefix == NULL || p->server == NULL) {
        snprintf(err, errlen, "upload devices can only be minted for a minted population");
        return -1;
    }
    p->upload = xcalloc(n, sizeof(*p->upload));
    p->nupload = n;
    for (size_t k = 0; k < n; k++) {
        char buf[512];
        snprintf(buf, sizeof(buf), "@%s-up%zu-%s:%s", p->prefix, k, nonce, p->server);
        p->upload[k].user_id = bench_strdup(buf);
        snprintf(buf, sizeof(buf), "UP%zu", k);
        p->upload[k].device_id = bench_strdup(buf);
    }
    return 0;
}

static const char *str_member(json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

int bench_population_tokens(bench_population_t *p, const char *path, size_t nupload, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    json_error_t jerr;
    json_t *list = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (list == NULL || !json_is_array(list)) {
        snprintf(err, errlen, "%s: %s", path, list == NULL ? jerr.text : "expected a JSON list");
        json_decref(list);
        return -1;
    }
    size_t n = json_array_size(list);
    if (n <= nupload) {
        snprintf(err, errlen, "%s: %zu entries, but %zu are needed as upload devices and at least one more", path, n,
                 nupload);
        json_decref(list);
        return -1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (str_member(e, "user_id") == NULL || str_member(e, "device_id") == NULL ||
            str_member(e, "access_token") == NULL) {
            snprintf(err, errlen, "%s: entry %zu lacks user_id, device_id or access_token", path, i);
            json_decref(list);
            return -1;
        }
    }
    /* Group the population by user, keeping the file's order of first appearance. */
    size_t npop = n - nupload;
    p->devices = xcalloc(npop, sizeof(*p->devices));
    p->users = xcalloc(npop, sizeof(*p->users));
    char *used = xcalloc(npop, 1);
    for (size_t a = 0; a < npop; a++) {
        if (used[a])
            continue;
        const char *uid = str_member(json_array_get(list, a), "user_id");
        bench_user_t *user = &p->users[p->nusers++];
        user->user_id = bench_strdup(uid);
        user->first_device = p->ndevices;
        for (size_t b = a; b < npop; b++) {
            json_t *eb = json_array_get(list, b);
            if (used[b] || strcmp(str_member(eb, "user_id"), uid) != 0)
                continue;
            used[b] = 1;
            bench_device_t *dev = &p->devices[p->ndevices++];
            dev->user_id = bench_strdup(uid);
            dev->device_id = bench_strdup(str_member(eb, "device_id"));
            dev->token = bench_strdup(str_member(eb, "access_token"));
            user->ndevices++;
        }
    }
    free(used);
    p->upload = xcalloc(nupload, sizeof(*p->upload));
    p->nupload = nupload;
    for (size_t k = 0; k < nupload; k++) {
        json_t *ek = json_array_get(list, npop + k);
        p->upload[k].user_id = bench_strdup(str_member(ek, "user_id"));
        p->upload[k].device_id = bench_strdup(str_member(ek, "device_id"));
        p->upload[k].token = bench_strdup(str_member(ek, "access_token"));
    }
    json_decref(list);
    return 0;
}

static json_t *opt_string(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

int bench_population_save(const bench_population_t *p, const char *path, char *err, size_t errlen)
{
    json_t *users = json_array();
    for (size_t u = 0; u < p->nusers; u++) {
        const bench_user_t *user = &p->users[u];
        json_t *devs = json_array();
        for (size_t d = 0; d < user->ndevices; d++) {
            const bench_device_t *dev = &p->devices[user->first_device + d];
            json_t *jd = json_pack("{s:s, s:s?, s:o, s:o}", "device_id", dev->device_id, "access_token", dev->token,
                                   "ed25519", opt_string(dev->ed25519), "curve25519", opt_string(dev->curve25519));
            if (dev->keys_json != NULL)
                json_object_set_new(jd, "device_keys", json_string(dev->keys_json));
            json_array_append_new(devs, jd);
        }
        json_t *ju = json_pack("{s:s, s:o, s:o, s:o}", "user_id", user->user_id, "backup_version",
                               opt_string(user->backup_version), "backup_public_key", opt_string(user->backup_pub),
                               "devices", devs);
        if (user->master_json != NULL)
            json_object_set_new(ju, "cross_signing",
                                json_pack("{s:s, s:s, s:s}", "master_key", user->master_json, "self_signing_seed",
                                          user->ssk_seed, "user_signing_seed", user->usk_seed));
        json_array_append_new(users, ju);
    }
    json_t *root = json_pack("{s:o, s:o, s:o, s:o, s:i, s:I, s:o}", "prefix", opt_string(p->prefix), "server",
                             opt_string(p->server), "changes_from", opt_string(p->changes_from), "changes_to",
                             opt_string(p->changes_to), "backup_sessions", (json_int_t)p->backup_sessions,
                             "backup_epoch", (json_int_t)p->backup_epoch, "users", users);
    /* Tokens inside: readable by the owner only. */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc = -1;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "cannot write %s", tmp);
    } else {
        int ok = json_dumpf(root, f, JSON_INDENT(1)) == 0;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, path) != 0)
            snprintf(err, errlen, "cannot write %s", path);
        else
            rc = 0;
    }
    json_decref(root);
    return rc;
}

static char *dup_member(json_t *obj, const char *name)
{
    return bench_strdup(str_member(obj, name));
}

int bench_population_load(bench_population_t *p, const char *path, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    json_t *users = json_object_get(root, "users");
    if (root == NULL || !json_is_array(users) || json_array_size(users) == 0) {
        snprintf(err, errlen, "%s: %s", path, root == NULL ? jerr.text : "not a state file of mxkeys-bench");
        json_decref(root);
        return -1;
    }
    p->prefix = dup_member(root, "prefix");
    p->server = dup_member(root, "server");
    p->changes_from = dup_member(root, "changes_from");
    p->changes_to = dup_member(root, "changes_to");
    p->backup_sessions = (unsigned)json_integer_value(json_object_get(root, "backup_sessions"));
    /* absent in states written before it existed: their indexes were all above 2^32, so any start is below them */
    p->backup_epoch = (int64_t)json_integer_value(json_object_get(root, "backup_epoch"));
    size_t ndev = 0, u;
    json_t *ju;
    json_array_foreach(users, u, ju) ndev += json_array_size(json_object_get(ju, "devices"));
    p->nusers = json_array_size(users);
    p->users = xcalloc(p->nusers, sizeof(*p->users));
    p->devices = xcalloc(ndev, sizeof(*p->devices));
    json_array_foreach(users, u, ju)
    {
        bench_user_t *user = &p->users[u];
        user->user_id = dup_member(ju, "user_id");
        user->backup_version = dup_member(ju, "backup_version");
        user->backup_pub = dup_member(ju, "backup_public_key");
        json_t *xs = json_object_get(ju, "cross_signing");
        user->master_json = dup_member(xs, "master_key");
        user->ssk_seed = dup_member(xs, "self_signing_seed");
        user->usk_seed = dup_member(xs, "user_signing_seed");
        if (user->master_json != NULL && (user->ssk_seed == NULL || user->usk_seed == NULL)) {
            snprintf(err, errlen, "%s: %s has incomplete cross-signing keys", path, user->user_id);
            json_decref(root);
            bench_population_free(p);
            return -1;
        }
        user->first_device = p->ndevices;
        size_t d;
        json_t *jd;
        json_array_foreach(json_object_get(ju, "devices"), d, jd)
        {
            bench_device_t *dev = &p->devices[p->ndevices++];
            dev->user_id = bench_strdup(user->user_id);
            dev->device_id = dup_member(jd, "device_id");
            dev->token = dup_member(jd, "access_token");
            dev->ed25519 = dup_member(jd, "ed25519");
            dev->curve25519 = dup_member(jd, "curve25519");
            dev->keys_json = dup_member(jd, "device_keys");
            user->ndevices++;
        }
        if (user->user_id == NULL || user->ndevices == 0) {
            snprintf(err, errlen, "%s: user %zu has no id or no devices", path, u);
            json_decref(root);
            bench_population_free(p);
            return -1;
        }
    }
    for (size_t d = 0; d < p->ndevices; d++) {
        if (p->devices[d].device_id == NULL || p->devices[d].token == NULL) {
            snprintf(err, errlen, "%s: a device lacks its id or token", path);
            json_decref(root);
            bench_population_free(p);
            return -1;
        }
    }
    json_decref(root);
    return 0;
}

static void free_device(bench_device_t *d)
{
    free(d->user_id);
    free(d->device_id);
    free(d->token);
    free(d->ed25519);
    free(d->curve25519);
    free(d->keys_json);
}

void bench_population_free(bench_population_t *p)
{
    for (size_t i = 0; i < p->ndevices; i++)
        free_device(&p->devices[i]);
    for (size_t i = 0; i < p->nupload; i++)
        free_device(&p->upload[i]);
    for (size_t u = 0; u < p->nusers; u++) {
        bench_user_t *user = &p->users[u];
        free(user->user_id);
        free(user->backup_version);
        free(user->backup_pub);
        free(user->master_json);
        free(user->ssk_seed);
        free(user->usk_seed);
        for (size_t b = 0; b < user->nblobs; b++)
            free(user->blobs[b]);
        free(user->blobs);
    }
    free(p->devices);
    free(p->upload);
    free(p->users);
    free(p->prefix);
    free(p->server);
    free(p->changes_from);
    free(p->changes_to);
    memset(p, 0, sizeof(*p));
}
