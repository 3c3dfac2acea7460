"""Key backup under load and at size: concurrent writers across workers and instances, streamed reads of large
backups, clients that go away mid-stream, and session data produced and restored by a real Olm client."""
import json
import secrets
import socket
import threading
import time
from urllib.parse import quote

import olm
import pytest
import requests
from conftest import Client

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
PREFIX = "/_matrix/client/v3"


def new_version(c, public_key=None):
    r = c.post("/room_keys/version",
               json={"algorithm": ALG, "auth_data": {"public_key": public_key or olm.PkDecryption().public_key}})
    assert r.status_code == 200, r.text
    return r.json()["version"]


def key(index=0, forwarded=0, verified=False, data=None):
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": data if data is not None else {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate member in streamed JSON: {keys[:5]}"
    return dict(pairs)


def strict_json(text):
    return json.loads(text, object_pairs_hook=no_duplicates)


# ---- concurrency ----------------------------------------------------------------------------------------------------


def writer_offer(i, r, j, rnd):
    """What writer i offers for session j of room r in round rnd: (is_verified, first_message_index, forwarded)."""
    return ((i + j) % 2 == 0, (i * 7 + j + rnd + r) % 13, (i + rnd) % 3)


@pytest.fixture(scope="module")
def two_instances(start_server):
    """Two mxkeysd instances with two workers each, on the same database."""
    return [start_server(workers=2, db_connections=2), start_server(workers=2, db_connections=2)]


def test_count_exact_with_16_concurrent_writers_across_workers_and_instances(two_instances, login):
    a, b = two_instances
    _, _, c = login(a)
    v = new_version(c)
    errors, results = [], []

    def writer(i):
        s = two_instances[i % 2]
        session = requests.Session()  # a connection of its own: the kernel spreads them over the workers
        for rnd in range(5):
            rooms = {f"!room{r}:x": {"sessions": {f"s{j}": key(*writer_offer(i, r, j, rnd)[1:], writer_offer(i, r, j, rnd)[0])
                                                  for j in range(40)}} for r in range(2)}
            r = session.put(s.url + PREFIX + "/room_keys/keys", params={"version": v}, json={"rooms": rooms},
                            headers={"Authorization": f"Bearer {c.token}"}, timeout=60)
            if r.status_code != 200:
                errors.append(r.text)
            else:
                results.append(r.json())
        session.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not errors, errors[:3]
    assert len(results) == 80
    info = c.get("/room_keys/version").json()
    assert info["count"] == 80
    everything = strict_json(c.get("/room_keys/keys", params={"version": v}).text)
    assert sum(len(room["sessions"]) for room in everything["rooms"].values()) == 80
    # every stored key is the best any writer offered, by the lexicographic rule
    for r in range(2):
        for j in range(40):
            offers = [writer_offer(i, r, j, rnd) for i in range(16) for rnd in range(5)]
            best = min(offers, key=lambda o: (not o[0], o[1], o[2]))
            got = everything["rooms"][f"!room{r}:x"]["sessions"][f"s{j}"]
            assert (got["is_verified"], got["first_message_index"], got["forwarded_count"]) == best
    # one etag names one stored set: it can never come back with two different counts
    seen = {}
    for res in results:
        assert seen.setdefault(res["etag"], res["count"]) == res["count"]
    assert seen.get(info["etag"], info["count"]) == info["count"]


def test_count_exact_with_concurrent_writers_and_deleters(two_instances, login):
    _, _, c = login(two_instances[0])
    v = new_version(c)
    errors, results = [], []

    def worker(i):
        s = two_instances[i % 2]
        session = requests.Session()
        auth = {"Authorization": f"Bearer {c.token}"}
        base = s.url + PREFIX + "/room_keys/keys"
        for rnd in range(6):
            if i % 4 == 3:  # a deleter: single sessions, then a whole room
                if rnd % 3 == 2:
                    r = session.delete(f"{base}/!room{rnd % 3}:x", params={"version": v}, headers=auth, timeout=60)
                else:
                    r = session.delete(f"{base}/!room{rnd % 3}:x/s{(i + rnd) % 30}", params={"version": v},
                                       headers=auth, timeout=60)
            else:
                rooms = {f"!room{r}:x": {"sessions": {f"s{j}": key((i + j + rnd) % 5, 0, False)
                                                      for j in range(rnd, 30, 2)}} for r in range(3)}
                r = session.put(base, params={"version": v}, json={"rooms": rooms}, headers=auth, timeout=60)
            if r.status_code != 200:
                errors.append(r.text)
            else:
                results.append(r.json())
        session.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not errors, errors[:3]
    info = c.get("/room_keys/version").json()
    stored = strict_json(c.get("/room_keys/keys", params={"version": v}).text)["rooms"]
    assert info["count"] == sum(len(room["sessions"]) for room in stored.values())
    seen = {}
    for res in results + [info]:
        assert seen.setdefault(res["etag"], res["count"]) == res["count"], "one etag, two counts"


# ---- large backups --------------------------------------------------------------------------------------------------

# 270 rooms of 37 sessions (rooms straddle the 2000-row page boundaries) plus one room of 4500 sessions (a room
# that spans several pages on its own): 14,490 sessions.
SMALL_ROOMS, SMALL_ROOM_SIZE, BIG_ROOM, BIG_ROOM_SIZE = 270, 37, "!big:x", 4500


def big_expected():
    rooms = {f"!r{n:03d}:x": {"sessions": {f"sess{j}": key(j, n % 3, j % 2 == 0, {"ciphertext": f"{n}/{j}", "mac": "m"})
                                            for j in range(SMALL_ROOM_SIZE)}} for n in range(SMALL_ROOMS)}
    rooms[BIG_ROOM] = {"sessions": {f"b{j:05d}": key(j % 7, 0, True, {"ciphertext": f"big/{j}"})
                                    for j in range(BIG_ROOM_SIZE)}}
    return rooms


@pytest.fixture(scope="module")
def big_backup(server):
    c = Client(server, server.mint(f"@big{secrets.token_hex(4)}:localhost", "BIGDEV"))
    v = new_version(c)
    expected = big_expected()
    batch, size = {}, 0
    items = [(room, sid, data) for room, r in expected.items() for sid, data in r["sessions"].items()]
    for n, (room, sid, data) in enumerate(items, 1):
        batch.setdefault(room, {"sessions": {}})["sessions"][sid] = data
        size += 1
        if size == 2000 or n == len(items):
            r = c.put("/room_keys/keys", params={"version": v}, json={"rooms": batch})
            assert r.status_code == 200, r.text
            batch, size = {}, 0
    assert r.json()["count"] == len(items) == 14490
    yield c, v, expected
    c.session.close()


def test_large_backup_streams_complete_and_valid(big_backup):
    c, v, expected = big_backup
    r = c.get("/room_keys/keys", params={"version": v})
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
    body = strict_json(r.text)  # valid JSON, and no room object split in two across pages
    assert body == {"rooms": expected}
    assert c.get("/room_keys/version").json()["count"] == 14490


def test_one_large_room_streams_across_pages(big_backup):
    c, v, expected = big_backup
    r = c.get(f"/room_keys/keys/{BIG_ROOM}", params={"version": v})
    assert r.status_code == 200 and "Content-Length" not in r.headers
    assert strict_json(r.text) == expected[BIG_ROOM]
    assert c.get(f"/room_keys/keys/{BIG_ROOM}/b04321", params={"version": v}).json() == \
        expected[BIG_ROOM]["sessions"]["b04321"]


def raw_get(server, target, token, read_bytes):
    """Sends a GET, reads about `read_bytes` of the answer and drops the connection."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    got = b""
    while len(got) < read_bytes:
        data = s.recv(65536)
        if not data:
            break
        got += data
    s.close()
    return got


def test_clients_that_go_away_mid_stream(server, big_backup):
    c, v, expected = big_backup
    target = f"{PREFIX}/room_keys/keys?version={v}"
    for read_bytes in (0, 1, 20000, 300000, 0, 1500000):
        got = raw_get(server, target, c.token, read_bytes)
        if read_bytes:
            assert got.startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    # the server, its workers and their database connections are still fine
    for _ in range(10):
        assert c.get("/room_keys/version").json()["count"] == 14490
    assert strict_json(c.get("/room_keys/keys", params={"version": v}).text) == {"rooms": expected}


def test_streams_interleave_with_other_requests(server, big_backup, login):
    """Several streams at once on both workers, with writes of another user in between."""
    c, v, expected = big_backup
    _, _, other = login(server)
    ov = new_version(other)
    bodies, errors = [], []

    def reader():
        session = requests.Session()
        r = session.get(server.url + PREFIX + "/room_keys/keys", params={"version": v},
                        headers={"Authorization": f"Bearer {c.token}"}, timeout=60)
        (bodies if r.status_code == 200 else errors).append(r.text)
        session.close()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(20):
        r = other.put(f"/room_keys/keys/!o:x/s{n}", params={"version": ov}, json=key(n))
        assert r.status_code == 200
    for t in threads:
        t.join(100)
    assert not errors and len(bodies) == 4
    for text in bodies:
        assert strict_json(text) == {"rooms": expected}
    assert other.get("/room_keys/version").json()["count"] == 20


# ---- a real client ----------------------------------------------------------------------------------------------------


def export_session(outbound, room_id):
    """The plaintext a client backs up for a megolm session (the spec's BackedUpSessionData)."""
    return {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "curve25519senderkey",
            "session_key": olm.InboundGroupSession(outbound.session_key).export_session(0),
            "sender_claimed_keys": {"ed25519": "ed25519senderkey"}, "forwarding_curve25519_key_chain": []}


def test_real_client_backs_up_and_restores_sessions(server, login):
    _, _, device_a = login(server)
    backup_key = olm.PkDecryption()
    v = new_version(device_a, backup_key.public_key)

    # device A encrypts three session exports with the backup's public key, as fetched from the server
    public_key = device_a.get("/room_keys/version").json()["auth_data"]["public_key"]
    sessions = {}
    for room in ("!one:x", "!two:x", "!two:x"):
        outbound = olm.OutboundGroupSession()
        msg = olm.PkEncryption(public_key).encrypt(json.dumps(export_session(outbound, room)))
        data = {"ephemeral": msg.ephemeral_key, "ciphertext": msg.ciphertext, "mac": msg.mac}
        sessions[(room, outbound.id)] = (outbound, data)
    (r1, s1), (r2, s2), (r3, s3) = list(sessions)  # session ids are base64: '/' must be percent-encoded in paths
    assert device_a.put(f"/room_keys/keys/{r1}/{quote(s1, safe='')}", params={"version": v},
                        json=key(0, 0, True, sessions[(r1, s1)][1])).status_code == 200
    assert device_a.put(f"/room_keys/keys/{r2}", params={"version": v},
                        json={"sessions": {s2: key(0, 0, True, sessions[(r2, s2)][1])}}).status_code == 200
    r = device_a.put("/room_keys/keys", params={"version": v},
                     json={"rooms": {r3: {"sessions": {s3: key(0, 0, True, sessions[(r3, s3)][1])}}}})
    assert r.json()["count"] == 3

    # device B of the same user restores from the recovery key, through each read level
    _, _, device_b = login(server, user_id=device_a.get("/account/whoami").json()["user_id"])
    everything = device_b.get("/room_keys/keys", params={"version": v}).json()["rooms"]
    for (room, sid), (outbound, _) in sessions.items():
        for got in (everything[room]["sessions"][sid],
                    device_b.get(f"/room_keys/keys/{room}", params={"version": v}).json()["sessions"][sid],
                    device_b.get(f"/room_keys/keys/{room}/{quote(sid, safe='')}", params={"version": v}).json()):
            sd = got["session_data"]
            plain = json.loads(backup_key.decrypt(olm.PkMessage(sd["ephemeral"], sd["mac"], sd["ciphertext"])))
            inbound = olm.InboundGroupSession.import_session(plain["session_key"])
            assert inbound.id == sid
            assert inbound.decrypt(outbound.encrypt(f"secret in {room}"))[0] == f"secret in {room}"
