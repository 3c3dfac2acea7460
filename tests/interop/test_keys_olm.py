"""Two different client stacks talk through mxkeys: matrix-nio's Olm machine (its own key upload, its own handling
of our /keys/query and /keys/claim answers, its own signature checks) and a raw libolm account (python3-olm).
Each side claims the other's one-time key and opens an Olm session whose first message the other side decrypts,
in both validation modes."""
import json
import tempfile

import canonicaljson
import olm
import pytest
from keys_modes import any_server  # noqa: F401 (fixture)
from olmkeys import Device


def verify_signed(obj, user_id, key_id, ed25519):
    """libolm's own ed25519 check of a signed object as served."""
    payload = canonicaljson.encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
    olm.ed25519_verify(ed25519, payload, obj["signatures"][user_id][key_id])  # raises on a bad signature


@pytest.fixture
def nio_client(any_server, login):
    from nio.crypto import Olm
    from nio.responses import KeysUploadResponse
    from nio.store import DefaultStore
    user, device_id, c = login(any_server)
    machine = Olm(user, device_id, DefaultStore(user, device_id, tempfile.mkdtemp(), ""))
    assert machine.should_upload_keys
    r = c.post("/keys/upload", json=machine.share_keys())
    assert r.status_code == 200, r.text
    machine.handle_response(KeysUploadResponse.from_dict(r.json()))
    assert not machine.should_upload_keys, "nio read our one_time_key_counts and is satisfied"
    return machine, c


def test_nio_and_libolm_open_sessions_both_ways(any_server, login, nio_client):
    from nio.crypto import OlmDevice
    from nio.events import DummyEvent
    from nio.responses import KeysClaimResponse, KeysQueryResponse
    machine, nio_c = nio_client
    bob_user, bob_dev_id, bob_c = login(any_server)
    bob = Device(bob_user, bob_dev_id)
    bob_otks = bob.one_time_keys(3)
    r = bob_c.post("/keys/upload", json={"device_keys": bob.device_keys(), "one_time_keys": bob_otks,
                                         "fallback_keys": bob.fallback_keys()})
    assert r.status_code == 200, r.text

    # nio looks Bob up; nio keeps a device only if its self-signature verifies
    r = nio_c.post("/keys/query", json={"device_keys": {bob_user: []}})
    assert r.status_code == 200
    machine.handle_response(KeysQueryResponse.from_dict(r.json()))
    device = machine.device_store[bob_user][bob_dev_id]
    assert isinstance(device, OlmDevice) and device.ed25519 == bob.ed25519 and device.curve25519 == bob.curve25519

    # nio claims one of Bob's one-time keys; it verifies the key's signature and opens an outbound session
    r = nio_c.post("/keys/claim", json={"one_time_keys": {bob_user: {bob_dev_id: "signed_curve25519"}}})
    assert r.status_code == 200
    (kid, otk), = r.json()["one_time_keys"][bob_user][bob_dev_id].items()
    assert otk == bob_otks[kid], "the oldest of Bob's keys, exactly as uploaded"
    machine.handle_response(KeysClaimResponse.from_dict(r.json()))
    sessions = list(machine.session_store[bob.curve25519])
    assert len(sessions) == 1, "nio accepted the claimed key and created a session"
    content = machine._olm_encrypt(sessions[0], device, "m.dummy", {})
    cipher = content["ciphertext"][bob.curve25519]
    assert cipher["type"] == 0

    # Bob (libolm) decrypts nio's pre-key message with the one-time key mxkeys handed out
    message = olm.OlmPreKeyMessage(cipher["body"])
    inbound = olm.InboundSession(bob.account, message, content["sender_key"])
    payload = json.loads(inbound.decrypt(message))
    bob.account.remove_one_time_keys(inbound)
    assert payload["sender"] == machine.user_id and payload["recipient"] == bob_user
    assert payload["recipient_keys"]["ed25519"] == bob.ed25519
    assert payload["keys"]["ed25519"] == machine.account.identity_keys["ed25519"]

    # The other way: Bob queries nio's device, checks nio's signatures with libolm, claims nio's key
    r = bob_c.post("/keys/query", json={"device_keys": {machine.user_id: [machine.device_id]}})
    nio_keys = r.json()["device_keys"][machine.user_id][machine.device_id]
    nio_ed = nio_keys["keys"][f"ed25519:{machine.device_id}"]
    nio_curve = nio_keys["keys"][f"curve25519:{machine.device_id}"]
    verify_signed(nio_keys, machine.user_id, f"ed25519:{machine.device_id}", nio_ed)
    assert nio_ed == machine.account.identity_keys["ed25519"]
    r = bob_c.post("/keys/claim", json={"one_time_keys": {machine.user_id: {machine.device_id: "signed_curve25519"}}})
    (kid, otk), = r.json()["one_time_keys"][machine.user_id][machine.device_id].items()
    verify_signed(otk, machine.user_id, f"ed25519:{machine.device_id}", nio_ed)
    outbound = olm.OutboundSession(bob.account, nio_curve, otk["key"])
    payload = {"sender": bob_user, "sender_device": bob_dev_id, "keys": {"ed25519": bob.ed25519},
               "recipient": machine.user_id, "recipient_keys": {"ed25519": nio_ed}, "type": "m.dummy",
               "content": {}}
    message = outbound.encrypt(json.dumps(payload))
    assert isinstance(message, olm.OlmPreKeyMessage)
    event = machine.decrypt(bob_user, bob.curve25519, message)
    assert isinstance(event, DummyEvent), "nio decrypted and validated Bob's message"


def test_libolm_session_over_fallback_key(any_server, login):
    """When the one-time keys are gone the fallback key (handed out exactly as stored) still opens a session, and
    the owner's libolm account accepts it."""
    alice_user, alice_dev_id, alice_c = login(any_server)
    alice = Device(alice_user, alice_dev_id)
    r = alice_c.post("/keys/upload", json={"device_keys": alice.device_keys(), "fallback_keys": alice.fallback_keys()})
    assert r.status_code == 200
    bob_user, bob_dev_id, bob_c = login(any_server)
    bob = Device(bob_user, bob_dev_id)
    r = bob_c.post("/keys/claim", json={"one_time_keys": {alice_user: {alice_dev_id: "signed_curve25519"}}})
    (kid, key), = r.json()["one_time_keys"][alice_user][alice_dev_id].items()
    assert key["fallback"] is True
    verify_signed(key, alice_user, f"ed25519:{alice_dev_id}", alice.ed25519)
    outbound = olm.OutboundSession(bob.account, alice.curve25519, key["key"])
    message = outbound.encrypt("over the fallback key")
    inbound = olm.InboundSession(alice.account, message, bob.curve25519)
    assert inbound.decrypt(message) == "over the fallback key"
