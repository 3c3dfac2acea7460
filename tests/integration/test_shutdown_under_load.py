"""SIGTERM while 100 writes are in flight: each write either completes and is answered 200, or is never applied (the
client sees its connection refused or closed). Each write is 20 backed-up sessions in one request, so a write that
was half applied would show as a part of its 20."""
import http.client
import json
import signal
import threading
import time

import olm
import pytest
import requests

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
WRITES = 100
LATE = 10  # more writes on new connections after the signal: never applied
PER_WRITE = 20
SESSION = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
           "session_data": {"ciphertext": "c" * 200, "ephemeral": "e", "mac": "m"}}


def one_write(port, token, version, n, barrier, out, answered_at):
    body = json.dumps({"rooms": {"!room:localhost": {"sessions": {f"w{n}-{j}": SESSION for j in range(PER_WRITE)}}}})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if barrier is not None:  # the main batch: connected before the signal, sending around it
            conn.connect()
            barrier.wait(timeout=30)
            time.sleep((n % 10) * 0.003)
        conn.request("PUT", f"/_matrix/client/v3/room_keys/keys?version={version}", body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        answered_at[n] = time.monotonic()
        out[n] = r.status
        r.read()
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        out[n] = f"no answer: {type(e).__name__}"


@pytest.mark.parametrize("round_", range(2))
def test_sigterm_with_100_writes_in_flight(start_server, round_):
    srv = start_server(workers=2)
    token = srv.mint(f"@term{round_}_{int(time.time() * 1000)}:localhost", "TERMDEV")
    h = {"Authorization": f"Bearer {token}"}
    r = requests.post(srv.url + "/_matrix/client/v3/room_keys/version", headers=h,
                      json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    for _ in range(4):  # the token in both workers' caches
        assert requests.get(srv.url + "/_matrix/client/v3/account/whoami", headers=h).status_code == 200

    out, answered_at = {}, {}
    barrier = threading.Barrier(WRITES + 1)
    threads = [threading.Thread(target=one_write, args=(srv.port, token, version, n, barrier, out, answered_at))
               for n in range(WRITES)]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    time.sleep(0.012)
    srv.proc.send_signal(signal.SIGTERM)
    t_term = time.monotonic()
    time.sleep(0.05)
    late = [threading.Thread(target=one_write, args=(srv.port, token, version, n, None, out, answered_at))
            for n in range(WRITES, WRITES + LATE)]
    for t in late:
        t.start()
    for t in threads + late:
        t.join(timeout=90)
    assert srv.stop() == 0, srv.stderr_text()[-2000:]

    after = start_server(workers=1)
    r = requests.get(after.url + "/_matrix/client/v3/room_keys/keys", params={"version": version}, headers=h)
    assert r.status_code == 200, r.text
    stored = set(r.json()["rooms"].get("!room:localhost", {}).get("sessions", {}))
    answered = applied = 0
    for n in range(WRITES + LATE):
        have = sum(1 for j in range(PER_WRITE) if f"w{n}-{j}" in stored)
        assert have in (0, PER_WRITE), f"write {n} half applied: {have} of {PER_WRITE} sessions"
        if out[n] == 200:
            answered += 1
            assert have == PER_WRITE, f"write {n} answered 200 but not stored"
        else:
            assert have == 0, f"write {n} applied but answered {out[n]!r}"
        applied += have == PER_WRITE
    in_flight = sum(1 for n in range(WRITES) if answered_at.get(n, 0) > t_term)
    assert in_flight > 0, "no write was in flight when the signal came"
    print(f"\nround {round_}: {answered} writes answered 200 and stored ({in_flight} of them answered after SIGTERM), "
          f"{WRITES + LATE - answered} refused or cut off and not applied ({sorted(set(map(str, out.values())))})")
    assert srv.stop() == 0
    after.stop()
