"""A scripted conversation between real clients through mxkeys (issue 6's interop kit).

Two users, three devices: Alice's laptop (libolm), Alice's phone (matrix-nio's Olm machine) and Bob's device
(libolm, in a separate process). They upload keys, query each other, claim one-time keys and establish an Olm
session whose first message decrypts in the other process; share a megolm room key over it; bootstrap
cross-signing and verify each other; back up the megolm session and restore it on Alice's second device. Every step
checks what the server returned against what the real client library accepts.

Runs on its own: MXKEYSD=build/mxkeysd /usr/bin/python3 -m pytest tests/interop
"""
import json
import multiprocessing
import tempfile

import canonicaljson
import olm
import requests
from olmkeys import CrossSigning, Device, add_signature

ROOM = "!conversation:localhost"


def verify(obj, user_id, key_id, public_key):
    """Checks a signature the way clients do (libolm's verifier); raises on a bad one."""
    payload = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    olm.ed25519_verify(public_key, canonicaljson.encode_canonical_json(payload), obj["signatures"][user_id][key_id])


def api(url, token, method, path, **kw):
    r = requests.request(method, url + "/_matrix/client/v3" + path, headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kw)
    assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()


def bob_process(url, token, user_id, device_id, conn):
    """Bob's client, in its own process: publishes keys, then decrypts what Alice sends over the pipe."""
    bob = Device(user_id, device_id)
    api(url, token, "POST", "/keys/upload",
        json={"device_keys": bob.device_keys("Bob's desktop"), "one_time_keys": bob.one_time_keys(10),
              "fallback_keys": bob.fallback_keys()})
    conn.send("published")
    sender_curve, msg_type, body = conn.recv()
    message = olm.OlmPreKeyMessage(body) if msg_type == 0 else olm.OlmMessage(body)
    session = olm.InboundSession(bob.account, message, sender_curve)
    bob.account.remove_one_time_keys(session)
    plaintext = session.decrypt(message)
    event = json.loads(plaintext)
    # the room key Alice shared lets Bob read the room
    inbound = olm.InboundGroupSession(event["content"]["session_key"])
    conn.send(("room_key", inbound.id))
    ciphertext = conn.recv()
    conn.send(inbound.decrypt(ciphertext)[0])
    reply = session.encrypt("got it")
    conn.send((reply.message_type, reply.ciphertext))
    conn.close()


def test_conversation(server, new_user):
    url = server.url
    alice_user, bob_user = new_user("alice"), new_user("bob")
    laptop_token = server.mint(alice_user, "LAPTOP")
    phone_token = server.mint(alice_user, "PHONE")
    bob_token = server.mint(bob_user, "BOBDESK")

    # --- Bob publishes keys from his own process
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    bob_proc = ctx.Process(target=bob_process, args=(url, bob_token, bob_user, "BOBDESK", child))
    bob_proc.start()
    try:
        assert parent.poll(60) and parent.recv() == "published"

        # --- Alice's laptop (libolm) and phone (matrix-nio) publish theirs
        laptop = Device(alice_user, "LAPTOP")
        api(url, laptop_token, "POST", "/keys/upload",
            json={"device_keys": laptop.device_keys("Alice's laptop"), "one_time_keys": laptop.one_time_keys(5)})
        from nio.crypto import Olm
        from nio.store import DefaultStore
        phone = Olm(alice_user, "PHONE", DefaultStore(alice_user, "PHONE", tempfile.mkdtemp(), ""))
        counts = api(url, phone_token, "POST", "/keys/upload", json=phone.share_keys())["one_time_key_counts"]
        assert counts["signed_curve25519"] > 0

        # --- Alice queries Bob; the laptop checks his device keys with libolm
        q = api(url, laptop_token, "POST", "/keys/query", json={"device_keys": {bob_user: []}})
        bob_keys = q["device_keys"][bob_user]["BOBDESK"]
        bob_ed = bob_keys["keys"]["ed25519:BOBDESK"]
        bob_curve = bob_keys["keys"]["curve25519:BOBDESK"]
        verify(bob_keys, bob_user, "ed25519:BOBDESK", bob_ed)
        assert bob_keys["unsigned"]["device_display_name"] == "Bob's desktop"

        # --- claim a one-time key, check its signature, start an Olm session
        claim = api(url, laptop_token, "POST", "/keys/claim",
                    json={"one_time_keys": {bob_user: {"BOBDESK": "signed_curve25519"}}})
        (kid, otk), = claim["one_time_keys"][bob_user]["BOBDESK"].items()
        assert "fallback" not in otk, "one-time keys remain, so no fallback key"
        verify(otk, bob_user, "ed25519:BOBDESK", bob_ed)
        session = olm.OutboundSession(laptop.account, bob_curve, otk["key"])

        # --- share a megolm room key over Olm; the first message decrypts in Bob's process
        group = olm.OutboundGroupSession()
        room_key = {"type": "m.room_key", "content": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM,
                                                      "session_id": group.id, "session_key": group.session_key}}
        first = session.encrypt(json.dumps(room_key))
        parent.send((laptop.curve25519, first.message_type, first.ciphertext))
        assert parent.poll(60)
        assert parent.recv() == ("room_key", group.id)
        secret = "the eagle lands at dawn"
        first_ciphertext = group.encrypt(secret)
        parent.send(first_ciphertext)
        assert parent.poll(60) and parent.recv() == secret
        assert parent.poll(60)
        reply_type, reply_body = parent.recv()
        reply = olm.OlmMessage(reply_body) if reply_type == 1 else olm.OlmPreKeyMessage(reply_body)
        assert session.decrypt(reply) == "got it"
    finally:
        bob_proc.join(30)
        if bob_proc.is_alive():
            bob_proc.kill()
    assert bob_proc.exitcode == 0

    # --- cross-signing: both bootstrap; Alice self-signs her devices; each user-signs the other
    alice_xs, bob_xs = CrossSigning(alice_user), CrossSigning(bob_user)
    api(url, laptop_token, "POST", "/keys/device_signing/upload", json=alice_xs.upload_body())
    api(url, bob_token, "POST", "/keys/device_signing/upload", json=bob_xs.upload_body())
    mine = api(url, laptop_token, "POST", "/keys/query", json={"device_keys": {alice_user: []}})
    to_sign = {d: add_signature(obj, alice_user, alice_xs.self_signing)
               for d, obj in mine["device_keys"][alice_user].items()}
    assert set(to_sign) == {"LAPTOP", "PHONE"}
    assert api(url, laptop_token, "POST", "/keys/signatures/upload", json={alice_user: to_sign})["failures"] == {}
    theirs = api(url, laptop_token, "POST", "/keys/query", json={"device_keys": {bob_user: []}})
    bob_master = theirs["master_keys"][bob_user]
    sig = {bob_user: {bob_xs.master.public_key: add_signature(bob_master, alice_user, alice_xs.user_signing)}}
    assert api(url, laptop_token, "POST", "/keys/signatures/upload", json=sig)["failures"] == {}

    # Bob verifies Alice's chain with libolm: master -> self-signing key -> each device
    seen = api(url, bob_token, "POST", "/keys/query", json={"device_keys": {alice_user: []}})
    master_pk = alice_xs.master.public_key
    ssk = seen["self_signing_keys"][alice_user]
    ssk_pk = alice_xs.self_signing.public_key
    verify(ssk, alice_user, f"ed25519:{master_pk}", master_pk)
    for device_id, obj in seen["device_keys"][alice_user].items():
        verify(obj, alice_user, f"ed25519:{ssk_pk}", ssk_pk)
        verify(obj, alice_user, f"ed25519:{device_id}", obj["keys"][f"ed25519:{device_id}"])
    # Alice's user-signing signature on Bob's master key is hers to see, not Bob's
    assert alice_user not in seen.get("master_keys", {}).get(bob_user, {}).get("signatures", {})
    mine_of_bob = api(url, laptop_token, "POST", "/keys/query", json={"device_keys": {bob_user: []}})
    verify(mine_of_bob["master_keys"][bob_user], alice_user, f"ed25519:{alice_xs.user_signing.public_key}",
           alice_xs.user_signing.public_key)
    bobs_view = api(url, bob_token, "POST", "/keys/query", json={"device_keys": {bob_user: []}})
    assert alice_user not in bobs_view["master_keys"][bob_user].get("signatures", {})

    # --- backup on the laptop, restore on the phone
    backup_key = olm.PkDecryption()
    version = api(url, laptop_token, "POST", "/room_keys/version",
                  json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                        "auth_data": {"public_key": backup_key.public_key}})["version"]
    export = {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": laptop.curve25519,
              "session_key": olm.InboundGroupSession(room_key["content"]["session_key"]).export_session(0),
              "sender_claimed_keys": {"ed25519": laptop.ed25519}, "forwarding_curve25519_key_chain": []}
    enc = olm.PkEncryption(backup_key.public_key).encrypt(json.dumps(export))
    data = {"first_message_index": 0, "forwarded_count": 0, "is_verified": True,
            "session_data": {"ephemeral": enc.ephemeral_key, "ciphertext": enc.ciphertext, "mac": enc.mac}}
    result = api(url, laptop_token, "PUT", "/room_keys/keys", params={"version": version},
                 json={"rooms": {ROOM: {"sessions": {group.id: data}}}})
    assert result["count"] == 1

    # The phone gets the backup key out of band (in real clients: secret storage) and restores the session.
    current = api(url, phone_token, "GET", "/room_keys/version")
    assert current["version"] == version and current["auth_data"]["public_key"] == backup_key.public_key
    restored = api(url, phone_token, "GET", "/room_keys/keys", params={"version": version})
    sd = restored["rooms"][ROOM]["sessions"][group.id]["session_data"]
    session_export = json.loads(backup_key.decrypt(olm.PkMessage(sd["ephemeral"], sd["mac"], sd["ciphertext"])))
    phone_session = olm.InboundGroupSession.import_session(session_export["session_key"])
    assert phone_session.decrypt(first_ciphertext)[0] == secret  # history from before the phone existed
    later = group.encrypt("read on the phone")
    assert phone_session.decrypt(later)[0] == "read on the phone"
