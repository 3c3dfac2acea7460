"""Malformed input, generated: thousands of mutations of valid request bodies (values of every JSON type swapped in at
every depth, members dropped and added, bodies cut short and bytes changed) sent to every endpoint that reads a body,
in both validation modes. Each answer must be a success or a Matrix error with a 4xx status, never a 5xx, and the
server must keep serving; under the ASan+UBSan build this also runs every parsing and validation path with bad data.
Seeded, so a failure names a reproducible case."""
import copy
import json
import random
import re

import olm
import pytest
from keys_modes import any_server  # noqa: F401 (fixture)
from olmkeys import CrossSigning, Device, tampered

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
CASES_PER_BODY = 150

ODD_VALUES = [None, True, False, 0, -1, 2 ** 53, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 1.5, -0.0, 1e300, "", "x",
              "\u0000", "\ud800", "\ud7ff\ue000", "\u2028", "é" * 300, "a" * 70000, [], [None], [[[[[]]]]], {}, {"": {}},
              {"a" * 300: 1}]


def paths(value, prefix=()):
    """Every path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


def replace_at(value, path, new):
    return tampered(value, path, new) if path else new


def drop_at(value, path):
    out = copy.deepcopy(value)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


def mutations(body, rng):
    """Yields (description, raw bytes) for CASES_PER_BODY mutations of `body`."""
    all_paths = list(paths(body))
    inner = [p for p in all_paths if p]
    text = json.dumps(body).encode()
    for n in range(CASES_PER_BODY):
        kind = n % 6
        if kind in (0, 1):
            p = rng.choice(all_paths)
            v = rng.choice(ODD_VALUES)
            yield f"set {p!r} to {str(v)[:40]!r}", json.dumps(replace_at(body, p, v)).encode()
        elif kind == 2 and inner:
            p = rng.choice(inner)
            yield f"drop {p!r}", json.dumps(drop_at(body, p)).encode()
        elif kind == 3:
            p = rng.choice(all_paths)
            target = replace_at(body, p, {"extra": rng.choice(ODD_VALUES), "nested": {"x": [1, {"y": None}]}})
            yield f"object at {p!r}", json.dumps(target).encode()
        elif kind == 4:
            cut = rng.randrange(0, len(text))
            yield f"cut at {cut}", text[:cut]
        else:
            raw = bytearray(text)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.choice(b'{}[]",:\\\x00\x80\xff0e-. ')
            yield "bytes changed", bytes(raw)


def check_answer(r, what):
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("errcode"), str) and isinstance(body.get("error"), str), f"{what}: {r.text[:300]}"


def bodies(server, login):
    """(method, path, valid body, client) for every body-reading endpoint, with the state each needs."""
    user, device_id, c = login(server)
    dev = Device(user, device_id)
    xs = CrossSigning(user)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    assert c.post("/keys/device_signing/upload", json=xs.upload_body()).status_code == 200
    r = c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
    version = r.json()["version"]
    session = {"first_message_index": 1, "forwarded_count": 0, "is_verified": False,
               "session_data": {"ciphertext": "Y2lwaGVy", "ephemeral": "ZXBo", "mac": "bWFj"}}
    stored_dev = c.post("/keys/query", json={"device_keys": {user: [device_id]}}).json()["device_keys"][user][device_id]
    stored_dev.pop("unsigned", None)
    return [
        ("POST", "/keys/upload", {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(3),
                                  "fallback_keys": dev.fallback_keys()}),
        ("POST", "/keys/query", {"device_keys": {user: [device_id], "@other:localhost": []}, "timeout": 10}),
        ("POST", "/keys/claim", {"one_time_keys": {user: {device_id: "signed_curve25519"}}, "timeout": 10}),
        ("POST", "/keys/signatures/upload", {user: {device_id: stored_dev}}),
        ("POST", "/keys/device_signing/upload", xs.upload_body()),
        ("PUT", f"/room_keys/version/{version}", {"algorithm": ALG, "auth_data": {"public_key": "abc"},
                                                  "version": version}),
        ("PUT", f"/room_keys/keys?version={version}", {"rooms": {"!r:x": {"sessions": {"s": session}}}}),
        ("PUT", f"/room_keys/keys/!r:x?version={version}", {"sessions": {"s": session}}),
        ("PUT", f"/room_keys/keys/!r:x/s?version={version}", session),
        # last: a mutation that creates a version makes `version` above stale (403) for any later write
        ("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": {"public_key": "abc", "signatures": {}}}),
    ], c


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_bodies_get_4xx_never_5xx(any_server, login, seed):
    endpoints, c = bodies(any_server, login)
    rng = random.Random(seed)
    sent = 0
    for method, path, body in endpoints:
        for what, raw in mutations(body, rng):
            r = c.request(method, path, data=raw, headers={"Content-Type": "application/json"})
            check_answer(r, f"seed {seed}: {method} {path}: {what}")
            sent += 1
    assert sent == len(endpoints) * CASES_PER_BODY
    assert c.get("/_mxkeys/health").status_code == 200
    assert c.post("/keys/query", json={"device_keys": {}}).status_code == 200


def with_nul_after_a_scalar(body):
    """The body's JSON with a raw NUL byte right after its first number or true/false/null (one is added when it has
    none): invalid JSON that jansson 2.14 reads as if the NUL were not there."""
    text = json.dumps(body)
    m = re.search(r"(\d|true|false|null)(?=[,}\]])", text)
    if m is None:
        return (text[:-1] + ', "probe": 1\x00}').encode()
    return (text[:m.end()] + "\x00" + text[m.end():]).encode()


def test_a_raw_nul_byte_after_a_number_or_literal_is_not_json(any_server, login):
    """Found by fuzz_bodies (tests/fuzz/regressions/bodies/raw-nul-after-a-number): the whole-backup PUT handed such a
    body, as sent, to PostgreSQL, where the text ends at the NUL."""
    endpoints, c = bodies(any_server, login)
    version = None
    for method, path, body in endpoints:
        raw = with_nul_after_a_scalar(body)
        r = c.request(method, path, data=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON", f"{method} {path}: {r.status_code} {r.text}"
        assert "NUL" in r.json()["error"], r.text
        if path.startswith("/room_keys/keys?version="):
            version = path.split("=", 1)[1]
    assert version is not None
    assert c.get(f"/room_keys/keys?version={version}").json() == {"rooms": {}}, "nothing of it was stored"
