"""The test homeserver itself (tesths.py): matrix-nio runs its scenarios against it directly, and the behaviours and
knobs mxkeys' sidecar tests rely on do what the module docstring says. No mxkeysd is involved.
"""
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import assert_error, free_port, wait_for

import nio_scenarios
from olmkeys import CrossSigning, Device, add_signature
from tesths import TestHomeserver

HERE = os.path.dirname(os.path.abspath(__file__))
V3 = "/_matrix/client/v3"
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


@pytest.fixture
def hs():
    server = TestHomeserver(server_name="localhost", remote_server_name="remote.test")
    yield server
    server.close()


def call(hs, method, path, token=None, json=None, params=None, timeout=10, headers=None, **kw):
    url = hs.url + (path if path.startswith(("/_matrix", "/.well-known")) else V3 + path)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, url, json=json, params=params, headers=headers, timeout=timeout, **kw)


class User:
    """A local user with one logged-in device and its libolm key material."""

    def __init__(self, hs, localpart, device_id=None):
        self.hs = hs
        self.user_id = hs.register(localpart)
        self.token, self.device_id = hs.login(self.user_id, device_id)
        self.device = Device(self.user_id, self.device_id)

    def call(self, method, path, **kw):
        return call(self.hs, method, path, self.token, **kw)

    def upload_device_keys(self, **extra):
        r = self.call("POST", "/keys/upload", json={"device_keys": self.device.device_keys(), **extra})
        assert r.status_code == 200, r.text
        return r.json()

    def sync(self, since=None, timeout_ms=0, **kw):
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        r = self.call("GET", "/sync", params=params, timeout=60, **kw)
        assert r.status_code == 200, r.text
        return r.json()


def shared_room(a, b, encrypted=True):
    """a creates a room, invites b, b joins; returns the room id."""
    body = {"invite": [b.user_id], "preset": "private_chat"}
    if encrypted:
        body["initial_state"] = [{"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
    r = a.call("POST", "/createRoom", json=body)
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    r = b.call("POST", f"/join/{room_id}")
    assert r.status_code == 200, r.text
    return room_id


def uia_password(user, session):
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": "pw", "session": session}


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e
        out["at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ---- matrix-nio scenarios, straight against the homeserver -------------------------------------------------------------


def test_nio_conversation_with_a_late_second_device(hs):
    res = asyncio.run(nio_scenarios.conversation(hs.url, hs))
    assert res["bob2_plaintext"] == res["sent"]
    assert res["alice_plaintext"] == res["reply"]
    assert res["bob2_undecryptable"] == [] and res["alice_undecryptable"] == []
    assert len(set(res["bob_devices"])) == 2
    # nio talks r0 with ?access_token=; both work
    assert any(r["path"].startswith("/_matrix/client/r0/sync?") and "access_token=" in r["path"]
               for r in hs.requests)


def test_nio_replenishes_one_time_keys_after_claims(hs):
    res = asyncio.run(nio_scenarios.replenish(hs.url, hs, claims=30))
    assert res["initial_count"] == res["max_keys"] == 50
    assert len(res["claimed"]) == len(set(res["claimed"])) == 30
    assert res["uploads_after_claims"] >= 1
    assert res["believed"] == res["real"] == 50
    assert hs.otk_counts(res["user"], res["device"]) == {"signed_curve25519": 50}


# ---- accounts, tokens, errors -----------------------------------------------------------------------------------------


def test_login_whoami_logout(hs):
    uid = hs.register("lena", password="secret")
    assert call(hs, "GET", "/login").json() == {"flows": [{"type": "m.login.password"}]}
    r = call(hs, "POST", "/login", json={"type": "m.login.password", "identifier": {"type": "m.id.user",
                                                                                    "user": "lena"},
                                         "password": "secret", "device_id": "MYDEVICE",
                                         "initial_device_display_name": "Lena's phone"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == uid and body["device_id"] == "MYDEVICE" and body["home_server"] == "localhost"
    tok = body["access_token"]
    assert tok.startswith("syt_")
    assert hs.devices[uid]["MYDEVICE"]["display_name"] == "Lena's phone"
    # legacy top-level "user" with a full user id; a generated device id
    r = call(hs, "POST", "/login", json={"type": "m.login.password", "user": uid, "password": "secret"})
    assert r.status_code == 200
    tok2, dev2 = r.json()["access_token"], r.json()["device_id"]
    assert dev2.isupper() and dev2.isalpha() and len(dev2) == 10
    assert_error(call(hs, "POST", "/login", json={"type": "m.login.password", "user": "lena", "password": "x"}),
                 403, "M_FORBIDDEN")
    assert_error(call(hs, "POST", "/login", json={"type": "m.login.password", "user": "nobody", "password": "x"}),
                 403, "M_FORBIDDEN")
    # whoami by header, by query parameter, and on the r0 prefix
    assert call(hs, "GET", "/account/whoami", tok).json() == {"user_id": uid, "device_id": "MYDEVICE",
                                                              "is_guest": False}
    r = requests.get(hs.url + "/_matrix/client/r0/account/whoami", params={"access_token": tok2}, timeout=10)
    assert r.json()["device_id"] == dev2
    # logout removes the device and its token
    assert call(hs, "POST", "/logout", tok, json={}).status_code == 200
    body = assert_error(call(hs, "GET", "/account/whoami", tok), 401, "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is False
    assert "MYDEVICE" not in hs.devices[uid]
    t3, _ = hs.login(uid)
    assert call(hs, "POST", "/logout/all", t3, json={}).status_code == 200
    assert_error(call(hs, "GET", "/account/whoami", tok2), 401, "M_UNKNOWN_TOKEN")
    assert hs.devices[uid] == {}


def test_expired_tokens_answer_soft_logout(hs):
    u = User(hs, "sleepy")
    hs.expire_token(u.token)
    body = assert_error(u.call("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is True
    assert_error(u.call("GET", "/sync"), 401, "M_UNKNOWN_TOKEN")
    t2, _ = hs.login(u.user_id)
    hs.expire_token(t2, soft_logout=False)
    assert assert_error(call(hs, "GET", "/account/whoami", t2), 401, "M_UNKNOWN_TOKEN")["soft_logout"] is False
    assert u.device_id in hs.devices[u.user_id], "an expired token leaves its device"


def test_errors_are_matrix_errors(hs):
    u = User(hs, "errs")
    assert_error(call(hs, "GET", "/account/whoami"), 401, "M_MISSING_TOKEN")
    assert_error(call(hs, "GET", "/account/whoami", "syt_bogus"), 401, "M_UNKNOWN_TOKEN")
    assert_error(u.call("GET", "/no/such/thing"), 404, "M_UNRECOGNIZED")
    assert_error(call(hs, "GET", "/_matrix/client/v9/sync"), 404, "M_UNRECOGNIZED")
    assert_error(u.call("GET", "/keys/upload"), 405, "M_UNRECOGNIZED")
    assert_error(u.call("POST", "/keys/upload", data=b"{nope", headers={"Content-Type": "application/json"}),
                 400, "M_NOT_JSON")
    assert_error(u.call("POST", "/keys/query", json=[1]), 400, "M_BAD_JSON")
    assert_error(u.call("GET", "/keys/changes", params={"from": "s0"}), 400, "M_MISSING_PARAM")
    assert_error(u.call("GET", "/keys/changes", params={"from": "mxk_dl_1", "to": "s1"}), 400, "M_INVALID_PARAM")
    assert_error(call(hs, "POST", "/register", json={}), 403, "M_FORBIDDEN")
    versions = call(hs, "GET", "/_matrix/client/versions").json()
    assert "v1.11" in versions["versions"] and versions["unstable_features"]["org.matrix.simplified_msc3575"]
    assert u.call("GET", "/capabilities").json()["capabilities"]["m.room_versions"]["default"] == "10"


# ---- devices and user-interactive auth ----------------------------------------------------------------------------------


def test_device_deletion_with_uia_drops_keys_and_is_announced(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    shared_room(alice, bob)
    bob.upload_device_keys(one_time_keys=bob.device.one_time_keys(3))
    bob2_token, bob2_dev = hs.login(bob.user_id, "BOBTWO", "laptop")
    d = bob.call("GET", "/devices").json()["devices"]
    assert {x["device_id"] for x in d} == {bob.device_id, "BOBTWO"}
    assert bob.call("GET", "/devices/BOBTWO").json()["display_name"] == "laptop"
    assert bob.call("PUT", "/devices/BOBTWO", json={"display_name": "old laptop"}).status_code == 200
    assert hs.devices[bob.user_id]["BOBTWO"]["display_name"] == "old laptop"
    assert_error(bob.call("GET", "/devices/NOPE"), 404, "M_NOT_FOUND")
    since = alice.sync()["next_batch"]
    seen = []
    hs.on_identity_stored = lambda user, kind: seen.append((user, kind, bob.device_id in hs.devices[bob.user_id]))

    # DELETE /devices/{id}: 401 with flows, params, session; a wrong password keeps the session; then it works
    r = call(hs, "DELETE", f"/devices/{bob.device_id}", bob2_token, json={})
    assert r.status_code == 401
    uia = r.json()
    assert uia["flows"] == [{"stages": ["m.login.password"]}] and uia["params"] == {} and uia["session"]
    bad = dict(uia_password(bob, uia["session"]), password="wrong")
    r = call(hs, "DELETE", f"/devices/{bob.device_id}", bob2_token, json={"auth": bad})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN" and r.json()["session"] == uia["session"]
    r = call(hs, "DELETE", f"/devices/{bob.device_id}", bob2_token, json={"auth": uia_password(bob, uia["session"])})
    assert r.status_code == 200, r.text
    assert seen == [(bob.user_id, "device_removed", False)]
    assert_error(bob.call("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert bob.device_id not in hs.device_keys.get(bob.user_id, {})
    assert (bob.user_id, bob.device_id) not in hs.one_time_keys
    q = alice.call("POST", "/keys/query", json={"device_keys": {bob.user_id: []}}).json()
    assert q["device_keys"][bob.user_id] == {}
    s = alice.sync(since)
    assert bob.user_id in s["device_lists"]["changed"]
    assert bob.user_id in alice.call("GET", "/keys/changes", params={"from": since, "to": s["next_batch"]}
                                     ).json()["changed"]

    # POST /delete_devices, the same dance; a session is bound to its operation
    t3, _ = hs.login(bob.user_id, "BOBTHREE")
    r = call(hs, "POST", "/delete_devices", t3, json={"devices": ["BOBTWO"]})
    assert r.status_code == 401
    sess = r.json()["session"]
    assert_error(call(hs, "POST", "/account/deactivate", t3, json={"auth": uia_password(bob, sess)}),
                 403, "M_FORBIDDEN")
    r = call(hs, "POST", "/delete_devices", t3, json={"devices": ["BOBTWO"], "auth": uia_password(bob, sess)})
    assert r.status_code == 200, r.text
    assert set(hs.devices[bob.user_id]) == {"BOBTHREE"}
    assert_error(call(hs, "GET", "/account/whoami", bob2_token), 401, "M_UNKNOWN_TOKEN")


def test_deactivate_needs_uia(hs):
    u = User(hs, "leaving")
    r = u.call("POST", "/account/deactivate", json={})
    assert r.status_code == 401
    r = u.call("POST", "/account/deactivate", json={"auth": uia_password(u, r.json()["session"])})
    assert r.status_code == 200, r.text
    assert_error(u.call("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert_error(call(hs, "POST", "/login", json={"type": "m.login.password", "user": "leaving", "password": "pw"}),
                 403, "M_USER_DEACTIVATED")


def test_cross_signing_upload_uia_replace_only(hs):
    u = User(hs, "xs")
    cs = CrossSigning(u.user_id)
    seen = []
    hs.on_identity_stored = lambda user, kind: seen.append((user, kind))
    since = u.sync()["next_batch"]
    # the first upload needs no auth
    assert u.call("POST", "/keys/device_signing/upload", json=cs.upload_body()).status_code == 200
    assert seen == [(u.user_id, "cross_signing")]
    assert hs.cross_signing_keys[u.user_id]["master"] == cs.key_object("master")
    assert u.user_id in u.sync(since)["device_lists"]["changed"]
    # the same keys again: 200 without auth, nothing announced
    assert u.call("POST", "/keys/device_signing/upload", json=cs.upload_body()).status_code == 200
    assert len(seen) == 1
    # a replacement needs UIA; the 401 leaves the stored keys alone
    cs2 = CrossSigning(u.user_id)
    r = u.call("POST", "/keys/device_signing/upload", json=cs2.upload_body())
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    assert hs.cross_signing_keys[u.user_id]["master"] == cs.key_object("master")
    r = u.call("POST", "/keys/device_signing/upload", json={**cs2.upload_body(),
                                                           "auth": uia_password(u, r.json()["session"])})
    assert r.status_code == 200, r.text
    q = u.call("POST", "/keys/query", json={"device_keys": {u.user_id: []}}).json()
    assert q["master_keys"][u.user_id]["keys"] == cs2.key_object("master")["keys"]
    assert q["self_signing_keys"][u.user_id]["keys"] == cs2.key_object("self_signing")["keys"]
    assert q["user_signing_keys"][u.user_id]["keys"] == cs2.key_object("user_signing")["keys"]
    # a self-signing key not signed by the master key is refused
    bad = cs2.upload_body()
    bad["self_signing_key"] = CrossSigning(u.user_id).key_object("self_signing", CrossSigning(u.user_id).master)
    r = u.call("POST", "/keys/device_signing/upload", json={"self_signing_key": bad["self_signing_key"]})
    assert r.status_code == 401  # a replacement: UIA first
    r = u.call("POST", "/keys/device_signing/upload", json={"self_signing_key": bad["self_signing_key"],
                                                           "auth": uia_password(u, r.json()["session"])})
    assert_error(r, 400, "M_INVALID_SIGNATURE")


def test_cross_signing_upload_uia_always(hs):
    hs.xsign_uia = "always"
    u = User(hs, "xs167")
    cs = CrossSigning(u.user_id)
    r = u.call("POST", "/keys/device_signing/upload", json=cs.upload_body())
    assert r.status_code == 401
    assert u.user_id not in hs.cross_signing_keys
    r = u.call("POST", "/keys/device_signing/upload", json={**cs.upload_body(),
                                                           "auth": uia_password(u, r.json()["session"])})
    assert r.status_code == 200
    assert u.call("POST", "/keys/device_signing/upload", json=cs.upload_body()).status_code == 401


def test_signatures_upload(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    alice.upload_device_keys()
    acs, bcs = CrossSigning(alice.user_id), CrossSigning(bob.user_id)
    assert alice.call("POST", "/keys/device_signing/upload", json=acs.upload_body()).status_code == 200
    assert bob.call("POST", "/keys/device_signing/upload", json=bcs.upload_body()).status_code == 200
    seen = []
    hs.on_identity_stored = lambda user, kind: seen.append((user, kind))
    dk = alice.device.device_keys()
    signed_dev = add_signature(dk, alice.user_id, acs.self_signing)
    amaster = acs.key_object("master")
    apub = amaster["keys"]["ed25519:" + acs.master.public_key]
    signed_master = add_signature(amaster, alice.user_id, device=alice.device)
    forged = add_signature(dk, alice.user_id, CrossSigning(alice.user_id).self_signing)
    forged["signatures"][alice.user_id] = {f"ed25519:{acs.self_signing.public_key}":
                                           forged["signatures"][alice.user_id].popitem()[1]}
    r = alice.call("POST", "/keys/signatures/upload", json={alice.user_id: {
        alice.device_id: signed_dev, apub: signed_master, "NOSUCHDEVICE": signed_dev}})
    assert r.status_code == 200
    fails = r.json()["failures"]
    assert list(fails) == [alice.user_id] and list(fails[alice.user_id]) == ["NOSUCHDEVICE"]
    assert fails[alice.user_id]["NOSUCHDEVICE"]["errcode"] == "M_NOT_FOUND"
    assert seen == [(alice.user_id, "signatures")]
    ssk_id = f"ed25519:{acs.self_signing.public_key}"
    assert hs.signatures[(alice.user_id, alice.device_id)][alice.user_id] == {
        ssk_id: signed_dev["signatures"][alice.user_id][ssk_id]}
    q = bob.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert ssk_id in q["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert alice.device.signer in q["master_keys"][alice.user_id]["signatures"][alice.user_id]
    # a bad signature, a refused entry
    r = alice.call("POST", "/keys/signatures/upload", json={alice.user_id: {alice.device_id: forged}})
    assert r.json()["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    hs.refuse_signature(bob.user_id, bcs.master.public_key, "M_FORBIDDEN", "no thanks")
    bmaster = add_signature(bcs.key_object("master"), alice.user_id, acs.user_signing)
    r = alice.call("POST", "/keys/signatures/upload", json={bob.user_id: {bcs.master.public_key: bmaster}})
    assert r.json()["failures"] == {bob.user_id: {bcs.master.public_key: {"errcode": "M_FORBIDDEN",
                                                                          "error": "no thanks"}}}
    assert (bob.user_id, bcs.master.public_key) not in hs.signatures
    # without the refusal, alice's user-signing signature on bob's master key is stored, visible to alice only
    hs.signature_refusals.clear()
    r = alice.call("POST", "/keys/signatures/upload", json={bob.user_id: {bcs.master.public_key: bmaster}})
    assert r.json()["failures"] == {}
    usk_id = f"ed25519:{acs.user_signing.public_key}"
    qa = alice.call("POST", "/keys/query", json={"device_keys": {bob.user_id: []}}).json()
    qb = bob.call("POST", "/keys/query", json={"device_keys": {bob.user_id: []}}).json()
    assert usk_id in qa["master_keys"][bob.user_id]["signatures"][alice.user_id]
    assert alice.user_id not in qb["master_keys"][bob.user_id].get("signatures", {})


# ---- keys -------------------------------------------------------------------------------------------------------------


def test_upload_counts_claim_fifo_then_fallback(hs):
    carol, dave = User(hs, "carol"), User(hs, "dave")
    otks = carol.device.one_time_keys(3)
    fb = carol.device.fallback_keys()
    r = carol.upload_device_keys(one_time_keys=otks, fallback_keys=fb)
    assert r == {"one_time_key_counts": {"signed_curve25519": 3}}
    # one-time keys are unique per id: the same again is fine, a different key under a used id is not
    assert carol.call("POST", "/keys/upload", json={"one_time_keys": otks}).json()["one_time_key_counts"] == \
        {"signed_curve25519": 3}
    kid = next(iter(otks))
    assert_error(carol.call("POST", "/keys/upload", json={"one_time_keys": {kid: {"key": "other"}}}),
                 400, "M_INVALID_PARAM")
    # keys of another device or user are refused
    other = Device(carol.user_id, "OTHERDEV").device_keys()
    assert_error(carol.call("POST", "/keys/upload", json={"device_keys": other}), 400, "M_INVALID_PARAM")
    assert_error(dave.call("POST", "/keys/upload", json={"device_keys": carol.device.device_keys()}),
                 400, "M_INVALID_PARAM")
    s = carol.sync()
    assert s["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert s["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert s["org.matrix.msc2732.device_unused_fallback_key_types"] == ["signed_curve25519"]
    claim = {"one_time_keys": {carol.user_id: {carol.device_id: "signed_curve25519"}}}
    got = []
    for _ in range(5):
        r = dave.call("POST", "/keys/claim", json=claim).json()
        assert r["failures"] == {}
        got.append(r["one_time_keys"][carol.user_id][carol.device_id])
    assert [next(iter(g)) for g in got[:3]] == list(otks), "one-time keys are handed out in upload order"
    assert got[3] == got[4] == fb, "then the fallback key, every time"
    s = carol.sync(s["next_batch"])
    assert s["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert s["device_unused_fallback_key_types"] == []
    # a new fallback key is unused again
    carol.call("POST", "/keys/upload", json={"fallback_keys": carol.device.fallback_keys()})
    assert hs.unused_fallback_key_types(carol.user_id, carol.device_id) == ["signed_curve25519"]
    # unknown devices give nothing
    r = dave.call("POST", "/keys/claim", json={"one_time_keys": {carol.user_id: {"NODEV": "signed_curve25519"}}})
    assert r.json() == {"one_time_keys": {}, "failures": {}}


def test_remote_users_in_query_and_claim(hs):
    u = User(hs, "local")
    remote = Device("@rita:remote.test", "RITADEV")
    rcs = CrossSigning("@rita:remote.test")
    otks = list(remote.one_time_keys(2).items())
    fb = next(iter(remote.fallback_keys().items()))
    hs.add_remote_device("@rita:remote.test", "RITADEV", remote.device_keys(), one_time_keys=otks, fallback_key=fb)
    hs.add_remote_cross_signing("@rita:remote.test", rcs.key_object("master"),
                                rcs.key_object("self_signing", rcs.master))
    q = u.call("POST", "/keys/query", json={"device_keys": {"@rita:remote.test": [], "@ghost:remote.test": [],
                                                            "@x:elsewhere.test": [], u.user_id: []}}).json()
    assert q["device_keys"]["@rita:remote.test"] == {"RITADEV": remote.device_keys()}
    assert q["device_keys"]["@ghost:remote.test"] == {}
    assert q["device_keys"][u.user_id] == {}
    assert q["master_keys"]["@rita:remote.test"] == rcs.key_object("master")
    assert "@rita:remote.test" in q["self_signing_keys"]
    assert set(q["failures"]) == {"elsewhere.test"} and q["failures"]["elsewhere.test"]["status"] == 503
    claim = {"one_time_keys": {"@rita:remote.test": {"RITADEV": "signed_curve25519"},
                               "@y:elsewhere.test": {"D": "signed_curve25519"}}}
    answers = [u.call("POST", "/keys/claim", json=claim).json() for _ in range(4)]
    keys = [a["one_time_keys"]["@rita:remote.test"]["RITADEV"] for a in answers]
    assert keys == [dict([otks[0]]), dict([otks[1]]), dict([fb]), dict([fb])]
    assert all(set(a["failures"]) == {"elsewhere.test"} for a in answers)


def test_device_list_announcement_wakes_a_held_sync(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    room = shared_room(alice, bob)
    since = alice.sync()["next_batch"]
    at_callback = []

    def on_stored(user, kind):
        # the announcement is already visible when the callback runs: the stream has it, the keys are stored
        at_callback.append((user, kind, bob.device_id in hs.device_keys.get(user, {}),
                            user in hs.device_list_changes(alice.user_id, since)[0]))

    hs.on_identity_stored = on_stored
    t, out = in_thread(lambda: alice.sync(since, timeout_ms=20000))
    time.sleep(0.5)
    assert "value" not in out, "the sync must be held while nothing happens"
    t0 = time.monotonic()
    bob.upload_device_keys()
    t.join(10)
    assert out["value"]["device_lists"]["changed"] == [bob.user_id]
    assert out["at"] - t0 < 1.0, "the held sync must wake at once"
    assert at_callback == [(bob.user_id, "device_keys", True, True)]
    s1 = out["value"]["next_batch"]
    # the same keys again: no announcement; changed keys: announced
    bob.upload_device_keys()
    assert hs.device_list_changes(alice.user_id, s1) == ([], [])
    bob.device = Device(bob.user_id, bob.device_id)
    bob.upload_device_keys()
    s2 = alice.sync(s1)
    assert s2["device_lists"]["changed"] == [bob.user_id]
    ch = alice.call("GET", "/keys/changes", params={"from": since, "to": s2["next_batch"]}).json()
    assert ch == {"changed": [bob.user_id], "left": []}
    assert alice.call("GET", "/keys/changes", params={"from": s2["next_batch"], "to": s2["next_batch"]}).json() == \
        {"changed": [], "left": []}
    # a third user who starts sharing a room appears in changed; a user who stops sharing, in left
    carol = User(hs, "carol")
    r = alice.call("POST", f"/rooms/{room}/invite", json={"user_id": carol.user_id})
    assert r.status_code == 200
    assert carol.call("POST", f"/rooms/{room}/join").status_code == 200
    s3 = alice.sync(s2["next_batch"])
    assert s3["device_lists"]["changed"] == [carol.user_id]
    assert bob.call("POST", f"/rooms/{room}/leave").status_code == 200
    s4 = alice.sync(s3["next_batch"])
    assert s4["device_lists"]["left"] == [bob.user_id]
    assert room in bob.sync(s3["next_batch"])["rooms"]["leave"]
    # a user who shares no room is not told about bob any more
    bob.device = Device(bob.user_id, bob.device_id)
    bob.upload_device_keys()
    assert alice.sync(s4["next_batch"])["device_lists"]["changed"] == []
    # a new device's login is announced to the user themself
    s5 = bob.sync()["next_batch"]
    hs.login(bob.user_id)
    assert bob.sync(s5)["device_lists"]["changed"] == [bob.user_id]


def test_sync_rooms_to_device_and_account_data(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    r = alice.call("POST", "/createRoom", json={"invite": [bob.user_id], "is_direct": True, "name": "chat",
                                                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                                                   "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]})
    room = r.json()["room_id"]
    s = bob.sync()
    inv = s["rooms"]["invite"][room]["invite_state"]["events"]
    assert {e["type"] for e in inv} >= {"m.room.create", "m.room.encryption", "m.room.member", "m.room.name"}
    mine = [e for e in inv if e["type"] == "m.room.member" and e["state_key"] == bob.user_id][0]
    assert mine["content"] == {"membership": "invite", "displayname": "bob", "is_direct": True}
    bob.call("POST", f"/rooms/{room}/join")
    s = bob.sync(s["next_batch"])
    j = s["rooms"]["join"][room]
    # the whole (short) history fits the timeline, so "state" (the state before the timeline) is empty
    assert j["state"]["events"] == [] and j["timeline"]["limited"] is False
    types = [e["type"] for e in j["timeline"]["events"]]
    assert types[0] == "m.room.create" and {"m.room.encryption", "m.room.power_levels"} <= set(types)
    assert j["timeline"]["events"][-1]["type"] == "m.room.member"
    assert j["summary"]["m.joined_member_count"] == 2
    jm = bob.call("GET", f"/rooms/{room}/joined_members").json()["joined"]
    assert set(jm) == {alice.user_id, bob.user_id} and jm[alice.user_id]["display_name"] == "alice"
    assert len(bob.call("GET", f"/rooms/{room}/members").json()["chunk"]) == 2
    # sends are idempotent per transaction id
    e1 = alice.call("PUT", f"/rooms/{room}/send/m.room.message/t1", json={"msgtype": "m.text", "body": "hi"}).json()
    e2 = alice.call("PUT", f"/rooms/{room}/send/m.room.message/t1", json={"msgtype": "m.text", "body": "hi"}).json()
    assert e1 == e2
    assert alice.call("PUT", f"/rooms/{room}/state/m.room.topic", json={"topic": "t"}).status_code == 200
    s = bob.sync(s["next_batch"])
    tl = s["rooms"]["join"][room]["timeline"]["events"]
    assert [e["type"] for e in tl] == ["m.room.message", "m.room.topic"] and tl[0]["event_id"] == e1["event_id"]
    # to-device: to one device and to "*", delivered until the device syncs past them
    bob2_tok, bob2 = hs.login(bob.user_id, "BOB2")
    msgs = {"messages": {bob.user_id: {"*": {"n": 1}}}}
    assert alice.call("PUT", "/sendToDevice/m.test/tx1", json=msgs).status_code == 200
    assert alice.call("PUT", "/sendToDevice/m.test/tx1", json=msgs).status_code == 200  # same txn: once
    alice.call("PUT", "/sendToDevice/m.test/tx2", json={"messages": {bob.user_id: {"BOB2": {"n": 2}}}})
    a = bob.sync(s["next_batch"])
    assert a["to_device"]["events"] == [{"sender": alice.user_id, "type": "m.test", "content": {"n": 1}}]
    again = bob.sync(s["next_batch"])  # not acknowledged yet: delivered again
    assert again["to_device"]["events"] == a["to_device"]["events"]
    assert bob.sync(a["next_batch"])["to_device"]["events"] == []
    b = call(hs, "GET", "/sync", bob2_tok).json()
    assert [e["content"]["n"] for e in b["to_device"]["events"]] == [1, 2]
    # account data, filters, push rules, profile
    bob.call("PUT", f"/user/{bob.user_id}/account_data/m.direct", json={alice.user_id: [room]})
    assert bob.call("GET", f"/user/{bob.user_id}/account_data/m.direct").json() == {alice.user_id: [room]}
    assert_error(bob.call("GET", f"/user/{bob.user_id}/account_data/none"), 404, "M_NOT_FOUND")
    ad = bob.sync(a["next_batch"])["account_data"]["events"]
    assert ad == [{"type": "m.direct", "content": {alice.user_id: [room]}}]
    fid = bob.call("POST", f"/user/{bob.user_id}/filter", json={"room": {"timeline": {"limit": 5}}}).json()["filter_id"]
    assert bob.call("GET", f"/user/{bob.user_id}/filter/{fid}").json() == {"room": {"timeline": {"limit": 5}}}
    assert bob.call("GET", "/pushrules/").json()["global"]["override"] == []
    assert call(hs, "GET", f"/profile/{alice.user_id}").json() == {"displayname": "alice"}
    assert call(hs, "GET", f"/profile/{alice.user_id}/displayname").json() == {"displayname": "alice"}
    assert_error(call(hs, "GET", "/profile/@nobody:localhost"), 404, "M_NOT_FOUND")
    # the sender's own device sees its transaction id
    own = alice.sync()["rooms"]["join"][room]["timeline"]["events"]
    assert any(e.get("unsigned", {}).get("transaction_id") == "t1" for e in own)


def test_limited_timelines_carry_the_state_before_them(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    room = shared_room(alice, bob)
    since = bob.sync()["next_batch"]
    for i in range(hs.timeline_limit + 5):
        alice.call("PUT", f"/rooms/{room}/send/m.room.message/m{i}", json={"msgtype": "m.text", "body": str(i)})
    s = bob.sync(since)["rooms"]["join"][room]
    assert s["timeline"]["limited"] is True and len(s["timeline"]["events"]) == hs.timeline_limit
    assert s["timeline"]["events"][-1]["content"]["body"] == str(hs.timeline_limit + 4)
    assert s["state"]["events"] == [] and s["timeline"]["prev_batch"].startswith("s")
    # a user joining now gets the room's whole state before a limited timeline
    carol = User(hs, "carol")
    alice.call("POST", f"/rooms/{room}/invite", json={"user_id": carol.user_id})
    carol.call("POST", f"/rooms/{room}/join")
    j = carol.sync()["rooms"]["join"][room]
    assert j["timeline"]["limited"] is True
    assert {"m.room.create", "m.room.encryption", "m.room.power_levels"} <= {e["type"] for e in j["state"]["events"]}
    members = {e["state_key"]: e["content"]["membership"] for e in j["state"]["events"] + j["timeline"]["events"]
               if e["type"] == "m.room.member"}
    assert members == {alice.user_id: "join", bob.user_id: "join", carol.user_id: "join"}
    older = carol.call("GET", f"/rooms/{room}/messages", params={"from": j["timeline"]["prev_batch"], "dir": "b",
                                                                  "limit": "3"}).json()
    assert len(older["chunk"]) == 3 and older["chunk"][0]["event_id"] != j["timeline"]["events"][0]["event_id"]
    # Synapse's habit of leaving out empty sections, on demand
    hs.sync_omit_empty = True
    quiet = carol.sync(carol.sync()["next_batch"])
    assert set(quiet) == {"next_batch", "device_one_time_keys_count", "device_unused_fallback_key_types",
                          "org.matrix.msc2732.device_unused_fallback_key_types"}


def test_sliding_sync_e2ee_and_to_device(hs):
    alice, bob = User(hs, "alice"), User(hs, "bob")
    room = shared_room(alice, bob)
    alice.upload_device_keys(one_time_keys=alice.device.one_time_keys(4), fallback_keys=alice.device.fallback_keys())
    body = {"lists": {"all": {"range": [0, 9], "timeline_limit": 5, "required_state": [["*", "*"]]}},
            "extensions": {"e2ee": {"enabled": True}, "to_device": {"enabled": True}}}
    r = alice.call("POST", SS, json=body)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["lists"]["all"]["count"] == 1
    assert first["rooms"][room]["initial"] is True and first["rooms"][room]["membership"] == "join"
    assert any(e["type"] == "m.room.encryption" for e in first["rooms"][room]["required_state"])
    e2ee = first["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert e2ee["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert "device_lists" not in e2ee
    # held while nothing happens; bob's new keys wake it with bob in device_lists.changed (extensions are sticky)
    t, out = in_thread(lambda: alice.call("POST", SS, params={"pos": first["pos"], "timeout": "20000"},
                                          json={"lists": body["lists"]}, timeout=30))
    time.sleep(0.5)
    assert "value" not in out
    t0 = time.monotonic()
    bob.upload_device_keys()
    t.join(10)
    second = out["value"].json()
    assert out["at"] - t0 < 1.0
    assert second["extensions"]["e2ee"]["device_lists"] == {"changed": [bob.user_id], "left": []}
    assert second["extensions"]["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert second["pos"] != first["pos"]
    # to-device through the extension, acknowledged by its since token
    bob.call("PUT", "/sendToDevice/m.test/x", json={"messages": {alice.user_id: {alice.device_id: {"v": 1}}}})
    third = alice.call("POST", SS, params={"pos": second["pos"], "timeout": "5000"}, json={"lists": body["lists"]}
                       ).json()
    td = third["extensions"]["to_device"]
    assert td["events"] == [{"sender": bob.user_id, "type": "m.test", "content": {"v": 1}}]
    fourth = alice.call("POST", SS, params={"pos": third["pos"]},
                        json={"extensions": {"to_device": {"since": td["next_batch"]}}}).json()
    assert fourth["extensions"]["to_device"]["events"] == []
    assert fourth["extensions"]["e2ee"]["device_lists"] == {"changed": [], "left": []}
    assert_error(alice.call("POST", SS, params={"pos": "bogus"}, json={}), 400, "M_UNKNOWN_POS")


# ---- knobs: faults, padding, framing, keep-alive ----------------------------------------------------------------------


def test_faults(hs):
    u = User(hs, "faulty")
    f = hs.fault("GET", r"/account/whoami$", status=502, body=b"<html>bad gateway</html>", times=1,
                 headers={"Retry-After": "3"})
    r = u.call("GET", "/account/whoami")
    assert r.status_code == 502 and r.text == "<html>bad gateway</html>" and r.headers["Retry-After"] == "3"
    assert u.call("GET", "/account/whoami").status_code == 200, "times=1: only the first request"
    assert f.hits == 1
    hs.fault("POST", r"/keys/query$", status=429, body={"errcode": "M_LIMIT_EXCEEDED", "error": "slow",
                                                         "retry_after_ms": 10})
    assert_error(u.call("POST", "/keys/query", json={"device_keys": {}}), 429, "M_LIMIT_EXCEEDED")
    hs.clear_faults()
    hs.fault(None, r"/keys/query$", status=500, chunked=True)
    r = u.call("POST", "/keys/query", json={"device_keys": {}})
    assert_error(r, 500, "M_UNKNOWN")
    assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
    hs.clear_faults()
    # delay before the normal answer
    hs.fault("GET", r"/sync$", delay=0.6, times=1)
    t0 = time.monotonic()
    assert u.call("GET", "/sync").status_code == 200
    assert time.monotonic() - t0 >= 0.6
    # drop: the connection closes without an answer
    hs.fault("GET", r"/account/whoami$", drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        u.call("GET", "/account/whoami")
    # hang: no answer until the client goes away; the server is fine afterwards
    hang = hs.fault("GET", r"/sync$", hang=True, times=1)
    t0 = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        u.call("GET", "/sync", timeout=0.8)
    assert hang.hits == 1 and time.monotonic() - t0 < 3
    assert u.call("GET", "/sync").status_code == 200
    # every request is recorded, faulted or not, with lower-case headers and the body
    paths = [r["path"] for r in hs.requests]
    assert sum(p.endswith("/account/whoami") for p in paths) == 3
    q = [r for r in hs.requests if r["path"].endswith("/keys/query")][0]
    assert q["method"] == "POST" and json.loads(q["body"]) == {"device_keys": {}}
    assert q["headers"]["authorization"] == f"Bearer {u.token}"


def _raw_get(hs, path, token, timeout=60):
    """GET over a raw socket; returns (status line, headers dict, body bytes) decoding chunked framing by hand."""
    s = socket.create_connection(("127.0.0.1", hs.port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    f = s.makefile("rb")
    status = f.readline().decode().strip()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int(f.readline().strip(), 16)
            if size == 0:
                f.readline()
                break
            parts.append(f.read(size))
            f.readline()
        body = b"".join(parts)
    else:
        body = f.read(int(headers["content-length"]))
    s.close()
    return status, headers, body


def test_padding_of_50_mb_with_both_framings(hs):
    u = User(hs, "big")
    u.upload_device_keys(one_time_keys=u.device.one_time_keys(2))
    hs.sync_padding(50 * 1024 * 1024)
    status, headers, body = _raw_get(hs, V3 + "/sync", u.token)
    assert status.endswith("200 OK") and "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(body) >= 50 * 1024 * 1024
    s = json.loads(body)
    assert len(s["rooms"]["join"]["!padding:localhost"]["timeline"]["events"]) > 40000
    assert s["device_one_time_keys_count"] == {"signed_curve25519": 2}
    assert body.index(b'"device_one_time_keys_count"') < body.index(b'"rooms"'), "Synapse's order"
    hs.sync_chunked = True
    hs.sync_counts_last = True
    status, headers, body = _raw_get(hs, V3 + "/sync?since=" + s["next_batch"], u.token)
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert len(body) >= 50 * 1024 * 1024
    assert body.index(b'"device_one_time_keys_count"') > len(body) - 1000, "the counts come after the padding"
    s2 = json.loads(body)
    assert s2["device_one_time_keys_count"] == {"signed_curve25519": 2} and "!padding:localhost" in s2["rooms"]["join"]
    hs.sync_padding(0)
    hs.sync_chunked = False
    assert "!padding:localhost" not in u.sync()["rooms"]["join"]


def test_keep_alive_and_content_length_everywhere(hs):
    u = User(hs, "keep")
    conn = http.client.HTTPConnection("127.0.0.1", hs.port, timeout=10)
    socks = set()
    for path, want in [("/account/whoami", 200), ("/nope", 404), ("/sync", 200), ("/keys/upload", 405)]:
        conn.request("GET", V3 + path, headers={"Authorization": f"Bearer {u.token}"})
        r = conn.getresponse()
        data = r.read()
        assert r.status == want
        assert int(r.getheader("Content-Length")) == len(data)
        assert r.getheader("Content-Type") == "application/json"
        json.loads(data)
        socks.add(id(conn.sock))
    assert len(socks) == 1 and len(hs._conns) == 1, "one connection served every request"
    conn.close()
    # a held long-poll does not block other connections (one thread per connection)
    since = u.sync()["next_batch"]
    t, out = in_thread(lambda: u.sync(since, timeout_ms=1500))
    t0 = time.monotonic()
    assert u.call("GET", "/account/whoami").status_code == 200
    assert time.monotonic() - t0 < 0.5
    t.join(5)
    assert out["value"]["next_batch"] == since and 1.4 < out["at"] - t0 < 3


def test_runnable_from_the_command_line():
    port = free_port()
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "tesths.py"), "--port", str(port), "--server-name",
                          "cli.test", "--user", "zed:pw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return requests.get(url + "/_matrix/client/versions", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 15, "tesths to answer")
        r = requests.post(url + V3 + "/login", json={"type": "m.login.password", "user": "zed", "password": "pw"},
                          timeout=5)
        assert r.status_code == 200 and r.json()["user_id"] == "@zed:cli.test"
    finally:
        p.terminate()
        p.communicate(timeout=10)
