#!/usr/bin/python3
"""Key churn beside a query load (run by bench/run.sh): uploads new device keys (a new ed25519 key, signed) for the
devices of a tokens file at --rate uploads/s on a fixed schedule, going round the devices in order, so each upload
changes what /keys/query answers for its user. Bounded by --duration and --max-uploads. Prints one line of JSON:
scheduled, done, failed, late (sent more than 100 ms after their slot), seconds taken, and rate: the uploads
answered 200 per second of --duration."""

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import keyclient as kc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--tokens", required=True, help="JSON list of {user_id, device_id, access_token}")
    ap.add_argument("--rate", type=float, required=True, help="uploads per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--max-uploads", type=int, default=1000000)
    ap.add_argument("--threads", type=int, default=4, help="uploads in flight at most")
    a = ap.parse_args()
    devices = json.load(open(a.tokens))
    total = min(a.max_uploads, int(a.rate * a.duration))
    lock = threading.Lock()
    st = {"next": 0, "done": 0, "failed": 0, "late": 0}
    start = time.monotonic()

    def run():
        c = kc.Conn(a.url, timeout=10)
        while True:
            with lock:
                i = st["next"]
                if i >= total:
                    return
                st["next"] += 1
            slot = start + i / a.rate
            now = time.monotonic()
            if slot > now:
                time.sleep(slot - now)
            elif now - slot > 0.1:
                with lock:
                    st["late"] += 1
            d = devices[i % len(devices)]
            keys, _ = kc.signed_device_keys(d["user_id"], d["device_id"])
            try:
                code, _, _ = c.call("POST", kc.CLIENT + "/keys/upload", d["access_token"], {"device_keys": keys})
            except OSError:
                code = 0
            with lock:
                st["done" if code == 200 else "failed"] += 1

    ts = [threading.Thread(target=run) for _ in range(max(1, a.threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - start
    print(json.dumps({"scheduled": total, "done": st["done"], "failed": st["failed"], "late": st["late"],
                      "seconds": round(elapsed, 2), "rate": round(st["done"] / a.duration, 2)}))
    return 1 if st["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
