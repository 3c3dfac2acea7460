"""deploy/nginx/ with Debian's real nginx: the literal files pass `nginx -t` when included the documented way, and the
routing sends exactly the sidecar's paths to mxkeys, everything else to the homeserver, and /_mxkeys/ nowhere.

Two fake backends (threaded HTTP/1.1 servers) stand in for mxkeysd and the homeserver and record every request:
method, raw request target, headers, body and which of their connections it came on. Requests are written with
http.client or a raw socket so that the request target on the wire is exactly the one in the test.
"""
import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nginx import (LOCATIONS_CONF, SITE_EXAMPLE, UPSTREAMS_CONF, Nginx, main_conf, nginx_test_config,
                   start_nginx)  # noqa: F401  (start_nginx: the fixture)

MIB = 1024 * 1024
STREAM_BYTES = 20 * 1000 * 1000
STREAM_FIRST_PART = MIB
HOLD_SECONDS = 35


# ---------------------------------------------------------------------------------------------------------------------
# fake backends


class Record:
    def __init__(self, backend, conn, method, target, version, headers, body):
        self.backend, self.conn, self.method, self.target, self.version = backend, conn, method, target, version
        self.headers, self.body = headers, body  # headers: list of (name, value) as received

    def header(self, name):
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if len(values) == 1 else (None if not values else values)

    def __repr__(self):
        return f"<{self.backend} {self.method} {self.target}>"


class FakeBackend:
    """Answers every request 200 with a small JSON body naming itself, over keep-alive HTTP/1.1. A request header
    X-Test-Hold: N holds the answer N seconds; X-Test-Stream: N answers N bytes, chunked, pausing after the first
    MiB until the test sets stream_gate (or 10 s pass): stream_gate_seen says whether it was set in time."""

    def __init__(self, name):
        self.name = name
        self.records = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stream_gate = threading.Event()
        self.stream_gate_seen = None
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # headers and body are separate writes: without this, Nagle and delayed ACKs add 40 ms to each
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with backend.lock:
                    backend.connections += 1
                    self.conn_id = backend.connections

            def log_message(self, *args):
                pass

            def handle_one_request(self):
                # BaseHTTPRequestHandler dispatches to do_<METHOD>; take every method here instead
                try:
                    self.raw_requestline = self.rfile.readline(65537)
                    if not self.raw_requestline:
                        self.close_connection = True
                        return
                    if not self.parse_request():
                        return
                    backend._serve(self)
                    self.wfile.flush()
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _serve(self, h):
        # the raw request line: BaseHTTPRequestHandler.path is already altered (// collapsed) in Python 3.11
        method, target, version = h.raw_requestline.decode("latin-1").rstrip("\r\n").split(" ")
        headers = list(h.headers.items())
        body = b""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(h.rfile.readline().split(b";")[0], 16)
                chunk = h.rfile.read(size + 2)[:size]
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += chunk
        elif h.headers.get("Content-Length"):
            body = h.rfile.read(int(h.headers["Content-Length"]))
        rec = Record(self.name, h.conn_id, method, target, version, headers, body)
        with self.lock:
            self.records.append(rec)

        if h.headers.get("X-Test-Hold"):
            time.sleep(float(h.headers["X-Test-Hold"]))
        if h.headers.get("X-Test-Stream"):
            return self._stream(h, int(h.headers["X-Test-Stream"]))
        payload = ('{"backend": "%s", "method": "%s", "target": "%s"}' % (self.name, method, target)).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    def _stream(self, h, n):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        data = stream_payload(n)
        pos = 0
        while pos < n:
            chunk = data[pos:pos + 65536]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            pos += len(chunk)
            if pos == STREAM_FIRST_PART:
                h.wfile.flush()
                self.stream_gate_seen = self.stream_gate.wait(10)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def take(self):
        with self.lock:
            records, self.records = self.records, []
        return records

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


_payloads = {}


def stream_payload(n):
    if n not in _payloads:
        _payloads[n] = os.urandom(n)
    return _payloads[n]


@pytest.fixture(scope="module")
def backends():
    mx, hs = FakeBackend("mxkeys"), FakeBackend("homeserver")
    yield mx, hs
    mx.stop()
    hs.stop()


@pytest.fixture(scope="module")
def ngx(start_nginx, backends):
    mx, hs = backends
    n = start_nginx(mx.url, hs.url)
    yield n
    n.stop()


@pytest.fixture
def fresh(backends, ngx):
    """Both backends with no recorded requests; returns (mxkeys, homeserver)."""
    for b in backends:
        b.take()
    return backends


def send(ngx, method, target, body=None, headers=None, timeout=30):
    """One request on a fresh connection, target written as given; returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def raw_request(ngx, data, timeout=10):
    """Bytes on the wire, for requests http.client would not write; returns the status code."""
    with socket.create_connection(("127.0.0.1", ngx.port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            part = s.recv(4096)
            if not part:
                break
            answer += part
    return int(answer.split(b" ")[1])


# ---------------------------------------------------------------------------------------------------------------------
# routing

ROOM = "%21room%3Aexample.org"  # !room:example.org, percent-encoded as clients send it
SESSION = "sess%2Fion%2Bx%3D"   # a session id with an encoded '/', '+' and '='

TO_MXKEYS = []
for v in ("r0", "v3", "unstable"):
    p = f"/_matrix/client/{v}"
    TO_MXKEYS += [
        ("POST", f"{p}/keys/upload", b'{"one_time_keys": {}}'),
        ("POST", f"{p}/keys/query", b'{"device_keys": {"@a:example.org": []}}'),
        ("POST", f"{p}/keys/claim", b'{"one_time_keys": {}}'),
        ("GET", f"{p}/keys/changes?from=s1_2&to=s3_4", None),
        ("POST", f"{p}/keys/device_signing/upload", b"{}"),
        ("POST", f"{p}/keys/signatures/upload", b"{}"),
        ("POST", f"{p}/room_keys/version", b'{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2"}'),
        ("GET", f"{p}/room_keys/version", None),
        ("GET", f"{p}/room_keys/version/7", None),
        ("PUT", f"{p}/room_keys/version/7", b"{}"),
        ("DELETE", f"{p}/room_keys/version/7", None),
        ("PUT", f"{p}/room_keys/keys?version=7", b'{"rooms": {}}'),
        ("GET", f"{p}/room_keys/keys/{ROOM}?version=7", None),
        ("PUT", f"{p}/room_keys/keys/{ROOM}/{SESSION}?version=7", b"{}"),
        ("DELETE", f"{p}/room_keys/keys/{ROOM}/{SESSION}?version=7", None),
    ]
    if v != "unstable":
        TO_MXKEYS += [
            ("GET", f"{p}/sync", None),
            ("GET", f"{p}/sync?since=s72594_4483_1934&timeout=30000&filter=%7B%22room%22%3A%7B%7D%7D"
                    "&set_presence=offline&full_state=false", None),
        ]
TO_MXKEYS += [
    # every method on the key families
    *[(m, "/_matrix/client/v3/keys/query", None) for m in ("GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH")],
    ("OPTIONS", f"/_matrix/client/v3/room_keys/keys/{ROOM}", None),
    ("GET", "/_matrix/client/v3/keys/changes?from=a&to=b&access_token=syt_abc%2Bdef", None),
    ("GET", "/_matrix/client/v3/keys/", None),
    ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", b'{"lists": {}}'),
    ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=42&timeout=30000",
     b'{"extensions": {"e2ee": {"enabled": true}}}'),
    # federation claims: the exact paths, the signed target untouched (an encoded spelling is mxkeys' to refuse)
    ("POST", "/_matrix/federation/v1/user/keys/claim", b'{"one_time_keys": {}}'),
    ("POST", "/_matrix/federation/v1/user/keys/claim?x=%2F%41%20b", b'{"one_time_keys": {}}'),
    ("POST", "/_matrix/federation/v1/user/keys/cl%61im", b'{"one_time_keys": {}}'),
    ("GET", "/_matrix/federation/v1/user/keys/claim", None),
    ("POST", "/_matrix/federation/unstable/user/keys/claim", b'{"one_time_keys": {}}'),
]

# The device lifecycle (sidecar part 2): forwarded by mxkeys, which does its own part first.
TO_MXKEYS += [
    ("GET", "/_matrix/client/v3/login", None),
    ("POST", "/_matrix/client/r0/login", b'{"type": "m.login.password"}'),
    ("POST", "/_matrix/client/v3/logout", b"{}"),
    ("POST", "/_matrix/client/v3/logout/all", b"{}"),
    ("GET", "/_matrix/client/v3/devices", None),
    ("GET", "/_matrix/client/r0/devices/ABCDEF", None),
    ("PUT", "/_matrix/client/v3/devices/ABC%2BDEF", b'{"display_name": "x"}'),
    ("DELETE", "/_matrix/client/v3/devices/ABCDEF", b"{}"),
    ("POST", "/_matrix/client/v3/delete_devices", b'{"devices": []}'),
    ("POST", "/_matrix/client/v3/account/deactivate", b"{}"),
]

TO_HOMESERVER = [
    ("GET", "/_matrix/client/v3/keysfoo", None),
    ("GET", "/_matrix/client/v3/keys", None),
    ("GET", "/_matrix/client/v3/room_keysfoo/version", None),
    ("GET", f"/_matrix/client/v3/rooms/{ROOM}/keys", None),
    ("POST", "/_matrix/client/v1/keys/query", b"{}"),
    ("GET", "/_matrix/client/v3/sync_extra", None),
    ("GET", "/_matrix/client/v3/sync/", None),
    ("GET", "/_matrix/client/unstable/sync", None),
    ("POST", "/_matrix/client/v3/sync", b"{}"),
    ("OPTIONS", "/_matrix/client/v3/sync", None),
    ("OPTIONS", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", None),
    ("GET", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", None),
    ("POST", "/_matrix/client/unstable/org.matrix.msc3575/sync", b"{}"),
    ("GET", "/_matrix/client/v3/login/sso/redirect?redirectUrl=x", None),
    ("POST", "/_matrix/client/v3/login/get_token", b"{}"),
    ("GET", "/_matrix/client/v3/devicesfoo", None),
    ("DELETE", "/_matrix/client/v3/devices/A/B", None),
    ("POST", "/_matrix/client/v3/account/password", b"{}"),
    ("GET", "/_matrix/client/versions", None),
    ("GET", "/_matrix/client/v3/account/whoami", None),
    ("PUT", f"/_matrix/client/v3/rooms/{ROOM}/send/m.room.encrypted/txn1", b"{}"),
    ("POST", "/_matrix/federation/v1/user/keys/query", b"{}"),
    ("POST", "/_matrix/federation/v1/user/keys/claim/", b"{}"),
    ("POST", "/_matrix/federation/v1/user/keys/claimx", b"{}"),
    ("POST", "/_matrix/federation/v2/user/keys/claim", b"{}"),
    ("GET", "/_matrix/federation/v1/user/devices/%40a%3Aexample.org", None),
    ("GET", "/_matrix/key/v2/server", None),
    ("GET", "/_synapse/client/password_reset/email/submit_token?token=x", None),
]

# (method, target): answered by nginx itself, reaching neither backend
REFUSED = [
    ("GET", "/_mxkeys/health"),
    ("GET", "/_mxkeys/ready"),
    ("GET", "/_mxkeys/v1/stream_position"),
    ("GET", "/_mxkeys"),
    ("GET", "/_mxkeys/"),
    ("DELETE", "/_mxkeys/admin/v1/users/%40a%3Aexample.org"),
    ("POST", "/_mxkeys/admin/v1/users/%40a%3Aexample.org/allow_cross_signing_replacement"),
    ("GET", "/%5Fmxkeys/health"),
    ("GET", "//_mxkeys/health"),
    ("GET", "/_matrix/client/v3/keys/../../../../_mxkeys/health"),
    ("GET", "/_matrix/client/v3/keys/%2E%2E/%2E%2E/%2E%2E/%2E%2E/_mxkeys/health"),
    ("GET", "/_matrix/client/v3/keys/..%2F..%2F..%2F..%2F_mxkeys/health"),
    # a key path once nginx has decoded and normalised it, an admin route to mxkeysd (which routes on the raw
    # target and takes "..%2F..%2F..%2F..%2F_matrix%2Fclient%2Fv3%2Fkeys%2Fx" as one {userId} segment)
    ("DELETE", "/_mxkeys/admin/v1/users/..%2F..%2F..%2F..%2F_matrix%2Fclient%2Fv3%2Fkeys%2Fx"),
    ("POST", "/_mxkeys/admin/v1/users/..%2F..%2F..%2F..%2F_matrix%2Fclient%2Fv3%2Fkeys%2Fx"
             "/allow_cross_signing_replacement"),
    ("POST", "/_mxkeys/../_matrix/client/v3/keys/query"),
    ("GET", "/_mxkeys/health/../../_matrix/client/v3/sync"),
]


def ids(cases):
    return [f"{c[0]} {c[1]}" for c in cases]


def check_routed(ngx, backends, method, target, body, expect):
    mx, hs = backends
    headers = {"Authorization": "Bearer syt_token"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, _, answer = send(ngx, method, target, body=body, headers=headers)
    got = {"mxkeys": mx.take(), "homeserver": hs.take()}
    other = "homeserver" if expect == "mxkeys" else "mxkeys"
    assert status == 200, f"{method} {target}: {status} {answer[:300]!r}\n{ngx.error_log_text()[-1500:]}"
    assert not got[other], f"{method} {target} reached {other}: {got[other]}"
    assert len(got[expect]) == 1, f"{method} {target}: {expect} saw {got[expect]}"
    rec = got[expect][0]
    assert rec.method == method
    assert rec.target == target, f"request target changed on the way: sent {target!r}, {expect} got {rec.target!r}"
    assert rec.body == (body or b"")
    assert rec.header("Authorization") == "Bearer syt_token"
    if method != "HEAD":
        assert f'"backend": "{expect}"'.encode() in answer


@pytest.mark.parametrize("method,target,body", TO_MXKEYS, ids=ids(TO_MXKEYS))
def test_routes_to_mxkeys(ngx, fresh, method, target, body):
    check_routed(ngx, fresh, method, target, body, "mxkeys")


@pytest.mark.parametrize("method,target,body", TO_HOMESERVER, ids=ids(TO_HOMESERVER))
def test_routes_to_homeserver(ngx, fresh, method, target, body):
    check_routed(ngx, fresh, method, target, body, "homeserver")


@pytest.mark.parametrize("method,target", REFUSED, ids=ids(REFUSED))
def test_mxkeys_own_api_is_not_reachable(ngx, fresh, method, target):
    mx, hs = fresh
    status, _, _ = send(ngx, method, target, body=b"" if method in ("POST", "DELETE") else None,
                        headers={"Authorization": "Bearer admintest"})
    assert status in (400, 403, 404), f"{method} {target}: {status}"
    assert not mx.take() and not hs.take(), f"{method} {target} reached a backend"


def test_mxkeys_own_api_refused_in_absolute_form(ngx, fresh):
    mx, hs = fresh
    for target in (b"http://localhost/_mxkeys/health", b"http://localhost/_mxkeys/../_matrix/client/v3/keys/query"):
        status = raw_request(ngx, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert status in (400, 403, 404), f"{target}: {status}"
    assert not mx.take() and not hs.take()


def test_metrics_is_not_routed_to_mxkeys(ngx, fresh):
    mx, _ = fresh
    status, _, _ = send(ngx, "GET", "/metrics")
    assert status == 404
    assert not mx.take()


def test_forwarded_headers(ngx, fresh):
    mx, hs = fresh
    for target, backend in (("/_matrix/client/v3/keys/query", mx), ("/_matrix/client/v3/sync", mx),
                            ("/_matrix/client/versions", hs)):
        send(ngx, "GET", target, headers={"Host": "matrix.example.org:8448", "X-Forwarded-For": "203.0.113.9",
                                          "X-Forwarded-Proto": "https", "Connection": "keep-alive"})
        (rec,) = backend.take()
        assert rec.version == "HTTP/1.1"
        assert rec.header("Host") == "matrix.example.org"  # $host: the name, as Synapse's guide passes it
        assert rec.header("X-Forwarded-For") == "127.0.0.1", "a client-sent X-Forwarded-For must not get through"
        assert rec.header("X-Forwarded-Proto") == "http"
        assert rec.header("Connection") is None, "Connection must be cleared for keep-alive to the upstream"


def test_keepalive_to_both_upstreams(ngx, fresh):
    mx, hs = fresh
    n = 12
    for i in range(n):
        send(ngx, "POST", "/_matrix/client/v3/keys/query", body=b"{}")
        send(ngx, "GET", f"/_matrix/client/v3/sync?since=s{i}")  # proxy_pass through the map's variable
        send(ngx, "GET", "/_matrix/client/versions")
    mx_conns = {r.conn for r in mx.take()}
    hs_conns = {r.conn for r in hs.take()}
    # one nginx worker, requests one after another: one upstream connection each, reused (a second one at most)
    assert len(mx_conns) <= 2, f"{2 * n} requests to mxkeys used {len(mx_conns)} connections"
    assert len(hs_conns) <= 2, f"{n} requests to the homeserver used {len(hs_conns)} connections"


def test_a_leftover_synapse_location_does_not_take_mxkeys_paths(start_nginx, fresh):
    """An operator who keeps the regex location of Synapse's reverse-proxy guide, written before the include."""
    mx, hs = fresh
    synapse_guide = """        location ~ ^(/_matrix|/_synapse/client) {
            proxy_pass http://matrix_homeserver;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Host $host;
            client_max_body_size 50M;
            proxy_http_version 1.1;
        }"""
    n = start_nginx(mx.url, hs.url, extra_server_conf=synapse_guide)
    try:
        for method, target, body, expect in (
                ("POST", "/_matrix/client/v3/keys/query", b"{}", "mxkeys"),
                ("GET", f"/_matrix/client/r0/room_keys/keys/{ROOM}?version=1", None, "mxkeys"),
                ("GET", "/_matrix/client/v3/sync?timeout=0", None, "mxkeys"),
                ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", b"{}", "mxkeys"),
                ("GET", "/_matrix/client/versions", None, "homeserver")):
            check_routed(n, fresh, method, target, body, expect)
        assert send(n, "GET", "/_mxkeys/health")[0] == 404
        assert not mx.take() and not hs.take()
    finally:
        n.stop()


# ---------------------------------------------------------------------------------------------------------------------
# bodies, long-polls, large answers


def test_key_upload_body_of_one_mib_passes(ngx, fresh):
    mx, _ = fresh
    log_before = len(ngx.error_log_text())
    for method, target in (("POST", "/_matrix/client/v3/keys/upload"),
                           ("PUT", "/_matrix/client/v3/room_keys/keys?version=1")):
        body = b'{"x": "' + b"a" * (MIB - 9) + b'"}'
        assert len(body) == MIB
        status, _, _ = send(ngx, method, target, body=body, headers={"Content-Type": "application/json"})
        assert status == 200, ngx.error_log_text()[-2000:]
        (rec,) = mx.take()
        assert hashlib.sha256(rec.body).digest() == hashlib.sha256(body).digest()
    assert "request body is buffered to a temporary file" not in ngx.error_log_text()[log_before:]
    # past mxkeysd's own limit but within twice it: passed on, so that mxkeysd answers its JSON 413 M_TOO_LARGE
    status, _, _ = send(ngx, "POST", "/_matrix/client/v3/keys/upload", body=b"x" * (MIB + MIB // 2))
    assert status == 200 and len(mx.take()) == 1


def too_large(ngx, target, length):
    """Announces a body of `length` bytes and sends none: nginx judges Content-Length before reading a body."""
    return raw_request(ngx, b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % (target.encode(), length))


def test_body_limits(ngx, fresh):
    mx, hs = fresh
    assert too_large(ngx, "/_matrix/client/v3/keys/upload", 2 * MIB + 1) == 413
    assert too_large(ngx, "/_matrix/client/v3/room_keys/keys?version=1", 2 * MIB + 1) == 413
    assert not mx.take()
    # the homeserver's paths take Synapse's default upload size (50 MiB)
    media = os.urandom(20 * MIB)
    status, _, _ = send(ngx, "POST", "/_matrix/media/v3/upload?filename=a.bin", body=media,
                        headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    (rec,) = hs.take()
    assert rec.body == media
    assert too_large(ngx, "/_matrix/media/v3/upload", 50 * MIB + 1) == 413
    assert not hs.take()


def test_long_polls_are_held_through_nginx(ngx, fresh):
    """A /sync and a sliding sync held 35 s by the backend both complete; other requests go on meanwhile."""
    mx, _ = fresh
    results = {}

    def poll(name, method, target, body):
        t0 = time.monotonic()
        status, _, answer = send(ngx, method, target, body=body, headers={"X-Test-Hold": str(HOLD_SECONDS)},
                                 timeout=HOLD_SECONDS + 30)
        results[name] = (status, answer, time.monotonic() - t0)

    threads = [threading.Thread(target=poll, args=("sync", "GET", "/_matrix/client/v3/sync?since=s1&timeout=35000",
                                                   None)),
               threading.Thread(target=poll, args=("sliding", "POST", "/_matrix/client/unstable/"
                                                   "org.matrix.simplified_msc3575/sync?pos=1&timeout=35000", b"{}"))]
    for t in threads:
        t.start()
    time.sleep(1)
    status, _, _ = send(ngx, "POST", "/_matrix/client/v3/keys/query", body=b"{}", timeout=5)
    assert status == 200
    # meanwhile: nginx drops an idle upstream connection to mxkeys before mxkeysd would (h2o: after 10 s idle), so
    # that it never sends a request on a connection the server is closing
    time.sleep(6)
    status, _, _ = send(ngx, "POST", "/_matrix/client/v3/keys/query", body=b"{}", timeout=5)
    assert status == 200
    first, second = [r for r in mx.take() if r.target == "/_matrix/client/v3/keys/query"]
    assert second.conn != first.conn, "an upstream connection idle for 6 s was still used (keepalive_timeout)"
    for t in threads:
        t.join(HOLD_SECONDS + 40)
    for name in ("sync", "sliding"):
        status, answer, elapsed = results[name]
        assert status == 200, f"{name}: {status} {answer[:200]!r}\n{ngx.error_log_text()[-2000:]}"
        assert b'"backend": "mxkeys"' in answer
        assert elapsed >= HOLD_SECONDS - 0.5


def test_large_sync_answer_streams(ngx, fresh):
    """20 MB of /sync arrive intact, and the first MiB reaches the client before the backend has sent the rest."""
    mx, _ = fresh
    mx.stream_gate.clear()
    mx.stream_gate_seen = None
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=30)
    try:
        conn.request("GET", "/_matrix/client/v3/sync?since=s0", headers={"X-Test-Stream": str(STREAM_BYTES)})
        r = conn.getresponse()
        assert r.status == 200
        digest = hashlib.sha256()
        received = 0
        while True:
            part = r.read(65536)
            if not part:
                break
            digest.update(part)
            received += len(part)
            if received >= 65536:
                mx.stream_gate.set()
    finally:
        conn.close()
    assert received == STREAM_BYTES
    assert digest.digest() == hashlib.sha256(stream_payload(STREAM_BYTES)).digest()
    assert mx.stream_gate_seen is True, "nginx held the answer back until the backend had sent all of it"
    assert "upstream response is buffered to a temporary file" not in ngx.error_log_text()


# ---------------------------------------------------------------------------------------------------------------------
# the files as an operator installs them


def debian_layout(d, site_text=None):
    """Debian's /etc/nginx layout in `d`, the literal files copied where their comments say; returns nginx.conf."""
    for sub in ("conf.d", "snippets", "sites-available", "sites-enabled", "tmp"):
        os.mkdir(os.path.join(d, sub))
    shutil.copy(UPSTREAMS_CONF, os.path.join(d, "conf.d"))
    shutil.copy(LOCATIONS_CONF, os.path.join(d, "snippets"))
    site = os.path.join(d, "sites-available", "matrix")
    if site_text is None:
        shutil.copy(SITE_EXAMPLE, site)
    else:
        with open(site, "w") as f:
            f.write(site_text)
    os.symlink("../sites-available/matrix", os.path.join(d, "sites-enabled", "matrix"))
    # Debian's stock nginx.conf, as far as it matters here; relative includes resolve against this file's directory
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(main_conf(d, """    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    gzip on;

    include conf.d/*.conf;
    include sites-enabled/*;"""))
    return conf


def assert_test_passes(d, conf):
    rc, out = nginx_test_config(d, conf)
    assert rc == 0 and "syntax is ok" in out and "test is successful" in out, out
    assert "[warn]" not in out and "[emerg]" not in out, out


def test_literal_files_pass_nginx_t_as_documented(workdir):
    d = tempfile.mkdtemp(prefix="nginx-t-", dir=workdir)
    os.chmod(d, 0o755)
    assert_test_passes(d, debian_layout(d))


def test_example_site_passes_nginx_t_with_its_commented_lines_enabled(workdir):
    """An operator uncommenting the TLS, port-8448 and well-known lines gets a valid configuration too."""
    d = tempfile.mkdtemp(prefix="nginx-tls-", dir=workdir)
    os.chmod(d, 0o755)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=matrix.example.org"],
                   check=True, capture_output=True, timeout=30)
    with open(SITE_EXAMPLE) as f:
        text = f.read()
    enabled, n = re.subn(r"(?m)^(\s*)#((?:listen|ssl_certificate|ssl_certificate_key|location) .*)$", r"\1\2", text)
    assert n >= 8, f"expected the commented listen/ssl/location lines, uncommented {n}"
    enabled = re.sub(r"(?m)^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{cert};", enabled)
    enabled = re.sub(r"(?m)^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", enabled)
    assert_test_passes(d, debian_layout(d, enabled))


def test_fixture_start_failure_shows_the_error_log(workdir, monkeypatch):
    import nginx
    broken = os.path.join(tempfile.mkdtemp(prefix="nginx-broken-", dir=workdir), "locations.conf")
    with open(broken, "w") as f:
        f.write("location /_matrix/ { no_such_directive on; }\n")
    monkeypatch.setattr(nginx, "LOCATIONS_CONF", broken)
    try:
        started = Nginx(workdir, "http://127.0.0.1:1", "http://127.0.0.1:2")
    except AssertionError as e:
        assert "exited with" in str(e) and "no_such_directive" in str(e), str(e)
    else:
        started.stop()
        pytest.fail("nginx started with a broken configuration")
