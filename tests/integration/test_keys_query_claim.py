"""POST /keys/query and POST /keys/claim in both validation modes: shapes, locality, FIFO claims, fallback keys."""
from conftest import assert_error
from keys_modes import any_server  # noqa: F401 (fixture)
from olmkeys import Device

FIVE = {"device_keys", "failures", "master_keys", "self_signing_keys", "user_signing_keys"}


def upload_device(server, login, n_otks=0, fallback=False, display_name=None, user_id=None, device_id=None):
    user, device_id, c = login(server, user_id=user_id, device_id=device_id)
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(display_name)}
    if n_otks:
        body["one_time_keys"] = dev.one_time_keys(n_otks)
    if fallback:
        body["fallback_keys"] = dev.fallback_keys()
    r = c.post("/keys/upload", json=body)
    assert r.status_code == 200, r.text
    dev.uploaded = body
    dev.client = c
    return dev, c


def claim(c, targets):
    r = c.post("/keys/claim", json={"one_time_keys": targets})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"one_time_keys", "failures"}
    return r.json()


# ---------------------------------------------------------------------------------------------------------------------
# query


def test_query_shape_locality_and_unsigned(any_server, login, new_user):
    alice, ca = upload_device(any_server, login, display_name="Alice's laptop")
    bob, _ = upload_device(any_server, login)
    bob2, _ = upload_device(any_server, login, user_id=bob.user_id)
    nobody = new_user()
    r = ca.post("/keys/query", json={"device_keys": {alice.user_id: [], bob.user_id: [bob.device_id, "NOSUCHDEV"],
                                                     nobody: [], "@far:remote.example": [],
                                                     "@near:other.example": ["D"]}, "timeout": 10000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == FIVE
    assert set(body["failures"]) == {"remote.example", "other.example"}
    assert all(isinstance(v, dict) for v in body["failures"].values())
    assert set(body["device_keys"]) == {alice.user_id, bob.user_id, nobody}
    assert body["device_keys"][nobody] == {}
    assert list(body["device_keys"][bob.user_id]) == [bob.device_id], "unknown devices are absent"
    a = body["device_keys"][alice.user_id][alice.device_id]
    assert a["unsigned"] == {"device_display_name": "Alice's laptop"}
    expected = dict(alice.uploaded["device_keys"])
    del expected["unsigned"]
    assert {k: v for k, v in a.items() if k != "unsigned"} == expected
    assert body["device_keys"][bob.user_id][bob.device_id]["unsigned"] == {}
    # the server writes the answer's JSON text itself: names and values that need escaping come back intact
    odd = 'Say "hi" \\ tab\there\nline\u0001 \u00e9\U0001F600'
    carol, cc = upload_device(any_server, login, display_name=odd, device_id='D"\\Q')
    r = cc.post("/keys/query", json={"device_keys": {carol.user_id: []}})
    assert r.status_code == 200, r.text
    assert r.json()["device_keys"][carol.user_id][carol.device_id]["unsigned"] == {"device_display_name": odd}
    # an empty list: every device of the user
    r = ca.post("/keys/query", json={"device_keys": {bob.user_id: []}})
    assert set(r.json()["device_keys"][bob.user_id]) == {bob.device_id, bob2.device_id}
    # timeout is also accepted in the query string; an empty query has all five members, all empty
    r = ca.post("/keys/query", params={"timeout": "5"}, json={"device_keys": {}})
    assert r.status_code == 200 and r.json() == {k: {} for k in FIVE}


def test_query_bad_input(any_server, login):
    _, _, c = login(any_server)
    assert_error(c.post("/keys/query", json={}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/keys/query", json={"device_keys": []}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": None}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"@a:localhost": "DEV"}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"@a:localhost": [1]}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"@a:localhost": {"D": []}}}), 400, "M_BAD_JSON")
    for bad_user in ["not-a-user", "@nocolon", "@:localhost", "@a:", "@a b:localhost", "@" + "a" * 260 + ":x"]:
        err = assert_error(c.post("/keys/query", json={"device_keys": {bad_user: []}}), 400, "M_INVALID_PARAM")
        assert "user id" in err["error"]
    assert_error(c.post("/keys/query", json={"device_keys": {}, "timeout": "soon"}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {}, "timeout": 1.5}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json=[]), 400, "M_BAD_JSON")
    # the service keeps serving
    assert c.post("/keys/query", json={"device_keys": {}}).status_code == 200


def test_query_thousands_of_users_in_one_request(any_server, login, new_user):
    dev, c = upload_device(any_server, login)
    users = {new_user(): [] for _ in range(3000)}
    users[dev.user_id] = []
    users.update({f"@r{i}:remote{i % 7}.example": [] for i in range(500)})
    r = c.post("/keys/query", json={"device_keys": users})
    assert r.status_code == 200
    body = r.json()
    assert len(body["device_keys"]) == 3001 and dev.device_id in body["device_keys"][dev.user_id]
    assert len(body["failures"]) == 7


# ---------------------------------------------------------------------------------------------------------------------
# claim


def test_claim_is_fifo_by_upload_batch_and_never_repeats_then_fallback(any_server, login):
    dev, _ = upload_device(any_server, login, n_otks=3, fallback=True)
    # a second batch whose ids sort before the first batch's: claims still follow upload order
    second = {f"signed_curve25519:0{i}": v for i, v in enumerate(dev.one_time_keys(2).values())}
    assert dev.client.post("/keys/upload", json={"one_time_keys": second}).status_code == 200
    _, _, c = login(any_server)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    first = dev.uploaded["one_time_keys"]
    seen = []
    for _ in range(5):
        r = claim(c, want)
        assert r["failures"] == {}
        (kid, obj), = r["one_time_keys"][dev.user_id][dev.device_id].items()
        assert {**first, **second}[kid] == obj, "handed out exactly as uploaded"
        seen.append(kid)
    assert seen == sorted(first) + sorted(second), "first in, first out by upload (within a batch: id order)"
    for _ in range(2):
        assert claim(c, want)["one_time_keys"][dev.user_id][dev.device_id] == dev.uploaded["fallback_keys"]
    # a claimed key re-uploaded (a client retrying an upload whose answer it lost) is never handed out again
    assert dev.client.post("/keys/upload", json={"one_time_keys": first}).json()["one_time_key_counts"] == {
        "signed_curve25519": 0}
    assert claim(c, want)["one_time_keys"][dev.user_id][dev.device_id] == dev.uploaded["fallback_keys"]


def test_claim_many_targets_and_algorithms(any_server, login):
    a, _ = upload_device(any_server, login, n_otks=2)
    a2, _ = upload_device(any_server, login, n_otks=1, user_id=a.user_id)
    b, _ = upload_device(any_server, login, fallback=True)
    # a plain curve25519 one-time key under its own algorithm
    assert a.client.post("/keys/upload", json={"one_time_keys": {"curve25519:P1": a.curve25519}}).status_code == 200
    _, _, c = login(any_server)
    r = claim(c, {a.user_id: {a.device_id: "curve25519", a2.device_id: "signed_curve25519"},
                  b.user_id: {b.device_id: "signed_curve25519"}})
    assert r["one_time_keys"][a.user_id][a.device_id] == {"curve25519:P1": a.curve25519}
    assert list(r["one_time_keys"][a.user_id][a2.device_id]) == list(a2.uploaded["one_time_keys"])
    assert r["one_time_keys"][b.user_id][b.device_id] == b.uploaded["fallback_keys"]
    # nothing of that algorithm left, and a fallback key only answers for its own algorithm
    r = claim(c, {a.user_id: {a.device_id: "curve25519", a2.device_id: "signed_curve25519"},
                  b.user_id: {b.device_id: "curve25519"}})
    assert r["one_time_keys"] == {}
    counts = a.client.post("/keys/upload", json={}).json()["one_time_key_counts"]
    assert counts == {"signed_curve25519": 2}


def test_claim_absent_when_nothing_and_remote_failures(any_server, login, new_user):
    dev, _ = upload_device(any_server, login)  # no one-time keys, no fallback
    _, _, c = login(any_server)
    r = claim(c, {dev.user_id: {dev.device_id: "signed_curve25519", "NOSUCHDEV": "signed_curve25519"},
                  new_user(): {"X": "signed_curve25519"}, "@x:remote.example": {"D": "signed_curve25519"}})
    assert r["one_time_keys"] == {}
    assert list(r["failures"]) == ["remote.example"]
    assert claim(c, {})["one_time_keys"] == {}


def test_claim_bad_input(any_server, login):
    _, _, c = login(any_server)
    assert_error(c.post("/keys/claim", json={}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/keys/claim", json={"one_time_keys": []}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": ["x"]}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": {"D": 5}}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": {"D": ""}}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": {"D": "a:b"}}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"bad": {"D": "x"}}}), 400, "M_INVALID_PARAM")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {}, "timeout": "1s"}), 400, "M_BAD_JSON")
    assert c.post("/keys/claim", params={"timeout": "10"}, json={"one_time_keys": {}, "timeout": 10}).status_code == 200
