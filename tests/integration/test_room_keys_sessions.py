"""Server-side key backup: versions, sessions at three levels, the replacement rule, exact etag/count."""
import json
import threading
from urllib.parse import quote

import olm
import pytest
import requests
from conftest import assert_error

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def new_version(c, auth_data=None):
    if auth_data is None:
        auth_data = {"public_key": olm.PkDecryption().public_key}
    r = c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": auth_data})
    assert r.status_code == 200, r.text
    return r.json()["version"]


def key(index=0, forwarded=0, verified=False, data=None):
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": data if data is not None else {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


def keys_path(room=None, session=None):
    # ids go in the path percent-encoded (megolm session ids contain '/' and '+')
    return "/room_keys/keys" + (f"/{quote(room, safe='')}" if room else "") + \
        (f"/{quote(session, safe='')}" if session else "")


def put(c, version, body, room=None, session=None):
    return c.put(keys_path(room, session), params={"version": version}, json=body)


def test_version_lifecycle_and_numbering(server, login):
    _, _, c = login(server)
    assert_error(c.get("/room_keys/version"), 404, "M_NOT_FOUND")
    v1 = new_version(c)
    assert v1 == "1"
    cur = c.get("/room_keys/version").json()
    assert cur["version"] == "1" and cur["algorithm"] == ALG and cur["count"] == 0 and isinstance(cur["etag"], str)
    assert set(cur) == {"algorithm", "auth_data", "count", "etag", "version"}
    v2 = new_version(c)
    assert v2 == "2" and c.get("/room_keys/version").json()["version"] == "2"
    assert c.get("/room_keys/version/1").json()["version"] == "1"
    assert c.delete("/room_keys/version/2").status_code == 200
    assert c.get("/room_keys/version").json()["version"] == "1"
    assert c.delete("/room_keys/version/2").status_code == 200  # already deleted: fine
    assert_error(c.get("/room_keys/version/2"), 404, "M_NOT_FOUND")
    assert_error(c.delete("/room_keys/version/99"), 404, "M_NOT_FOUND")
    for bad in ["abc", "0", "-1", "01"]:
        assert_error(c.get(f"/room_keys/version/{bad}"), 404, "M_NOT_FOUND")
    assert new_version(c) == "3", "numbers are never reused"
    assert c.delete("/room_keys/version/1").status_code == 200
    assert c.delete("/room_keys/version/3").status_code == 200
    assert_error(c.get("/room_keys/version"), 404, "M_NOT_FOUND")


def test_version_validation(server, start_server, login):
    _, _, c = login(server)
    assert_error(c.post("/room_keys/version", json={"auth_data": {}}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/room_keys/version", json={"algorithm": ALG}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/room_keys/version", json={"algorithm": "m.other", "auth_data": {"public_key": "x"}}),
                 400, "M_INVALID_PARAM")
    assert_error(c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": {"public_key": "not base64!"}}),
                 400, "M_INVALID_PARAM")
    assert_error(c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": "str"}), 400, "M_INVALID_PARAM")
    assert_error(c.post("/room_keys/version", json={"algorithm": 5, "auth_data": {}}), 400, "M_BAD_JSON")
    lenient = start_server(validation="lenient")
    _, _, lc = login(lenient)
    r = lc.post("/room_keys/version", json={"algorithm": "org.example.whatever", "auth_data": "anything"})
    assert r.status_code == 200
    assert lc.get("/room_keys/version").json()["auth_data"] == "anything"
    assert_error(lc.post("/room_keys/version", json={"algorithm": "x"}), 400, "M_MISSING_PARAM")
    v = r.json()["version"]
    assert put(lc, v, key(data="a string"), "!r:x", "s").status_code == 200


def test_version_update(server, login):
    _, _, c = login(server)
    v = new_version(c)
    put(c, v, key(), "!r:x", "s1")
    etag = c.get(f"/room_keys/version/{v}").json()["etag"]
    new_auth = {"public_key": olm.PkDecryption().public_key, "signatures": {}}
    r = c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth, "version": v})
    assert r.status_code == 200 and r.json() == {}
    after = c.get(f"/room_keys/version/{v}").json()
    assert after["auth_data"] == new_auth and after["etag"] == etag and after["count"] == 1
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth, "version": "7"}),
                 400, "M_INVALID_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"auth_data": new_auth}), 400, "M_MISSING_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": "m.other", "auth_data": new_auth}),
                 400, "M_INVALID_PARAM")
    assert_error(c.put("/room_keys/version/42", json={"algorithm": ALG, "auth_data": new_auth}), 404, "M_NOT_FOUND")


def test_sessions_three_levels_and_wrong_versions(server, login):
    _, _, c = login(server)
    assert_error(put(c, "1", key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    v1 = new_version(c)
    v2 = new_version(c)
    assert_error(c.put("/room_keys/keys/!r:x/s", json=key()), 400, "M_MISSING_PARAM")
    r = assert_error(put(c, v1, key(), "!r:x", "s"), 403, "M_WRONG_ROOM_KEYS_VERSION")
    assert r["current_version"] == v2
    assert_error(put(c, "99", key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    assert_error(put(c, "abc", key(), "!r:x", "s"), 404, "M_NOT_FOUND")

    r = put(c, v2, {"rooms": {"!a:x": {"sessions": {"s1": key(1), "s2": key(2)}}, "!b:x": {"sessions": {"s3": key(3)}}}})
    assert r.status_code == 200 and r.json()["count"] == 3
    r = put(c, v2, {"sessions": {"s4": key(4)}}, room="!b:x")
    assert r.json()["count"] == 4
    r = put(c, v2, key(5), room="!c:x", session="s5")
    assert r.json()["count"] == 5

    all_rooms = c.get("/room_keys/keys", params={"version": v2}).json()
    assert set(all_rooms["rooms"]) == {"!a:x", "!b:x", "!c:x"}
    assert all_rooms["rooms"]["!b:x"]["sessions"]["s4"] == key(4)
    assert c.get("/room_keys/keys/!a:x", params={"version": v2}).json() == {"sessions": {"s1": key(1), "s2": key(2)}}
    assert c.get("/room_keys/keys/!a:x/s2", params={"version": v2}).json() == key(2)
    assert c.get("/room_keys/keys/!zz:x", params={"version": v2}).json() == {"sessions": {}}
    assert_error(c.get("/room_keys/keys/!a:x/nope", params={"version": v2}), 404, "M_NOT_FOUND")
    assert c.get("/room_keys/keys", params={"version": v1}).json() == {"rooms": {}}  # any existing version
    assert_error(c.get("/room_keys/keys", params={"version": "77"}), 404, "M_NOT_FOUND")
    assert_error(c.get("/room_keys/keys"), 400, "M_MISSING_PARAM")

    # deletes at each level (any existing version) answer the new etag and count
    etag = c.get("/room_keys/version").json()["etag"]
    r = c.delete("/room_keys/keys/!a:x/s1", params={"version": v2})
    assert r.json()["count"] == 4 and r.json()["etag"] != etag
    etag = r.json()["etag"]
    r = c.delete("/room_keys/keys/!a:x/s1", params={"version": v2})
    assert r.json() == {"count": 4, "etag": etag}, "deleting nothing keeps the etag"
    r = c.delete("/room_keys/keys/!b:x", params={"version": v2})
    assert r.json()["count"] == 2
    r = c.delete("/room_keys/keys", params={"version": v2})
    assert r.json()["count"] == 0
    assert c.get("/room_keys/keys", params={"version": v2}).json() == {"rooms": {}}
    assert c.delete("/room_keys/keys", params={"version": v1}).status_code == 200


@pytest.mark.parametrize("stored,new,replaced", [
    # verification first: the reference homeserver lets a lower index overwrite a verified key; we must not
    ((True, 5, 0), (False, 1, 0), False),
    ((False, 5, 0), (True, 9, 9), True),
    # then the lower first_message_index
    ((False, 5, 0), (False, 4, 9), True),
    ((False, 5, 0), (False, 6, 0), False),
    ((True, 5, 3), (True, 4, 9), True),
    # then the lower forwarded_count (the reference homeserver compares it independently of the index)
    ((False, 5, 3), (False, 5, 2), True),
    ((False, 5, 3), (False, 5, 3), False),
    ((False, 5, 3), (False, 5, 4), False),
    ((False, 4, 0), (False, 5, 0), False),
    ((False, 5, 9), (False, 6, 0), False),
])
def test_replacement_rule(server, login, stored, new, replaced):
    _, _, c = login(server)
    v = new_version(c)
    first = key(stored[1], stored[2], stored[0], {"which": "stored"})
    second = key(new[1], new[2], new[0], {"which": "new"})
    etag0 = put(c, v, first, "!r:x", "s").json()["etag"]
    r = put(c, v, second, "!r:x", "s")
    assert r.json()["count"] == 1
    got = c.get("/room_keys/keys/!r:x/s", params={"version": v}).json()
    assert got == (second if replaced else first)
    assert (r.json()["etag"] != etag0) == replaced


@pytest.mark.parametrize("bad", [
    {"first_message_index": -1}, {"first_message_index": 1.5}, {"first_message_index": "1"},
    {"forwarded_count": None}, {"is_verified": "yes"}, {"session_data": "not an object"}, {"session_data": None},
])
def test_key_data_types(server, login, bad):
    _, _, c = login(server)
    v = new_version(c)
    body = key()
    body.update(bad)
    r = put(c, v, body, "!r:x", "s")
    assert r.status_code == 400 and r.json()["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM")
    body = key()
    del body["is_verified"]
    assert_error(put(c, v, body, "!r:x", "s"), 400, "M_MISSING_PARAM")
    assert_error(put(c, v, {"rooms": {"!r:x": {"sessions": []}}}), 400, "M_BAD_JSON")
    assert_error(put(c, v, {"rooms": []}), 400, "M_BAD_JSON")
    assert c.get("/room_keys/version").json()["count"] == 0


def test_isolation_between_users(server, login):
    _, _, alice = login(server)
    _, _, bob = login(server)
    va = new_version(alice)
    put(alice, va, key(), "!r:x", "s")
    assert_error(bob.get("/room_keys/version"), 404, "M_NOT_FOUND")
    assert_error(bob.get(f"/room_keys/keys/!r:x/s", params={"version": va}), 404, "M_NOT_FOUND")
    assert_error(put(bob, va, key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    assert_error(bob.delete(f"/room_keys/version/{va}"), 404, "M_NOT_FOUND")
    vb = new_version(bob)
    assert vb == "1"
    assert bob.delete("/room_keys/keys", params={"version": vb}).json()["count"] == 0
    assert alice.get("/room_keys/version").json()["count"] == 1


def test_count_exact_under_concurrent_writers(start_server, login):
    s = start_server(workers=2, db_connections=2)
    _, _, c = login(s)
    v = new_version(c)
    errors = []

    def writer(i):
        session = requests.Session()
        for round_ in range(5):
            # overlapping: every writer touches sessions 0..39 of two shared rooms, with varying quality
            rooms = {f"!room{r}:x": {"sessions": {f"s{j}": key((i * 7 + j + round_) % 13, i % 3, (i + j) % 2 == 0)
                                                  for j in range(40)}} for r in range(2)}
            r = session.put(s.url + "/_matrix/client/v3/room_keys/keys", params={"version": v},
                            json={"rooms": rooms}, headers={"Authorization": f"Bearer {c.token}"}, timeout=60)
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    info = c.get("/room_keys/version").json()
    assert info["count"] == 80
    everything = c.get("/room_keys/keys", params={"version": v}).json()
    assert sum(len(r["sessions"]) for r in everything["rooms"].values()) == 80
    # every stored key is the best any writer offered: verified if any was, then lowest index, then lowest count
    for r in range(2):
        for j in range(40):
            offers = [((i + j) % 2 == 0, (i * 7 + j + rnd) % 13, i % 3) for i in range(16) for rnd in range(5)]
            best = min(offers, key=lambda o: (not o[0], o[1], o[2]))
            got = everything["rooms"][f"!room{r}:x"]["sessions"][f"s{j}"]
            assert (got["is_verified"], got["first_message_index"], got["forwarded_count"]) == best


def test_real_client_encrypts_and_restores_a_session(server, login):
    _, _, c = login(server)
    decryption = olm.PkDecryption()
    v = new_version(c, {"public_key": decryption.public_key})
    outbound = olm.OutboundGroupSession()
    export = {"algorithm": "m.megolm.v1.aes-sha2", "room_id": "!r:x", "sender_key": "curve",
              "session_key": olm.InboundGroupSession(outbound.session_key).export_session(0),
              "sender_claimed_keys": {"ed25519": "ed"}, "forwarding_curve25519_key_chain": []}
    msg = olm.PkEncryption(c.get(f"/room_keys/version/{v}").json()["auth_data"]["public_key"]).encrypt(json.dumps(export))
    data = {"ephemeral": msg.ephemeral_key, "ciphertext": msg.ciphertext, "mac": msg.mac}
    session_id = outbound.id
    assert put(c, v, key(0, 0, True, data), "!r:x", session_id).status_code == 200
    assert c.get(keys_path("!r:x", session_id), params={"version": v}).json()["session_data"] == data
    # an id with '/' and '+' survives the path round trip
    assert put(c, v, key(0, 0, True, data), "!r:x", "a/b+c").status_code == 200
    assert c.get(keys_path("!r:x", "a/b+c"), params={"version": v}).status_code == 200
    # a second device restores it
    got = c.get("/room_keys/keys", params={"version": v}).json()["rooms"]["!r:x"]["sessions"][outbound.id]
    sd = got["session_data"]
    restored = json.loads(decryption.decrypt(olm.PkMessage(sd["ephemeral"], sd["mac"], sd["ciphertext"])))
    inbound = olm.InboundGroupSession.import_session(restored["session_key"])
    ciphertext = outbound.encrypt("hello from the past")
    assert inbound.decrypt(ciphertext)[0] == "hello from the past"


def test_large_backup_streams_completely(server, login):
    _, _, c = login(server)
    v = new_version(c)
    for batch in range(10):
        rooms = {f"!room{batch}-{r}:x": {"sessions": {f"sess{j}": key(j) for j in range(100)}} for r in range(10)}
        r = put(c, v, {"rooms": rooms})
        assert r.status_code == 200
    assert r.json()["count"] == 10000
    r = c.get("/room_keys/keys", params={"version": v})
    assert r.status_code == 200 and r.headers.get("Content-Length") is None  # streamed, chunked
    body = r.json()
    assert len(body["rooms"]) == 100
    assert sum(len(room["sessions"]) for room in body["rooms"].values()) == 10000
    assert body["rooms"]["!room3-7:x"]["sessions"]["sess42"] == key(42)
    one_room = c.get("/room_keys/keys/!room9-9:x", params={"version": v}).json()
    assert len(one_room["sessions"]) == 100
