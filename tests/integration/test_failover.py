"""PostgreSQL failover under write load: a primary and a synchronous streaming standby of this test's own, mxkeysd
given both hosts in one libpq URI (no target_session_attrs: mxkeysd asks for a writable server itself, from its
start-up migrations on). Uploads of one-time keys, claims of them by other users and backup writes run in several
threads; then the primary goes away and the standby is promoted. Two ways of going away:
  - killed: its postmaster gets SIGKILL (connections refused from then on); the standby is listed first;
  - frozen: every process of it stopped (SIGSTOP, a hung machine: nothing refused, nothing answered); it is listed
    first, so mxkeysd must give up on it and go on to the next host itself.
Then: every answer was 200 or 503 M_UNKNOWN with retry_after_ms, none took longer than the deadline, 503s only from
the fault until service came back (a bound measured and printed), every acknowledged write is on the promoted
server, and no one-time key was handed out twice. A third test takes the standby by hand (target_session_attrs=any):
its refusals to write are answered 503, never 500, until it is promoted."""
import secrets
import threading
import time

import olm
import pytest
import requests
from olmkeys import Device
from pgfaults import Stopped
from pgpair import Pair

CLIENT = "/_matrix/client/v3"
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
TIMEOUT_MS = 1000
SLACK_S = 2.0  # sweep granularity, scheduling on a busy 2-core machine, sanitizer builds
BACK_BOUND_S = 30  # generous: the figure is printed; a few hundred milliseconds are expected
LOAD_BEFORE_S = 1.0
DOWN_S = 1.0  # between the fault and the promotion, as an HA manager takes a moment to decide
LOAD_AFTER_S = 1.0
UPLOADERS, CLAIMERS, BACKUPS = 3, 3, 2
MAX_REQUESTS = 3000  # per thread: every loop is bounded in count as well as in time
OTKS_PER_UPLOAD = 4
SESSION = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
           "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.destroy()


class Recorder:
    """Every request of one thread: (started, took, kind, status, errcode, retry_after_ms)."""

    def __init__(self):
        self.records = []

    def call(self, session, kind, method, url, **kw):
        t0 = time.monotonic()
        try:
            r = session.request(method, url, timeout=15, **kw)
            status, body = r.status_code, r.json()
        except (requests.RequestException, ValueError) as e:
            status, body = f"no answer: {e}", {}
        self.records.append((t0, time.monotonic() - t0, kind, status, body.get("errcode"), body.get("retry_after_ms")))
        return status, body


def test_failover_after_a_kill_loses_nothing(start_server, pair):
    run_failover(start_server, pair, pair.multi_host_url(standby_first=True), "killed", kill)


def test_failover_from_a_frozen_primary_loses_nothing(start_server, pair):
    run_failover(start_server, pair, pair.multi_host_url(standby_first=False), "frozen", freeze)


def kill(pair, then):
    pair.kill_primary()
    then()


def freeze(pair, then):
    # Stopped continues the processes on the way out: by then the postmaster is killed, so they only exit.
    with Stopped(pair.primary):
        then()
        pair.kill_primary()


def run_failover(start_server, pair, url, fault_name, fault):
    srv = start_server(database_url=url, db_timeout_ms=TIMEOUT_MS, max_otks_per_device=100000)

    def user(tag, i):
        uid, did = f"@fo{tag}{i}_{secrets.token_hex(3)}:localhost", f"FO{tag.upper()}{i}"
        token = srv.mint(uid, did)
        h = {"Authorization": f"Bearer {token}"}
        for _ in range(4):  # fresh connections: the token lands in both workers' caches
            assert requests.get(srv.url + CLIENT + "/account/whoami", headers=h).status_code == 200
        return uid, did, h

    uploaders = []
    for i in range(UPLOADERS):
        uid, did, h = user("up", i)
        dev = Device(uid, did)
        r = requests.post(srv.url + CLIENT + "/keys/upload", headers=h,
                          json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(OTKS_PER_UPLOAD)})
        assert r.status_code == 200, r.text
        uploaders.append((dev, h))
    claimers = [user("cl", i)[2] for i in range(CLAIMERS)]
    backups = []
    for i in range(BACKUPS):
        _, _, h = user("bk", i)
        r = requests.post(srv.url + CLIENT + "/room_keys/version", headers=h,
                          json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
        assert r.status_code == 200, r.text
        backups.append((h, r.json()["version"]))

    stop = threading.Event()
    recorders = []
    uploaded = [dict() for _ in uploaders]  # acknowledged: key id -> key object, per uploader
    claimed = [[] for _ in claimers]  # (user, device, key id, key) of every 200 claim
    backed_up = [set() for _ in backups]  # acknowledged session ids

    def upload_loop(i):
        dev, h = uploaders[i]
        rec, s = Recorder(), requests.Session()
        recorders.append(rec)
        batch = None
        for _ in range(MAX_REQUESTS):
            if stop.is_set():
                break
            if batch is None:
                batch = dev.one_time_keys(OTKS_PER_UPLOAD)
            # a batch answered 503 is sent again as it was, as clients do: it may or may not have been stored
            status, _ = rec.call(s, "upload", "POST", srv.url + CLIENT + "/keys/upload", headers=h,
                                 json={"one_time_keys": batch})
            if status == 200:
                uploaded[i].update(batch)
                batch = None
            else:
                time.sleep(0.02)

    def claim_loop(i):
        h = claimers[i]
        rec, s = Recorder(), requests.Session()
        recorders.append(rec)
        for n in range(MAX_REQUESTS):
            if stop.is_set():
                break
            dev = uploaders[(i + n) % len(uploaders)][0]
            status, body = rec.call(s, "claim", "POST", srv.url + CLIENT + "/keys/claim", headers=h,
                                    json={"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}})
            if status == 200:
                for kid, obj in body["one_time_keys"].get(dev.user_id, {}).get(dev.device_id, {}).items():
                    claimed[i].append((dev.user_id, dev.device_id, kid, obj["key"]))
            else:
                time.sleep(0.02)

    def backup_loop(i):
        h, version = backups[i]
        rec, s = Recorder(), requests.Session()
        recorders.append(rec)
        for n in range(MAX_REQUESTS):
            if stop.is_set():
                break
            sid = f"s{n}"
            status, _ = rec.call(s, "backup", "PUT", srv.url + CLIENT + f"/room_keys/keys/!room:localhost/{sid}",
                                 params={"version": version}, json=SESSION, headers=h)
            if status == 200:
                backed_up[i].add(sid)
            else:
                time.sleep(0.02)

    threads = ([threading.Thread(target=upload_loop, args=(i,)) for i in range(UPLOADERS)] +
               [threading.Thread(target=claim_loop, args=(i,)) for i in range(CLAIMERS)] +
               [threading.Thread(target=backup_loop, args=(i,)) for i in range(BACKUPS)])
    for t in threads:
        t.start()
    times = {}

    def promote_and_wait():
        time.sleep(DOWN_S)
        times["promote"] = time.monotonic()
        pair.promote()
        times["promoted"] = time.monotonic()
        # back: every worker has a connection to the promoted server and it answers (ready on fresh connections)
        while "back" not in times:
            assert time.monotonic() - times["promoted"] < BACK_BOUND_S, "service not back after the promotion"
            oks = 0
            for _ in range(4):
                try:
                    oks += requests.get(srv.url + "/_mxkeys/ready", timeout=5).status_code == 200
                except requests.RequestException:
                    pass
            if oks == 4:
                times["back"] = time.monotonic()
            else:
                time.sleep(0.01)

    try:
        time.sleep(LOAD_BEFORE_S)
        times["fault"] = time.monotonic()
        fault(pair, promote_and_wait)
        time.sleep(LOAD_AFTER_S)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    t_kill, t_promote, t_promoted, t_back = times["fault"], times["promote"], times["promoted"], times["back"]
    assert srv.proc.poll() is None
    promoted = pair.standby
    assert promoted.psql("SELECT pg_is_in_recovery()") == "f"

    flat = [r for rec in recorders for r in rec.records]
    bad = [r for r in flat if r[3] not in (200, 503)]
    assert not bad, f"answers other than 200/503: {bad[:5]}"
    for r in flat:
        if r[3] == 503:
            assert r[4] == "M_UNKNOWN" and isinstance(r[5], int) and r[5] > 0, r
    slow = [r for r in flat if r[1] > TIMEOUT_MS / 1000 + SLACK_S]
    assert not slow, f"{len(slow)} requests took longer than the deadline, e.g. {slow[:3]}"
    unavailable = [r for r in flat if r[3] == 503]
    assert unavailable, "the kill was never noticed: the test did not test a failover"
    early = [r for r in unavailable if r[0] + r[1] < t_kill]
    assert not early, f"503 before the primary was {fault_name}: {early[:3]}"
    late = [r for r in flat if r[0] > t_back + 0.05 and r[3] != 200]
    assert not late, f"failures once service was back: {late[:5]}"
    for kind in ("upload", "claim", "backup"):
        assert any(r[2] == kind and r[3] == 200 and r[0] > t_back for r in flat), f"no {kind} succeeded after"

    # no one-time key handed out twice, and every key handed out is gone for good
    handed = [c for per in claimed for c in per]
    ids = [(u, d, k) for u, d, k, _ in handed]
    keys = [key for *_, key in handed]
    assert len(set(ids)) == len(ids), "a one-time key id was handed out twice"
    assert len(set(keys)) == len(keys), "a one-time key was handed out twice"
    assert handed, "no claim handed out a key"
    def key_rows(table):
        rows = promoted.psql(f"SELECT user_id || ' ' || device_id || ' ' || algorithm || ':' || key_id FROM {table}")
        return set(tuple(line.split(" ")) for line in rows.splitlines())

    unclaimed, remembered = key_rows("one_time_keys"), key_rows("claimed_one_time_keys")
    assert unclaimed and remembered
    assert not set(ids) & unclaimed, "a key handed out is still claimable on the promoted server"
    assert set(ids) <= remembered, "a key handed out is not remembered as claimed on the promoted server"

    # every acknowledged upload is on the promoted server: still claimable, or claimed
    lost_uploads = 0
    for (dev, _), keys_of in zip(uploaders, uploaded):
        for kid in keys_of:
            if (dev.user_id, dev.device_id, kid) not in unclaimed | remembered:
                lost_uploads += 1
    assert lost_uploads == 0, f"{lost_uploads} acknowledged one-time keys missing on the promoted server"
    lost_backups = 0
    for (h, version), sids in zip(backups, backed_up):
        r = requests.get(srv.url + CLIENT + "/room_keys/keys", params={"version": version}, headers=h)
        assert r.status_code == 200, r.text
        got = set(r.json()["rooms"].get("!room:localhost", {}).get("sessions", {}))
        lost_backups += len(sids - got)
    assert lost_backups == 0, f"{lost_backups} acknowledged backup writes missing on the promoted server"

    acked = sum(1 for r in flat if r[3] == 200)
    first_503 = min(r[0] for r in unavailable)
    last_503 = max(r[0] + r[1] for r in unavailable)
    print(f"\nfailover, primary {fault_name}, --db-timeout-ms {TIMEOUT_MS}: {len(flat)} requests, {acked} acknowledged "
          f"({sum(len(u) for u in uploaded)} one-time keys uploaded, {len(handed)} claimed, "
          f"{sum(len(b) for b in backed_up)} backup sessions), {len(unavailable)} x 503 from "
          f"{first_503 - t_kill:+.3f}s to {last_503 - t_kill:+.3f}s after the fault; promotion took "
          f"{t_promoted - t_promote:.3f}s; ready on 4 fresh connections {t_back - t_promoted:.3f}s after it "
          f"({t_back - t_kill:.3f}s after the fault); slowest answer {max(r[1] for r in flat):.3f}s; "
          f"lost 0, handed out twice 0")


def test_a_standby_chosen_by_hand_answers_503_until_promoted(start_server, pair):
    """target_session_attrs=any in the conninfo lets libpq settle on a standby once the primary is gone: writes there
    fail with read_only_sql_transaction. They are answered 503 M_UNKNOWN (never 500), the connection goes looking for
    the primary again, and once the standby is promoted writes succeed."""
    url = (f"host=127.0.0.1,127.0.0.1 port={pair.primary.port},{pair.standby.port} user=mxkeys dbname=mxkeys "
           "target_session_attrs=any")
    srv = start_server(database_url=url, db_timeout_ms=TIMEOUT_MS)
    token = srv.mint(f"@foany_{secrets.token_hex(3)}:localhost", "FOANY")
    h = {"Authorization": f"Bearer {token}"}
    r = requests.post(srv.url + CLIENT + "/room_keys/version", headers=h,
                      json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
    assert r.status_code == 200, r.text
    version = r.json()["version"]

    def write(n):
        r = requests.put(srv.url + CLIENT + f"/room_keys/keys/!room:localhost/s{n}", params={"version": version},
                         json=SESSION, headers=h, timeout=15)
        return r.status_code, r.json()

    assert write(0)[0] == 200
    pair.primary.stop()  # the standby is now the only server, and read-only
    # Writes go on until one reaches the standby and is refused there. The first reconnects may still meet the
    # primary shutting down and back off for a while, so the count is not fixed; the deadline is.
    deadline, n = time.monotonic() + BACK_BOUND_S, 1
    while True:
        status, body = write(n)
        assert status == 503 and body["errcode"] == "M_UNKNOWN" and body["retry_after_ms"] > 0, (status, body)
        if "looking for the primary" in srv.stderr_text():
            break
        assert time.monotonic() < deadline, f"no write reached the standby in {BACK_BOUND_S} s ({n} writes)"
        n += 1
        time.sleep(0.02)
    # readiness says so too: a standby answers queries but would refuse every write (between the tries, while a
    # worker reconnects after a refused write, it may say that instead: 503 either way)
    deadline = time.monotonic() + BACK_BOUND_S
    while True:
        r = requests.get(srv.url + "/_mxkeys/ready", timeout=5)
        assert r.status_code == 503, r.text
        if "standby" in r.json()["error"]:
            break
        assert time.monotonic() < deadline, f"ready never named the standby: {r.text}"
        time.sleep(0.05)
    pair.promote()
    deadline = time.monotonic() + BACK_BOUND_S
    n = 100
    while write(n)[0] != 200:
        assert time.monotonic() < deadline, "writes never succeeded on the promoted standby"
        n += 1
        time.sleep(0.05)
    r = requests.get(srv.url + CLIENT + "/room_keys/keys", params={"version": version}, headers=h)
    assert {"s0", f"s{n}"} <= set(r.json()["rooms"]["!room:localhost"]["sessions"])
    assert requests.get(srv.url + "/_mxkeys/ready", timeout=5).status_code == 200
