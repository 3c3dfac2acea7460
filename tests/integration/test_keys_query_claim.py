"""POST /keys/query and POST /keys/claim: shapes, locality, FIFO claims, fallback, and the concurrency guarantee."""
import threading
import time

import requests
from conftest import assert_error
from olmkeys import Device


def upload_device(server, login, n_otks=0, fallback=False, display_name=None, user_id=None):
    user, device_id, c = login(server, user_id=user_id)
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(display_name)}
    if n_otks:
        body["one_time_keys"] = dev.one_time_keys(n_otks)
    if fallback:
        body["fallback_keys"] = dev.fallback_keys()
    r = c.post("/keys/upload", json=body)
    assert r.status_code == 200, r.text
    dev.uploaded = body
    return dev, c


def test_query_shape_locality_and_unsigned(server, login, new_user):
    alice, ca = upload_device(server, login, display_name="Alice's laptop")
    bob, _ = upload_device(server, login)
    nobody = new_user()
    r = ca.post("/keys/query", json={"device_keys": {alice.user_id: [], bob.user_id: [bob.device_id, "NOSUCHDEV"],
                                                     nobody: [], "@far:remote.example": []}, "timeout": 10000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"device_keys", "failures", "master_keys", "self_signing_keys", "user_signing_keys"}
    assert body["failures"] == {"remote.example": body["failures"]["remote.example"]}
    assert "@far:remote.example" not in body["device_keys"]
    assert body["device_keys"][nobody] == {}
    assert list(body["device_keys"][bob.user_id]) == [bob.device_id]
    a = body["device_keys"][alice.user_id][alice.device_id]
    assert a["unsigned"] == {"device_display_name": "Alice's laptop"}
    expected = dict(alice.uploaded["device_keys"])
    del expected["unsigned"]
    assert {k: v for k, v in a.items() if k != "unsigned"} == expected
    assert body["device_keys"][bob.user_id][bob.device_id]["unsigned"] == {}
    # timeout is also accepted in the query string
    assert ca.post("/keys/query", params={"timeout": "5"}, json={"device_keys": {}}).status_code == 200


def test_query_bad_input(server, login):
    _, _, c = login(server)
    assert_error(c.post("/keys/query", json={}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/keys/query", json={"device_keys": []}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"@a:localhost": "DEV"}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"@a:localhost": [1]}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/query", json={"device_keys": {"not-a-user": []}}), 400, "M_INVALID_PARAM")
    assert_error(c.post("/keys/query", json={"device_keys": {}, "timeout": "soon"}), 400, "M_BAD_JSON")


def test_query_thousands_of_users_in_one_request(server, login, new_user):
    dev, c = upload_device(server, login)
    users = {new_user(): [] for _ in range(3000)}
    users[dev.user_id] = []
    r = c.post("/keys/query", json={"device_keys": users})
    assert r.status_code == 200
    body = r.json()["device_keys"]
    assert len(body) == 3001 and dev.device_id in body[dev.user_id]


def test_claim_is_fifo_and_never_repeats_then_fallback(server, login):
    dev, _ = upload_device(server, login, n_otks=5, fallback=True)
    _, _, c = login(server)
    want = {"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}}
    uploaded = dev.uploaded["one_time_keys"]
    seen = []
    for _ in range(5):
        r = c.post("/keys/claim", json=want)
        assert r.status_code == 200 and r.json()["failures"] == {}
        (kid, obj), = r.json()["one_time_keys"][dev.user_id][dev.device_id].items()
        assert uploaded[kid] == obj
        seen.append(kid)
    assert seen == sorted(uploaded), "first in, first out (one batch: in key id order)"
    for _ in range(2):
        got = c.post("/keys/claim", json=want).json()["one_time_keys"][dev.user_id][dev.device_id]
        assert got == dev.uploaded["fallback_keys"]


def test_claim_absent_when_nothing_and_remote_failures(server, login, new_user):
    dev, _ = upload_device(server, login)  # no one-time keys, no fallback
    _, _, c = login(server)
    r = c.post("/keys/claim", json={"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"},
                                                      new_user(): {"X": "signed_curve25519"},
                                                      "@x:remote.example": {"D": "signed_curve25519"}}})
    assert r.status_code == 200
    assert r.json()["one_time_keys"] == {}
    assert list(r.json()["failures"]) == ["remote.example"]


def test_claim_bad_input(server, login):
    _, _, c = login(server)
    assert_error(c.post("/keys/claim", json={}), 400, "M_MISSING_PARAM")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": ["x"]}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"@a:localhost": {"D": 5}}}), 400, "M_BAD_JSON")
    assert_error(c.post("/keys/claim", json={"one_time_keys": {"bad": {"D": "x"}}}), 400, "M_INVALID_PARAM")


def test_concurrent_claims_never_hand_out_a_key_twice_nor_the_fallback_early(start_server, login):
    s = start_server(workers=2, db_connections=2)
    dev, _ = upload_device(s, login, n_otks=40, fallback=True)
    claimers = [login(s)[2] for _ in range(64)]
    want = {"one_time_keys": {dev.user_id: {dev.device_id: "signed_curve25519"}}}
    barrier = threading.Barrier(64)
    results = [None] * 64

    def claim(i):
        session = requests.Session()  # its own connection
        barrier.wait()
        r = session.post(s.url + "/_matrix/client/v3/keys/claim", json=want,
                         headers={"Authorization": f"Bearer {claimers[i].token}"}, timeout=60)
        results[i] = r

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r is not None and r.status_code == 200 for r in results), [r and r.text for r in results]
    got = [r.json()["one_time_keys"][dev.user_id][dev.device_id] for r in results]
    fallback = dev.uploaded["fallback_keys"]
    otk_answers = [k for g in got if g != fallback for k in g]
    assert len(otk_answers) == 40 and len(set(otk_answers)) == 40
    assert set(otk_answers) == set(dev.uploaded["one_time_keys"])
    assert sum(1 for g in got if g == fallback) == 24
    owner = login(s, user_id=dev.user_id, device_id=dev.device_id)[2]
    assert owner.post("/keys/upload", json={}).json()["one_time_key_counts"]["signed_curve25519"] == 0
