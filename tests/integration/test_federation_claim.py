"""POST /_matrix/federation/v1/user/keys/claim: other servers claiming our users' one-time keys, authenticated with
X-Matrix request signatures whose keys mxkeys fetches through a notary (fedremote.Notary, standing in for the
homeserver's federation listener). Claims share mx_keys_claim with /keys/claim: never twice, FIFO, fallback last."""
import os
import re
import threading

import pytest
import requests

from conftest import Client, assert_error
from fedremote import Notary, fed_request
from olmkeys import Device
from tesths import TestHomeserver
from test_keys_query_claim import upload_device

CLAIM = "/_matrix/federation/v1/user/keys/claim"


@pytest.fixture(scope="module")
def notary():
    with Notary(server_name="localhost") as n:
        yield n


@pytest.fixture(scope="module")
def fed(start_server, notary):
    return start_server(homeserver_federation_url=notary.url, federation_claims_per_minute=100000,
                        admin_token="admintest")


def unique(name):
    return f"{name}-{os.urandom(3).hex()}.test"


def claim(server, remote, targets, target=CLAIM, destination="localhost", key=None, headers=None, signed_target=None,
          signed_content=None):
    body = {"one_time_keys": targets}
    auth = remote.header("POST", signed_target or target, destination=destination,
                         content=signed_content if signed_content is not None else body, key=key)
    return fed_request(server.url, "POST", target, body, (headers or []) + [("Authorization", auth)])


def ok_claim(server, remote, targets, **kw):
    status, body = claim(server, remote, targets, **kw)
    assert status == 200, body
    assert set(body) == {"one_time_keys"}
    return body["one_time_keys"]


def refused(result, phrase):
    status, body = result
    assert status == 401, body
    assert body["errcode"] == "M_UNAUTHORIZED" and phrase in body["error"], body
    return body


def test_claims_are_fifo_never_repeat_share_local_claims_and_end_with_the_fallback(fed, notary, login):
    remote = notary.add_remote(unique("remote"))
    dev, c = upload_device(fed, login, n_otks=3, fallback=True)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    uploaded = set(dev.uploaded["one_time_keys"])
    seen = []
    for i in range(3):
        if i == 1:  # a local claim in between takes from the same pool
            r = c.post("/keys/claim", json={"one_time_keys": want})
            (kid, obj), = r.json()["one_time_keys"][dev.user_id][dev.device_id].items()
        else:
            (kid, obj), = ok_claim(fed, remote, want)[dev.user_id][dev.device_id].items()
        assert kid in uploaded and "fallback" not in obj
        seen.append(kid)
    assert len(set(seen)) == 3
    for _ in range(2):  # then the fallback key, every time
        (kid, obj), = ok_claim(fed, remote, want)[dev.user_id][dev.device_id].items()
        assert kid in dev.uploaded["fallback_keys"] and obj["fallback"] is True
    # a device with nothing, and an unknown device, are simply absent
    other, _ = upload_device(fed, login)
    got = ok_claim(fed, remote, {other.user_id: {other.device_id: "signed_curve25519", "NOPE": "signed_curve25519"}})
    assert got == {}


def test_signature_destination_and_header_refusals(fed, notary, login):
    remote = notary.add_remote(unique("remote"))
    dev, _ = upload_device(fed, login, n_otks=5)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    body = {"one_time_keys": want}
    refused(fed_request(fed.url, "POST", CLAIM, body), "missing X-Matrix")
    refused(fed_request(fed.url, "POST", CLAIM, body, [("Authorization", "Bearer abc")]), "missing X-Matrix")
    refused(fed_request(fed.url, "POST", CLAIM, body, [("Authorization", "X-Matrix origin=x.test")]), "malformed")
    refused(claim(fed, remote, want, signed_content={"one_time_keys": {}}), "signature")
    refused(claim(fed, remote, want, signed_target=CLAIM + "?a=1"), "does not match")
    refused(claim(fed, remote, want, destination="elsewhere.test"), "destination elsewhere.test")
    # several headers: all must name one origin; a bad signature by a known key refuses even beside a good one
    other = notary.add_remote(unique("other"))
    two = [("Authorization", other.header("POST", CLAIM, content=body))]
    refused(claim(fed, remote, want, headers=two), "disagree")
    bad_sig = remote.header("POST", CLAIM, content={"x": 1})
    refused(claim(fed, remote, want, headers=[("Authorization", bad_sig)]), "does not match")
    # a sig that is no signature at all is refused without asking the notary for a key it has not seen yet
    unseen = notary.add_remote(unique("unseen"))
    asked = len(notary.queries)
    short = re.sub(r'sig="[^"]*"', 'sig="c2hvcnQ"', unseen.header("POST", CLAIM, content=body))
    refused(claim(fed, unseen, want, headers=[("Authorization", short)]), "not an ed25519 signature")
    assert len(notary.queries) == asked, notary.queries[asked:]
    # nothing was handed out by any refused request
    assert len(ok_claim(fed, remote, want)[dev.user_id][dev.device_id]) == 1
    r = requests.get(fed.url + "/_mxkeys/health")
    assert r.status_code == 200


def test_accepted_header_forms(fed, notary, login):
    remote = notary.add_remote(unique("remote"))
    dev, _ = upload_device(fed, login, n_otks=5)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    body = {"one_time_keys": want}
    # no destination (servers before Matrix 1.3), unquoted values, odd spacing and case
    assert claim(fed, remote, want, destination=None)[0] == 200
    h = remote.header("POST", CLAIM, content=body, quoted=False)
    assert fed_request(fed.url, "POST", CLAIM, body, [("Authorization", h)])[0] == 200
    h = remote.header("POST", CLAIM, content=body).replace("X-Matrix ", "x-matrix   ").replace("origin=", "Origin =")
    assert fed_request(fed.url, "POST", CLAIM, body, [("Authorization", h + ",future=\"x\"")])[0] == 200
    # a Bearer header beside the X-Matrix one is not ours to judge; an unknown key beside a good one is skipped
    unknown = re.sub(r'key="[^"]+"', 'key="ed25519:nope"', remote.header("POST", CLAIM, content=body))
    hs = [("Authorization", "Bearer x"), ("Authorization", unknown), ("Authorization", remote.header(
        "POST", CLAIM, content=body))]
    assert fed_request(fed.url, "POST", CLAIM, body, hs)[0] == 200


def test_raw_request_target_is_what_is_signed(fed, notary, login):
    remote = notary.add_remote(unique("remote"))
    dev, _ = upload_device(fed, login, n_otks=3)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    target = CLAIM + "?via=%2Fa%20b&x=%41"
    assert claim(fed, remote, want, target=target)[0] == 200
    refused(claim(fed, remote, want, target=target, signed_target=CLAIM + "?via=/a b&x=A"), "does not match")
    # an encoded path is another path (mxkeys routes, like it verifies, on the target as sent)
    status, body = claim(fed, remote, want, target="/_matrix/federation/v1/user/keys/cl%61im")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"


def test_notary_knobs_unknown_expired_rotated_bad_signature_error(fed, notary, login):
    dev, _ = upload_device(fed, login, n_otks=10)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    for mode, phrase in [("unknown", "knows no key"), ("expired", "expired"),
                         ("bad_notary_signature", "notary localhost's signature")]:
        remote = notary.add_remote(unique(mode))
        notary.mode[remote.name] = mode
        refused(claim(fed, remote, want), phrase)
    remote = notary.add_remote(unique("error"))
    notary.mode[remote.name] = "error"
    status, body = claim(fed, remote, want)
    assert status == 503 and "status 500" in body["error"], body
    # rotation: the new key works at once (a key not cached is looked up)
    remote = notary.add_remote(unique("rotating"))
    assert claim(fed, remote, want)[0] == 200
    remote.rotate()
    assert claim(fed, remote, want)[0] == 200
    # a key the notary lists only in old_verify_keys never authenticates a request
    remote = notary.add_remote(unique("rotated"))
    old = remote.current
    remote.rotate()
    assert claim(fed, remote, want)[0] == 200
    refused(claim(fed, remote, want, key=old), "old_verify_keys")
    # refusals are cached briefly: asking again does not reach the notary
    before = len(notary.queries)
    refused(claim(fed, remote, want, key=old), "old_verify_keys")
    assert len(notary.queries) - before <= 1  # at most the other worker's first look-up


def test_key_lookups_are_cached_and_coalesced(fed, notary, login):
    remote = notary.add_remote(unique("busy"))
    dev, _ = upload_device(fed, login, n_otks=40)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    results = []

    def one():
        results.append(claim(fed, remote, want)[0])

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 16
    for _ in range(8):
        assert claim(fed, remote, want)[0] == 200
    asked = [q for q in notary.queries if q[0] == remote.name]
    assert 1 <= len(asked) <= 2, asked  # one look-up per worker at most (2 workers), however many requests


def test_32_concurrent_claims_from_two_origins_never_share_a_key(fed, notary, login):
    a, b = notary.add_remote(unique("a")), notary.add_remote(unique("b"))
    dev, _ = upload_device(fed, login, n_otks=20, fallback=True)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    got, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def one(remote):
        barrier.wait(30)
        status, body = claim(fed, remote, want)
        with lock:
            if status != 200:
                errors.append(body)
            else:
                got.append(body["one_time_keys"][dev.user_id][dev.device_id])

    threads = [threading.Thread(target=one, args=(a if i % 2 else b,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == 32
    otks = [k for g in got for k in g if not g[k].get("fallback")]
    fallbacks = [k for g in got for k in g if g[k].get("fallback")]
    assert len(otks) == 20 and set(otks) == set(dev.uploaded["one_time_keys"]), "each one-time key exactly once"
    assert len(fallbacks) == 12 and set(fallbacks) == set(dev.uploaded["fallback_keys"])


def test_local_users_only_and_the_unstable_claim(fed, notary, login):
    remote = notary.add_remote(unique("remote"))
    dev, _ = upload_device(fed, login, n_otks=1)
    status, body = claim(fed, remote, {dev.user_id: {dev.device_id: "signed_curve25519"},
                                       "@bob:elsewhere.test": {"D": "signed_curve25519"}})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM" and "@bob:elsewhere.test" in body["error"]
    status, body = claim(fed, remote, {dev.user_id: {dev.device_id: 5}})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = fed_request(fed.url, "POST", "/_matrix/federation/unstable/user/keys/claim",
                               {"one_time_keys": {dev.user_id: {dev.device_id: ["signed_curve25519"]}}})
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED" and "v1" in body["error"]
    # the key was not touched by the refused request
    assert len(ok_claim(fed, remote, {dev.user_id: {dev.device_id: "signed_curve25519"}})[dev.user_id]) == 1


def test_per_origin_limit_with_its_metric(start_server, notary, login):
    s = start_server(homeserver_federation_url=notary.url, federation_claims_per_minute=3)
    a, b = notary.add_remote(unique("greedy")), notary.add_remote(unique("polite"))
    dev, _ = upload_device(s, login, n_otks=10)
    want = {dev.user_id: {dev.device_id: "signed_curve25519"}}
    for _ in range(3):
        assert claim(s, a, want)[0] == 200
    status, body = claim(s, a, want)
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0, body
    assert a.name in body["error"]
    assert claim(s, b, want)[0] == 200, "another origin has its own allowance"
    metrics = requests.get(s.url + "/metrics").text
    assert 'mxkeys_federation_claims_total{outcome="rate_limited"} 1' in metrics
    assert 'mxkeys_federation_claims_total{outcome="ok"} 4' in metrics
    assert re.search(r'mxkeys_federation_auth_total\{outcome="ok"\} 5\b', metrics)
    s.stop()


def test_without_a_notary_federation_is_not_served(server):
    status, body = fed_request(server.url, "POST", CLAIM, {"one_time_keys": {}})
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED" and "--homeserver-federation-url" in body["error"]


def test_beside_a_homeserver_with_a_separate_federation_listener(start_server, notary):
    hs = TestHomeserver(server_name="localhost")
    s = start_server(auth="homeserver", homeserver_url=hs.url, homeserver_federation_url=notary.url)
    try:
        user = hs.register("fed" + os.urandom(4).hex())
        token, device_id = hs.login(user)
        dev = Device(user, device_id)
        c = Client(s, token)
        r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(2)})
        assert r.status_code == 200, r.text
        remote = notary.add_remote(unique("remote"))
        got = ok_claim(s, remote, {user: {device_id: "signed_curve25519"}})
        assert len(got[user][device_id]) == 1
        assert not [q for q in hs.requests if "/_matrix/key/" in q["path"]], "keys come from the federation listener"
        c.session.close()
    finally:
        s.stop()
        hs.close()
