/* Rotating the host list of a multi-host conninfo (include/mxkeys/db_hosts.h says why). The conninfo is parsed once
 * by PQconninfoParse, which handles both the keyword form and URIs; libpq's lists are plain comma-separated values
 * (host, hostaddr and port: a single port applies to every host), so rotating them keeps each host with its port. */
#include "mxkeys/db_hosts.h"
#include <stdlib.h>
#include <string.h>

typedef struct st_list_t {
    char *copy;   /* the option's value, commas replaced by NULs */
    char **items; /* pointers into copy */
    size_t n;
} list_t;

struct st_mx_db_hosts_t {
    PQconninfoOption *opts;
    list_t host, hostaddr, port;
    size_t n;
};

static int list_split(list_t *l, const char *value)
{
    memset(l, 0, sizeof(*l));
    if (value == NULL || *value == '\0')
        return 0;
    if ((l->copy = strdup(value)) == NULL)
        return -1;
    size_t n = 1;
    for (const char *p = value; *p != '\0'; p++)
        n += *p == ',';
    if ((l->items = calloc(n, sizeof(*l->items))) == NULL)
        return -1;
    char *s = l->copy;
    for (;;) {
        l->items[l->n++] = s;
        char *comma = strchr(s, ',');
        if (comma == NULL)
            break;
        *comma = '\0';
        s = comma + 1;
    }
    return 0;
}

static void list_free(list_t *l)
{
    free(l->items);
    free(l->copy);
}

/* The list rotated to start at `first`, joined again; the list itself when it has one item (a port for all). */
static char *list_rotated(const list_t *l, size_t first)
{
    if (l->n == 0)
        return NULL;
    size_t len = 0;
    for (size_t i = 0; i < l->n; i++)
        len += strlen(l->items[i]) + 1;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    size_t at = 0;
    for (size_t k = 0; k < l->n; k++) {
        const char *item = l->items[l->n == 1 ? 0 : (first + k) % l->n];
        if (k > 0)
            out[at++] = ',';
        size_t ilen = strlen(item);
        memcpy(out + at, item, ilen);
        at += ilen;
        out[at] = '\0';
    }
    return out;
}

static const char *option(const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val;
    return NULL;
}

mx_db_hosts_t *mx_db_hosts_new(const char *conninfo)
{
    mx_db_hosts_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->opts = PQconninfoParse(conninfo, NULL)) == NULL)
        goto failed;
    if (list_split(&h->host, option(h->opts, "host")) != 0 ||
        list_split(&h->hostaddr, option(h->opts, "hostaddr")) != 0 ||
        list_split(&h->port, option(h->opts, "port")) != 0)
        goto failed;
    h->n = h->host.n > h->hostaddr.n ? h->host.n : h->hostaddr.n;
    /* Lists of other lengths are an error libpq reports at connect: leave the conninfo alone then. */
    if (h->n < 2 || (h->host.n != 0 && h->host.n != h->n) || (h->hostaddr.n != 0 && h->hostaddr.n != h->n) ||
        (h->port.n > 1 && h->port.n != h->n))
        goto failed;
    return h;
failed:
    mx_db_hosts_free(h);
    return NULL;
}

void mx_db_hosts_free(mx_db_hosts_t *h)
{
    if (h == NULL)
        return;
    list_free(&h->host);
    list_free(&h->hostaddr);
    list_free(&h->port);
    PQconninfoFree(h->opts);
    free(h);
}

size_t mx_db_hosts_count(const mx_db_hosts_t *h)
{
    return h->n;
}

int mx_db_hosts_current(const mx_db_hosts_t *h, const PGconn *pg)
{
    /* PQhost names the host being tried (its host, else its hostaddr); PQport its port. */
    const char *host = pg != NULL ? PQhost(pg) : NULL, *port = pg != NULL ? PQport(pg) : NULL;
    if (host == NULL)
        return -1;
    for (size_t i = 0; i < h->n; i++) {
        const char *name = h->host.n != 0 && *h->host.items[i] != '\0' ? h->host.items[i] : h->hostaddr.items[i];
        const char *p = h->port.n == 0 ? NULL : h->port.items[h->port.n == 1 ? 0 : i];
        if (strcmp(name, host) == 0 && (p == NULL || *p == '\0' || (port != NULL && strcmp(p, port) == 0)))
            return (int)i;
    }
    return -1;
}

PGconn *mx_db_hosts_connect_start(const mx_db_hosts_t *h, size_t first, const char *const *keys,
                                  const char *const *values)
{
    size_t ndefaults = 0, nopts = 0;
    while (keys[ndefaults] != NULL)
        ndefaults++;
    for (const PQconninfoOption *o = h->opts; o->keyword != NULL; o++)
        nopts++;
    const char **k = calloc(ndefaults + nopts + 1, sizeof(*k)), **v = calloc(ndefaults + nopts + 1, sizeof(*v));
    char *lists[3] = {list_rotated(&h->host, first), list_rotated(&h->hostaddr, first), list_rotated(&h->port, first)};
    PGconn *pg = NULL;
    if (k == NULL || v == NULL)
        goto done;
    size_t n = 0;
    for (size_t i = 0; i < ndefaults; i++, n++)
        k[n] = keys[i], v[n] = values[i];
    /* The conninfo's own keywords after the defaults: with several values for a keyword, libpq keeps the last. A NULL
     * value (an option the conninfo does not set) is skipped by libpq. */
    for (const PQconninfoOption *o = h->opts; o->keyword != NULL; o++, n++) {
        k[n] = o->keyword;
        if (strcmp(o->keyword, "host") == 0)
            v[n] = lists[0];
        else if (strcmp(o->keyword, "hostaddr") == 0)
            v[n] = lists[1];
        else if (strcmp(o->keyword, "port") == 0)
            v[n] = lists[2];
        else
            v[n] = o->val;
    }
    /* expand_dbname 0: dbname is now just the database's name. libpq copies every value before returning. */
    pg = PQconnectStartParams(k, v, 0);
done:
    free(k);
    free(v);
    for (size_t i = 0; i < 3; i++)
        free(lists[i]);
    return pg;
}
