"""Concurrency guarantees of the key endpoints, over real connections to several workers and two server instances
sharing one database: a one-time key is never handed out twice, the fallback key never while one-time keys remain,
and concurrent uploads of the same device never fail or double-record."""
import contextlib
import json
import subprocess
import threading
import time

import pytest
import requests
from keys_modes import any_server  # noqa: F401 (fixture)
from olmkeys import Device

CLIENT = "/_matrix/client/v3"


def run_together(n, fn):
    """Runs fn(i) in n threads released at once; returns their results in order."""
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def body(i):
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except Exception as e:  # reported by the caller's assertion
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    return results


@pytest.fixture(scope="module", params=["strict", "lenient"])
def two_instances(request, start_server):
    """Two mxkeysd instances on one database, each with 2 workers and several connections per worker."""
    # Each claim holds its key's lock 30 ms before committing (a test-only setting of mx_keys_claim), so that
    # claimers really do find every remaining key locked by others: the moment a SKIP LOCKED-only claim would hand
    # out the fallback key early.
    pg = request.getfixturevalue("pg")
    url = pg.conninfo + " options='-c mxkeys.test_claim_hold_ms=30'"
    servers = [start_server(workers=2, db_connections=8, validation=request.param, database_url=url)
               for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def tokens(two_instances):
    """64 claimers' access tokens (local tokens live in the shared database: valid on both instances)."""
    return [two_instances[0].mint(f"@claimer{i}:localhost", f"C{i}") for i in range(64)]


@contextlib.contextmanager
def transaction_held_open(pg, sql, end, seconds=1.5):
    """Runs `sql` in a psql session's transaction that stays open `seconds` (from when the body starts) and then
    ends with `end` (COMMIT or ROLLBACK)."""
    locker = subprocess.Popen(
        ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "mxkeys", "-d", "mxkeys", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        locker.stdin.write(f"BEGIN;\n{sql}\nSELECT pg_sleep({seconds}) AS mxkeys_test_locker;\n{end};\n")
        locker.stdin.flush()
        deadline = time.monotonic() + 10
        while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%AS mxkeys_test_locker%'"
                      " AND state = 'active' AND pid <> pg_backend_pid()") != "1":
            assert time.monotonic() < deadline, "the locking session never started"
            time.sleep(0.02)
        yield
    finally:
        locker.stdin.close()
        assert locker.wait(30) == 0, locker.stderr.read()


def upload_device(server, login, n_otks, fallback=True):
    user, device_id, c = login(server)
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(n_otks)}
    if fallback:
        body["fallback_keys"] = dev.fallback_keys()
    assert c.post("/keys/upload", json=body).status_code == 200
    dev.uploaded, dev.client = body, c
    return dev


@pytest.mark.parametrize("round_", range(3))
def test_64_concurrent_claims_for_40_keys(two_instances, tokens, login, round_):
    """40 one-time keys, 64 claimers on their own connections spread over 2 instances x 2 workers: exactly 40
    distinct one-time keys, 24 fallback answers, and none left afterwards."""
    dev = upload_device(two_instances[0], login, 40)
    want = {"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}}

    def claim(i):
        with requests.Session() as session:  # its own connection
            return session.post(two_instances[i % 2].url + CLIENT + "/keys/claim", json=want, timeout=60,
                                headers={"Authorization": f"Bearer {tokens[i]}"})

    results = run_together(64, claim)
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    got = [r.json()["one_time_keys"][dev.user_id][dev.device_id] for r in results]
    fallback = dev.uploaded["fallback_keys"]
    otk_ids = [k for g in got if g != fallback for k in g]
    assert len(otk_ids) == 40 and set(otk_ids) == set(dev.uploaded["one_time_keys"]), "each key exactly once"
    assert sum(1 for g in got if g == fallback) == 24, "the fallback key only once the one-time keys ran out"
    for g in got:
        if g != fallback:
            (kid, obj), = g.items()
            assert obj == dev.uploaded["one_time_keys"][kid]
    assert dev.client.post("/keys/upload", json={}).json()["one_time_key_counts"]["signed_curve25519"] == 0


def test_concurrent_multi_device_claims_do_not_deadlock(two_instances, tokens, login):
    """Claims naming the same devices in opposite orders lock in one fixed order: no deadlock, no 503."""
    devs = [upload_device(two_instances[0], login, 16, fallback=False) for _ in range(3)]

    def claim(i):
        order = devs if i % 2 else list(reversed(devs))
        body = {"one_time_keys": {d.user_id: {d.device_id: "signed_curve25519"} for d in order}}
        with requests.Session() as session:
            return session.post(two_instances[i % 2].url + CLIENT + "/keys/claim", json=body, timeout=60,
                                headers={"Authorization": f"Bearer {tokens[i]}"})

    results = run_together(24, claim)
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    for d in devs:
        ids = [k for r in results for k in r.json()["one_time_keys"].get(d.user_id, {}).get(d.device_id, {})]
        assert len(ids) == 16 and set(ids) == set(d.uploaded["one_time_keys"])


def test_concurrent_identical_first_uploads(two_instances, login):
    """A client retrying its first upload in parallel: every attempt succeeds, one device-list change is recorded,
    and the keys are stored once."""
    user, device_id, c = login(two_instances[0])
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(20),
            "fallback_keys": dev.fallback_keys()}
    token = c.token
    start = c.get("/_mxkeys/v1/stream_position").json()["device_list"]

    def up(i):
        with requests.Session() as session:
            return session.post(two_instances[i % 2].url + CLIENT + "/keys/upload", json=body, timeout=60,
                                headers={"Authorization": f"Bearer {token}"})

    results = run_together(16, up)
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert all(r.json()["one_time_key_counts"]["signed_curve25519"] == 20 for r in results)
    changes = two_instances[0].pg.psql(f"SELECT count(*) FROM device_list_changes WHERE user_id = '{user}'")
    assert changes == "1"
    assert user in c.get("/keys/changes", params={"from": start}).json()["changed"]


def test_uploads_and_claims_interleaved(two_instances, tokens, login):
    """Batches uploaded while claimers drain them: every handed-out key is distinct, and handed out plus left over
    is exactly what was uploaded."""
    user, device_id, owner = login(two_instances[0])
    dev = Device(user, device_id)
    assert owner.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    batches = [dev.one_time_keys(10) for _ in range(4)]
    uploaded = {k: v for b in batches for k, v in b.items()}
    want = {"one_time_keys": {user: {device_id: "signed_curve25519"}}}

    def act(i):
        with requests.Session() as session:
            if i < 4:
                return session.post(two_instances[i % 2].url + CLIENT + "/keys/upload",
                                    json={"one_time_keys": batches[i]}, timeout=60,
                                    headers={"Authorization": f"Bearer {owner.token}"})
            return session.post(two_instances[i % 2].url + CLIENT + "/keys/claim", json=want, timeout=60,
                                headers={"Authorization": f"Bearer {tokens[i]}"})

    results = run_together(36, act)
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    handed = [k for r in results[4:] for k in r.json()["one_time_keys"].get(user, {}).get(device_id, {})]
    assert len(handed) == len(set(handed))
    left = owner.post("/keys/upload", json={}).json()["one_time_key_counts"]["signed_curve25519"]
    assert len(handed) + left == len(uploaded)
    assert set(handed) <= set(uploaded)


def test_keys_locked_by_a_transaction_that_rolls_back_are_still_handed_out(any_server, pg, login):
    """Every remaining one-time key is locked by a transaction that will not consume it (here: a session that locks
    them and rolls back; in life: a claim that fails after locking). SKIP LOCKED alone would answer the fallback key
    at once while 5 keys remain; mx_keys_claim waits for the holder and hands out the keys."""
    dev = upload_device(any_server, login, 5)
    tokens = [any_server.mint(f"@waiter{i}:localhost", f"W{i}") for i in range(5)]
    want = {"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}}
    with transaction_held_open(pg, f"SELECT key_id FROM one_time_keys WHERE user_id = '{dev.user_id}' FOR UPDATE;",
                               "ROLLBACK"):
        def claim(i):
            with requests.Session() as session:
                return session.post(any_server.url + CLIENT + "/keys/claim", json=want, timeout=60,
                                    headers={"Authorization": f"Bearer {tokens[i]}"})

        results = run_together(5, claim)
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    got = [k for r in results for k in r.json()["one_time_keys"][dev.user_id][dev.device_id]]
    assert sorted(got) == sorted(dev.uploaded["one_time_keys"]), "one-time keys, not the fallback key"
    r = dev.client.post("/keys/claim", json=want)
    assert r.json()["one_time_keys"][dev.user_id][dev.device_id] == dev.uploaded["fallback_keys"]


def test_uploads_racing_a_concurrent_insert_of_the_same_key_id(two_instances, pg, login):
    """Another transaction has inserted key id RACE and not committed yet when the uploads arrive. Their inserts
    wait for it; once it commits, the uploads with a different key are told of the conflict (none is silently
    dropped) and the one with the same key is accepted."""
    user, device_id, owner = login(two_instances[0])
    dev = Device(user, device_id)
    assert owner.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    first = dev.signed_key(Device(user, "FIRST").curve25519)
    bodies = [{"one_time_keys": {"signed_curve25519:RACE": dev.signed_key(Device(user, f"K{i}").curve25519)}}
              for i in range(4)] + [{"one_time_keys": {"signed_curve25519:RACE": first}}]
    row = json.dumps(first).replace("'", "''")
    with transaction_held_open(pg, f"INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) "
                                   f"VALUES ('{user}', '{device_id}', 'signed_curve25519', 'RACE', '{row}');",
                               "COMMIT"):
        def up(i):
            with requests.Session() as session:
                return session.post(two_instances[i % 2].url + CLIENT + "/keys/upload", json=bodies[i], timeout=60,
                                    headers={"Authorization": f"Bearer {owner.token}"})

        results = run_together(5, up)
    for r in results[:4]:
        assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM", r.text
        assert first["key"] in r.json()["error"]
    assert results[4].status_code == 200, results[4].text
    assert results[4].json()["one_time_key_counts"]["signed_curve25519"] == 1


def test_cap_holds_against_a_concurrent_upload(start_server, pg, login):
    """Another upload of the same device (2 keys) is in flight, uncommitted, when this one (4 keys) arrives with a cap
    of 5: this one waits for it and is refused, instead of both passing and leaving 6 keys."""
    s = start_server(max_otks_per_device=5)
    user, device_id, c = login(s)
    dev = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    other = json.dumps(dev.one_time_keys(2)).replace("'", "''")
    with transaction_held_open(pg, f"SELECT mx_keys_upload('{user}', '{device_id}', NULL, '{other}', NULL, 5);",
                               "COMMIT"):
        r = c.post("/keys/upload", json={"one_time_keys": dev.one_time_keys(4)})
    assert r.status_code == 400 and "limit is 5" in r.json()["error"], r.text
    assert c.post("/keys/upload", json={}).json()["one_time_key_counts"]["signed_curve25519"] == 2
    s.stop()


def devices_of_one_user(server, login, user, n, id_prefix, n_otks):
    """n devices of `user`, each with device keys, n_otks one-time keys and a fallback key uploaded."""
    devs = []
    for k in range(n):
        _, device_id, c = login(server, user_id=user, device_id=f"{id_prefix}{k}")
        dev = Device(user, device_id)
        body = {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(n_otks),
                "fallback_keys": dev.fallback_keys()}
        assert c.post("/keys/upload", json=body).status_code == 200
        dev.uploaded, dev.client = body, c
        devs.append(dev)
    return devs


def test_user_removal_racing_multi_device_claims(start_server, pg, login):
    """The admin removes a user while claims take keys from several of the user's devices at once: the removal and
    every claim succeed (locks are taken device by device in one order on both sides, so neither deadlocks), no
    key is handed out twice, and nothing of the user is left afterwards."""
    url = pg.conninfo + " options='-c mxkeys.test_claim_hold_ms=20'"
    s = start_server(workers=2, db_connections=8, admin_token="admintest", database_url=url)
    claimers = [s.mint(f"@rmclaimer{i}:localhost", f"R{i}") for i in range(16)]
    try:
        for round_ in range(4):
            user, _, _ = login(s)
            devs = devices_of_one_user(s, login, user, 4, f"RM{round_}D", 12)

            def act(i):
                with requests.Session() as session:
                    if i == 16:
                        time.sleep(0.015)  # into the claims' lock-holding window
                        return session.delete(f"{s.url}/_mxkeys/admin/v1/users/{user}", timeout=60,
                                              headers={"Authorization": "Bearer admintest"})
                    order = devs if i % 2 else list(reversed(devs))
                    body = {"one_time_keys": {user: {d.device_id: "signed_curve25519" for d in order}}}
                    return session.post(s.url + CLIENT + "/keys/claim", json=body, timeout=60,
                                        headers={"Authorization": f"Bearer {claimers[i]}"})

            results = run_together(17, act)
            assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
            handed = [(device_id, kid) for r in results[:16]
                      for device_id, keys in r.json()["one_time_keys"].get(user, {}).items()
                      for kid, obj in keys.items() if not obj.get("fallback")]
            assert len(handed) == len(set(handed)), "a one-time key was handed out twice"
            left = pg.psql(f"SELECT (SELECT count(*) FROM device_keys WHERE user_id = '{user}') + "
                           f"(SELECT count(*) FROM one_time_keys WHERE user_id = '{user}') + "
                           f"(SELECT count(*) FROM fallback_keys WHERE user_id = '{user}')")
            assert left == "0"
    finally:
        s.stop()


def test_user_removal_racing_uploads(start_server, login):
    """The admin removes a user while each of the user's devices uploads new device keys, one-time keys and a new
    fallback key: every request succeeds (an upload that commits first is removed with the rest; one that commits
    after leaves its device's new keys behind, as a fresh upload would), and none is half applied."""
    s = start_server(workers=2, db_connections=8, admin_token="admintest")
    for round_ in range(4):
        user, _, _ = login(s)
        devs = devices_of_one_user(s, login, user, 6, f"UP{round_}D", 10)
        for dev in devs:
            fresh = Device(user, dev.device_id)  # new identity keys: a device-key change
            fresh.one_time_keys(11)  # skip the ids the first account used (Olm numbers keys per account)
            dev.next = {"device_keys": fresh.device_keys(), "one_time_keys": fresh.one_time_keys(10),
                        "fallback_keys": fresh.fallback_keys()}

        def act(i):
            with requests.Session() as session:
                if i == len(devs):
                    time.sleep(0.005 * round_)
                    return session.delete(f"{s.url}/_mxkeys/admin/v1/users/{user}", timeout=60,
                                          headers={"Authorization": "Bearer admintest"})
                return session.post(s.url + CLIENT + "/keys/upload", json=devs[i].next, timeout=60,
                                    headers={"Authorization": f"Bearer {devs[i].client.token}"})

        results = run_together(len(devs) + 1, act)
        assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
        for dev in devs:
            rows = s.pg.psql(
                f"SELECT (SELECT count(*) FROM device_keys WHERE user_id = '{user}' AND device_id = '{dev.device_id}')"
                f" || ' ' || (SELECT count(*) FROM one_time_keys WHERE user_id = '{user}'"
                f" AND device_id = '{dev.device_id}')"
                f" || ' ' || (SELECT count(*) FROM fallback_keys WHERE user_id = '{user}'"
                f" AND device_id = '{dev.device_id}')")
            assert rows in ("0 0 0", "1 10 1"), f"{dev.device_id}: device keys, one-time keys, fallback keys = {rows}"
    s.stop()
