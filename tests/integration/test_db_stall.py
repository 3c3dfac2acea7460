"""A stalled database (every PostgreSQL process stopped with SIGSTOP, as a frozen host or a black-holed network looks)
under a bounded write and probe load, on a cluster of this test's own: every request is answered within
--db-timeout-ms (503 M_UNKNOWN with retry_after_ms while stalled), service is back within a second of SIGCONT, and
every write that was acknowledged is stored afterwards."""
import secrets
import threading
import time

import olm
import pytest
import requests
from conftest import Postgres
from pgfaults import Stopped

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
TIMEOUT_MS = 1000
STALL_S = 4
SLACK_S = 1.0  # sweep granularity (50 ms), scheduling on a busy 2-core machine, sanitizer builds
RECOVERY_BOUND_S = 2.0
THREADS = 8
MAX_PER_THREAD = 2000
SESSION = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
           "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


@pytest.fixture(scope="module")
def own_pg():
    cluster = Postgres()
    yield cluster
    cluster.destroy()


def ready_streak(url, n=6, limit=20):
    """Seconds until n fresh connections in a row get 200 from /_mxkeys/ready (both workers, each its own pool)."""
    t0 = time.monotonic()
    streak = 0
    while streak < n:
        assert time.monotonic() - t0 < limit, "not ready again"
        try:
            ok = requests.get(url + "/_mxkeys/ready", timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.01)
    return time.monotonic() - t0


def test_stalled_database_answers_within_the_deadline_and_loses_nothing(start_server, own_pg):
    srv = start_server(database_url=own_pg.conninfo, db_timeout_ms=TIMEOUT_MS)
    users = []
    for i in range(THREADS):
        token = srv.mint(f"@stall{i}_{secrets.token_hex(3)}:localhost", f"DEV{i}")
        h = {"Authorization": f"Bearer {token}"}
        r = requests.post(srv.url + "/_matrix/client/v3/room_keys/version", headers=h,
                          json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
        assert r.status_code == 200, r.text
        for _ in range(4):  # fresh connections: the token lands in both workers' caches
            assert requests.get(srv.url + "/_matrix/client/v3/account/whoami", headers=h).status_code == 200
        users.append((h, r.json()["version"]))

    stop = threading.Event()
    records = [[] for _ in range(THREADS)]  # (started, took, kind, status, errcode, retry_after_ms, session id)

    def load(i):
        h, version = users[i]
        s = requests.Session()
        for n in range(MAX_PER_THREAD):
            if stop.is_set():
                break
            write = n % 4 != 3
            sid = f"s{n}"
            t0 = time.monotonic()
            try:
                if write:
                    r = s.put(srv.url + f"/_matrix/client/v3/room_keys/keys/!room:localhost/{sid}",
                              params={"version": version}, json=SESSION, headers=h, timeout=15)
                else:
                    r = s.get(srv.url + "/_mxkeys/ready", timeout=15)
                status = r.status_code
                body = r.json()
            except (requests.RequestException, ValueError) as e:
                status, body = f"no answer: {e}", {}
            took = time.monotonic() - t0
            records[i].append((t0, took, "write" if write else "ready", status, body.get("errcode"),
                               body.get("retry_after_ms"), sid if write else None))
            if status != 200:
                time.sleep(0.02)  # a client backing off a little, not spinning on fast 503s

    threads = [threading.Thread(target=load, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        with Stopped(own_pg):
            t_stop = time.monotonic()
            time.sleep(STALL_S)
            t_cont = time.monotonic()
        back = ready_streak(srv.url)
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert srv.proc.poll() is None

    flat = [rec for recs in records for rec in recs]
    bad = [rec for rec in flat if rec[3] not in (200, 503)]
    assert not bad, f"answers other than 200/503: {bad[:5]}"
    slow = [rec for rec in flat if rec[1] > TIMEOUT_MS / 1000 + SLACK_S]
    assert not slow, f"{len(slow)} requests took longer than the deadline, e.g. {slow[:3]}"
    for rec in flat:
        if rec[3] == 503:
            assert rec[4] == "M_UNKNOWN" and isinstance(rec[5], int) and rec[5] > 0, rec
    stalled = [rec for rec in flat if t_stop + 0.1 < rec[0] < t_cont - TIMEOUT_MS / 1000]
    assert stalled and all(rec[3] == 503 for rec in stalled), "requests during the stall must get 503"
    after = [rec for rec in flat if rec[0] > t_cont + back]
    assert after and all(rec[3] == 200 for rec in after), \
        f"failures once ready again: {[r for r in after if r[3] != 200][:5]}"
    # The goal is one second: 0.3-0.55 s measured on an idle machine; 1.1 s once with two fuzzers beside the suite on
    # two cores. The bound leaves room for a loaded CI machine; the figure is printed.
    assert back < RECOVERY_BOUND_S, f"ready again {back:.2f} s after SIGCONT"

    # nothing acknowledged is lost
    acked = 0
    for i, (h, version) in enumerate(users):
        want = {rec[6] for rec in records[i] if rec[2] == "write" and rec[3] == 200}
        r = requests.get(srv.url + "/_matrix/client/v3/room_keys/keys", params={"version": version}, headers=h)
        assert r.status_code == 200, r.text
        got = set(r.json()["rooms"].get("!room:localhost", {}).get("sessions", {}))
        assert want <= got, f"user {i}: acknowledged writes missing: {sorted(want - got)[:10]}"
        acked += len(want)
    metrics = requests.get(srv.url + "/metrics").text
    timed_out = [ln for ln in metrics.splitlines() if ln.startswith('mxkeys_db_jobs_total{outcome="timed_out"}')]
    assert timed_out and int(timed_out[0].split()[-1]) > 0, timed_out
    during = [rec[1] for rec in stalled]
    print(f"\nstall {STALL_S}s, --db-timeout-ms {TIMEOUT_MS}: {len(flat)} requests, {acked} acknowledged writes "
          f"(all stored), {sum(1 for r in flat if r[3] == 503)} x 503; slowest answer {max(r[1] for r in flat):.3f}s, "
          f"slowest during the stall {max(during):.3f}s; ready on 6 fresh connections {back:.3f}s after SIGCONT")
