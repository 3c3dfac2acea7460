/* The /keys/query cache: per user, the stored parts of query answers (sql/functions/query_cache.sql says what they
 * are), shared by every worker of the process, bounded in bytes, least recently used dropped first.
 *
 * Exactness, the one rule everything here serves: an entry never outlives a committed change of its user that this
 * process has heard of.
 *  - A write made through this process forgets its users once the database has answered it and before the client
 *    is answered (mx_query_cache_forget, from the call layer): read-your-writes, on every worker.
 *  - Writes made elsewhere (another instance, the import, psql) arrive through the change feed
 *    (include/mxkeys/query_cache_feed.h), NOTIFY at commit.
 *  - A fill races with both: a reader takes a ticket (mx_query_cache_begin_fill) before it sends its statement, and
 *    the entry is stored only if no forget of that user, and no clear, came in between (the first such fill wins).
 * Since any change the statement's snapshot missed commits after the ticket, its forget comes after the ticket too, and
 * voids it.
 *  - While the feed cannot prove itself live (its connection lost, or silent past --query-cache-max-lag-ms) the cache
 *    is not used at all, and it is emptied before it is used again: changes made meanwhile may have been missed.
 *
 * Thread-safe: one mutex, held for look-ups and for copying a hit's text into the answer (microseconds). */
#ifndef MXKEYS_QUERY_CACHE_H
#define MXKEYS_QUERY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"

typedef struct st_mx_query_cache_t mx_query_cache_t;
/* One user's parts: built by the reader that fetched them, then either stored (the cache owns it) or freed. */
typedef struct st_mx_qc_entry_t mx_qc_entry_t;

/* The four maps of an answer a user's parts go to. */
typedef struct st_mx_qc_out_t {
    mx_buf_t *device_keys; /* "<user>": {"<device>": {...}, ...} members */
    mx_buf_t *master_keys; /* "<user>": {...} members */
    mx_buf_t *self_signing_keys;
    mx_buf_t *user_signing_keys;
} mx_qc_out_t;

/* Figures for /_mxkeys/metrics. */
typedef struct st_mx_query_cache_stats_t {
    unsigned long long hits, misses, evictions, forgets, clears, fills_stored, fills_voided;
    size_t bytes, users, max_bytes;
    bool live;
} mx_query_cache_stats_t;

/** A cache of at most `max_bytes` (entries' own accounting: texts plus a fixed overhead per entry and key). Starts
 * not live. NULL on out-of-memory. */
mx_query_cache_t *mx_query_cache_new(size_t max_bytes);
void mx_query_cache_free(mx_query_cache_t *qc);

/** Whether answers may come from the cache now: the feed's last proof has not run out. */
bool mx_query_cache_live(mx_query_cache_t *qc);
/** The feed's proof that every change committed before some moment has been heard: the cache may answer until
 * `until_ns` (mx_query_cache_now_ns's clock), that moment plus --query-cache-max-lag-ms. If the previous proof had
 * run out, the cache is emptied first (changes may have gone unheard meanwhile). */
void mx_query_cache_confirm(mx_query_cache_t *qc, uint64_t until_ns);
/** The feed's connection is gone: not live, and empty. */
void mx_query_cache_lost(mx_query_cache_t *qc);
/** CLOCK_MONOTONIC in nanoseconds. */
uint64_t mx_query_cache_now_ns(void);
/** Drops the user's entry and voids fills of the user in flight. Cheap when the user is not cached. */
void mx_query_cache_forget(mx_query_cache_t *qc, const char *user_id, size_t len);
/** Drops everything and voids every fill in flight. */
void mx_query_cache_clear(mx_query_cache_t *qc);

/** A reader about to fetch `user_id`'s parts: returns the ticket to pass to mx_query_cache_end_fill (0: the cache is
 * not live, do not fill). */
uint64_t mx_query_cache_begin_fill(mx_query_cache_t *qc, const char *user_id, size_t len);
/** Stores `entry` under its user if `ticket` is still valid (no forget or clear since it was taken) and no other
 * fill finished first: returns true and the cache owns it; else false and the caller still owns it. Concurrent
 * readers of one user never void each other: the first to finish is stored. */
bool mx_query_cache_end_fill(mx_query_cache_t *qc, uint64_t ticket, mx_qc_entry_t *entry);

/** Writes the cached parts of `user_id` as `viewer` sees them into `out` (devices: a JSON array of device ids, or
 * NULL/empty for all). Returns false (and writes nothing) when the user is not cached or the cache is not live. */
bool mx_query_cache_write(mx_query_cache_t *qc, const char *user_id, size_t len, const char *viewer,
                          const char *const *devices, size_t ndevices, const mx_qc_out_t *out);

/** Building an entry: items must come grouped by (kind, item), as mx_keys_query_parts orders them. `user_json` is
 * the user id as JSON text. NULL on out-of-memory. */
mx_qc_entry_t *mx_qc_entry_new(const char *user_id, size_t len, const char *user_json, size_t user_json_len);
/** Adds one row of mx_keys_query_parts: kind 'd' (device), 'm', 's', 'u' (cross-signing keys); item the device id or
 * public key; item_json the device id as JSON text (devices only); signer "" for everyone's view. -1 on OOM. */
int mx_qc_entry_add(mx_qc_entry_t *entry, char kind, const char *item, size_t item_len, const char *item_json,
                    size_t item_json_len, const char *signer, size_t signer_len, const char *body, size_t body_len);
/** The same as mx_query_cache_write, from an entry the caller holds. */
void mx_qc_entry_write(const mx_qc_entry_t *entry, const char *viewer, const char *const *devices, size_t ndevices,
                       const mx_qc_out_t *out);
void mx_qc_entry_free(mx_qc_entry_t *entry);

void mx_query_cache_stats(mx_query_cache_t *qc, mx_query_cache_stats_t *out);
/** Counts a miss (a user the answer had to fetch); hits are counted by mx_query_cache_write. */
void mx_query_cache_count_miss(mx_query_cache_t *qc, size_t n);

#endif
