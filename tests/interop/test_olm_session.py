"""Two real Olm clients talk through mxkeys: upload, query, verify, claim, and an Olm session whose first message
decrypts on the other side. Every step checks what the server returned against what libolm accepts."""
import json

import canonicaljson
import olm
from olmkeys import Device


def verify_signed(obj, user_id, key_id, ed25519):
    payload = canonicaljson.encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
    olm.ed25519_verify(ed25519, payload, obj["signatures"][user_id][key_id])  # raises on a bad signature


def test_two_clients_establish_an_olm_session(server, login):
    alice_user, alice_dev_id, alice_c = login(server)
    bob_user, bob_dev_id, bob_c = login(server)
    alice = Device(alice_user, alice_dev_id)
    bob = Device(bob_user, bob_dev_id)
    for dev, c in ((alice, alice_c), (bob, bob_c)):
        r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(5),
                                         "fallback_keys": dev.fallback_keys()})
        assert r.status_code == 200, r.text

    # Bob looks Alice up and checks her device keys with libolm's own verifier.
    r = bob_c.post("/keys/query", json={"device_keys": {alice_user: []}})
    assert r.status_code == 200
    alice_keys = r.json()["device_keys"][alice_user][alice_dev_id]
    alice_ed = alice_keys["keys"][f"ed25519:{alice_dev_id}"]
    alice_curve = alice_keys["keys"][f"curve25519:{alice_dev_id}"]
    verify_signed(alice_keys, alice_user, f"ed25519:{alice_dev_id}", alice_ed)
    assert alice_ed == alice.ed25519

    # Bob claims one of Alice's one-time keys and checks its signature.
    r = bob_c.post("/keys/claim", json={"one_time_keys": {alice_user: {alice_dev_id: "signed_curve25519"}}})
    (kid, otk), = r.json()["one_time_keys"][alice_user][alice_dev_id].items()
    verify_signed(otk, alice_user, f"ed25519:{alice_dev_id}", alice_ed)

    # An Olm session from the claimed key; the pre-key message goes straight to Alice's process.
    outbound = olm.OutboundSession(bob.account, alice_curve, otk["key"])
    plaintext = json.dumps({"type": "m.room_key", "content": {"hello": "alice"}})
    message = outbound.encrypt(plaintext)
    assert isinstance(message, olm.OlmPreKeyMessage)
    inbound = olm.InboundSession(alice.account, message, bob.curve25519)
    assert inbound.decrypt(message) == plaintext
    alice.account.remove_one_time_keys(inbound)

    # And back: Alice answers on the same session, Bob decrypts.
    reply = inbound.encrypt("hi bob")
    assert outbound.decrypt(reply) == "hi bob"
