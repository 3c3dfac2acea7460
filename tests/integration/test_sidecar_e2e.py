"""End to end, as operators deploy it: Debian's nginx with deploy/nginx/ in front of tesths (the test homeserver)
and mxkeysd --auth homeserver, driven by a real client library (matrix-nio from Debian) that nobody here wrote.
"""
import asyncio

import pytest
from nginx import start_nginx  # noqa: F401  (the fixture)
from nio_scenarios import conversation, replenish
from tesths import TestHomeserver


@pytest.fixture
def deployment(start_server, start_nginx):  # noqa: F811
    hs = TestHomeserver(server_name="localhost", remote_server_name="remote.test")
    server = start_server(auth="homeserver", homeserver_url=hs.url, homeserver_timeout_ms=5000)
    ngx = start_nginx(server.url, hs.url)
    yield hs, server, ngx
    server.stop()
    hs.close()


def test_a_device_that_logs_in_later_decrypts_through_the_sidecar(deployment):
    hs, server, ngx = deployment
    out = asyncio.run(conversation(ngx.url, hs))
    assert out, out
    # the keys reached mxkeys through nginx, and the homeserver holds the identity keys it announced
    key_uploads = [r for r in hs.requests if r["path"].split("?")[0].endswith("/keys/upload")]
    assert key_uploads, "device keys were mirrored to the homeserver"
    assert all(set(__import__("json").loads(r["body"])) == {"device_keys"} for r in key_uploads), \
        "one-time keys never reach the homeserver"
    assert not [r for r in hs.requests if r["path"].split("?")[0].endswith("/keys/claim")], \
        "claims are answered by mxkeys"


def test_one_time_keys_are_replenished_by_the_clients_own_logic(deployment):
    hs, server, ngx = deployment
    out = asyncio.run(replenish(ngx.url, hs))
    assert out, out


def test_a_logged_out_device_stops_receiving_room_keys(deployment):
    hs, server, ngx = deployment
    out = asyncio.run(conversation(ngx.url, hs, logout_bob2=True))
    after = out["after_logout"]
    assert after["bob1_plaintext"] == after["last"]
    assert after["to_device_for_gone"] == 0, "alice's client no longer encrypts to the logged-out device"
