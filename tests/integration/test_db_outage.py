"""PostgreSQL going away and coming back while mxkeysd keeps running. The cluster it stops is this module's own (and
so is the server), so the test runs in any order with the rest of the suite."""
import time

import pytest
import requests
from conftest import Postgres, assert_error


@pytest.fixture(scope="module")
def own_pg():
    cluster = Postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def server(start_server, own_pg):
    """Shadows the session's server: this one's database is own_pg. Stopped before its cluster is destroyed."""
    srv = start_server(database_url=own_pg.conninfo, admin_token="admintest")  # started: every worker ready
    yield srv
    srv.stop()


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    r = fn(*args, timeout=10, **kwargs)
    return r, time.monotonic() - t0


def test_ready_follows_the_database(server, own_pg, login):
    user, _, c = login(server)
    # Resolve the token once per worker (fresh connections spread over both) so it is in the positive cache.
    for _ in range(4):
        assert requests.get(server.url + "/_matrix/client/v3/account/whoami",
                            headers={"Authorization": f"Bearer {c.token}"}).status_code == 200
    assert requests.get(server.url + "/_mxkeys/ready").status_code == 200
    own_pg.stop()
    try:
        r, took = timed(requests.get, server.url + "/_mxkeys/ready")
        assert took < 3, f"ready took {took:.1f}s with the database down"
        assert_error(r, 503, "M_UNKNOWN")
        # liveness and metrics need no database
        assert requests.get(server.url + "/_mxkeys/health", timeout=3).status_code == 200
        assert requests.get(server.url + "/metrics", timeout=3).status_code == 200
        # a token never seen needs the database to resolve: 503, fast, not 401 and not a hang
        r, took = timed(requests.get, server.url + "/_matrix/client/v3/account/whoami",
                        headers={"Authorization": "Bearer never-seen-token"})
        assert took < 3
        assert_error(r, 503, "M_UNKNOWN")
        # a cached token passes auth; the handler's query then fails fast with 503
        r, took = timed(requests.post, server.url + "/_matrix/client/v3/keys/query", json={"device_keys": {user: []}},
                        headers={"Authorization": f"Bearer {c.token}"})
        assert took < 3
        assert r.status_code == 503, r.text
        assert r.json()["errcode"] == "M_UNKNOWN", r.text
        assert server.proc.poll() is None, "mxkeysd died with the database"
    finally:
        own_pg.start()
    # Ready again on both workers (each has its own pool): several fresh connections in a row answer 200.
    deadline = time.monotonic() + 20
    streak = 0
    while streak < 6:
        assert time.monotonic() < deadline, "mxkeysd did not become ready again within 20 s"
        streak = streak + 1 if requests.get(server.url + "/_mxkeys/ready", timeout=5).status_code == 200 else 0
        if streak == 0:
            time.sleep(0.2)
    assert server.proc.poll() is None
    assert c.get("/account/whoami").status_code == 200
    assert c.post("/keys/query", json={"device_keys": {user: []}}).status_code == 200
    # and tokens minted after the outage resolve through the reconnected pools
    _, _, c2 = login(server)
    for _ in range(4):  # fresh connections: either worker
        r = requests.post(server.url + "/_matrix/client/v3/keys/query", json={"device_keys": {}},
                          headers={"Authorization": f"Bearer {c2.token}"})
        assert r.status_code == 200, r.text
    assert own_pg.running()
