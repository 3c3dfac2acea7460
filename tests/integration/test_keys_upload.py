"""POST /keys/upload with real Olm keys (python3-olm): signatures, shapes, ownership, conflicts, caps, fallback keys.
Every rule runs in both validation modes (`any_server`); where the modes differ, both outcomes are asserted."""
import json
import pytest
import requests
from conftest import assert_error
from keys_modes import any_server, is_strict  # noqa: F401 (fixture)
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


def footprint(pg, user):
    """Everything the database holds for a user, to prove a refused request wrote nothing."""
    return pg.psql(
        "SELECT (SELECT count(*) FROM device_keys WHERE user_id = '{u}') || ',' ||"
        " (SELECT coalesce(string_agg(keys_json::text, ';'), '') FROM device_keys WHERE user_id = '{u}') || ',' ||"
        " (SELECT count(*) FROM one_time_keys WHERE user_id = '{u}') || ',' ||"
        " (SELECT coalesce(string_agg(key_json::text || used::text, ';'), '') FROM fallback_keys"
        "  WHERE user_id = '{u}') || ',' ||"
        " (SELECT count(*) FROM device_list_changes WHERE user_id = '{u}')".format(u=user))


def upload(c, **body):
    return c.post("/keys/upload", json=body)


def accepted_only_when_lenient(server, response, errcode):
    """Strict refuses with `errcode`; lenient stores what was sent."""
    if is_strict(server):
        return assert_error(response, 400, errcode)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------------------------------
# What real clients send is accepted


def test_empty_upload_reports_signed_curve25519_zero(any_server, login):
    _, c = setup_device(any_server, login)
    assert counts(c) == {"signed_curve25519": 0}


def test_real_olm_device_keys_and_signed_one_time_keys(any_server, login):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    r = upload(c, device_keys=dk, one_time_keys=dev.one_time_keys(10), fallback_keys=dev.fallback_keys())
    assert r.status_code == 200, r.text
    assert r.json() == {"one_time_key_counts": {"signed_curve25519": 10}}
    stored = query_device(c, dev.user_id, dev.device_id)
    assert {k: v for k, v in stored.items() if k != "unsigned"} == dk, "served exactly as signed"
    assert stored["unsigned"] == {}


def test_display_name_from_unsigned_is_served_but_not_part_of_the_keys(any_server, login):
    dev, c = setup_device(any_server, login)
    assert upload(c, device_keys=dev.device_keys(display_name="Work phone")).status_code == 200
    stored = query_device(c, dev.user_id, dev.device_id)
    assert stored["unsigned"] == {"device_display_name": "Work phone"}
    assert {k: v for k, v in stored.items() if k != "unsigned"} == dev.device_keys()


# ---------------------------------------------------------------------------------------------------------------------
# Device keys: signatures (strict) and shapes (both modes)


def test_tampered_device_keys(any_server, login, pg):
    dev, c = setup_device(any_server, login)
    other = Device(dev.user_id, dev.device_id)
    bad = tampered(dev.device_keys(), ["keys", f"curve25519:{dev.device_id}"], other.curve25519)
    before = footprint(pg, dev.user_id)
    r = upload(c, device_keys=bad, one_time_keys=dev.one_time_keys(2))
    if is_strict(any_server):
        err = assert_error(r, 400, "M_INVALID_SIGNATURE")["error"]
        # the message says which key, which signer and what failed
        assert dev.signer in err and dev.user_id in err and dev.ed25519 in err and "does not match" in err
        assert footprint(pg, dev.user_id) == before
    else:
        assert r.status_code == 200, r.text
        assert query_device(c, dev.user_id, dev.device_id)["keys"] == bad["keys"]


def test_device_keys_signed_by_another_key_or_unsigned(any_server, login):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    impostor = Device(dev.user_id, dev.device_id)
    dk["signatures"] = {dev.user_id: {dev.signer: sign(impostor.account, dk)}}
    accepted_only_when_lenient(any_server, upload(c, device_keys=dk), "M_INVALID_SIGNATURE")
    dk["signatures"] = {}
    err = accepted_only_when_lenient(any_server, upload(c, device_keys=dk), "M_INVALID_SIGNATURE")
    if is_strict(any_server):
        assert "missing" in err["error"]
    dk["signatures"] = {dev.user_id: {dev.signer: "not base64!"}}
    accepted_only_when_lenient(any_server, upload(c, device_keys=dk), "M_INVALID_SIGNATURE")


@pytest.mark.parametrize("field", ["user_id", "device_id", "algorithms", "keys", "signatures"])
def test_device_keys_missing_field(any_server, login, field):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    del dk[field]
    err = assert_error(upload(c, device_keys=dk), 400, "M_MISSING_PARAM")
    assert field in err["error"]


@pytest.mark.parametrize("field,value", [("algorithms", "m.olm"), ("algorithms", [1]), ("keys", []),
                                         ("keys", {"ed25519:X": 5}), ("keys", {"nocolon": "x"}),
                                         ("signatures", {"@a:b": "x"}), ("signatures", {"@a:b": {"k": 1}}),
                                         ("signatures", []), ("user_id", 5), ("device_id", None)])
def test_device_keys_wrong_types(any_server, login, field, value):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    dk[field] = value
    assert_error(upload(c, device_keys=dk), 400, "M_BAD_JSON")


@pytest.mark.parametrize("value", [1.5, 2 ** 53, -(2 ** 53), 1e3])
def test_device_keys_that_cannot_be_signed_json(any_server, login, value):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    dk["extra"] = {"n": value}
    err = assert_error(upload(c, device_keys=dk), 400, "M_BAD_JSON")
    assert "extra" in err["error"]


def test_device_keys_for_someone_else_are_rejected(any_server, login, new_user):
    dev, c = setup_device(any_server, login)
    other = Device(new_user(), dev.device_id)
    err = assert_error(upload(c, device_keys=other.device_keys()), 400, "M_BAD_JSON")
    assert other.user_id in err["error"] and dev.user_id in err["error"]
    other_device = Device(dev.user_id, "OTHERDEV")
    assert_error(upload(c, device_keys=other_device.device_keys()), 400, "M_BAD_JSON")
    assert query_device(c, dev.user_id, "OTHERDEV") is None


def test_identity_keys_required_and_base64_in_strict_mode(any_server, login):
    dev, c = setup_device(any_server, login)
    dk = dev.device_keys()
    del dk["keys"][f"curve25519:{dev.device_id}"]
    dk["signatures"] = {dev.user_id: {dev.signer: sign(dev.account, dk)}}
    err = accepted_only_when_lenient(any_server, upload(c, device_keys=dk), "M_INVALID_PARAM")
    if is_strict(any_server):
        assert f"curve25519:{dev.device_id}" in err["error"]
    dk = dev.device_keys()
    dk["keys"][f"curve25519:{dev.device_id}"] = "not*base64"
    dk["signatures"] = {dev.user_id: {dev.signer: sign(dev.account, dk)}}
    accepted_only_when_lenient(any_server, upload(c, device_keys=dk), "M_INVALID_PARAM")


def test_conformance_suite_fake_keys(any_server, login):
    """The Matrix conformance suites upload made-up keys: lenient stores them, strict refuses."""
    user, device_id, c = login(any_server)
    dk = {"user_id": user, "device_id": device_id, "algorithms": ["m.olm.curve25519-aes-sha256"],
          "keys": {f"ed25519:{device_id}": "ed25519+key", f"curve25519:{device_id}": "curve25519+key"},
          "signatures": {user: {f"ed25519:{device_id}": "self+signature"}}}
    otks = {"my_algorithm:my_id_1": "my+key", "signed_curve25519:AAA": {"key": "k", "signatures": {user: {"x:y": "s"}}}}
    r = upload(c, device_keys=dk, one_time_keys=otks)
    if is_strict(any_server):
        assert_error(r, 400, "M_INVALID_PARAM")
        assert_error(upload(c, one_time_keys=otks), 400, "M_INVALID_PARAM")
    else:
        assert r.status_code == 200, r.text
        assert r.json()["one_time_key_counts"] == {"signed_curve25519": 1, "my_algorithm": 1}
        q = c.post("/keys/query", json={"device_keys": {user: []}}).json()["device_keys"][user][device_id]
        assert q["keys"] == dk["keys"] and q["signatures"] == dk["signatures"]


def test_not_an_object_anywhere(any_server, login):
    dev, c = setup_device(any_server, login)
    for body in ([], "x", 5):
        r = c.post("/keys/upload", json=body)
        assert r.status_code == 400 and r.json()["errcode"] in ("M_BAD_JSON", "M_NOT_JSON"), r.text
    r = c.post("/keys/upload", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "M_NOT_JSON")
    for name in ("device_keys", "one_time_keys", "fallback_keys"):
        assert_error(upload(c, **{name: []}), 400, "M_BAD_JSON")
        assert_error(upload(c, **{name: "x"}), 400, "M_BAD_JSON")
    assert counts(c) == {"signed_curve25519": 0}


# ---------------------------------------------------------------------------------------------------------------------
# One-time and fallback keys


def test_one_time_key_shapes(any_server, login):
    dev, c = setup_device(any_server, login)
    assert upload(c, device_keys=dev.device_keys()).status_code == 200
    (kid, obj), = dev.one_time_keys(1).items()
    for bad_id in ["signed_curve25519", "signed_curve25519:a:b", ":x", "x:", ""]:
        err = assert_error(upload(c, one_time_keys={bad_id: obj}), 400, "M_BAD_JSON")
        assert "exactly one" in err["error"]
        assert_error(upload(c, fallback_keys={bad_id: obj}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: {"key": obj["key"], "signatures": {}, "n": 1.5}}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: {"key": obj["key"], "signatures": obj["signatures"],
                                                "n": 2 ** 60}}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: {"key": obj["key"]}}), 400, "M_MISSING_PARAM")
    assert_error(upload(c, one_time_keys={kid: {"signatures": {}}}), 400, "M_MISSING_PARAM")
    assert_error(upload(c, one_time_keys={kid: {"key": 5, "signatures": {}}}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: {"key": obj["key"], "signatures": []}}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: {"key": obj["key"], "signatures": obj["signatures"],
                                                "fallback": "yes"}}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: 5}), 400, "M_BAD_JSON")
    assert_error(upload(c, one_time_keys={kid: None}), 400, "M_BAD_JSON")
    assert counts(c)["signed_curve25519"] == 0


def test_one_time_key_signatures(any_server, login):
    dev, c = setup_device(any_server, login)
    assert upload(c, device_keys=dev.device_keys()).status_code == 200
    otk = dev.one_time_keys(1)
    (kid, obj), = otk.items()
    # tampered key
    err = accepted_only_when_lenient(any_server, upload(c, one_time_keys={"signed_curve25519:T1": tampered(
        obj, ["key"], Device(dev.user_id, "X").curve25519)}), "M_INVALID_SIGNATURE")
    if is_strict(any_server):
        assert "signed_curve25519:T1" in err["error"] and dev.signer in err["error"]
    # signed by another account
    impostor = Device(dev.user_id, dev.device_id)
    accepted_only_when_lenient(any_server, upload(c, one_time_keys={"signed_curve25519:T2": impostor.signed_key(
        obj["key"])}), "M_INVALID_SIGNATURE")
    # a tampered fallback key
    (fid, fobj), = dev.fallback_keys().items()
    accepted_only_when_lenient(any_server, upload(c, fallback_keys={fid: tampered(fobj, ["fallback"], False)}),
                               "M_INVALID_SIGNATURE")
    # not base64 / not a curve25519 key
    accepted_only_when_lenient(any_server, upload(c, one_time_keys={"curve25519:AAAB": "not base64!"}),
                               "M_INVALID_PARAM")
    accepted_only_when_lenient(any_server, upload(c, one_time_keys={"curve25519:AAAC": "AAAA"}), "M_INVALID_PARAM")
    # the algorithm fixes the form in strict mode
    r = upload(c, one_time_keys={"signed_curve25519:S": obj["key"]})
    accepted_only_when_lenient(any_server, r, "M_BAD_JSON")
    expected = 1 if is_strict(any_server) else 4
    # the genuine key, uploaded without device keys, verifies against the stored device key
    r = upload(c, one_time_keys=otk)
    assert r.status_code == 200, r.text
    assert r.json()["one_time_key_counts"]["signed_curve25519"] == expected


def test_signed_keys_without_any_device_keys(any_server, login):
    dev, c = setup_device(any_server, login)
    err = accepted_only_when_lenient(any_server, upload(c, one_time_keys=dev.one_time_keys(1)),
                                     "M_INVALID_SIGNATURE")
    if is_strict(any_server):
        assert "device keys" in err["error"] and dev.device_id in err["error"]
    # in the same request as the device keys they verify against those
    r = upload(c, device_keys=dev.device_keys(), one_time_keys=dev.one_time_keys(2),
               fallback_keys=dev.fallback_keys())
    assert r.status_code == 200, r.text


def test_reupload_identical_and_conflicting_one_time_keys(any_server, login, pg):
    dev, c = setup_device(any_server, login)
    otks = dev.one_time_keys(3)
    fb = dev.fallback_keys()
    assert upload(c, device_keys=dev.device_keys(), one_time_keys=otks, fallback_keys=fb).status_code == 200
    # identical content is accepted silently, also with different signatures
    assert upload(c, one_time_keys=otks).json()["one_time_key_counts"]["signed_curve25519"] == 3
    kid = sorted(otks)[0]
    resigned = {kid: {**otks[kid], "signatures": {dev.user_id: {dev.signer: otks[kid]["signatures"][dev.user_id][
        dev.signer]}, "@other:localhost": {"ed25519:Z": "x"}}}}
    assert upload(c, one_time_keys=resigned).json()["one_time_key_counts"]["signed_curve25519"] == 3
    # same id, different key: 400 naming both, and the request writes nothing at all: not its new device keys, not
    # its fresh one-time keys, not its new fallback key, no device-list change
    new_account = Device(dev.user_id, dev.device_id)
    conflicting = {kid: new_account.signed_key(Device(dev.user_id, "X").curve25519)}
    body = {"device_keys": new_account.device_keys(), "one_time_keys": {**new_account.one_time_keys(2), **conflicting},
            "fallback_keys": new_account.fallback_keys()}
    before = footprint(pg, dev.user_id)
    err = assert_error(c.post("/keys/upload", json=body), 400, "M_INVALID_PARAM")["error"]
    assert kid in err and otks[kid]["key"] in err and conflicting[kid]["key"] in err
    assert footprint(pg, dev.user_id) == before
    assert counts(c)["signed_curve25519"] == 3
    assert query_device(c, dev.user_id, dev.device_id)["keys"] == dev.device_keys()["keys"]
    # plain string keys conflict the same way
    assert upload(c, one_time_keys={"curve25519:S1": dev.curve25519}).status_code == 200
    assert_error(upload(c, one_time_keys={"curve25519:S1": new_account.curve25519}), 400, "M_INVALID_PARAM")


def test_fallback_keys(any_server, login, pg):
    dev, c = setup_device(any_server, login)
    fb = dev.fallback_keys()
    assert upload(c, device_keys=dev.device_keys(), fallback_keys=fb).status_code == 200
    (fid, fobj), = fb.items()
    used = lambda: pg.psql(f"SELECT used FROM fallback_keys WHERE user_id = '{dev.user_id}'")
    key_id = lambda: pg.psql(f"SELECT key_id FROM fallback_keys WHERE user_id = '{dev.user_id}'")
    assert used() == "f"
    # fallback keys are not one-time keys
    assert counts(c) == {"signed_curve25519": 0}
    _, _, claimer = login(any_server)
    want = {"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}}
    for _ in range(2):  # handed out again and again, exactly as stored
        assert claimer.post("/keys/claim", json=want).json()["one_time_keys"][dev.user_id][dev.device_id] == fb
    assert used() == "t"
    # the identical fallback key re-uploaded keeps its used flag (the MSC2732 name is accepted too)
    assert upload(c, **{"org.matrix.msc2732.fallback_keys": fb}).status_code == 200
    assert upload(c, fallback_keys=fb).status_code == 200
    assert used() == "t"
    # a new one replaces it, unused
    fb2 = dev.fallback_keys()
    assert upload(c, fallback_keys=fb2).status_code == 200
    assert used() == "f" and key_id() == next(iter(fb2)).split(":")[1]
    assert claimer.post("/keys/claim", json=want).json()["one_time_keys"][dev.user_id][dev.device_id] == fb2
    # two fallback keys of one algorithm in one request make no sense
    err = assert_error(upload(c, fallback_keys={**fb, **dev.fallback_keys()}), 400, "M_INVALID_PARAM")
    assert "signed_curve25519" in err["error"]
    # the two names at once: fallback_keys wins (it is the stable name)
    fb3 = dev.fallback_keys()
    assert upload(c, fallback_keys=fb3, **{"org.matrix.msc2732.fallback_keys": fb2}).status_code == 200
    assert key_id() == next(iter(fb3)).split(":")[1]


def test_device_key_changes_are_recorded_once(any_server, login, pg):
    dev, c = setup_device(any_server, login)
    pos = lambda: c.get("/_mxkeys/v1/stream_position").json()["device_list"]
    # the row versions of the device's keys and fallback key: unchanged means not written at all
    versions = lambda: pg.psql(f"SELECT (SELECT xmin FROM device_keys WHERE user_id = '{dev.user_id}') || ',' ||"
                               f" (SELECT xmin FROM fallback_keys WHERE user_id = '{dev.user_id}')")
    start = pos()
    fb = dev.fallback_keys()
    assert upload(c, device_keys=dev.device_keys(), fallback_keys=fb).status_code == 200
    after_first = pos()
    assert after_first != start
    written = versions()
    for _ in range(2):
        assert upload(c, device_keys=dev.device_keys(), one_time_keys=dev.one_time_keys(1),
                      fallback_keys=fb).status_code == 200
    assert pos() == after_first, "an identical re-upload records no change (nor do one-time keys)"
    assert versions() == written, "an identical re-upload writes neither the device keys nor the fallback key"
    changed = c.get("/keys/changes", params={"from": start, "to": pos()}).json()
    assert dev.user_id in changed["changed"]
    # new keys for the device: replaced and recorded
    replacement = Device(dev.user_id, dev.device_id)
    assert upload(c, device_keys=replacement.device_keys()).status_code == 200
    assert pos() != after_first
    assert query_device(c, dev.user_id, dev.device_id)["keys"] == replacement.device_keys()["keys"]
    assert dev.user_id in c.get("/keys/changes", params={"from": after_first}).json()["changed"]


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_caps(start_server, login, pg, mode):
    s = start_server(max_otks_per_device=5, max_keys_per_request=6, validation=mode)
    dev, c = setup_device(s, login)
    assert upload(c, device_keys=dev.device_keys(), one_time_keys=dev.one_time_keys(4)).status_code == 200
    # the unclaimed-key cap per device, counted after the upload: nothing of the request is kept
    before = footprint(pg, dev.user_id)
    replacement = Device(dev.user_id, dev.device_id)
    fresh = {f"signed_curve25519:R{i}": v for i, v in enumerate(replacement.one_time_keys(2).values())}
    err = assert_error(upload(c, device_keys=replacement.device_keys(), one_time_keys=fresh),
                       400, "M_INVALID_PARAM")["error"]
    assert "limit is 5" in err and "6 unclaimed" in err
    assert footprint(pg, dev.user_id) == before
    assert counts(c)["signed_curve25519"] == 4
    # exactly at the cap is fine; re-uploading stored keys does not count twice
    batch = dev.one_time_keys(1)
    assert upload(c, one_time_keys=batch).json()["one_time_key_counts"]["signed_curve25519"] == 5
    assert upload(c, one_time_keys=batch).json()["one_time_key_counts"]["signed_curve25519"] == 5
    # entries per request (one-time + fallback keys)
    err = assert_error(upload(c, one_time_keys=dev.one_time_keys(6), fallback_keys=dev.fallback_keys()),
                       400, "M_INVALID_PARAM")["error"]
    assert "7" in err and "limit is 6" in err
    # query and claim maps too
    users = {f"@u{i}:localhost": [] for i in range(7)}
    assert "limit is 6" in assert_error(c.post("/keys/query", json={"device_keys": users}), 400,
                                        "M_INVALID_PARAM")["error"]
    users = {"@u:localhost": [f"D{i}" for i in range(6)]}
    assert_error(c.post("/keys/query", json={"device_keys": users}), 400, "M_INVALID_PARAM")
    claims = {f"@u{i}:localhost": {"D": "signed_curve25519"} for i in range(7)}
    assert "limit is 6" in assert_error(c.post("/keys/claim", json={"one_time_keys": claims}), 400,
                                        "M_INVALID_PARAM")["error"]
    assert counts(c)["signed_curve25519"] == 5
    s.stop()


def test_matrix_nio_upload_is_accepted(any_server, new_user):
    """A second client stack: matrix-nio's Olm machine builds and signs its own upload."""
    import tempfile

    from nio.crypto import Olm
    from nio.store import DefaultStore
    user = new_user()
    token = any_server.mint(user, "NIODEV")
    machine = Olm(user, "NIODEV", DefaultStore(user, "NIODEV", tempfile.mkdtemp(), ""))
    body = machine.share_keys()
    r = requests.post(any_server.url + "/_matrix/client/v3/keys/upload", json=body,
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["one_time_key_counts"]["signed_curve25519"] == len(body["one_time_keys"])
    # nio's keys, tampered after signing, are refused in strict mode
    kid = sorted(body["one_time_keys"])[0]
    bad = {kid.replace(":", ":X"): tampered(body["one_time_keys"][kid], ["key"], Device(user, "Y").curve25519)}
    r = requests.post(any_server.url + "/_matrix/client/v3/keys/upload", json={"one_time_keys": bad},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    accepted_only_when_lenient(any_server, r, "M_INVALID_SIGNATURE")


def test_uploads_abandoned_while_their_signatures_are_checked(any_server, login):
    """Strict mode checks one-time key signatures on a thread of its own while the request waits. Clients that send
    a large upload and hang up at once: the server finishes or drops each one whole, never half stored, and keeps
    serving (under the sanitizer build, any use of a request after it is gone would fail the run)."""
    import socket
    from urllib.parse import urlparse
    u = urlparse(any_server.url)
    abandoned = []
    for i in range(20):
        user, device_id, c = login(any_server)
        dev = Device(user, device_id)
        body = json.dumps({"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(100)}).encode()
        head = (f"POST /_matrix/client/v3/keys/upload HTTP/1.1\r\nHost: {u.hostname}\r\n"
                f"Authorization: Bearer {c.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(head + body)
        abandoned.append((user, device_id, c))
    for user, device_id, c in abandoned:
        # all or nothing: either the upload went through whole or nothing of it is there
        counts = c.post("/keys/upload", json={}).json()["one_time_key_counts"]["signed_curve25519"]
        assert counts in (0, 100)
    _, _, c = login(any_server)
    assert c.post("/keys/upload", json={}).status_code == 200
