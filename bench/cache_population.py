#!/usr/bin/python3
"""Memory of the /keys/query cache at its bound (run by bench/cache_rss.sh).

Creates --users users with one device each: tokens inserted as SHA-256 hashes into access_tokens through psql (what
`mxkeysd token create` stores, without a process per token), device keys uploaded through mxkeysd's own
/keys/upload (signed, so strict validation passes), --threads connections at a time. Then queries every user,
--batch users per /keys/query, twice, and prints after each phase the cache's metrics and mxkeysd's VmRSS/VmHWM
from /proc. Every phase is bounded by --max-seconds (what is left of it is reported, not waited for)."""

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import keyclient as kc  # noqa: E402

M = "mxkeys_query_cache_"


def proc_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def parallel(n_items, threads, deadline, work):
    """Runs work(conn_index, item) for items 0..n_items-1 over `threads` threads until done or the deadline;
    returns (done, failures)."""
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "failed": 0}

    def run(t):
        while time.monotonic() < deadline:
            with lock:
                i = state["next"]
                if i >= n_items:
                    return
                state["next"] += 1
            ok = work(t, i)
            with lock:
                state["done" if ok else "failed"] += 1

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return state["done"], state["failed"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="mxkeysd's pid, for /proc/PID/status")
    ap.add_argument("--db", required=True, help="libpq conninfo of mxkeysd's database (for psql)")
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=100, help="users per /keys/query")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="bound on each phase")
    ap.add_argument("--cache-bytes", type=int, default=None, help="the --query-cache-bytes mxkeysd runs with")
    a = ap.parse_args()

    rows = []
    has_cache = M + "bytes" in kc.metrics(a.url)

    def snapshot(phase, populated, queried, seconds):
        m = kc.metrics(a.url)
        g = (lambda k: "%.0f" % m[M + k] if M + k in m else "n/a")
        rows.append((phase, populated, queried, "%.1f" % seconds, g("bytes"), g("users"), g("hits_total"),
                     g("misses_total"), g("evictions_total"), g("live"),
                     "%.1f" % (proc_kib(a.pid, "VmRSS") / 1024), "%.1f" % (proc_kib(a.pid, "VmHWM") / 1024)))
        return m

    snapshot("started", 0, 0, 0)
    prefix = "rss" + base64.b32encode(os.urandom(5)).decode().lower()
    users = ["@%s-%d:localhost" % (prefix, i) for i in range(a.users)]
    tokens = ["mxk_bench_" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=") for _ in users]
    querier = "mxk_bench_" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")

    # Tokens: one COPY, as hashes only (the tokens themselves stay in this process).
    t = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for u, tok in zip(users, tokens):
            f.write("%s\tD\t%s\n" % (u, hashlib.sha256(tok.encode()).hexdigest()))
        f.write("@%s-querier:localhost\tQ\t%s\n" % (prefix, hashlib.sha256(querier.encode()).hexdigest()))
        path = f.name
    try:
        subprocess.run(["psql", a.db, "-q", "-v", "ON_ERROR_STOP=1",
                        "-c", "CREATE TEMP TABLE t (u text, d text, h text)",
                        "-c", "\\copy t FROM '%s'" % path,
                        "-c", "INSERT INTO access_tokens (user_id, device_id, token_hash) "
                              "SELECT u, d, decode(h, 'hex') FROM t"], check=True)
    finally:
        os.unlink(path)

    conns = [kc.Conn(a.url, timeout=30) for _ in range(a.threads)]

    def upload(c, i):
        keys, _ = kc.signed_device_keys(users[i], "D")
        st, _, _ = conns[c].call("POST", kc.CLIENT + "/keys/upload", tokens[i], {"device_keys": keys})
        return st == 200

    populated, up_failed = parallel(a.users, a.threads, time.monotonic() + a.max_seconds, upload)
    snapshot("uploaded device keys", populated, 0, time.monotonic() - t)
    nbatches = (populated + a.batch - 1) // a.batch

    def query(c, b):
        st, doc, _ = conns[c].call("POST", kc.CLIENT + "/keys/query", querier,
                                   kc.query_body(users[b * a.batch:min(populated, (b + 1) * a.batch)]))
        return st == 200 and doc is not None and len(doc.get("device_keys", {})) > 0

    q_failed = 0
    for phase in ("queried every user once", "queried every user again"):
        t = time.monotonic()
        done, failed = parallel(nbatches, a.threads, time.monotonic() + a.max_seconds, query)
        q_failed += failed
        snapshot(phase, populated, min(populated, done * a.batch), time.monotonic() - t)

    print("| phase | users with device keys | users queried | seconds | cache bytes | cache users | hits | misses "
          "| evictions | live | VmRSS MiB | VmHWM MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()
    if up_failed or q_failed:
        print("failed requests: %d uploads, %d queries" % (up_failed, q_failed))
    if populated < a.users:
        print("only %d of %d users were populated within --max-seconds %.0f" % (populated, a.users, a.max_seconds))
    if not has_cache:
        print("this mxkeysd has no query cache: the figures are the baseline without it")
    elif a.cache_bytes is not None:
        m = kc.metrics(a.url)
        held = m.get(M + "bytes", 0)
        print("cache bound --query-cache-bytes %d: the cache reports %.0f bytes (%s)" % (
            a.cache_bytes, held, "within the bound" if held <= a.cache_bytes else "ABOVE THE BOUND"))
        return 0 if held <= a.cache_bytes else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
