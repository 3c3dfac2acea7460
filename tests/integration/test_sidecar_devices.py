"""The device lifecycle beside a homeserver: logout, logout/all, device deletion with and without user-interactive
auth, deactivation, removals racing claims, token revocation across instances, display names the homeserver knows,
devices removed behind mxkeys' back, and soft_logout.
"""
import threading
import time

import pytest
import requests
from conftest import CLIENT_PREFIX, Client, assert_error
from olmkeys import CrossSigning, Device
from tesths import TestHomeserver
from test_sidecar import Sidecar, query


@pytest.fixture
def sidecar(start_server):
    hs = TestHomeserver(server_name="localhost", remote_server_name="remote.test")
    # a long token cache on purpose: revocation must not depend on it running out
    server = start_server(auth="homeserver", homeserver_url=hs.url, homeserver_timeout_ms=3000, token_cache_ms=60000)
    sc = Sidecar(hs, server)
    yield sc
    for c in sc.clients:
        c.session.close()
    server.stop()
    hs.close()


def device_with_keys(sc, user=None, otks=5):
    """A device of `user` (a new user when None) whose keys are in mxkeys; returns (user, Device, client)."""
    if user is None:
        user, dev, c = sc.login()
    else:
        token, device_id = sc.hs.login(user)
        c = Client(sc.server, token)
        sc.clients.append(c)
        dev = Device(user, device_id)
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(otks),
                                     "fallback_keys": dev.fallback_keys()})
    assert r.status_code == 200, r.text
    return user, dev, c


def claim(c, user, device_id):
    r = c.post("/keys/claim", json={"one_time_keys": {user: {device_id: "signed_curve25519"}}})
    assert r.status_code == 200, r.text
    return r.json()["one_time_keys"].get(user, {}).get(device_id, {})


def uia(r, user, password="pw"):
    assert r.status_code == 401, r.text
    return {"type": "m.login.password", "session": r.json()["session"], "password": password,
            "identifier": {"type": "m.id.user", "user": user}}


def test_logout_removes_the_device_and_its_token_at_once(sidecar):
    user, dev, c = device_with_keys(sidecar)
    _, other_dev, other = device_with_keys(sidecar, user)
    observer = sidecar.login()[2]
    assert dev.device_id in query(observer, user)["device_keys"][user]
    assert c.post("/keys/upload", json={}).status_code == 200  # the token is cached now
    r = c.post(CLIENT_PREFIX + "/logout", json={})
    assert r.status_code == 200 and r.json() == {}, r.text
    devices = query(observer, user)["device_keys"][user]
    assert dev.device_id not in devices and other_dev.device_id in devices
    assert claim(observer, user, dev.device_id) == {}, "no key of a logged-out device is handed out"
    assert_error(c.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN")
    assert other.post("/keys/upload", json={}).status_code == 200, "the other device's token still works"


def test_logout_all_keeps_the_cross_signing_identity(sidecar):
    user, dev, c = device_with_keys(sidecar)
    _, dev2, c2 = device_with_keys(sidecar, user)
    xs = CrossSigning(user)
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    observer = sidecar.login()[2]
    assert c.post(CLIENT_PREFIX + "/logout/all", json={}).status_code == 200
    q = query(observer, user)
    assert q["device_keys"][user] == {}
    assert q["master_keys"][user]["keys"] == xs.key_object("master")["keys"]
    for client in (c, c2):
        assert_error(client.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN")


def test_device_deletion_through_user_interactive_auth(sidecar):
    user, dev, c = device_with_keys(sidecar)
    _, dev2, c2 = device_with_keys(sidecar, user)
    observer = sidecar.login()[2]
    path = CLIENT_PREFIX + f"/devices/{dev2.device_id}"
    # the homeserver takes its time before asking for auth: meanwhile the device never disappears
    sidecar.hs.fault("DELETE", r"/devices/", delay=0.8, times=1)
    during = {}

    def look():
        time.sleep(0.3)
        during["q"] = query(observer, user)

    t = threading.Thread(target=look)
    t.start()
    r = c.delete(path, json={})
    t.join(30)
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}], r.text
    assert dev2.device_id in during["q"]["device_keys"][user], "kept while the homeserver decided"
    assert dev2.device_id in query(observer, user)["device_keys"][user]
    assert c2.post("/keys/upload", json={}).status_code == 200

    r = c.delete(path, json={"auth": uia(r, user)})
    assert r.status_code == 200, r.text
    assert dev2.device_id not in query(observer, user)["device_keys"][user]
    assert_error(c2.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN")

    # a wrong password: the homeserver's answer as it came, and nothing removed
    r = c.post(CLIENT_PREFIX + "/delete_devices", json={"devices": [dev.device_id]})
    r = c.post(CLIENT_PREFIX + "/delete_devices", json={"devices": [dev.device_id], "auth": uia(r, user, "wrong")})
    assert r.status_code == 401 and r.json().get("errcode") == "M_FORBIDDEN", r.text
    assert dev.device_id in query(observer, user)["device_keys"][user]


def test_a_query_the_instant_the_homeserver_announces_a_removal(sidecar):
    user, dev, c = device_with_keys(sidecar)
    observer = sidecar.login()[2]
    seen = {}

    def announced(user_id, kind):
        if kind == "device_removed" and user_id == user:
            t = threading.Thread(target=lambda: seen.update(q=query(observer, user)))
            t.start()
            seen["t"] = t
            time.sleep(0.5)  # the woken client's query reaches mxkeys before the homeserver answers it

    sidecar.hs.on_identity_stored = announced
    assert c.post(CLIENT_PREFIX + "/logout", json={}).status_code == 200
    seen["t"].join(30)
    assert dev.device_id not in seen["q"]["device_keys"][user], "already gone when announced"


def test_a_failed_or_refused_removal_keeps_the_device(sidecar):
    user, dev, c = device_with_keys(sidecar)
    observer = sidecar.login()[2]
    sidecar.hs.fault("POST", r"/logout$", status=500, times=1)
    assert_error(c.post(CLIENT_PREFIX + "/logout", json={}), 500, "M_UNKNOWN")
    sidecar.hs.fault("POST", r"/logout$", drop=True, times=1)
    assert_error(c.post(CLIENT_PREFIX + "/logout", json={}), 502, "M_UNKNOWN")
    assert dev.device_id in query(observer, user)["device_keys"][user]
    assert c.post("/keys/upload", json={}).status_code == 200, "the token still works"


def test_a_removal_racing_claims_never_hands_out_a_removed_key(sidecar):
    user, dev, c = device_with_keys(sidecar, otks=100)
    claimers = [sidecar.login()[2] for _ in range(3)]
    stop = threading.Event()
    after = []  # (started after the logout's 200, what it got)
    done = {}

    def claim_loop(cl):
        while not stop.is_set():
            began = time.monotonic()
            got = claim(cl, user, dev.device_id)
            if "ok_at" in done and began > done["ok_at"]:
                after.append(got)

    threads = [threading.Thread(target=claim_loop, args=(cl,)) for cl in claimers]
    for t in threads:
        t.start()
    time.sleep(0.3)
    r = c.post(CLIENT_PREFIX + "/logout", json={})
    done["ok_at"] = time.monotonic()
    assert r.status_code == 200, r.text
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert after, "claims ran after the logout"
    assert all(got == {} for got in after), "a key of the removed device was handed out after its removal"


def test_deactivation_removes_everything(sidecar):
    user, dev, c = device_with_keys(sidecar)
    xs = CrossSigning(user)
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    r = c.post("/room_keys/version", json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                                            "auth_data": {"public_key": dev.curve25519}})
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    observer = sidecar.login()[2]
    r = c.post(CLIENT_PREFIX + "/account/deactivate", json={})
    r = c.post(CLIENT_PREFIX + "/account/deactivate", json={"auth": uia(r, user)})
    assert r.status_code == 200, r.text
    q = query(observer, user)
    assert q["device_keys"][user] == {} and user not in q["master_keys"]
    pg_versions = sidecar.server.pg.psql(f"SELECT count(*) FROM backup_versions WHERE user_id = '{user}' "
                                         f"AND NOT deleted")
    assert pg_versions == "0", f"backup version {version} is gone"


def test_revocation_reaches_another_instance(sidecar, start_server):
    user, dev, c = device_with_keys(sidecar)
    other = start_server(auth="homeserver", homeserver_url=sidecar.hs.url, token_cache_ms=60000)
    via_other = Client(other, c.token)
    sidecar.clients.append(via_other)
    assert via_other.post("/keys/upload", json={}).status_code == 200  # cached there for a minute
    assert c.post(CLIENT_PREFIX + "/logout", json={}).status_code == 200
    deadline = time.monotonic() + 5
    while via_other.post("/keys/upload", json={}).status_code == 200:
        assert time.monotonic() < deadline, "the other instance never dropped the revoked token"
        time.sleep(0.02)
    assert_error(via_other.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN")
    other.stop()


def test_display_names_come_from_the_homeserver(sidecar):
    user = sidecar.hs.register("dana" + str(time.time_ns() % 10**8))
    r = requests.post(sidecar.server.url + CLIENT_PREFIX + "/login", timeout=30, json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "pw",
        "initial_device_display_name": "Dana's phone"})
    assert r.status_code == 200, r.text
    device_id, token = r.json()["device_id"], r.json()["access_token"]
    c = Client(sidecar.server, token)
    sidecar.clients.append(c)
    dev = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys(display_name="ignored")}).status_code == 200
    observer = sidecar.login()[2]
    unsigned = query(observer, user)["device_keys"][user][device_id]["unsigned"]
    assert unsigned == {"device_display_name": "Dana's phone"}, "the homeserver's name wins"
    r = c.put(CLIENT_PREFIX + f"/devices/{device_id}", json={"display_name": "Dana's laptop"})
    assert r.status_code == 200, r.text
    assert query(observer, user)["device_keys"][user][device_id]["unsigned"]["device_display_name"] == \
        "Dana's laptop"


def test_device_list_finds_devices_removed_behind_mxkeys_back(sidecar):
    user, dev, c = device_with_keys(sidecar)
    _, gone, _ = device_with_keys(sidecar, user)
    observer = sidecar.login()[2]
    sidecar.hs.remove_device(user, gone.device_id)  # the homeserver's admin API, say
    assert gone.device_id in query(observer, user)["device_keys"][user], "not seen yet"
    r = c.get(CLIENT_PREFIX + "/devices")
    assert r.status_code == 200 and {d["device_id"] for d in r.json()["devices"]} == {dev.device_id}
    devices = query(observer, user)["device_keys"][user]
    assert gone.device_id not in devices and dev.device_id in devices
    assert claim(observer, user, gone.device_id) == {}


def test_a_soft_logout_reaches_the_client(sidecar):
    user, dev, c = sidecar.login()
    sidecar.hs.expire_token(c.token, soft_logout=True)
    body = assert_error(c.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is True
    user2, dev2, c2 = sidecar.login()
    sidecar.hs.expire_token(c2.token, soft_logout=False)
    assert assert_error(c2.post("/keys/upload", json={}), 401, "M_UNKNOWN_TOKEN").get("soft_logout") is not True


def test_device_paths_are_not_served_standalone(server, login):
    user, device, c = login(server)
    assert_error(c.post(CLIENT_PREFIX + "/logout", json={}), 404, "M_UNRECOGNIZED")
