"""Key backup versions: POST/GET /room_keys/version, GET/PUT/DELETE /room_keys/version/{version}."""
import olm
import pytest
from conftest import assert_error

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def new_version(c, auth_data=None):
    if auth_data is None:
        auth_data = {"public_key": olm.PkDecryption().public_key}
    r = c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": auth_data})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"version"} and isinstance(r.json()["version"], str)
    return r.json()["version"]


def key(index=0):
    return {"first_message_index": index, "forwarded_count": 0, "is_verified": False,
            "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


def test_lifecycle_delete_twice_and_numbering(server, login):
    _, _, c = login(server)
    assert_error(c.get("/room_keys/version"), 404, "M_NOT_FOUND")
    auth = {"public_key": olm.PkDecryption().public_key, "signatures": {"@u:x": {"ed25519:D": "sig"}}}
    assert new_version(c, auth) == "1"
    cur = c.get("/room_keys/version").json()
    assert cur == {"algorithm": ALG, "auth_data": auth, "count": 0, "etag": cur["etag"], "version": "1"}
    assert isinstance(cur["etag"], str)
    assert new_version(c) == "2"
    assert c.get("/room_keys/version").json()["version"] == "2", "the newest version is current"
    assert c.get("/room_keys/version/1").json()["version"] == "1", "older versions stay readable"

    r = c.delete("/room_keys/version/2")
    assert r.status_code == 200 and r.json() == {}
    assert c.get("/room_keys/version").json()["version"] == "1", "the newest remaining live version is current"
    assert c.delete("/room_keys/version/2").status_code == 200, "deleting a deleted version is fine"
    assert_error(c.get("/room_keys/version/2"), 404, "M_NOT_FOUND")
    assert_error(c.delete("/room_keys/version/99"), 404, "M_NOT_FOUND")  # never existed
    assert new_version(c) == "3", "numbers of deleted versions are never reused"
    for v in ("1", "3"):
        assert c.delete(f"/room_keys/version/{v}").status_code == 200
    assert_error(c.get("/room_keys/version"), 404, "M_NOT_FOUND")
    assert new_version(c) == "4", "not even when every version was deleted"


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "01", "1.0", "1e3", " 1", "99999999999999999999999"])
def test_non_numeric_versions_are_not_found(server, login, bad):
    _, _, c = login(server)
    new_version(c)
    assert_error(c.get(f"/room_keys/version/{bad}"), 404, "M_NOT_FOUND")
    assert_error(c.delete(f"/room_keys/version/{bad}"), 404, "M_NOT_FOUND")
    assert_error(c.put(f"/room_keys/version/{bad}", json={"algorithm": ALG, "auth_data": {}}), 404, "M_NOT_FOUND")
    assert_error(c.get("/room_keys/keys", params={"version": bad}), 404, "M_NOT_FOUND")


def test_delete_version_removes_its_sessions(server, login):
    _, _, c = login(server)
    v1 = new_version(c)
    assert c.put("/room_keys/keys/!r:x/s", params={"version": v1}, json=key()).status_code == 200
    v2 = new_version(c)
    assert c.delete(f"/room_keys/version/{v2}").status_code == 200
    # v1 is current again: writes go there
    assert c.put("/room_keys/keys/!r:x/t", params={"version": v1}, json=key()).json()["count"] == 2
    assert c.delete(f"/room_keys/version/{v1}").status_code == 200
    assert_error(c.get("/room_keys/keys", params={"version": v1}), 404, "M_NOT_FOUND")
    assert_error(c.get("/room_keys/keys/!r:x/s", params={"version": v1}), 404, "M_NOT_FOUND")
    assert_error(c.put("/room_keys/keys/!r:x/s", params={"version": v1}, json=key()), 404, "M_NOT_FOUND")
    assert_error(c.delete("/room_keys/keys", params={"version": v1}), 404, "M_NOT_FOUND")


def test_update_changes_auth_data_only(server, login):
    _, _, c = login(server)
    v = new_version(c)
    c.put("/room_keys/keys/!r:x/s1", params={"version": v}, json=key())
    before = c.get(f"/room_keys/version/{v}").json()
    new_auth = {"public_key": olm.PkDecryption().public_key, "signatures": {}}
    r = c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth, "version": v})
    assert r.status_code == 200 and r.json() == {}
    after = c.get(f"/room_keys/version/{v}").json()
    assert after == dict(before, auth_data=new_auth), "etag, count and version stay"
    r = c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth})  # body version optional
    assert r.status_code == 200

    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth, "version": "7"}),
                 400, "M_INVALID_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth, "version": 1}),
                 400, "M_INVALID_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"auth_data": new_auth}), 400, "M_MISSING_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": ALG}), 400, "M_MISSING_PARAM")
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": "m.other", "auth_data": new_auth}),
                 400, "M_INVALID_PARAM")
    assert_error(c.put("/room_keys/version/42", json={"algorithm": ALG, "auth_data": new_auth}), 404, "M_NOT_FOUND")
    c.delete(f"/room_keys/version/{v}")
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": ALG, "auth_data": new_auth}), 404, "M_NOT_FOUND")


def test_update_algorithm_must_match_stored_one(start_server, login):
    lenient = start_server(validation="lenient")
    _, _, c = login(lenient)
    v = c.post("/room_keys/version", json={"algorithm": "org.example.a", "auth_data": {}}).json()["version"]
    assert_error(c.put(f"/room_keys/version/{v}", json={"algorithm": "org.example.b", "auth_data": {}}),
                 400, "M_INVALID_PARAM")
    assert c.put(f"/room_keys/version/{v}", json={"algorithm": "org.example.a", "auth_data": [1]}).status_code == 200
    assert c.get("/room_keys/version").json()["auth_data"] == [1]


@pytest.mark.parametrize("body,errcode", [
    ({"auth_data": {}}, "M_MISSING_PARAM"),
    ({"algorithm": ALG}, "M_MISSING_PARAM"),
    ({}, "M_MISSING_PARAM"),
    ({"algorithm": "m.other", "auth_data": {"public_key": olm.PkDecryption().public_key}}, "M_INVALID_PARAM"),
    ({"algorithm": ALG, "auth_data": {}}, "M_INVALID_PARAM"),
    ({"algorithm": ALG, "auth_data": {"public_key": "not base64!"}}, "M_INVALID_PARAM"),
    ({"algorithm": ALG, "auth_data": {"public_key": "AAAA"}}, "M_INVALID_PARAM"),  # 3 bytes, not 32
    # (padding is accepted: the spec asks decoders to take base64 with or without it)
    ({"algorithm": ALG, "auth_data": {"public_key": "A" * 44}}, "M_INVALID_PARAM"),  # 33 bytes
    ({"algorithm": ALG, "auth_data": {"public_key": 5}}, "M_INVALID_PARAM"),
    ({"algorithm": ALG, "auth_data": "a string"}, "M_INVALID_PARAM"),
    ({"algorithm": 5, "auth_data": {}}, "M_BAD_JSON"),
])
def test_strict_create_validation(server, login, body, errcode):
    _, _, c = login(server)
    assert_error(c.post("/room_keys/version", json=body), 400, errcode)
    assert_error(c.get("/room_keys/version"), 404, "M_NOT_FOUND")


def test_lenient_create_accepts_any_algorithm_and_auth_data(start_server, login):
    lenient = start_server(validation="lenient")
    _, _, c = login(lenient)
    for auth_data in ["anything", 1.5, [1, {"x": None}], {"public_key": "not base64"}, None]:
        r = c.post("/room_keys/version", json={"algorithm": "org.example.whatever", "auth_data": auth_data})
        assert r.status_code == 200, r.text
        got = c.get("/room_keys/version").json()
        assert got["auth_data"] == auth_data and got["algorithm"] == "org.example.whatever"
    assert_error(c.post("/room_keys/version", json={"algorithm": "x"}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/room_keys/version", json={"auth_data": {}}), 400, "M_MISSING_PARAM")


def test_users_do_not_see_each_others_versions(server, login):
    _, _, alice = login(server)
    _, _, bob = login(server)
    va = new_version(alice)
    assert_error(bob.get("/room_keys/version"), 404, "M_NOT_FOUND")
    assert_error(bob.get(f"/room_keys/version/{va}"), 404, "M_NOT_FOUND")
    assert_error(bob.put(f"/room_keys/version/{va}", json={"algorithm": ALG, "auth_data": {"public_key": "x"}}),
                 400, "M_INVALID_PARAM")
    assert_error(bob.put(f"/room_keys/version/{va}",
                         json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}}),
                 404, "M_NOT_FOUND")
    assert_error(bob.delete(f"/room_keys/version/{va}"), 404, "M_NOT_FOUND")
    assert new_version(bob) == "1", "numbering is per user"
    assert new_version(alice) == "2"
    assert alice.get("/room_keys/version/1").status_code == 200


def test_other_path_prefixes(server, login):
    _, _, c = login(server)
    new_version(c)
    for prefix in ("/_matrix/client/r0", "/_matrix/client/unstable"):
        r = c.get(prefix + "/room_keys/version")
        assert r.status_code == 200 and r.json()["version"] == "1"
