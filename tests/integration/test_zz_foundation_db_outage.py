"""PostgreSQL going away and coming back while mxkeysd keeps running. Last in the suite: it stops the cluster."""
import time

import requests
from conftest import assert_error


def test_ready_follows_the_database(server, pg, login):
    _, _, c = login(server)
    assert requests.get(server.url + "/_mxkeys/ready").status_code == 200
    pg.stop()
    try:
        t0 = time.monotonic()
        r = requests.get(server.url + "/_mxkeys/ready", timeout=5)
        assert time.monotonic() - t0 < 3
        assert_error(r, 503, "M_UNKNOWN")
        # an authenticated request needing the database fails fast with 503 (the token is cached or not: either
        # way nothing hangs and nothing crashes)
        r = requests.get(server.url + "/_matrix/client/v3/account/whoami",
                         headers={"Authorization": "Bearer never-seen-token"}, timeout=5)
        assert_error(r, 503, "M_UNKNOWN")
    finally:
        pg.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(server.url + "/_mxkeys/ready", timeout=5).status_code == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("mxkeysd did not become ready again")
    assert server.proc.poll() is None
    assert c.get("/account/whoami").status_code == 200
