/* The /keys/query cache's change feed: one thread with its own database connection that LISTENs to
 * mxkeys_query_cache (sent by the triggers of sql/functions/query_cache.sql at every commit that changes a user's
 * answer) and forgets each user it hears of. Every quarter of --query-cache-max-lag-ms it proves itself with a
 * notification it sends itself: notifications are delivered in commit order, so a heartbeat sent at time T that came
 * back means every change committed before T has been heard, and the cache may answer until T + max lag
 * (mx_query_cache_confirm). Behind a pool that does not keep the session, no heartbeat comes back and the cache never
 * answers. A lost connection empties the cache and stops it answering until the feed is back (mx_query_cache_lost).
 * The thread never touches a worker's loop: workers only see the cache. */
#ifndef MXKEYS_QUERY_CACHE_FEED_H
#define MXKEYS_QUERY_CACHE_FEED_H

#include "mxkeys/query_cache.h"

typedef struct st_mx_query_cache_feed_t mx_query_cache_feed_t;

typedef struct st_mx_query_cache_feed_stats_t {
    unsigned long long notifications; /* users heard of */
    unsigned long long connects;      /* LISTEN established (the first one included) */
    unsigned long long losses;        /* connections lost, or heartbeats that came back too late */
} mx_query_cache_feed_stats_t;

/** Starts the thread (connecting in the background, retrying with back-off). NULL if the thread cannot start. */
mx_query_cache_feed_t *mx_query_cache_feed_start(mx_query_cache_t *qc, const char *conninfo, unsigned max_lag_ms);
/** Stops and joins the thread (within about one connect attempt), closes its connection. */
void mx_query_cache_feed_stop(mx_query_cache_feed_t *feed);
void mx_query_cache_feed_stats(mx_query_cache_feed_t *feed, mx_query_cache_feed_stats_t *out);

#endif
