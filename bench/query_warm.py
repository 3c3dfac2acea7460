#!/usr/bin/python3
"""Queries every user of an mxkeys-bench population once (--batch users per /keys/query), so a following timed
query run starts with a warm /keys/query cache (run by bench/run.sh). Exit status 1 unless every answer is a 200."""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import keyclient as kc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--state", required=True, help="mxkeys-bench --state file")
    ap.add_argument("--batch", type=int, default=10)
    a = ap.parse_args()
    users = json.load(open(a.state))["users"]
    token = users[0]["devices"][0]["access_token"]
    ids = [u["user_id"] for u in users]
    c = kc.Conn(a.url)
    bad = 0
    for i in range(0, len(ids), a.batch):
        st, _, _ = c.call("POST", kc.CLIENT + "/keys/query", token, kc.query_body(ids[i:i + a.batch]))
        bad += st != 200
    if bad:
        print("query_warm.py: %d of the warm-up queries failed" % bad, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
