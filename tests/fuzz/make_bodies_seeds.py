#!/usr/bin/python3
"""Writes tests/fuzz/corpus/bodies/: real request bodies for every endpoint of fuzz_bodies, made with the
integration suite's libolm helpers (tests/integration/olmkeys.py), as the user @fuzz:localhost on device FUZZDEV.
Each seed is <endpoint byte><flags byte><body>; the endpoint numbers follow `endpoints[]` in fuzz_bodies.c.
Run again only to refresh the corpus: the keys are fresh each time."""
import base64
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import olmkeys  # noqa: E402

USER, DEVICE = "@fuzz:localhost", "FUZZDEV"
dev = olmkeys.Device(USER, DEVICE)
other = olmkeys.Device("@bob:localhost", "BOBDEV")
xs = olmkeys.CrossSigning(USER)
bob_xs = olmkeys.CrossSigning("@bob:localhost")
backup_pk = base64.b64encode(os.urandom(32)).decode().rstrip("=")


def session(index):
    return {"first_message_index": index, "forwarded_count": 0, "is_verified": False,
            "session_data": {"ephemeral": backup_pk, "ciphertext": "Y2lwaGVy", "mac": "bWFj"}}


bodies = {
    0: [{"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(3), "fallback_keys": dev.fallback_keys()},
        {"one_time_keys": dev.one_time_keys(2)},
        {"device_keys": dev.device_keys("phone")},
        {"one_time_keys": {"curve25519:AAAAAQ": backup_pk}},
        {}],
    1: [{"device_keys": {USER: [], "@bob:localhost": ["BOBDEV"], "@carol:other.example": []}, "timeout": 10000},
        {"device_keys": {USER: [DEVICE]}}],
    2: [{"one_time_keys": {USER: {DEVICE: "signed_curve25519"}, "@bob:localhost": {"BOBDEV": "signed_curve25519"}},
         "timeout": 10000},
        {"one_time_keys": {"@carol:other.example": {"CAROL": "signed_curve25519"}}}],
    3: [xs.upload_body(),
        {"self_signing_key": xs.key_object("self_signing", xs.master)}],
    4: [{USER: {DEVICE: olmkeys.add_signature(dev.device_keys(), USER, pk_signing=xs.self_signing)}},
        {"@bob:localhost": {bob_xs.master.public_key:
                            olmkeys.add_signature(bob_xs.key_object("master"), USER, pk_signing=xs.user_signing)}}],
    5: [{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
         "auth_data": olmkeys.add_signature({"public_key": backup_pk}, USER, device=dev)}],
    6: [{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "version": "1",
         "auth_data": {"public_key": backup_pk, "signatures": {}}}],
    7: [{"rooms": {"!room:localhost": {"sessions": {"session1": session(0), "session2": session(3)}},
                   "!other:localhost": {"sessions": {"s3": session(1)}}}}],
    8: [{"sessions": {"session1": session(0), "session2": session(7)}}],
    9: [session(2)],
    10: [{"one_time_keys": {USER: {DEVICE: "signed_curve25519"}}}],
    11: [{"devices": [DEVICE, "OTHER"], "auth": {"type": "m.login.password", "password": "x"}}],
    12: [{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "fuzz"}, "password": "x",
          "initial_device_display_name": "Fuzz phone"}],
    13: [{"display_name": "Fuzz phone"}],
    14: [{}, {"ttl_ms": 60000}],
}
out = os.path.join(HERE, "corpus", "bodies")
os.makedirs(out, exist_ok=True)
for name in os.listdir(out):
    os.unlink(os.path.join(out, name))
for endpoint, items in bodies.items():
    for i, body in enumerate(items):
        text = json.dumps(body, separators=(",", ":")).encode()
        base = 8 if endpoint in (13, 14) else 0  # captures: a device id, a user id
        for flags in (base, base | 1):  # strict and lenient validation
            with open(os.path.join(out, f"e{endpoint:02d}-{i}-f{flags:02x}"), "wb") as f:
                f.write(bytes([endpoint, flags]) + text)
with open(os.path.join(out, "e14-empty-f08"), "wb") as f:
    f.write(bytes([14, 8]))  # the optional body left out
print(f"{len(os.listdir(out))} seeds in {out}")
