"""--auth homeserver: tokens checked with the homeserver's /account/whoami, cached, coalesced; outages are 503."""
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import assert_error

WHOAMI = "/_matrix/client/v3/account/whoami"


class FakeHomeserver:
    def __init__(self):
        self.tokens = {"good-token": ("@hs:example.org", "HSDEV")}
        self.hits = 0
        self.delay = 0.0
        self.fail_with = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits += 1
                if outer.delay:
                    time.sleep(outer.delay)
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else None
                if self.path != WHOAMI:
                    status, body = 404, {"errcode": "M_UNRECOGNIZED", "error": "no"}
                elif outer.fail_with:
                    status, body = outer.fail_with, {"errcode": "M_UNKNOWN", "error": "down"}
                elif token in outer.tokens:
                    user, device = outer.tokens[token]
                    status, body = 200, {"user_id": user, "device_id": device}
                else:
                    status, body = 401, {"errcode": "M_UNKNOWN_TOKEN", "error": "bad"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def homeserver():
    hs = FakeHomeserver()
    yield hs
    hs.close()


def get(server, token):
    return requests.get(server.url + WHOAMI, headers={"Authorization": f"Bearer {token}"}, timeout=20)


def test_good_token_bad_token_and_cache(start_server, homeserver):
    s = start_server(auth="homeserver", homeserver_url=f"http://127.0.0.1:{homeserver.port}", workers=1)
    r = get(s, "good-token")
    assert r.status_code == 200 and r.json() == {"user_id": "@hs:example.org", "device_id": "HSDEV"}
    hits = homeserver.hits
    for _ in range(5):
        assert get(s, "good-token").status_code == 200
    assert homeserver.hits == hits, "cached answers must not reach the homeserver"
    assert_error(get(s, "wrong-token"), 401, "M_UNKNOWN_TOKEN")
    assert "good-token" not in s.stderr_text()
    s.stop()


def test_concurrent_lookups_are_coalesced(start_server, homeserver):
    s = start_server(auth="homeserver", homeserver_url=f"http://127.0.0.1:{homeserver.port}", workers=1)
    homeserver.tokens["slow-token"] = ("@slow:example.org", "SLOW")
    homeserver.delay = 0.4
    before = homeserver.hits
    with ThreadPoolExecutor(10) as ex:
        results = list(ex.map(lambda _: get(s, "slow-token").status_code, range(10)))
    assert results == [200] * 10
    assert homeserver.hits - before == 1
    s.stop()


def test_homeserver_errors_are_503_not_401(start_server, homeserver):
    s = start_server(auth="homeserver", homeserver_url=f"http://127.0.0.1:{homeserver.port}", workers=1)
    homeserver.fail_with = 500
    assert_error(get(s, "good-token"), 503, "M_UNKNOWN")
    homeserver.fail_with = None
    assert get(s, "good-token").status_code == 200  # failures are not cached
    s.stop()


def test_homeserver_unreachable_is_503(start_server, homeserver):
    port = homeserver.port
    homeserver.close()
    s = start_server(auth="homeserver", homeserver_url=f"http://127.0.0.1:{port}", workers=1)
    assert_error(get(s, "good-token"), 503, "M_UNKNOWN")
    s.stop()


def test_https_homeserver_is_refused_at_start(mxkeysd_path):
    import subprocess
    r = subprocess.run([mxkeysd_path, "serve", "--auth", "homeserver", "--homeserver-url", "https://hs.example",
                        "--database-url", "host=/nonexistent"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0


def test_sigterm_drains_a_request_in_flight(start_server, homeserver):
    # The fake homeserver holds the token look-up for 1.5 s: SIGTERM lands while the request is in flight, and the
    # client must still get its answer before the process exits 0.
    s = start_server(auth="homeserver", homeserver_url=f"http://127.0.0.1:{homeserver.port}", workers=1)
    homeserver.tokens["drain-token"] = ("@drain:example.org", "DRAIN")
    homeserver.delay = 1.5
    with ThreadPoolExecutor(1) as ex:
        pending = ex.submit(get, s, "drain-token")
        deadline = time.monotonic() + 5
        while homeserver.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert homeserver.hits >= 1, "the look-up never reached the homeserver"
        s.proc.send_signal(signal.SIGTERM)
        s.stopped = True
        r = pending.result(timeout=20)
    assert r.status_code == 200 and r.json()["user_id"] == "@drain:example.org"
    assert s.stop() == 0
