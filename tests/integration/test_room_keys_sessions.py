"""Backed-up sessions: PUT/GET/DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=V."""
import itertools

import olm
import pytest
from conftest import assert_error

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def new_version(c):
    r = c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
    assert r.status_code == 200, r.text
    return r.json()["version"]


DEFAULT = object()


def key(index=0, forwarded=0, verified=False, data=DEFAULT):
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"} if data is DEFAULT else data}


def path(room=None, session=None):
    return "/room_keys/keys" + (f"/{room}" if room else "") + (f"/{session}" if session else "")


def put(c, version, body, room=None, session=None):
    return c.put(path(room, session), params={"version": version}, json=body)


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"etag", "count"} and isinstance(body["etag"], str) and isinstance(body["count"], int)
    return body


def test_three_levels(server, login):
    _, _, c = login(server)
    v = new_version(c)
    r = ok(put(c, v, {"rooms": {"!a:x": {"sessions": {"s1": key(1), "s2": key(2)}}, "!b:x": {"sessions": {"s3": key(3)}}}}))
    assert r["count"] == 3
    assert ok(put(c, v, {"sessions": {"s4": key(4)}}, room="!b:x"))["count"] == 4
    assert ok(put(c, v, key(5), room="!c:x", session="s5"))["count"] == 5
    assert c.get("/room_keys/version").json()["count"] == 5

    assert c.get(path(), params={"version": v}).json() == {"rooms": {
        "!a:x": {"sessions": {"s1": key(1), "s2": key(2)}},
        "!b:x": {"sessions": {"s3": key(3), "s4": key(4)}},
        "!c:x": {"sessions": {"s5": key(5)}}}}
    assert c.get(path("!a:x"), params={"version": v}).json() == {"sessions": {"s1": key(1), "s2": key(2)}}
    assert c.get(path("!a:x", "s2"), params={"version": v}).json() == key(2)
    assert c.get(path("!zz:x"), params={"version": v}).json() == {"sessions": {}}
    assert_error(c.get(path("!a:x", "nope"), params={"version": v}), 404, "M_NOT_FOUND")
    assert_error(c.get(path("!zz:x", "s1"), params={"version": v}), 404, "M_NOT_FOUND")


def test_ids_with_special_characters_round_trip(server, login):
    _, _, c = login(server)
    v = new_version(c)
    room, session = "!weird/ \"room\\\u00e9:x", "sess+/=\u2603 \"q\""
    ok(put(c, v, {"rooms": {room: {"sessions": {session: key(7)}}}}))
    assert c.get(path(), params={"version": v}).json() == {"rooms": {room: {"sessions": {session: key(7)}}}}
    from urllib.parse import quote
    assert c.get(path(quote(room, safe=""), quote(session, safe="")), params={"version": v}).json() == key(7)
    assert ok(c.delete(path(quote(room, safe=""), quote(session, safe="")), params={"version": v}))["count"] == 0


def test_whole_backup_body_is_stored_as_sent(server, login):
    """The whole-backup PUT hands the request body to the database as it came: escapes, white space, members
    mxkeys does not know and nested session data all come back as the same JSON values."""
    _, _, c = login(server)
    v = new_version(c)
    raw = ('{ "extra": [1, {"x": null}],\n  "rooms" : {"!r\\u00e9:x": {"sessions": {"s\\"1": '
           '{"first_message_index": 0, "forwarded_count": 2, "is_verified": true, '
           '"session_data": {"ciphertext": "a\\/b\\u2603\\n", "nested": {"deep": [1.5, -2e3, "\\ud83d\\ude00"]}}}}}},'
           ' "more": "\\t" }')
    r = c.put(path(), params={"version": v}, data=raw.encode(), headers={"Content-Type": "application/json"})
    assert ok(r)["count"] == 1
    import json
    sent = json.loads(raw)["rooms"]
    assert c.get(path(), params={"version": v}).json() == {"rooms": sent}


def test_writes_go_to_the_current_version_only(server, login):
    _, _, c = login(server)
    assert_error(put(c, "1", key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    v1 = new_version(c)
    v2 = new_version(c)
    assert_error(c.put(path("!r:x", "s"), json=key()), 400, "M_MISSING_PARAM")
    assert_error(c.put(path(), json={"rooms": {}}), 400, "M_MISSING_PARAM")
    for body, room, session in [(key(), "!r:x", "s"), ({"sessions": {"s": key()}}, "!r:x", None),
                                ({"rooms": {"!r:x": {"sessions": {"s": key()}}}}, None, None)]:
        err = assert_error(put(c, v1, body, room, session), 403, "M_WRONG_ROOM_KEYS_VERSION")
        assert err["current_version"] == v2, "the current version, not the requested one"
    assert_error(put(c, "99", key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    assert_error(put(c, "abc", key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    assert c.get(f"/room_keys/version/{v1}").json()["count"] == 0
    c.delete(f"/room_keys/version/{v2}")
    assert_error(put(c, v2, key(), "!r:x", "s"), 404, "M_NOT_FOUND")  # deleted
    assert ok(put(c, v1, key(), "!r:x", "s"))["count"] == 1  # v1 is current again


def test_reads_and_deletes_work_on_any_live_version(server, login):
    _, _, c = login(server)
    v1 = new_version(c)
    ok(put(c, v1, {"rooms": {"!a:x": {"sessions": {"s1": key(1), "s2": key(2)}}, "!b:x": {"sessions": {"s3": key()}}}}))
    v2 = new_version(c)
    assert c.get(path(), params={"version": v2}).json() == {"rooms": {}}
    assert len(c.get(path(), params={"version": v1}).json()["rooms"]) == 2
    assert c.get(path("!a:x", "s1"), params={"version": v1}).json() == key(1)
    assert ok(c.delete(path("!a:x", "s1"), params={"version": v1}))["count"] == 2
    assert_error(c.get(path(), params={"version": "77"}), 404, "M_NOT_FOUND")
    assert_error(c.get(path("!a:x"), params={"version": "77"}), 404, "M_NOT_FOUND")
    assert_error(c.get(path("!a:x", "s1"), params={"version": "77"}), 404, "M_NOT_FOUND")
    assert_error(c.get(path()), 400, "M_MISSING_PARAM")
    assert_error(c.delete(path()), 400, "M_MISSING_PARAM")
    assert_error(c.delete(path(), params={"version": "77"}), 404, "M_NOT_FOUND")


def test_deletes_at_each_level_and_etag(server, login):
    _, _, c = login(server)
    v = new_version(c)
    rooms = {"!a:x": {"sessions": {"s1": key(), "s2": key()}}, "!b:x": {"sessions": {"s3": key(), "s4": key()}},
             "!c:x": {"sessions": {"s5": key()}}}
    etag = ok(put(c, v, {"rooms": rooms}))["etag"]
    assert c.get("/room_keys/version").json()["etag"] == etag, "GET version shows the last write's etag"

    def delete(room=None, session=None):
        return ok(c.delete(path(room, session), params={"version": v}))

    r = delete("!a:x", "s1")
    assert r["count"] == 4 and r["etag"] != etag
    etag = r["etag"]
    assert delete("!a:x", "s1") == {"count": 4, "etag": etag}, "deleting nothing keeps the etag"
    assert delete("!nope:x") == {"count": 4, "etag": etag}
    assert delete("!a:x", "s3") == {"count": 4, "etag": etag}, "a session of another room is not touched"
    r = delete("!b:x")
    assert r["count"] == 2 and r["etag"] != etag
    assert c.get(path("!b:x"), params={"version": v}).json() == {"sessions": {}}
    etag = r["etag"]
    r = delete()
    assert r["count"] == 0 and r["etag"] != etag
    assert c.get(path(), params={"version": v}).json() == {"rooms": {}}
    assert delete() == r, "emptying an empty backup changes nothing"
    assert c.get("/room_keys/version").json()["count"] == 0


def test_etag_changes_exactly_when_the_stored_set_changes(server, login):
    _, _, c = login(server)
    v = new_version(c)
    e0 = c.get("/room_keys/version").json()["etag"]
    r = ok(put(c, v, key(5, 1), "!r:x", "s"))
    assert r["etag"] != e0 and r["count"] == 1
    e1 = r["etag"]
    assert ok(put(c, v, key(5, 1), "!r:x", "s")) == {"etag": e1, "count": 1}, "the same key again"
    assert ok(put(c, v, key(6, 0), "!r:x", "s")) == {"etag": e1, "count": 1}, "a worse key"
    assert ok(put(c, v, key(5, 1, data={"other": "data"}), "!r:x", "s")) == {"etag": e1, "count": 1}, "a tie"
    assert ok(put(c, v, {"rooms": {}})) == {"etag": e1, "count": 1}, "nothing at all"
    assert ok(put(c, v, {"sessions": {}}, "!r:x")) == {"etag": e1, "count": 1}
    e2 = ok(put(c, v, key(4, 1), "!r:x", "s"))["etag"]
    assert e2 != e1, "a better key"
    new_auth = {"public_key": olm.PkDecryption().public_key}
    c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth})
    assert c.get("/room_keys/version").json()["etag"] == e2, "changing auth_data is not a change of the keys"
    r = ok(put(c, v, {"sessions": {"s": key(9), "t": key()}}, "!r:x"))
    assert r["count"] == 2 and r["etag"] not in (e1, e2), "one new session among no-ops"
    assert c.get("/room_keys/version").json()["etag"] == r["etag"]


def reference_rule(stored, new):
    """The reference homeserver's rule: three independent comparisons."""
    if new[0] and not stored[0]:
        return True
    return new[1] < stored[1] or new[2] < stored[2]


def lexicographic(stored, new):
    return (not new[0], new[1], new[2]) < (not stored[0], stored[1], stored[2])


# (is_verified, first_message_index, forwarded_count) of the stored and the new key, every combination of
# verification and of lower/equal/higher index and forwarded count.
TRUTH_TABLE = [((sv, 5, 5), (nv, 5 + di, 5 + df))
               for sv, nv, di, df in itertools.product([False, True], [False, True], [-1, 0, 1], [-1, 0, 1])]


def test_truth_table_covers_the_reference_homeservers_mistakes():
    wrong = [(s, n) for s, n in TRUTH_TABLE if reference_rule(s, n) != lexicographic(s, n)]
    # an unverified key with a lower index (or forwarded count) would overwrite a verified one
    assert ((True, 5, 5), (False, 4, 5)) in wrong
    # with equal verification, a lower forwarded count would win over a lower index
    assert ((False, 5, 5), (False, 6, 4)) in wrong
    assert len(TRUTH_TABLE) == 36


def test_replacement_rule_one_write_per_case(server, login):
    """Each case on its own session: the stored key, then the new one; checks the kept key, the etag and the count."""
    _, _, c = login(server)
    v = new_version(c)
    stored = {f"case{i}": key(s[1], s[2], s[0], {"which": "stored", "case": i}) for i, (s, _) in enumerate(TRUTH_TABLE)}
    ok(put(c, v, {"sessions": stored}, "!r:x"))
    for i, (s, n) in enumerate(TRUTH_TABLE):
        before = c.get("/room_keys/version").json()
        new = key(n[1], n[2], n[0], {"which": "new", "case": i})
        r = ok(put(c, v, new, "!r:x", f"case{i}"))
        replaced = lexicographic(s, n)
        assert r["count"] == len(TRUTH_TABLE)
        assert (r["etag"] != before["etag"]) == replaced, f"etag for stored {s}, new {n}"
        got = c.get(path("!r:x", f"case{i}"), params={"version": v}).json()
        assert got == (new if replaced else stored[f"case{i}"]), f"stored {s}, new {n}"


def test_replacement_rule_in_one_batch(server, login):
    """All cases in one request: every session decides on its own."""
    _, _, c = login(server)
    v = new_version(c)
    stored = {f"case{i}": key(s[1], s[2], s[0], {"which": "stored"}) for i, (s, _) in enumerate(TRUTH_TABLE)}
    new = {f"case{i}": key(n[1], n[2], n[0], {"which": "new"}) for i, (_, n) in enumerate(TRUTH_TABLE)}
    e1 = ok(put(c, v, {"rooms": {"!r:x": {"sessions": stored}}}))["etag"]
    r = ok(put(c, v, {"rooms": {"!r:x": {"sessions": new}}}))
    assert r["count"] == len(TRUTH_TABLE) and r["etag"] != e1
    got = c.get(path("!r:x"), params={"version": v}).json()["sessions"]
    for i, (s, n) in enumerate(TRUTH_TABLE):
        assert got[f"case{i}"] == (new if lexicographic(s, n) else stored)[f"case{i}"], f"stored {s}, new {n}"
    # the same batch again changes nothing
    assert ok(put(c, v, {"rooms": {"!r:x": {"sessions": new}}})) == r


BAD_KEY_DATA = [
    ({"first_message_index": -1}, "M_BAD_JSON"), ({"first_message_index": 1.5}, "M_BAD_JSON"),
    ({"first_message_index": "1"}, "M_BAD_JSON"), ({"first_message_index": 2 ** 53}, "M_BAD_JSON"),
    ({"forwarded_count": None}, "M_BAD_JSON"), ({"forwarded_count": -3}, "M_BAD_JSON"),
    ({"forwarded_count": True}, "M_BAD_JSON"), ({"is_verified": "yes"}, "M_BAD_JSON"),
    ({"is_verified": 1}, "M_BAD_JSON"),
]


@pytest.mark.parametrize("bad,errcode", BAD_KEY_DATA + [
    ({"session_data": "not an object"}, "M_BAD_JSON"), ({"session_data": None}, "M_BAD_JSON"),
    ({"session_data": [1]}, "M_BAD_JSON"),
])
def test_strict_key_data_validation(server, login, bad, errcode):
    _, _, c = login(server)
    v = new_version(c)
    body = key()
    body.update(bad)
    assert_error(put(c, v, body, "!r:x", "s"), 400, errcode)
    assert_error(put(c, v, {"sessions": {"ok": key(), "s": body}}, "!r:x"), 400, errcode)
    assert_error(put(c, v, {"rooms": {"!q:x": {"sessions": {"ok": key()}}, "!r:x": {"sessions": {"s": body}}}}),
                 400, errcode)
    assert c.get("/room_keys/version").json()["count"] == 0, "a bad session stores nothing of its request"


@pytest.mark.parametrize("missing", ["first_message_index", "forwarded_count", "is_verified", "session_data"])
@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_missing_key_data_fields(server, start_server, login, missing, mode):
    s = server if mode == "strict" else lenient_server(start_server)
    _, _, c = login(s)
    v = new_version(c)
    body = key()
    del body[missing]
    assert_error(put(c, v, body, "!r:x", "s"), 400, "M_MISSING_PARAM")


def test_request_shapes(server, login):
    _, _, c = login(server)
    v = new_version(c)
    assert_error(put(c, v, {"rooms": {"!r:x": {"sessions": []}}}), 400, "M_BAD_JSON")
    assert_error(put(c, v, {"rooms": {"!r:x": []}}), 400, "M_BAD_JSON")
    assert_error(put(c, v, {"rooms": {"!r:x": {}}}), 400, "M_MISSING_PARAM")
    assert_error(put(c, v, {"rooms": []}), 400, "M_BAD_JSON")
    assert_error(put(c, v, {}), 400, "M_MISSING_PARAM")
    assert_error(put(c, v, {}, "!r:x"), 400, "M_MISSING_PARAM")
    assert_error(put(c, v, {"sessions": "x"}, "!r:x"), 400, "M_BAD_JSON")
    assert_error(put(c, v, {"rooms": {"": {"sessions": {"s": key()}}}}), 400, "M_INVALID_PARAM")
    assert_error(put(c, v, {"sessions": {"": key()}}, "!r:x"), 400, "M_INVALID_PARAM")
    r = c.put(path("!r:x", "s"), params={"version": v}, data=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert c.get("/room_keys/version").json()["count"] == 0


_lenient = {}


def lenient_server(start_server):
    if "s" not in _lenient or _lenient["s"].proc.poll() is not None:
        _lenient["s"] = start_server(validation="lenient")
    return _lenient["s"]


@pytest.mark.parametrize("bad,errcode", BAD_KEY_DATA)
def test_lenient_still_checks_numbers_and_flags(start_server, login, bad, errcode):
    _, _, c = login(lenient_server(start_server))
    v = new_version(c)
    body = key()
    body.update(bad)
    assert_error(put(c, v, body, "!r:x", "s"), 400, errcode)


def test_lenient_accepts_any_session_data(start_server, login):
    _, _, c = login(lenient_server(start_server))
    v = c.post("/room_keys/version", json={"algorithm": "org.example.x", "auth_data": "str"}).json()["version"]
    values = {"s1": "a string", "s2": 12, "s3": [1, "x"], "s4": None, "s5": {"nested": {"f": 1.25}}, "s6": True}
    r = ok(put(c, v, {"sessions": {sid: key(data=d) for sid, d in values.items()}}, "!r:x"))
    assert r["count"] == 6
    got = c.get(path("!r:x"), params={"version": v}).json()["sessions"]
    assert {sid: d["session_data"] for sid, d in got.items()} == values


def test_sessions_per_request_are_capped(start_server, login):
    s = start_server(max_keys_per_request=5)
    _, _, c = login(s)
    v = new_version(c)
    six = {"!a:x": {"sessions": {f"s{i}": key() for i in range(3)}}, "!b:x": {"sessions": {f"s{i}": key() for i in range(3)}}}
    err = assert_error(put(c, v, {"rooms": six}), 400, "M_INVALID_PARAM")
    assert "5" in err["error"] and "6" in err["error"]
    assert_error(put(c, v, {"sessions": {f"s{i}": key() for i in range(6)}}, "!a:x"), 400, "M_INVALID_PARAM")
    del six["!b:x"]["sessions"]["s2"]
    assert ok(put(c, v, {"rooms": six}))["count"] == 5


def test_isolation_between_users(server, login):
    _, _, alice = login(server)
    _, _, bob = login(server)
    va = new_version(alice)
    ok(put(alice, va, {"rooms": {"!r:x": {"sessions": {"s": key(1), "t": key(2)}}}}))
    assert_error(bob.get(path(), params={"version": va}), 404, "M_NOT_FOUND")
    assert_error(bob.get(path("!r:x"), params={"version": va}), 404, "M_NOT_FOUND")
    assert_error(bob.get(path("!r:x", "s"), params={"version": va}), 404, "M_NOT_FOUND")
    assert_error(put(bob, va, key(), "!r:x", "s"), 404, "M_NOT_FOUND")
    assert_error(bob.delete(path("!r:x", "s"), params={"version": va}), 404, "M_NOT_FOUND")
    vb = new_version(bob)
    assert vb == va == "1", "both users have a version 1: every statement must filter by user"
    assert bob.get(path(), params={"version": vb}).json() == {"rooms": {}}
    assert_error(bob.get(path("!r:x", "s"), params={"version": vb}), 404, "M_NOT_FOUND")
    assert ok(put(bob, vb, key(0, 0, True, {"bob": 1}), "!r:x", "s"))["count"] == 1
    assert ok(bob.delete(path("!r:x", "t"), params={"version": vb}))["count"] == 1
    assert ok(bob.delete(path(), params={"version": vb}))["count"] == 0
    assert bob.delete(f"/room_keys/version/{vb}").status_code == 200
    a = alice.get("/room_keys/version").json()
    assert a["count"] == 2
    assert alice.get(path(), params={"version": va}).json() == {"rooms": {"!r:x": {"sessions": {"s": key(1), "t": key(2)}}}}
