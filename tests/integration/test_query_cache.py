"""The /keys/query cache (include/mxkeys/query_cache.h): answers from memory read exactly as the database's, every
viewer sees what the visibility rules allow, a write through this process is seen by the next query on any worker
(read-your-writes), a write through another instance is seen within --query-cache-max-lag-ms, a lost change feed
empties the cache, and the memory bound holds."""
import contextlib
import os
import secrets
import signal
import time

import requests
from conftest import wait_for
from olmkeys import CrossSigning, Device, add_signature

CLIENT = "/_matrix/client/v3"
LAG_MS = 400


def named_server(start_server, pg, **flags):
    """A server whose database connections carry a name of their own, so that its feed can be found."""
    name = "mxk_" + secrets.token_hex(4)
    server = start_server(database_url=f"{pg.conninfo} application_name={name}", **flags)
    server.app_name = name
    wait_for(lambda: feed_pid(pg, server) is not None and metrics(server)["mxkeys_query_cache_live"] == 1, 15,
             "the change feed")
    return server


def feed_pid(pg, server):
    """The backend of the server's change feed: its connection runs only LISTEN and the heartbeat (a NOTIFY)."""
    out = pg.psql(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{server.app_name}' "
                  "AND (query LIKE 'LISTEN mxkeys_query_cache%' OR query LIKE 'NOTIFY mxkeys_query_cache_beat%')").strip()
    return int(out) if out else None


@contextlib.contextmanager
def feed_frozen(pg, server):
    """The feed's backend stopped (SIGSTOP): it hears nothing and answers no heartbeat until continued."""
    pid = feed_pid(pg, server)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def metrics(server):
    out = {}
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("mxkeys_query_cache"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def query(server, token, *users, devices=None):
    """One query on a fresh connection (so that the requests spread over the workers)."""
    body = {"device_keys": {u: (devices or {}).get(u, []) for u in users}}
    r = requests.post(server.url + CLIENT + "/keys/query", json=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


class Person:
    def __init__(self, server, login, display_name=None):
        self.user, self.device_id, self.c = login(server)
        self.token = self.c.token
        self.dev = Device(self.user, self.device_id)
        r = self.c.post("/keys/upload", json={"device_keys": self.dev.device_keys(display_name)})
        assert r.status_code == 200, r.text
        self.xs = CrossSigning(self.user)
        r = self.c.post("/keys/device_signing/upload", json=self.xs.upload_body())
        assert r.status_code == 200, r.text


def signed_population(server, login):
    """Alice's own signatures on her device and master key, Bob's user-signing signature on Alice's master key,
    Carol who signed nothing: three viewers who must each see something different."""
    alice, bob, carol = (Person(server, login, name) for name in ("Alice's laptop", None, "C"))
    a = alice.user
    stored = query(server, alice.token, a)["device_keys"][a][alice.device_id]
    master = alice.xs.key_object("master")
    r = alice.c.post("/keys/signatures/upload", json={a: {
        alice.device_id: add_signature(stored, a, alice.xs.self_signing),
        alice.xs.master.public_key: add_signature(master, a, device=alice.dev)}})
    assert r.status_code == 200 and r.json()["failures"] == {}, r.text
    r = bob.c.post("/keys/signatures/upload",
                   json={a: {alice.xs.master.public_key: add_signature(master, bob.user, bob.xs.user_signing)}})
    assert r.status_code == 200 and r.json()["failures"] == {}, r.text
    return alice, bob, carol


def test_answers_from_memory_are_the_databases_for_every_viewer(start_server, login, new_user):
    cached = start_server()
    uncached = start_server(query_cache_bytes=0)
    alice, bob, carol = signed_population(cached, login)
    nobody = new_user()
    users = (alice.user, bob.user, carol.user, nobody, "@far:remote.example")
    for viewer in (alice, bob, carol):
        want = query(uncached, viewer.token, *users)
        before = metrics(cached)
        first, second = query(cached, viewer.token, *users), query(cached, viewer.token, *users)
        after = metrics(cached)
        assert first == want and second == want
        assert after["mxkeys_query_cache_hits_total"] - before["mxkeys_query_cache_hits_total"] >= 4, \
            "the second query of four local users came from memory"
        # the same with a device list: only the devices asked for
        picked = query(cached, viewer.token, alice.user, devices={alice.user: [alice.device_id, "NOSUCH"]})
        assert picked == query(uncached, viewer.token, alice.user, devices={alice.user: [alice.device_id, "NOSUCH"]})
        assert list(picked["device_keys"][alice.user]) == [alice.device_id]
    # what the rules say, from memory
    a = alice.user
    assert bob.user in query(cached, bob.token, a)["master_keys"][a]["signatures"], "the signer sees its signature"
    for viewer in (alice, carol):
        assert bob.user not in query(cached, viewer.token, a)["master_keys"][a]["signatures"]
    assert a in query(cached, alice.token, a)["user_signing_keys"]
    assert query(cached, bob.token, a)["user_signing_keys"] == {}
    assert query(cached, carol.token, a)["device_keys"][a][alice.device_id]["unsigned"] == {
        "device_display_name": "Alice's laptop"}
    assert metrics(uncached) == {}, "--query-cache-bytes 0: no cache at all"


def test_a_write_is_seen_by_the_next_query_on_every_worker(start_server, login, pg):
    """Every writer that changes an answer, each followed at once by queries on fresh connections: never the old
    answer. The feed is frozen meanwhile (and allowed a minute's lag), so only the writer's own forget can make this
    hold. 20 rounds of the cheapest one on top, to give a race a chance to show."""
    server = named_server(start_server, pg, admin_token="admintest", query_cache_max_lag_ms=60000)
    alice, bob, carol = signed_population(server, login)
    a = alice.user
    with feed_frozen(pg, server):
        writes_through_every_writer(server, login, alice, bob, carol)
    assert metrics(server)["mxkeys_query_cache_hits_total"] > 0


def writes_through_every_writer(server, login, alice, bob, carol):
    a = alice.user

    def seen_by_all(check):
        for _ in range(6):  # fresh connections land on both workers
            for viewer in (alice, bob, carol):
                q = query(server, viewer.token, a)
                assert check(q, viewer), q

    seen_by_all(lambda q, v: alice.device_id in q["device_keys"][a])  # warm
    # a new device (keys upload)
    for n in range(20):
        user, device_id, c = login(server, user_id=a, device_id=f"NEW{n}")
        assert c.post("/keys/upload", json={"device_keys": Device(a, device_id).device_keys()}).status_code == 200
        for viewer in (alice, carol):
            assert device_id in query(server, viewer.token, a)["device_keys"][a], f"round {n}"
    # changed keys of an existing device drop its cross-signatures
    fresh = Device(a, alice.device_id)
    assert alice.c.post("/keys/upload", json={"device_keys": fresh.device_keys()}).status_code == 200
    seen_by_all(lambda q, v: list(q["device_keys"][a][alice.device_id]["signatures"][a]) == [fresh.signer])
    # a signature (Carol's user-signing key on Alice's master key): Carol sees it at once, the others never
    master = alice.xs.key_object("master")
    r = carol.c.post("/keys/signatures/upload",
                     json={a: {alice.xs.master.public_key: add_signature(master, carol.user, carol.xs.user_signing)}})
    assert r.status_code == 200 and r.json()["failures"] == {}, r.text
    seen_by_all(lambda q, v: (carol.user in q["master_keys"][a]["signatures"]) == (v is carol))
    # new cross-signing keys (the replacement window opened through the admin API)
    r = requests.post(server.url + f"/_mxkeys/admin/v1/users/{a}/allow_cross_signing_replacement",
                      headers={"Authorization": "Bearer admintest"}, timeout=30)
    assert r.status_code == 200, r.text
    new = CrossSigning(a)
    assert alice.c.post("/keys/device_signing/upload", json=new.upload_body()).status_code == 200
    seen_by_all(lambda q, v: q["master_keys"][a]["keys"] == new.key_object("master")["keys"])
    # a device deleted through the admin API
    r = requests.delete(server.url + f"/_mxkeys/admin/v1/users/{a}/devices/NEW3",
                        headers={"Authorization": "Bearer admintest"}, timeout=30)
    assert r.status_code == 200, r.text
    seen_by_all(lambda q, v: "NEW3" not in q["device_keys"][a] and "NEW4" in q["device_keys"][a])
    # the whole user deleted
    r = requests.delete(server.url + f"/_mxkeys/admin/v1/users/{a}", headers={"Authorization": "Bearer admintest"},
                        timeout=30)
    assert r.status_code == 200, r.text
    seen_by_all(lambda q, v: q["device_keys"][a] == {} and a not in q["master_keys"])
    assert metrics(server)["mxkeys_query_cache_live"] == 1, "the frozen feed's minute has not run out"


def test_another_instance_writes_are_seen_within_the_bound(start_server, login, pg):
    """A and B share the database. After A answered a write, B's answers may lag it by --query-cache-max-lag-ms at
    most: every query B answers after that carries the write (usually B hears of it in milliseconds; bench/ measures
    how fast). A change made by hand in psql reaches B the same way."""
    a_srv = start_server()
    b_srv = named_server(start_server, pg, query_cache_max_lag_ms=LAG_MS)
    alice, bob, _ = signed_population(a_srv, login)
    a = alice.user
    for n in range(10):
        assert alice.device_id in query(b_srv, bob.token, a)["device_keys"][a]  # cached on B
        device_id = f"VIA_A{n}"
        user, _, c = login(a_srv, user_id=a, device_id=device_id)
        assert c.post("/keys/upload", json={"device_keys": Device(a, device_id).device_keys()}).status_code == 200
        acked = time.monotonic()
        while True:
            seen = device_id in query(b_srv, bob.token, a)["device_keys"][a]
            if time.monotonic() - acked >= LAG_MS / 1000:
                assert seen, f"B still answered without {device_id} {LAG_MS} ms after A's 200"
                break
            if seen:
                break
    # B's feed frozen: B answers from memory only until its last proof runs out, then from the database
    with feed_frozen(pg, b_srv):
        device_id = "WHILE_FROZEN"
        user, _, c = login(a_srv, user_id=a, device_id=device_id)
        assert c.post("/keys/upload", json={"device_keys": Device(a, device_id).device_keys()}).status_code == 200
        acked = time.monotonic()
        while time.monotonic() - acked < LAG_MS / 1000:
            query(b_srv, bob.token, a)
        assert device_id in query(b_srv, bob.token, a)["device_keys"][a]
        assert metrics(b_srv)["mxkeys_query_cache_live"] == 0
    wait_for(lambda: metrics(b_srv)["mxkeys_query_cache_live"] == 1, 15, "B's feed to prove itself again")
    # psql: no mxkeysd involved at all
    pg.psql(f"UPDATE device_keys SET display_name = 'renamed by hand' WHERE user_id = '{a}' "
            f"AND device_id = '{alice.device_id}'")
    acked = time.monotonic()
    while query(b_srv, bob.token, a)["device_keys"][a][alice.device_id]["unsigned"] != {
            "device_display_name": "renamed by hand"}:
        assert time.monotonic() - acked < LAG_MS / 1000, "B never heard of the change made in psql"
    assert metrics(b_srv)["mxkeys_query_cache_feed_total{event=\"notification\"}"] > 0


def test_a_lost_feed_empties_the_cache_and_queries_read_the_database(start_server, login, pg):
    """A change no feed reports (triggers switched off for one session) stays unseen while the feed lives; once the
    feed's connection is lost, the cache is emptied and the answers read the database again, so the change shows
    after the loss even though nobody announced it."""
    server = named_server(start_server, pg)
    alice, bob, _ = signed_population(server, login)
    a = alice.user
    name = lambda: query(server, bob.token, a)["device_keys"][a][alice.device_id]["unsigned"]  # noqa: E731
    assert name() == {"device_display_name": "Alice's laptop"}
    assert name() == {"device_display_name": "Alice's laptop"}  # from memory now
    pg.psql(f"SET session_replication_role = replica; UPDATE device_keys SET display_name = 'silent' "
            f"WHERE user_id = '{a}' AND device_id = '{alice.device_id}'")
    assert name() == {"device_display_name": "Alice's laptop"}, \
        "no feed reported the change: the cache keeps answering what it had (this is why writers never bypass it)"
    connects = metrics(server)["mxkeys_query_cache_feed_total{event=\"connect\"}"]
    pg.psql(f"SELECT pg_terminate_backend({feed_pid(pg, server)})")
    wait_for(lambda: metrics(server)["mxkeys_query_cache_feed_total{event=\"connect\"}"] > connects, 15,
             "the feed to reconnect")
    assert name() == {"device_display_name": "silent"}
    m = metrics(server)
    assert m["mxkeys_query_cache_feed_total{event=\"loss\"}"] >= 1 and m["mxkeys_query_cache_live"] == 1


def test_the_memory_bound_holds(start_server, login):
    bound = 40000
    server = start_server(query_cache_bytes=bound)
    people = [Person(server, login) for _ in range(40)]
    for p in people:
        for _ in range(2):
            q = query(server, people[0].token, p.user)
            assert p.device_id in q["device_keys"][p.user]
        m = metrics(server)
        assert m["mxkeys_query_cache_bytes"] <= bound
    assert m["mxkeys_query_cache_evictions_total"] > 0 and m["mxkeys_query_cache_max_bytes"] == bound
    # the most recent are still there and still right; the evicted come back from the database
    for p in (people[-1], people[0]):
        assert p.device_id in query(server, people[1].token, p.user)["device_keys"][p.user]
