"""POST /keys/upload with real Olm keys: signatures, shapes, conflicts, caps, fallback keys, both validation modes."""
import secrets
import tempfile

import pytest
from conftest import assert_error
from olmkeys import Device, sign, tampered


def setup_device(server, login):
    user, device_id, c = login(server)
    return Device(user, device_id), c


def counts(c):
    r = c.post("/keys/upload", json={})
    assert r.status_code == 200, r.text
    return r.json()["one_time_key_counts"]


def query_device(c, user, device_id):
    r = c.post("/keys/query", json={"device_keys": {user: [device_id]}})
    assert r.status_code == 200, r.text
    return r.json()["device_keys"][user].get(device_id)


def test_empty_upload_reports_signed_curve25519_zero(server, login):
    _, c = setup_device(server, login)
    assert counts(c) == {"signed_curve25519": 0}


def test_real_olm_device_keys_and_signed_one_time_keys(server, login):
    dev, c = setup_device(server, login)
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(10)})
    assert r.status_code == 200, r.text
    assert r.json() == {"one_time_key_counts": {"signed_curve25519": 10}}
    stored = query_device(c, dev.user_id, dev.device_id)
    assert stored["keys"] == dev.device_keys()["keys"]
    assert stored["signatures"] == dev.device_keys()["signatures"]
    assert "unsigned" in stored


def test_matrix_nio_upload_is_accepted(server, new_user):
    from nio.crypto import Olm
    from nio.store import DefaultStore
    user = new_user()
    token = server.mint(user, "NIODEV")
    olm_machine = Olm(user, "NIODEV", DefaultStore(user, "NIODEV", tempfile.mkdtemp(), ""))
    body = olm_machine.share_keys()
    import requests
    r = requests.post(server.url + "/_matrix/client/v3/keys/upload", json=body,
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["one_time_key_counts"]["signed_curve25519"] == len(body["one_time_keys"])


def test_tampered_device_keys_are_rejected_and_nothing_is_stored(server, login):
    dev, c = setup_device(server, login)
    other = Device(dev.user_id, dev.device_id)
    bad = tampered(dev.device_keys(), ["keys", f"curve25519:{dev.device_id}"], other.curve25519)
    body = assert_error(c.post("/keys/upload", json={"device_keys": bad, "one_time_keys": dev.one_time_keys(2)}),
                        400, "M_INVALID_SIGNATURE")
    assert dev.signer in body["error"] and dev.user_id in body["error"]
    assert query_device(c, dev.user_id, dev.device_id) is None
    assert counts(c)["signed_curve25519"] == 0


def test_device_keys_signed_by_another_key_are_rejected(server, login):
    dev, c = setup_device(server, login)
    dk = dev.device_keys()
    impostor = Device(dev.user_id, dev.device_id)
    dk["signatures"] = {dev.user_id: {dev.signer: sign(impostor.account, dk)}}
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_INVALID_SIGNATURE")
    dk["signatures"] = {}
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_INVALID_SIGNATURE")


@pytest.mark.parametrize("field", ["user_id", "device_id", "algorithms", "keys", "signatures"])
def test_device_keys_missing_field(server, login, field):
    dev, c = setup_device(server, login)
    dk = dev.device_keys()
    del dk[field]
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_MISSING_PARAM")


@pytest.mark.parametrize("field,value", [("algorithms", "m.olm"), ("algorithms", [1]), ("keys", []),
                                         ("keys", {"ed25519:X": 5}), ("signatures", {"@a:b": "x"}),
                                         ("user_id", 5)])
def test_device_keys_wrong_types(server, login, field, value):
    dev, c = setup_device(server, login)
    dk = dev.device_keys()
    dk[field] = value
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_BAD_JSON")


def test_device_keys_for_someone_else_are_rejected(server, login, new_user):
    dev, c = setup_device(server, login)
    other = Device(new_user(), dev.device_id)
    assert_error(c.post("/keys/upload", json={"device_keys": other.device_keys()}), 400, "M_BAD_JSON")
    other_device = Device(dev.user_id, "OTHERDEV")
    assert_error(c.post("/keys/upload", json={"device_keys": other_device.device_keys()}), 400, "M_BAD_JSON")


def test_strict_requires_both_identity_keys(server, login):
    dev, c = setup_device(server, login)
    dk = dev.device_keys()
    del dk["keys"][f"curve25519:{dev.device_id}"]
    dk["signatures"] = {dev.user_id: {dev.signer: sign(dev.account, dk)}}
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_INVALID_PARAM")


def test_one_time_key_checks(server, login):
    dev, c = setup_device(server, login)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    otk = dev.one_time_keys(1)
    (kid, obj), = otk.items()
    # tampered key, wrong signer, malformed ids, non-base64 strings, floats
    assert_error(c.post("/keys/upload", json={"one_time_keys": {kid: tampered(obj, ["key"], "A" * 43)}}),
                 400, "M_INVALID_SIGNATURE")
    impostor = Device(dev.user_id, dev.device_id)
    assert_error(c.post("/keys/upload", json={"one_time_keys": {kid: impostor.signed_key(obj["key"])}}),
                 400, "M_INVALID_SIGNATURE")
    for bad_id in ["signed_curve25519", "signed_curve25519:a:b", ":x", "x:"]:
        assert_error(c.post("/keys/upload", json={"one_time_keys": {bad_id: obj}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/upload", json={"one_time_keys": {"curve25519:AAAB": "not base64!"}}),
                 400, "M_INVALID_PARAM")
    assert_error(c.post("/keys/upload", json={"one_time_keys": {kid: {"key": obj["key"], "signatures": {},
                                                                        "n": 1.5}}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/upload", json={"one_time_keys": {kid: {"key": obj["key"]}}}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/keys/upload", json={"one_time_keys": []}), 400, "M_BAD_JSON")
    assert counts(c)["signed_curve25519"] == 0
    # the genuine key, uploaded without device keys, verifies against the stored device key
    assert c.post("/keys/upload", json={"one_time_keys": otk}).json()["one_time_key_counts"]["signed_curve25519"] == 1


def test_signed_keys_without_any_device_keys_are_rejected(server, login):
    dev, c = setup_device(server, login)
    body = assert_error(c.post("/keys/upload", json={"one_time_keys": dev.one_time_keys(1)}),
                        400, "M_INVALID_SIGNATURE")
    assert "device keys" in body["error"]


def test_reupload_identical_and_conflicting_one_time_keys(server, login, pg):
    dev, c = setup_device(server, login)
    otks = dev.one_time_keys(3)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": otks}).status_code == 200
    # identical content (even with a different signature object) is accepted silently
    assert c.post("/keys/upload", json={"one_time_keys": otks}).json()["one_time_key_counts"]["signed_curve25519"] == 3
    # same id, different key: 400 naming both, and the request writes nothing at all
    kid = sorted(otks)[0]
    # the request replaces the device keys too, so its one-time keys are signed by the new device key
    new_dev_keys = Device(dev.user_id, dev.device_id)
    conflicting = {kid: new_dev_keys.signed_key(Device(dev.user_id, "X").curve25519)}
    fresh = new_dev_keys.one_time_keys(2)
    body = {"device_keys": new_dev_keys.device_keys(), "one_time_keys": {**fresh, **conflicting}}
    err = assert_error(c.post("/keys/upload", json=body), 400, "M_INVALID_PARAM")
    assert kid in err["error"] and otks[kid]["key"] in err["error"] and conflicting[kid]["key"] in err["error"]
    assert counts(c)["signed_curve25519"] == 3
    assert query_device(c, dev.user_id, dev.device_id)["keys"] == dev.device_keys()["keys"]


def test_fallback_keys(server, login, pg):
    dev, c = setup_device(server, login)
    fb = dev.fallback_keys()
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "fallback_keys": fb})
    assert r.status_code == 200
    (fid, fobj), = fb.items()
    key_id = fid.split(":")[1]
    used = lambda: pg.psql(f"SELECT used FROM fallback_keys WHERE user_id = '{dev.user_id}'")
    assert used() == "f"
    _, _, claimer = login(server)
    r = claimer.post("/keys/claim", json={"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}})
    assert r.json()["one_time_keys"][dev.user_id][dev.device_id] == fb
    assert used() == "t"
    # the identical fallback key re-uploaded keeps its used flag (the MSC2732 name is accepted too)
    assert c.post("/keys/upload", json={"org.matrix.msc2732.fallback_keys": fb}).status_code == 200
    assert used() == "t"
    # a new one replaces it, unused
    fb2 = dev.fallback_keys()
    assert c.post("/keys/upload", json={"fallback_keys": fb2}).status_code == 200
    assert used() == "f"
    assert pg.psql(f"SELECT key_id FROM fallback_keys WHERE user_id = '{dev.user_id}'") != key_id
    # two fallback keys of one algorithm in one request make no sense
    assert_error(c.post("/keys/upload", json={"fallback_keys": {**fb, **dev.fallback_keys()}}), 400, "M_INVALID_PARAM")


def test_one_time_key_cap(start_server, login):
    s = start_server(max_otks_per_device=5)
    dev, c = setup_device(s, login)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(4)}
                  ).status_code == 200
    err = assert_error(c.post("/keys/upload", json={"one_time_keys": dev.one_time_keys(2)}), 400, "M_INVALID_PARAM")
    assert "limit is 5" in err["error"]
    assert counts(c)["signed_curve25519"] == 4


def test_device_key_changes_are_recorded_once(server, login):
    dev, c = setup_device(server, login)
    pos = lambda: c.get("/_mxkeys/v1/stream_position").json()["device_list"]
    start = pos()
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    after_first = pos()
    assert after_first != start
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    assert pos() == after_first, "an identical re-upload must record no change"
    changed = c.get("/keys/changes", params={"from": start, "to": pos()}).json()
    assert dev.user_id in changed["changed"]


def test_lenient_accepts_conformance_suite_fake_keys(start_server, login):
    s = start_server(validation="lenient")
    user, device_id, c = login(s)
    dk = {"user_id": user, "device_id": device_id, "algorithms": ["m.olm.curve25519-aes-sha256"],
          "keys": {f"ed25519:{device_id}": "ed25519+key", f"curve25519:{device_id}": "curve25519+key"},
          "signatures": {user: {f"ed25519:{device_id}": "self+signature"}}}
    otks = {"my_algorithm:my_id_1": "my+key", "signed_curve25519:AAA": {"key": "k", "signatures": {user: {"x:y": "s"}}}}
    r = c.post("/keys/upload", json={"device_keys": dk, "one_time_keys": otks})
    assert r.status_code == 200, r.text
    assert r.json()["one_time_key_counts"] == {"signed_curve25519": 1, "my_algorithm": 1}
    # shape and ownership checks still apply
    dk["user_id"] = "@someone:else"
    assert_error(c.post("/keys/upload", json={"device_keys": dk}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/upload", json={"one_time_keys": {"nocolon": "k"}}), 400, "M_BAD_JSON")
