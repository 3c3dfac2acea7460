"""Cross-signing: key uploads with the MSC3967 replacement policy, signature uploads, and per-viewer visibility."""
import requests
from conftest import assert_error
from olmkeys import CrossSigning, Device, add_signature


def setup_user(server, login, upload_xsign=True):
    user, device_id, c = login(server)
    dev = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    xs = CrossSigning(user)
    if upload_xsign:
        r = c.post("/keys/device_signing/upload", json=xs.upload_body())
        assert r.status_code == 200, r.text
    return dev, xs, c


def position(c):
    return c.get("/_mxkeys/v1/stream_position").json()["device_list"]


def query(c, *users):
    r = c.post("/keys/query", json={"device_keys": {u: [] for u in users}})
    assert r.status_code == 200, r.text
    return r.json()


def admin_allow(server, user):
    return requests.post(server.url + f"/_mxkeys/admin/v1/users/{user}/allow_cross_signing_replacement",
                         headers={"Authorization": "Bearer admintest"}, timeout=30)


def test_first_upload_query_and_identical_reupload(server, login):
    dev, xs, c = setup_user(server, login)
    _, _, other = login(server)
    mine = query(c, dev.user_id)
    assert mine["master_keys"][dev.user_id]["keys"] == xs.key_object("master")["keys"]
    assert mine["self_signing_keys"][dev.user_id] == xs.upload_body()["self_signing_key"]
    assert mine["user_signing_keys"][dev.user_id] == xs.upload_body()["user_signing_key"]
    theirs = query(other, dev.user_id)
    assert dev.user_id in theirs["master_keys"] and dev.user_id in theirs["self_signing_keys"]
    assert theirs["user_signing_keys"] == {}, "user-signing keys are for their owner only"
    before = position(c)
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    assert position(c) == before, "an identical upload changes nothing"


def test_replacement_needs_the_admin_window(server, login, new_user):
    dev, xs, c = setup_user(server, login)
    new = CrossSigning(dev.user_id)
    r = c.post("/keys/device_signing/upload", json=new.upload_body())
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] and "session" in body and "params" in body
    assert query(c, dev.user_id)["master_keys"][dev.user_id]["keys"] == xs.key_object("master")["keys"]
    assert_error(admin_allow(server, new_user()), 404, "M_NOT_FOUND")
    assert admin_allow(server, dev.user_id).status_code == 200
    assert c.post("/keys/device_signing/upload", json=new.upload_body()).status_code == 200
    assert query(c, dev.user_id)["master_keys"][dev.user_id]["keys"] == new.key_object("master")["keys"]
    # the window closed with that replacement
    assert c.post("/keys/device_signing/upload", json=CrossSigning(dev.user_id).upload_body()).status_code == 401
    # a new self-signing key alone is a change too
    new.self_signing = CrossSigning(dev.user_id).self_signing
    lone = {"self_signing_key": new.key_object("self_signing", new.master)}
    assert c.post("/keys/device_signing/upload", json=lone).status_code == 401


def test_replacement_allowed_by_flag(start_server, login):
    s = start_server(cross_signing_replacement="allow")
    dev, xs, c = setup_user(s, login)
    new = CrossSigning(dev.user_id)
    assert c.post("/keys/device_signing/upload", json=new.upload_body()).status_code == 200


def test_upload_errors(server, login, new_user):
    dev, xs, c = setup_user(server, login, upload_xsign=False)
    body = xs.upload_body()
    wrong_user = dict(body, master_key=dict(body["master_key"], user_id=new_user()))
    assert_error(c.post("/keys/device_signing/upload", json=wrong_user), 400, "M_INVALID_PARAM")
    wrong_usage = dict(body, master_key=dict(body["master_key"], usage=["self_signing"]))
    assert_error(c.post("/keys/device_signing/upload", json=wrong_usage), 400, "M_INVALID_PARAM")
    pk = xs.master.public_key
    for keys in [{f"ed25519:{pk}": pk, "ed25519:x": "x"}, {f"ed25519:{pk}": "other"}, {"ed25519:abc": "abc"}, {}]:
        bad = dict(body, master_key=dict(body["master_key"], keys=keys))
        assert_error(c.post("/keys/device_signing/upload", json=bad), 400, "M_INVALID_PARAM")
    # self-signing key with no master key anywhere
    assert_error(c.post("/keys/device_signing/upload", json={"self_signing_key": body["self_signing_key"]}),
                 400, "M_MISSING_PARAM")
    # signed by something that is not the master key
    other = CrossSigning(dev.user_id)
    bad_sig = dict(body, self_signing_key=xs.key_object("self_signing", other.master))
    err = assert_error(c.post("/keys/device_signing/upload", json=bad_sig), 400, "M_INVALID_SIGNATURE")
    assert xs.self_signing.public_key in err["error"]
    assert query(c, dev.user_id)["master_keys"] == {}, "nothing was stored"
    assert c.post("/keys/device_signing/upload", json=body).status_code == 200


def test_device_ids_and_public_keys_must_differ(server, login):
    xs_user, _, c = login(server)
    xs = CrossSigning(xs_user)
    # a device called like the master public key exists first
    clash_dev = Device(xs_user, xs.master.public_key)
    c2 = login(server, user_id=xs_user, device_id=xs.master.public_key)[2]
    assert c2.post("/keys/upload", json={"device_keys": clash_dev.device_keys()}).status_code == 200
    assert_error(c.post("/keys/device_signing/upload", json=xs.upload_body()), 403, "M_FORBIDDEN")
    # the other way round: keys first, then a device with that id
    user, _, c = login(server)
    xs = CrossSigning(user)
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    d = Device(user, xs.self_signing.public_key)
    c3 = login(server, user_id=user, device_id=xs.self_signing.public_key)[2]
    assert_error(c3.post("/keys/upload", json={"device_keys": d.device_keys()}), 403, "M_FORBIDDEN")


def test_signatures_and_visibility_from_three_users(server, login):
    alice_dev, alice_xs, alice = setup_user(server, login)
    bob_dev, bob_xs, bob = setup_user(server, login)
    carol_dev, carol_xs, carol = setup_user(server, login)
    a, b = alice_dev.user_id, bob_dev.user_id
    a_master = alice_xs.key_object("master")
    a_master_pk = alice_xs.master.public_key
    a_ssk_id = f"ed25519:{alice_xs.self_signing.public_key}"
    b_usk_id = f"ed25519:{bob_xs.user_signing.public_key}"

    # Alice's self-signing key signs her device; her device signs her master key.
    stored_dev = query(alice, a)["device_keys"][a][alice_dev.device_id]
    body = {a: {alice_dev.device_id: add_signature(stored_dev, a, alice_xs.self_signing),
                a_master_pk: add_signature(a_master, a, device=alice_dev)}}
    start = position(alice)
    r = alice.post("/keys/signatures/upload", json=body)
    assert r.status_code == 200 and r.json()["failures"] == {}, r.text
    # Bob's user-signing key signs Alice's master key.
    r = bob.post("/keys/signatures/upload", json={a: {a_master_pk: add_signature(a_master, b, bob_xs.user_signing)}})
    assert r.status_code == 200 and r.json()["failures"] == {}, r.text

    for viewer in (alice, bob, carol):
        q = query(viewer, a)
        assert a_ssk_id in q["device_keys"][a][alice_dev.device_id]["signatures"][a]
        assert alice_dev.signer in q["master_keys"][a]["signatures"][a]
    assert b_usk_id in query(bob, a)["master_keys"][a]["signatures"].get(b, {}), "the signer sees its signature"
    assert b not in query(alice, a)["master_keys"][a]["signatures"], "never another user's user-signing signature"
    assert b not in query(carol, a)["master_keys"][a]["signatures"]

    # /keys/changes audiences: own-key signatures for everyone, Bob's signature on Alice only for Bob
    end = position(alice)
    assert a in carol.get("/keys/changes", params={"from": start, "to": end}).json()["changed"]
    after_alice = position(alice)
    bob.post("/keys/signatures/upload", json={a: {a_master_pk: add_signature(a_master, b, bob_xs.user_signing)}})
    later = position(bob)
    assert a in bob.get("/keys/changes", params={"from": after_alice, "to": later}).json()["changed"]
    assert a not in carol.get("/keys/changes", params={"from": after_alice, "to": later}).json()["changed"]

    # a device re-upload keeps the cross-signatures; new device keys drop them
    assert alice.post("/keys/upload", json={"device_keys": alice_dev.device_keys()}).status_code == 200
    assert a_ssk_id in query(carol, a)["device_keys"][a][alice_dev.device_id]["signatures"][a]
    fresh = Device(a, alice_dev.device_id)
    assert alice.post("/keys/upload", json={"device_keys": fresh.device_keys()}).status_code == 200
    assert a_ssk_id not in query(carol, a)["device_keys"][a][alice_dev.device_id]["signatures"][a]


def test_signature_upload_failures_are_per_entry(server, login):
    alice_dev, alice_xs, alice = setup_user(server, login)
    bob_dev, bob_xs, bob = setup_user(server, login)
    _, _, nokeys = login(server)
    a, b = alice_dev.user_id, bob_dev.user_id
    stored_dev = query(alice, a)["device_keys"][a][alice_dev.device_id]
    good = add_signature(stored_dev, a, alice_xs.self_signing)
    # a well-formed signature under the right key id that the key did not make
    forged = dict(good, signatures={a: dict(good["signatures"][a])})
    forged["signatures"][a][f"ed25519:{alice_xs.self_signing.public_key}"] = "A" * 86
    changed = dict(good, algorithms=["something.else"])
    body = {a: {alice_dev.device_id: good, "NOSUCHDEVICE": good},
            b: {bob_xs.master.public_key: add_signature(bob_xs.key_object("master"), a, alice_xs.user_signing),
                "OLDKEY": good}}
    r = alice.post("/keys/signatures/upload", json=body)
    assert r.status_code == 200, r.text
    f = r.json()["failures"]
    assert f[a]["NOSUCHDEVICE"]["errcode"] == "M_NOT_FOUND"
    assert f[b]["OLDKEY"]["errcode"] == "M_NOT_FOUND"
    assert alice_dev.device_id not in f.get(a, {}) and bob_xs.master.public_key not in f.get(b, {})
    # the valid entries were stored
    assert f"ed25519:{alice_xs.self_signing.public_key}" in query(bob, a)["device_keys"][a][alice_dev.device_id]["signatures"][a]
    r = alice.post("/keys/signatures/upload", json={a: {alice_dev.device_id: forged}})
    assert r.json()["failures"][a][alice_dev.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    r = alice.post("/keys/signatures/upload", json={a: {alice_dev.device_id: changed}})
    assert r.json()["failures"][a][alice_dev.device_id]["errcode"] == "M_INVALID_PARAM"
    # a user without cross-signing keys has nothing to sign with
    r = nokeys.post("/keys/signatures/upload",
                    json={b: {bob_xs.master.public_key: bob_xs.key_object("master")}})
    assert r.json()["failures"][b][bob_xs.master.public_key]["errcode"] == "M_NOT_FOUND"
    assert_error(alice.post("/keys/signatures/upload", json={a: {alice_dev.device_id: "not an object"}}),
                 400, "M_INVALID_PARAM")
    assert_error(alice.post("/keys/signatures/upload", json={a: ["x"]}), 400, "M_INVALID_PARAM")


def test_key_changes_audiences_for_key_uploads(start_server, login):
    s = start_server(cross_signing_replacement="allow", admin_token="admintest")
    dev, xs, c = setup_user(s, login)
    _, _, other = login(s)
    start = position(c)
    new = CrossSigning(dev.user_id)
    new.master = xs.master
    r = c.post("/keys/device_signing/upload", json={"user_signing_key": new.key_object("user_signing", xs.master)})
    assert r.status_code == 200
    end = position(c)
    assert dev.user_id in c.get("/keys/changes", params={"from": start, "to": end}).json()["changed"]
    assert dev.user_id not in other.get("/keys/changes", params={"from": start, "to": end}).json()["changed"]
    r = c.post("/keys/device_signing/upload", json={"self_signing_key": new.key_object("self_signing", xs.master)})
    assert r.status_code == 200
    assert dev.user_id in other.get("/keys/changes", params={"from": end}).json()["changed"]


def test_user_deletion_removes_cross_signing(server, login):
    dev, xs, c = setup_user(server, login)
    r = requests.delete(server.url + f"/_mxkeys/admin/v1/users/{dev.user_id}",
                        headers={"Authorization": "Bearer admintest"})
    assert r.status_code == 200
    q = query(c, dev.user_id)
    assert q["master_keys"] == {} and q["self_signing_keys"] == {}
