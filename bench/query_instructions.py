#!/usr/bin/python3
"""Instructions per cached /keys/query, counted by callgrind: repeatable whatever else the machine is doing, so a
change to the hit path can be measured on a busy machine (timings cannot).

    bench/query_instructions.py --database-url URL [--queries N] BINARY [BINARY ...]

For each binary: two runs of `mxkeysd serve --workers 1` under `valgrind --tool=callgrind`, each on a fresh database
created on URL's server (URL names a database to connect to for CREATE DATABASE; the role must be allowed to). Each
run mints tokens for 10 users x 5 devices, uploads their device keys, warms the cache with 5 queries of all 10 users,
then sends N more (default 2000) one after another on one connection, and stops the server. The second run sends
none; the difference of the two totals over N is the instructions per query, start-up and shutdown taken out.
Needs valgrind (Debian's package), Debian's python3-requests and python3-olm."""
import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from olmkeys import Device  # noqa: E402

USERS, DEVICES = 10, 5


def psql(url, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], check=True,
                   stdin=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def total_instructions(binary, url, queries, workdir):
    db = "qi_" + secrets.token_hex(4)
    psql(url, f"CREATE DATABASE {db}")
    dburl = f"{url} dbname={db}"
    out = os.path.join(workdir, f"callgrind.{db}")
    try:
        users = [f"@qi{i}:localhost" for i in range(USERS)]
        tokens = {(u, d): subprocess.run([binary, "token", "create", "--user", u, "--device", f"D{d}",
                                          "--database-url", dburl], capture_output=True, text=True,
                                         check=True).stdout.strip()
                  for u in users for d in range(DEVICES)}
        port = free_port()
        server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
                                   "--listen", f"127.0.0.1:{port}", "--database-url", dburl, "--workers", "1",
                                   "--log-level", "warn"], stderr=open(out + ".log", "w"), stdin=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if requests.get(base + "/_mxkeys/ready", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"mxkeysd under valgrind did not get ready (see {out}.log)")
                time.sleep(0.2)
            s = requests.Session()
            api = base + "/_matrix/client/v3"
            for (u, d), token in tokens.items():
                r = s.post(api + "/keys/upload", json={"device_keys": Device(u, f"D{d}").device_keys()},
                           headers={"Authorization": "Bearer " + token}, timeout=60)
                assert r.status_code == 200, r.text
            auth = {"Authorization": "Bearer " + tokens[(users[0], 0)]}
            body = {"device_keys": {u: [] for u in users}}
            for i in range(5 + queries):
                r = s.post(api + "/keys/query", json=body, headers=auth, timeout=60)
                assert r.status_code == 200 and all(len(r.json()["device_keys"][u]) == DEVICES for u in users), r.text
            hits = next(line.split()[1] for line in s.get(base + "/metrics").text.splitlines()
                        if line.startswith("mxkeys_query_cache_hits_total"))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(300)
        with open(out) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
        return total, int(hits)
    finally:
        psql(url, f"DROP DATABASE IF EXISTS {db}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mxkeys-qi-") as workdir:
        print(f"| binary | instructions per cached query ({USERS} users x {DEVICES} devices) | cache hits |")
        print("| --- | ---: | ---: |")
        for binary in a.binaries:
            with_queries, hits = total_instructions(binary, a.database_url, a.queries, workdir)
            without, _ = total_instructions(binary, a.database_url, 0, workdir)
            print(f"| {binary} | {(with_queries - without) / a.queries:,.0f} | {hits} |", flush=True)


if __name__ == "__main__":
    main()
