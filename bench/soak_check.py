#!/usr/bin/python3
"""After a soak: every write mxkeys acknowledged is in the database, and no one-time key was handed out twice.

Reads the ledger mxkeys-bench wrote with --ledger (bench/ledger.h gives the format) and mxkeys' tables:
  - an uploaded one-time key (U) is still unclaimed in one_time_keys, or was claimed (claimed_one_time_keys);
  - a one-time key a claim handed out (C, not the fallback) appears once in the ledger, is no longer unclaimed
    and is remembered as claimed (otherwise the claim's delete was lost and the key could go out again);
  - a backup session (B) is stored with a first_message_index no greater than the lowest one acknowledged for it
    (the bench lowers the index at every write, and a lower index always wins, so a greater one means a lost write).
Usage: soak_check.py LEDGER DATABASE_URL [--json OUT]. Exit 1 when anything was lost or handed out twice."""
import collections
import json
import sys

import psycopg2


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ledger, dburl = sys.argv[1], sys.argv[2]
    out = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--json" else None
    uploaded = set()
    handed = collections.Counter()
    fallbacks = 0
    backup_min = {}
    with open(ledger, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "U":
                uploaded.add((p[1], p[2], p[3]))
            elif p[0] == "C":
                if p[4] == "1":
                    fallbacks += 1
                else:
                    handed[(p[1], p[2], p[3])] += 1
            elif p[0] == "B":
                k = (p[1], int(p[2]), p[3], p[4])
                idx = int(p[5])
                if k not in backup_min or idx < backup_min[k]:
                    backup_min[k] = idx
            else:
                sys.exit(f"soak_check: unknown ledger line {line!r}")
    conn = psycopg2.connect(dburl)
    cur = conn.cursor()
    cur.execute("SELECT user_id, device_id, algorithm || ':' || key_id FROM one_time_keys")
    unclaimed = set(cur.fetchall())
    cur.execute("SELECT user_id, device_id, algorithm || ':' || key_id FROM claimed_one_time_keys")
    claimed = set(cur.fetchall())
    cur.execute("SELECT user_id, version, room_id, session_id, first_message_index FROM backup_sessions")
    stored = {(u, v, r, s): i for u, v, r, s, i in cur.fetchall()}
    conn.close()

    lost_uploads = [k for k in uploaded if k not in unclaimed and k not in claimed]
    duplicates = [k for k, n in handed.items() if n > 1]
    lost_claims = [k for k in handed if k in unclaimed or k not in claimed]
    lost_backup = [k for k, i in backup_min.items() if k not in stored or stored[k] > i]
    result = {
        "uploaded_keys_acknowledged": len(uploaded),
        "uploaded_keys_lost": len(lost_uploads),
        "one_time_keys_handed_out": sum(handed.values()),
        "fallback_keys_handed_out": fallbacks,
        "one_time_keys_handed_out_twice": len(duplicates),
        "claims_lost": len(lost_claims),
        "backup_sessions_acknowledged": len(backup_min),
        "backup_sessions_lost": len(lost_backup),
    }
    result["lost_writes"] = len(lost_uploads) + len(lost_claims) + len(lost_backup)
    for name, sample in (("lost upload", lost_uploads), ("handed out twice", duplicates),
                         ("lost claim", lost_claims), ("lost backup session", lost_backup)):
        for k in sample[:5]:
            print(f"soak_check: {name}: {k}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    sys.exit(1 if result["lost_writes"] or duplicates else 0)


if __name__ == "__main__":
    main()
