/* The /keys/query cache's store (include/mxkeys/query_cache.h says what it guarantees and how): a hash table of
 * users with a least-recently-used list through it, under one mutex. An entry is either a user's parts (ready) or a
 * placeholder for the fills in flight, made after the user's last forget. */
#include "mxkeys/query_cache.h"
#include <assert.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* glibc's header per block, beside the usable size malloc_usable_size reports: counted so that the bound is on the
 * memory the blocks take, not on their payload. */
#define BLOCK_OVERHEAD 8
#define MIN_BUCKETS 1024

typedef struct st_qc_item_t {
    char kind;
    uint32_t item, item_len, item_json, item_json_len, signer, signer_len, body, body_len; /* offsets into text */
} qc_item_t;

struct st_mx_qc_entry_t {
    mx_qc_entry_t *hnext;       /* hash chain */
    mx_qc_entry_t *prev, *next; /* LRU list, most recent first */
    uint64_t hash;
    uint64_t born; /* a placeholder's: the ticket count when it was made (after its user's last forget) */
    bool ready;
    size_t bytes; /* what it counts against the bound */
    uint32_t user_len, user_json, user_json_len;
    qc_item_t *items;
    size_t nitems, items_cap;
    char *text; /* the user id first, then every string of the items */
    size_t text_len, text_cap;
};

struct st_mx_query_cache_t {
    pthread_mutex_t mu;
    size_t max_bytes, bytes, users;
    mx_qc_entry_t **buckets;
    size_t nbuckets; /* a power of two */
    mx_qc_entry_t *lru_head, *lru_tail;
    uint64_t next_ticket;
    uint64_t live_until_ns; /* CLOCK_MONOTONIC: answers and fills only before it (the feed's last proof) */
    mx_query_cache_stats_t counts;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t mx_query_cache_now_ns(void)
{
    return now_ns();
}

static bool is_live(const mx_query_cache_t *qc)
{
    return now_ns() < qc->live_until_ns;
}

static uint64_t hash_of(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- entries --------------------------------------------------------------------------------------------------- */

static int text_append(mx_qc_entry_t *e, const char *s, size_t len, uint32_t *off)
{
    if (e->text_len + len + 1 > UINT32_MAX)
        return -1;
    if (e->text_len + len + 1 > e->text_cap) {
        size_t cap = e->text_cap ? e->text_cap : 256;
        while (cap < e->text_len + len + 1)
            cap *= 2;
        char *t = realloc(e->text, cap);
        if (t == NULL)
            return -1;
        e->text = t;
        e->text_cap = cap;
    }
    *off = (uint32_t)e->text_len;
    if (len > 0)
        memcpy(e->text + e->text_len, s, len);
    e->text_len += len;
    e->text[e->text_len] = '\0'; /* strings stay printable in a debugger; never relied on */
    return 0;
}

mx_qc_entry_t *mx_qc_entry_new(const char *user_id, size_t len, const char *user_json, size_t user_json_len)
{
    mx_qc_entry_t *e = calloc(1, sizeof(*e));
    uint32_t user_off;
    if (e == NULL || text_append(e, user_id, len, &user_off) != 0 ||
        text_append(e, user_json, user_json_len, &e->user_json) != 0) {
        mx_qc_entry_free(e);
        return NULL;
    }
    assert(user_off == 0);
    e->user_len = (uint32_t)len;
    e->user_json_len = (uint32_t)user_json_len;
    e->hash = hash_of(user_id, len);
    return e;
}

int mx_qc_entry_add(mx_qc_entry_t *e, char kind, const char *item, size_t item_len, const char *item_json,
                    size_t item_json_len, const char *signer, size_t signer_len, const char *body, size_t body_len)
{
    if (e->nitems == e->items_cap) {
        size_t cap = e->items_cap ? e->items_cap * 2 : 8;
        qc_item_t *items = realloc(e->items, cap * sizeof(*items));
        if (items == NULL)
            return -1;
        e->items = items;
        e->items_cap = cap;
    }
    qc_item_t *it = &e->items[e->nitems];
    it->kind = kind;
    it->item_len = (uint32_t)item_len;
    it->item_json_len = (uint32_t)item_json_len;
    it->signer_len = (uint32_t)signer_len;
    it->body_len = (uint32_t)body_len;
    if (text_append(e, item, item_len, &it->item) != 0 ||
        text_append(e, item_json, item_json_len, &it->item_json) != 0 ||
        text_append(e, signer, signer_len, &it->signer) != 0 || text_append(e, body, body_len, &it->body) != 0)
        return -1;
    e->nitems++;
    return 0;
}

void mx_qc_entry_free(mx_qc_entry_t *e)
{
    if (e == NULL)
        return;
    free(e->items);
    free(e->text);
    free(e);
}

/* Gives back the slack of the growing buffers, then counts what the entry holds. */
static void entry_seal(mx_qc_entry_t *e)
{
    if (e->items_cap > e->nitems && e->nitems > 0) {
        qc_item_t *items = realloc(e->items, e->nitems * sizeof(*items));
        if (items != NULL) {
            e->items = items;
            e->items_cap = e->nitems;
        }
    }
    if (e->text_cap > e->text_len + 1) {
        char *t = realloc(e->text, e->text_len + 1);
        if (t != NULL) {
            e->text = t;
            e->text_cap = e->text_len + 1;
        }
    }
    e->bytes = malloc_usable_size(e) + malloc_usable_size(e->items) + malloc_usable_size(e->text) + 3 * BLOCK_OVERHEAD;
}

static bool same_user(const mx_qc_entry_t *e, uint64_t hash, const char *user, size_t len)
{
    return e->hash == hash && e->user_len == len && memcmp(e->text, user, len) == 0;
}

/* Whether the entry's string at (off, len) is s. */
static bool text_is(const mx_qc_entry_t *e, uint32_t off, uint32_t len, const char *s, size_t slen)
{
    return len == slen && memcmp(e->text + off, s, slen) == 0;
}

static bool device_wanted(const mx_qc_entry_t *e, const qc_item_t *it, const char *const *devices, size_t ndevices)
{
    if (ndevices == 0)
        return true;
    for (size_t i = 0; i < ndevices; i++)
        if (text_is(e, it->item, it->item_len, devices[i], strlen(devices[i])))
            return true;
    return false;
}

static void member(mx_buf_t *buf, const mx_qc_entry_t *e, const qc_item_t *it)
{
    if (buf->len > 0)
        mx_buf_puts(buf, ", ");
    mx_buf_append(buf, e->text + e->user_json, e->user_json_len);
    mx_buf_puts(buf, ": ");
    mx_buf_append(buf, e->text + it->body, it->body_len);
}

void mx_qc_entry_write(const mx_qc_entry_t *e, const char *viewer, const char *const *devices, size_t ndevices,
                       const mx_qc_out_t *out)
{
    size_t viewer_len = strlen(viewer);
    bool own = viewer_len == e->user_len && memcmp(viewer, e->text, viewer_len) == 0;
    mx_buf_t *dk = out->device_keys;
    if (dk->len > 0)
        mx_buf_puts(dk, ", ");
    mx_buf_append(dk, e->text + e->user_json, e->user_json_len);
    mx_buf_puts(dk, ": {");
    bool first_device = true;
    /* Each key's views are contiguous: the one for everyone (signer "") and one per other signer. */
    for (size_t i = 0; i < e->nitems;) {
        size_t j = i + 1;
        while (j < e->nitems && e->items[j].kind == e->items[i].kind &&
               text_is(e, e->items[j].item, e->items[j].item_len, e->text + e->items[i].item, e->items[i].item_len))
            j++;
        const qc_item_t *pick = NULL;
        for (size_t k = i; k < j; k++) {
            const qc_item_t *it = &e->items[k];
            if (it->signer_len == 0 && pick == NULL)
                pick = it;
            else if (it->signer_len > 0 && !own && text_is(e, it->signer, it->signer_len, viewer, viewer_len)) {
                pick = it;
                break;
            }
        }
        const qc_item_t *it = &e->items[i];
        i = j;
        if (pick == NULL)
            continue;
        switch (it->kind) {
        case 'd':
            if (!device_wanted(e, it, devices, ndevices))
                break;
            if (!first_device)
                mx_buf_puts(dk, ", ");
            first_device = false;
            mx_buf_append(dk, e->text + pick->item_json, pick->item_json_len);
            mx_buf_puts(dk, ": ");
            mx_buf_append(dk, e->text + pick->body, pick->body_len);
            break;
        case 'm':
            member(out->master_keys, e, pick);
            break;
        case 's':
            member(out->self_signing_keys, e, pick);
            break;
        case 'u':
            if (own) /* only the owner sees their user-signing key */
                member(out->user_signing_keys, e, pick);
            break;
        default:
            break;
        }
    }
    mx_buf_putc(dk, '}');
}

/* ---- the table ------------------------------------------------------------------------------------------------- */

mx_query_cache_t *mx_query_cache_new(size_t max_bytes)
{
    mx_query_cache_t *qc = calloc(1, sizeof(*qc));
    if (qc == NULL)
        return NULL;
    qc->nbuckets = MIN_BUCKETS;
    qc->buckets = calloc(qc->nbuckets, sizeof(*qc->buckets));
    if (qc->buckets == NULL) {
        free(qc);
        return NULL;
    }
    pthread_mutex_init(&qc->mu, NULL);
    qc->max_bytes = max_bytes;
    qc->next_ticket = 1;
    return qc;
}

static void lru_unlink(mx_query_cache_t *qc, mx_qc_entry_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        qc->lru_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        qc->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(mx_query_cache_t *qc, mx_qc_entry_t *e)
{
    e->prev = NULL;
    e->next = qc->lru_head;
    if (qc->lru_head != NULL)
        qc->lru_head->prev = e;
    qc->lru_head = e;
    if (qc->lru_tail == NULL)
        qc->lru_tail = e;
}

static mx_qc_entry_t **slot_of(mx_query_cache_t *qc, uint64_t hash, const char *user, size_t len)
{
    mx_qc_entry_t **p = &qc->buckets[hash & (qc->nbuckets - 1)];
    while (*p != NULL && !same_user(*p, hash, user, len))
        p = &(*p)->hnext;
    return p;
}

/* Unlinks the entry at *slot from the table and the list and frees it. */
static void drop_at(mx_query_cache_t *qc, mx_qc_entry_t **slot)
{
    mx_qc_entry_t *e = *slot;
    *slot = e->hnext;
    lru_unlink(qc, e);
    qc->bytes -= e->bytes;
    qc->users--;
    mx_qc_entry_free(e);
}

static void drop(mx_query_cache_t *qc, mx_qc_entry_t *e)
{
    drop_at(qc, slot_of(qc, e->hash, e->text, e->user_len));
}

static void grow(mx_query_cache_t *qc)
{
    size_t n = qc->nbuckets * 2;
    mx_qc_entry_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < qc->nbuckets; i++) {
        for (mx_qc_entry_t *e = qc->buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(qc->buckets);
    qc->buckets = b;
    qc->nbuckets = n;
}

/* What the cache holds against its bound: the entries and the table itself. */
static size_t held(const mx_query_cache_t *qc)
{
    return qc->bytes + qc->nbuckets * sizeof(*qc->buckets);
}

static void insert(mx_query_cache_t *qc, mx_qc_entry_t *e)
{
    if (qc->users >= qc->nbuckets)
        grow(qc);
    mx_qc_entry_t **head = &qc->buckets[e->hash & (qc->nbuckets - 1)];
    e->hnext = *head;
    *head = e;
    lru_push_front(qc, e);
    qc->bytes += e->bytes;
    qc->users++;
    while (held(qc) > qc->max_bytes && qc->lru_tail != NULL && qc->lru_tail != e) {
        drop(qc, qc->lru_tail);
        qc->counts.evictions++;
    }
}

static void clear_locked(mx_query_cache_t *qc)
{
    while (qc->lru_head != NULL)
        drop(qc, qc->lru_head);
    qc->counts.clears++;
}

void mx_query_cache_free(mx_query_cache_t *qc)
{
    if (qc == NULL)
        return;
    clear_locked(qc);
    free(qc->buckets);
    pthread_mutex_destroy(&qc->mu);
    free(qc);
}

bool mx_query_cache_live(mx_query_cache_t *qc)
{
    pthread_mutex_lock(&qc->mu);
    bool live = is_live(qc);
    pthread_mutex_unlock(&qc->mu);
    return live;
}

void mx_query_cache_confirm(mx_query_cache_t *qc, uint64_t until_ns)
{
    pthread_mutex_lock(&qc->mu);
    if (!is_live(qc))
        clear_locked(qc); /* it was not live: changes may have gone unheard meanwhile */
    if (until_ns > qc->live_until_ns)
        qc->live_until_ns = until_ns;
    pthread_mutex_unlock(&qc->mu);
}

void mx_query_cache_lost(mx_query_cache_t *qc)
{
    pthread_mutex_lock(&qc->mu);
    qc->live_until_ns = 0;
    clear_locked(qc);
    pthread_mutex_unlock(&qc->mu);
}

void mx_query_cache_forget(mx_query_cache_t *qc, const char *user_id, size_t len)
{
    uint64_t hash = hash_of(user_id, len);
    pthread_mutex_lock(&qc->mu);
    mx_qc_entry_t **slot = slot_of(qc, hash, user_id, len);
    if (*slot != NULL)
        drop_at(qc, slot);
    qc->counts.forgets++;
    pthread_mutex_unlock(&qc->mu);
}

void mx_query_cache_clear(mx_query_cache_t *qc)
{
    pthread_mutex_lock(&qc->mu);
    clear_locked(qc);
    pthread_mutex_unlock(&qc->mu);
}

uint64_t mx_query_cache_begin_fill(mx_query_cache_t *qc, const char *user_id, size_t len)
{
    uint64_t hash = hash_of(user_id, len), ticket = 0;
    pthread_mutex_lock(&qc->mu);
    if (!is_live(qc))
        goto done;
    ticket = qc->next_ticket++;
    if (*slot_of(qc, hash, user_id, len) != NULL)
        goto done; /* a placeholder made before this ticket, after the last forget: the ticket is good for it */
    mx_qc_entry_t *e = mx_qc_entry_new(user_id, len, "", 0);
    if (e == NULL) {
        ticket = 0;
        goto done;
    }
    e->born = ticket;
    entry_seal(e);
    insert(qc, e);
done:
    pthread_mutex_unlock(&qc->mu);
    return ticket;
}

bool mx_query_cache_end_fill(mx_query_cache_t *qc, uint64_t ticket, mx_qc_entry_t *entry)
{
    if (ticket == 0)
        return false;
    entry_seal(entry);
    pthread_mutex_lock(&qc->mu);
    mx_qc_entry_t **slot = slot_of(qc, entry->hash, entry->text, entry->user_len);
    /* The placeholder was made after the user's last forget (a forget removes it), so a ticket taken since it was
     * made is one no forget came after: the first such fill to finish is stored. A ready entry stays (it is at
     * least as new); a placeholder newer than the ticket means a forget came in between. */
    bool stored = false;
    if (is_live(qc) && *slot != NULL && !(*slot)->ready && ticket >= (*slot)->born && entry->bytes <= qc->max_bytes) {
        drop_at(qc, slot);
        entry->ready = true;
        insert(qc, entry);
        stored = true;
        qc->counts.fills_stored++;
    } else {
        qc->counts.fills_voided++;
    }
    pthread_mutex_unlock(&qc->mu);
    return stored;
}

bool mx_query_cache_write(mx_query_cache_t *qc, const char *user_id, size_t len, const char *viewer,
                          const char *const *devices, size_t ndevices, const mx_qc_out_t *out)
{
    uint64_t hash = hash_of(user_id, len);
    pthread_mutex_lock(&qc->mu);
    mx_qc_entry_t *e = is_live(qc) ? *slot_of(qc, hash, user_id, len) : NULL;
    bool hit = e != NULL && e->ready;
    if (hit) {
        mx_qc_entry_write(e, viewer, devices, ndevices, out);
        lru_unlink(qc, e);
        lru_push_front(qc, e);
        qc->counts.hits++;
    }
    pthread_mutex_unlock(&qc->mu);
    return hit;
}

void mx_query_cache_count_miss(mx_query_cache_t *qc, size_t n)
{
    pthread_mutex_lock(&qc->mu);
    qc->counts.misses += n;
    pthread_mutex_unlock(&qc->mu);
}

void mx_query_cache_stats(mx_query_cache_t *qc, mx_query_cache_stats_t *out)
{
    pthread_mutex_lock(&qc->mu);
    *out = qc->counts;
    out->bytes = held(qc);
    out->users = qc->users;
    out->max_bytes = qc->max_bytes;
    out->live = is_live(qc);
    pthread_mutex_unlock(&qc->mu);
}
