"""mxkeys beside a homeserver (--auth homeserver): identity writes mirrored to it, the ordering of its announcements
and refusals against mxkeys' answers, /sync and sliding sync with mxkeys' key counts, /keys/changes and other
servers' users through it. The homeserver is tesths (a real-behaving test homeserver); clients talk to mxkeys
directly here (test_sidecar_e2e.py puts nginx and real clients in front).
"""
import os
import threading
import time

import pytest
import requests
from conftest import CLIENT_PREFIX, Client, assert_error
from olmkeys import CrossSigning, Device, add_signature
from tesths import TestHomeserver

HS_TIMEOUT_MS = 3000


class Sidecar:
    def __init__(self, hs, server):
        self.hs = hs
        self.server = server
        self.clients = []

    def login(self, localpart=None):
        """A user of the homeserver with a device; returns (user_id, Device, client talking to mxkeys)."""
        user = self.hs.register(localpart or "u" + os.urandom(5).hex())
        token, device_id = self.hs.login(user)
        c = Client(self.server, token)
        self.clients.append(c)
        return user, Device(user, device_id), c

    def direct(self, client):
        """The same credentials, straight to the homeserver."""
        c = Client(self.server, client.token)
        c.server = self.hs
        self.clients.append(c)
        return c


@pytest.fixture
def sidecar(start_server):
    hs = TestHomeserver(server_name="localhost", remote_server_name="remote.test")
    server = start_server(auth="homeserver", homeserver_url=hs.url, homeserver_timeout_ms=HS_TIMEOUT_MS,
                          token_cache_ms=0)
    sc = Sidecar(hs, server)
    yield sc
    for c in sc.clients:
        c.session.close()
    server.stop()
    hs.close()


def query(c, *users):
    r = c.post("/keys/query", json={"device_keys": {u: [] for u in users}})
    assert r.status_code == 200, r.text
    return r.json()


def hs_paths(hs, suffix):
    return [r for r in hs.requests if r["path"].split("?")[0].endswith(suffix)]


# ---- identity writes ------------------------------------------------------------------------------------------------


def test_device_keys_reach_the_homeserver_and_one_time_keys_do_not(sidecar):
    user, dev, c = sidecar.login()
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(5),
                                     "fallback_keys": dev.fallback_keys()})
    assert r.status_code == 200, r.text
    assert r.json()["one_time_key_counts"]["signed_curve25519"] == 5, "the counts are mxkeys', not the homeserver's"
    stored = sidecar.hs.device_keys[user][dev.device_id]
    assert stored["keys"] == dev.device_keys()["keys"] and stored["signatures"] == dev.device_keys()["signatures"]
    assert sidecar.hs.otk_counts(user, dev.device_id)["signed_curve25519"] == 0
    assert sidecar.hs.unused_fallback_key_types(user, dev.device_id) == []
    (sent,) = hs_paths(sidecar.hs, "/keys/upload")
    assert sent["headers"]["authorization"] == f"Bearer {c.token}", "with the client's own token"
    assert set(requests.models.complexjson.loads(sent["body"])) == {"device_keys"}
    assert query(c, user)["device_keys"][user][dev.device_id]["keys"] == dev.device_keys()["keys"]

    # identical device keys again, and one-time keys alone: nothing for the homeserver
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    assert c.post("/keys/upload", json={"one_time_keys": dev.one_time_keys(3)}).status_code == 200
    assert len(hs_paths(sidecar.hs, "/keys/upload")) == 1


def test_a_refused_device_key_upload_stores_nothing(sidecar):
    user, dev, c = sidecar.login()
    sidecar.hs.fault("POST", r"/keys/upload$", status=400, body={"errcode": "M_INVALID_PARAM", "error": "no thanks"},
                     times=1)
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(5)})
    assert_error(r, 400, "M_INVALID_PARAM")
    assert r.json()["error"] == "no thanks", "the homeserver's answer as it came"
    assert query(c, user)["device_keys"][user] == {}
    counts = c.post("/keys/upload", json={}).json()["one_time_key_counts"]
    assert counts["signed_curve25519"] == 0, "the whole upload is one transaction"
    # the client's retry converges both sides
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(5)})
    assert r.status_code == 200
    assert dev.device_id in query(c, user)["device_keys"][user]
    assert dev.device_id in sidecar.hs.device_keys[user]


@pytest.mark.parametrize("failure", ["drop", "hang", "500"])
def test_homeserver_failures_on_an_identity_write(sidecar, failure):
    user, dev, c = sidecar.login()
    if failure == "drop":
        sidecar.hs.fault("POST", r"/keys/upload$", drop=True)
    elif failure == "hang":
        sidecar.hs.fault("POST", r"/keys/upload$", hang=True)
    else:
        sidecar.hs.fault("POST", r"/keys/upload$", status=500)
    started = time.monotonic()
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys()})
    took = time.monotonic() - started
    if failure == "drop":
        assert_error(r, 502, "M_UNKNOWN")
    elif failure == "hang":
        assert_error(r, 504, "M_UNKNOWN")
        assert took < HS_TIMEOUT_MS / 1000 + 5, "bounded by --homeserver-timeout-ms"
    else:
        assert_error(r, 500, "M_UNKNOWN")
    sidecar.hs.clear_faults()
    started = time.monotonic()
    assert query(c, user)["device_keys"][user] == {}
    assert time.monotonic() - started < 2, "the dropped write does not hold queries up"


def test_a_query_the_instant_the_homeserver_announces_finds_the_new_keys(sidecar):
    """The homeserver announces new device keys before it answers mxkeys; a woken client queries at once."""
    alice, alice_dev, a = sidecar.login()
    bob, bob_dev, b = sidecar.login()
    seen = {}

    def announced(user_id, kind):
        if kind != "device_keys" or user_id != alice:
            return

        def woken_client():
            seen["answer"] = query(b, alice)

        t = threading.Thread(target=woken_client)
        t.start()
        seen["thread"] = t
        time.sleep(0.5)  # the query reaches mxkeys while the homeserver has not answered it yet

    sidecar.hs.on_identity_stored = announced
    assert a.post("/keys/upload", json={"device_keys": alice_dev.device_keys()}).status_code == 200
    seen["thread"].join(30)
    assert alice_dev.device_id in seen["answer"]["device_keys"][alice], "the announced keys are already there"


def test_a_cross_signing_reset_is_never_seen_before_the_homeserver_accepts_it(sidecar):
    user, dev, c = sidecar.login()
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    old = CrossSigning(user)
    assert c.post("/keys/device_signing/upload", json=old.upload_body()).status_code == 200, "the first needs no UIA"
    assert query(c, user)["master_keys"][user]["keys"] == old.key_object("master")["keys"]

    new = CrossSigning(user)
    # the homeserver takes its time deciding, then asks for user-interactive auth
    sidecar.hs.fault("POST", r"/keys/device_signing/upload$", delay=1.0, times=1)
    during = {}

    def look_meanwhile():
        time.sleep(0.3)
        during["answer"] = query(c, user)

    t = threading.Thread(target=look_meanwhile)
    t.start()
    r = c.post("/keys/device_signing/upload", json=new.upload_body())
    t.join(30)
    assert r.status_code == 401, r.text
    uia = r.json()
    assert uia["flows"] == [{"stages": ["m.login.password"]}] and uia["session"], "the homeserver's UIA as it came"
    assert during["answer"]["master_keys"][user]["keys"] == old.key_object("master")["keys"], "never the refused key"
    assert query(c, user)["master_keys"][user]["keys"] == old.key_object("master")["keys"]
    assert sidecar.hs.cross_signing_keys[user]["master"]["keys"] == old.key_object("master")["keys"]

    body = dict(new.upload_body(), auth={"type": "m.login.password", "session": uia["session"], "password": "pw",
                                         "identifier": {"type": "m.id.user", "user": user}})
    r = c.post("/keys/device_signing/upload", json=body)
    assert r.status_code == 200, r.text
    assert query(c, user)["master_keys"][user]["keys"] == new.key_object("master")["keys"]
    assert sidecar.hs.cross_signing_keys[user]["master"]["keys"] == new.key_object("master")["keys"]


def test_a_cross_signing_upload_refused_locally_never_reaches_the_homeserver(sidecar):
    user, dev, c = sidecar.login()
    xs = CrossSigning(user)
    body = xs.upload_body()
    body["self_signing_key"] = xs.key_object("self_signing", xs.user_signing)  # signed by the wrong key
    assert_error(c.post("/keys/device_signing/upload", json=body), 400, "M_INVALID_SIGNATURE")
    assert hs_paths(sidecar.hs, "/keys/device_signing/upload") == []
    assert query(c, user)["master_keys"] == {}


def test_signature_failures_of_both_sides_are_merged(sidecar):
    user, dev, c = sidecar.login()
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    xs = CrossSigning(user)
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    stored = query(c, user)["device_keys"][user][dev.device_id]
    master = xs.key_object("master")
    master_pk = xs.master.public_key
    sidecar.hs.refuse_signature(user, master_pk)
    body = {user: {dev.device_id: add_signature(stored, user, xs.self_signing),
                   master_pk: add_signature(master, user, device=dev),
                   "NOSUCHDEVICE": add_signature(stored, user, xs.self_signing)}}
    r = c.post("/keys/signatures/upload", json=body)
    assert r.status_code == 200, r.text
    failures = r.json()["failures"][user]
    assert set(failures) == {master_pk, "NOSUCHDEVICE"}, failures
    assert failures[master_pk]["errcode"] == "M_INVALID_SIGNATURE", "the homeserver's refusal"
    q = query(c, user)
    assert f"ed25519:{xs.self_signing.public_key}" in q["device_keys"][user][dev.device_id]["signatures"][user]
    assert dev.signer not in q["master_keys"][user].get("signatures", {}).get(user, {}), \
        "what the homeserver refused is not stored"
    (sent,) = hs_paths(sidecar.hs, "/keys/signatures/upload")
    assert set(requests.models.complexjson.loads(sent["body"])[user]) == {dev.device_id, master_pk}, \
        "only what mxkeys verified goes to the homeserver"


# ---- /keys/changes, other servers --------------------------------------------------------------------------------


def test_keys_changes_takes_the_homeservers_tokens(sidecar):
    alice, alice_dev, a = sidecar.login()
    since = sidecar.hs.token()
    assert a.post("/keys/upload", json={"device_keys": alice_dev.device_keys()}).status_code == 200
    r = a.get("/keys/changes", params={"from": since, "to": sidecar.hs.token()})
    assert r.status_code == 200, r.text
    assert alice in r.json()["changed"]
    r = a.get("/keys/changes", params={"from": "mxk_dl_1"})
    direct = requests.get(sidecar.hs.url + CLIENT_PREFIX + "/keys/changes", params={"from": "mxk_dl_1"},
                          headers={"Authorization": f"Bearer {a.token}"}, timeout=30)
    assert (r.status_code, r.json()) == (direct.status_code, direct.json()), "the homeserver's own answer"


def test_other_servers_users_go_through_the_homeserver(sidecar):
    alice, alice_dev, a = sidecar.login()
    assert a.post("/keys/upload", json={"device_keys": alice_dev.device_keys(),
                                        "one_time_keys": alice_dev.one_time_keys(2)}).status_code == 200
    remote = Device("@rita:remote.test", "RITADEV")
    otks = list(remote.one_time_keys(2).items())
    sidecar.hs.add_remote_device(remote.user_id, remote.device_id, remote.device_keys(), one_time_keys=otks)
    xs = CrossSigning(remote.user_id)
    sidecar.hs.add_remote_cross_signing(remote.user_id, xs.key_object("master"),
                                        xs.key_object("self_signing", xs.master))

    q = query(a, alice, remote.user_id, "@nobody:elsewhere.test")
    assert q["device_keys"][remote.user_id]["RITADEV"]["keys"] == remote.device_keys()["keys"]
    assert alice_dev.device_id in q["device_keys"][alice]
    assert q["master_keys"][remote.user_id]["keys"] == xs.key_object("master")["keys"]
    assert "elsewhere.test" in q["failures"]

    r = a.post("/keys/claim", json={"one_time_keys": {remote.user_id: {"RITADEV": "signed_curve25519"},
                                                      alice: {alice_dev.device_id: "signed_curve25519"}}})
    assert r.status_code == 200, r.text
    got = r.json()["one_time_keys"]
    assert list(got[remote.user_id]["RITADEV"]) == [otks[0][0]]
    assert len(got[alice][alice_dev.device_id]) == 1

    sidecar.hs.fault("POST", r"/keys/(query|claim)$", drop=True)
    q = query(a, alice, remote.user_id)
    assert "remote.test" in q["failures"] and alice_dev.device_id in q["device_keys"][alice]
    r = a.post("/keys/claim", json={"one_time_keys": {remote.user_id: {"RITADEV": "signed_curve25519"},
                                                      alice: {alice_dev.device_id: "signed_curve25519"}}})
    assert r.status_code == 200 and "remote.test" in r.json()["failures"]
    assert len(r.json()["one_time_keys"][alice][alice_dev.device_id]) == 1


# ---- /sync --------------------------------------------------------------------------------------------------------


def upload_keys(c, dev, n):
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(n),
                                     "fallback_keys": dev.fallback_keys()})
    assert r.status_code == 200, r.text


def claim(c, user, device_id):
    r = c.post("/keys/claim", json={"one_time_keys": {user: {device_id: "signed_curve25519"}}})
    assert r.status_code == 200, r.text
    return r.json()["one_time_keys"]


def test_sync_carries_mxkeys_counts_and_nothing_else_changes(sidecar):
    user, dev, c = sidecar.login()
    upload_keys(c, dev, 4)
    r = c.get(CLIENT_PREFIX + "/sync")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert body["org.matrix.msc2732.device_unused_fallback_key_types"] == ["signed_curve25519"]
    direct = sidecar.direct(c).get(CLIENT_PREFIX + "/sync").json()
    assert direct["device_one_time_keys_count"] == {"signed_curve25519": 0}
    for name in ("device_one_time_keys_count", "device_unused_fallback_key_types",
                 "org.matrix.msc2732.device_unused_fallback_key_types"):
        body.pop(name), direct.pop(name)
    assert body == direct, "the rest is the homeserver's"

    for _ in range(4):
        claim(sidecar.login()[2], user, dev.device_id)
    body = c.get(CLIENT_PREFIX + "/sync", params={"since": body["next_batch"]}).json()
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    claim(sidecar.login()[2], user, dev.device_id)  # the fallback key now
    body = c.get(CLIENT_PREFIX + "/sync", params={"since": body["next_batch"]}).json()
    assert body["device_unused_fallback_key_types"] == []


def test_sync_adds_the_counts_where_the_homeserver_has_none_and_keeps_its_order(sidecar):
    user, dev, c = sidecar.login()
    upload_keys(c, dev, 2)
    sidecar.hs.sync_counts_last = True
    sidecar.hs.fault("GET", r"/sync$", status=200, body={"next_batch": "s999", "rooms": {}})
    r = c.get(CLIENT_PREFIX + "/sync")
    assert r.status_code == 200
    assert r.text.startswith('{"next_batch"')
    body = r.json()
    assert body["next_batch"] == "s999", "no token is altered"
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 2}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert "org.matrix.msc2732.device_unused_fallback_key_types" not in body


def test_a_held_long_poll_wakes_and_answers(sidecar):
    alice, alice_dev, a = sidecar.login()
    bob, bob_dev, b = sidecar.login()
    r = a.post(CLIENT_PREFIX + "/createRoom", json={"invite": [bob]})
    room = sidecar.direct(a).post(CLIENT_PREFIX + "/createRoom", json={"invite": [bob]}).json()["room_id"]
    assert sidecar.direct(b).post(CLIENT_PREFIX + f"/join/{room}", json={}).status_code == 200
    since = a.get(CLIENT_PREFIX + "/sync").json()["next_batch"]
    out = {}

    def poll():
        out["r"] = a.get(CLIENT_PREFIX + "/sync", params={"since": since, "timeout": 20000})

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert b.post("/keys/upload", json={"device_keys": bob_dev.device_keys()}).status_code == 200
    t.join(30)
    assert out["r"].status_code == 200, out["r"].text
    assert bob in out["r"].json()["device_lists"]["changed"], "woken by the homeserver's announcement"
    assert r.status_code in (404, 405), "mxkeys forwards only what it serves: other paths belong to nginx"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_50mb_initial_sync_streams_through_in_bounded_memory(sidecar, start_server, monkeypatch, chunked):
    # Under ASan freed memory waits in a quarantine before reuse, so peak memory would count every byte that ever
    # passed: this server gets no quarantine, and its peak is what it holds at once, as in a plain build.
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    sidecar.server = start_server(auth="homeserver", homeserver_url=sidecar.hs.url, token_cache_ms=0)
    user, dev, c = sidecar.login()
    upload_keys(c, dev, 3)
    sidecar.hs.sync_chunked = chunked
    sidecar.hs.sync_padding(50 << 20)
    pid = sidecar.server.proc.pid

    def hwm_kb():
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

    before = hwm_kb()
    r = c.get(CLIENT_PREFIX + "/sync", stream=True)
    assert r.status_code == 200
    size = 0
    chunks = []
    for chunk in r.iter_content(1 << 20):
        size += len(chunk)
        chunks.append(chunk)
    assert size > 50 << 20
    body = requests.models.complexjson.loads(b"".join(chunks))
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert hwm_kb() - before < 8 * 1024, "never buffered whole"


def test_sync_errors_pass_through(sidecar):
    user, dev, c = sidecar.login()
    sidecar.hs.fault("GET", r"/sync$", status=429, body={"errcode": "M_LIMIT_EXCEEDED", "error": "slow down",
                                                          "retry_after_ms": 2000},
                     headers={"Retry-After": "2"}, times=1)
    r = c.get(CLIENT_PREFIX + "/sync")
    assert_error(r, 429, "M_LIMIT_EXCEEDED")
    assert r.headers["Retry-After"] == "2" and r.json()["retry_after_ms"] == 2000
    # one dropped connection is retried (a sync changes nothing by being asked twice); a second drop is a 502
    sidecar.hs.fault("GET", r"/sync$", drop=True, times=1)
    assert c.get(CLIENT_PREFIX + "/sync").status_code == 200
    sidecar.hs.fault("GET", r"/sync$", drop=True, times=2)
    assert_error(c.get(CLIENT_PREFIX + "/sync"), 502, "M_UNKNOWN")
    sidecar.hs.fault("GET", r"/sync$", hang=True, times=1)
    started = time.monotonic()
    assert_error(c.get(CLIENT_PREFIX + "/sync", params={"timeout": 1000}), 504, "M_UNKNOWN")
    assert time.monotonic() - started < 1 + HS_TIMEOUT_MS / 1000 + 3, "the poll's timeout plus the bound"
    assert c.get(CLIENT_PREFIX + "/sync").status_code == 200, "and the next one works"


def test_sliding_sync_e2ee_extension_carries_mxkeys_counts(sidecar):
    user, dev, c = sidecar.login()
    upload_keys(c, dev, 6)
    path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
    r = c.post(path, json={"lists": {}, "extensions": {"e2ee": {"enabled": True}}}, params={"timeout": 0})
    assert r.status_code == 200, r.text
    e2ee = r.json()["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"] == {"signed_curve25519": 6}
    assert e2ee["device_unused_fallback_key_types"] == ["signed_curve25519"]
    r = c.post(path, json={"lists": {}}, params={"timeout": 0, "pos": r.json()["pos"]})
    assert r.status_code == 200
    assert "e2ee" not in r.json().get("extensions", {}) or r.json()["extensions"]["e2ee"].get(
        "device_one_time_keys_count") == {"signed_curve25519": 6}


def test_sync_in_local_mode_is_not_served(server, login):
    user, device, c = login(server)
    assert_error(c.get(CLIENT_PREFIX + "/sync"), 404, "M_UNRECOGNIZED")


def test_stopping_answers_held_long_polls_at_once(sidecar):
    user, dev, c = sidecar.login()
    since = c.get(CLIENT_PREFIX + "/sync").json()["next_batch"]
    out = {}

    def poll():
        out["r"] = c.get(CLIENT_PREFIX + "/sync", params={"since": since, "timeout": 60000})

    t = threading.Thread(target=poll)
    t.start()
    wait = time.monotonic() + 10
    while time.monotonic() < wait and not any("since=" in r["path"] for r in sidecar.hs.requests):
        time.sleep(0.05)
    started = time.monotonic()
    assert sidecar.server.stop() == 0
    t.join(30)
    assert time.monotonic() - started < 10, "the drain does not wait out the poll"
    body = assert_error(out["r"], 503, "M_UNKNOWN")
    assert body["retry_after_ms"] > 0


def test_homeserver_figures_in_metrics(sidecar):
    user, dev, c = sidecar.login()
    assert c.get(CLIENT_PREFIX + "/sync").status_code == 200
    sidecar.hs.fault("GET", r"/sync$", hang=True, times=1)
    assert_error(c.get(CLIENT_PREFIX + "/sync", params={"timeout": 0}), 504, "M_UNKNOWN")
    text = requests.get(sidecar.server.url + "/metrics", timeout=10).text
    figures = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("mxkeys_homeserver"))
    assert int(figures["mxkeys_homeserver_requests_total"]) >= 3
    assert int(figures['mxkeys_homeserver_failures_total{kind="timeout"}']) == 1
    assert 'route="/sync",status="504"' in text


def test_a_token_in_the_query_string_is_forwarded_once(sidecar):
    """nio sends its token as ?access_token=; a homeserver refuses it together with an Authorization header."""
    user, dev, c = sidecar.login()
    plain = requests.Session()
    since = sidecar.hs.token()
    for path, params in ((CLIENT_PREFIX + "/sync", {"access_token": c.token, "timeout": "0"}),
                         ("/_matrix/client/r0/keys/changes", {"from": since, "to": since, "access_token": c.token})):
        r = plain.get(sidecar.server.url + path, params=params, timeout=30)
        assert r.status_code == 200, r.text
    sent = [r for r in sidecar.hs.requests if "/sync" in r["path"] or "/keys/changes" in r["path"]]
    assert sent and all("access_token" not in r["path"] for r in sent), "the token moved to the header"
    assert all(r["headers"]["authorization"] == f"Bearer {c.token}" for r in sent)
    assert any("timeout=0" in r["path"] for r in sent), "the rest of the query went as it came"
    plain.close()
