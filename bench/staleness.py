#!/usr/bin/python3
"""Cross-instance staleness of /keys/query, and read-your-writes on the writer (run by bench/staleness.sh).

For each sample: warm instance B's cache for user X (query X on B until the hits counter moves, at most
--warm-tries times), upload new device keys for X through instance A (a new ed25519 key, properly signed), t0 when
A's 200 arrives; then at once a query of X on A (must show the new key: read-your-writes) and a query of X on B,
and B is polled back to back until its answer shows the new key, t1. Staleness is t1 - t0. Bounded by --samples,
--max-seconds and --max-wait-ms per sample (keep it above mxkeysd's --query-cache-max-lag-ms: past that bound B
must answer from the database). Prints a markdown table; exit status 1 on any read-your-writes violation, any write
not seen on B within --max-wait-ms, or any failed request."""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import keyclient as kc  # noqa: E402

HITS = "mxkeys_query_cache_hits_total"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url-a", required=True, help="the writer instance")
    ap.add_argument("--url-b", required=True, help="the reader instance (same database)")
    ap.add_argument("--tokens", required=True,
                    help='JSON {"querier": {user_id, device_id, access_token}, "writers": [...]}')
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="bound on the whole measurement")
    ap.add_argument("--max-wait-ms", type=float, default=2000.0, help="bound on polling B in one sample")
    ap.add_argument("--warm-tries", type=int, default=3, help="queries of X on B before the write, at most")
    ap.add_argument("--json", help="write the samples and the summary here")
    a = ap.parse_args()

    toks = json.load(open(a.tokens))
    querier, writers = toks["querier"]["access_token"], toks["writers"]
    A, B = kc.Conn(a.url_a), kc.Conn(a.url_b)
    has_cache = HITS in kc.metrics(a.url_b)

    # Every writer's device starts with keys, so B has something to cache.
    for w in writers:
        keys, _ = kc.signed_device_keys(w["user_id"], w["device_id"])
        st, doc, _ = A.call("POST", kc.CLIENT + "/keys/upload", w["access_token"], {"device_keys": keys})
        if st != 200:
            sys.exit("staleness.py: initial upload for %s answered %d: %s" % (w["user_id"], st, doc))

    lags, polls, unseen, ryw_violations, warm_hits, errors = [], [], 0, 0, 0, 0
    deadline = time.monotonic() + a.max_seconds
    n = 0
    while n < a.samples and time.monotonic() < deadline:
        w = writers[n % len(writers)]
        user, device = w["user_id"], w["device_id"]
        q = kc.query_body([user])
        for attempt in range(max(1, a.warm_tries)):
            before = kc.metrics(a.url_b).get(HITS, 0) if has_cache else 0
            st, _, _ = B.call("POST", kc.CLIENT + "/keys/query", querier, q)
            if st != 200:
                errors += 1
            if has_cache and kc.metrics(a.url_b).get(HITS, 0) > before:
                warm_hits += 1
                break
            if not has_cache and attempt >= 1:
                break
        keys, ed = kc.signed_device_keys(user, device)
        st, doc, t0 = A.call("POST", kc.CLIENT + "/keys/upload", w["access_token"], {"device_keys": keys})
        if st != 200:
            errors += 1
            print("staleness.py: upload for %s answered %d: %s" % (user, st, doc), file=sys.stderr)
            n += 1
            continue
        # Both in flight at once: the writer's own read, and B's first poll.
        A.send("POST", kc.CLIENT + "/keys/query", querier, q)
        B.send("POST", kc.CLIENT + "/keys/query", querier, q)
        sa, da, _ = A.receive()
        if sa != 200 or kc.device_ed25519(da, user, device) != ed:
            ryw_violations += 1
            print("staleness.py: READ-YOUR-WRITES VIOLATION on A for %s (status %d)" % (user, sa), file=sys.stderr)
        sb, db, t1 = B.receive()
        k = 1
        while kc.device_ed25519(db, user, device) != ed and (t1 - t0) * 1000 < a.max_wait_ms:
            sb, db, t1 = B.call("POST", kc.CLIENT + "/keys/query", querier, q)
            k += 1
        if kc.device_ed25519(db, user, device) == ed:
            lags.append((t1 - t0) * 1000.0)
        else:
            unseen += 1
        polls.append(k)
        n += 1

    lags.sort()
    summary = {
        "samples": n, "seen": len(lags), "unseen_within_bound": unseen, "max_wait_ms": a.max_wait_ms,
        "p50_ms": kc.quantile(lags, 0.5), "p99_ms": kc.quantile(lags, 0.99), "max_ms": lags[-1] if lags else None,
        "mean_polls": sum(polls) / len(polls) if polls else 0, "cache": has_cache,
        "warm_hits_on_b": warm_hits if has_cache else None, "read_your_writes_violations": ryw_violations,
        "errors": errors,
    }
    if a.json:
        json.dump({"summary": summary, "lags_ms": lags, "polls": polls}, open(a.json, "w"), indent=1)
    print("| samples | seen on B | p50 ms | p99 ms | max ms | not seen within %.0f ms | polls of B per sample "
          "(mean) | B's warm-up hit | read-your-writes violations on A | errors |" % a.max_wait_ms)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fmt = (lambda v: "%.2f" % v if v is not None and v == v else "n/a")
    print("| %d | %d | %s | %s | %s | %d | %.1f | %s | %d | %d |" % (
        n, len(lags), fmt(summary["p50_ms"]), fmt(summary["p99_ms"]), fmt(summary["max_ms"]), unseen,
        summary["mean_polls"], ("%d of %d" % (warm_hits, n)) if has_cache else "no cache", ryw_violations, errors))
    if not has_cache:
        print("\n(no query cache in this mxkeysd: B reads the database; a baseline, not the cache's bound)")
    if unseen or errors:
        print("\nstaleness.py: %d writes not seen on B within %.0f ms, %d failed requests"
              % (unseen, a.max_wait_ms, errors), file=sys.stderr)
    return 1 if ryw_violations or unseen or errors else 0


if __name__ == "__main__":
    sys.exit(main())
