"""HTTP layer: routing, body checks, JSON errors, CORS, framing."""
import socket

import pytest
import requests
from conftest import assert_error

PREFIXES = ["/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable"]


def test_unknown_path_is_404_unrecognized(server):
    for path in ["/nope", "/_matrix/client/v3/nope", "/_matrix/client/v9/keys/upload", "/_matrix/client/v3/keys/upload/x"]:
        assert_error(requests.get(server.url + path), 404, "M_UNRECOGNIZED")


def test_wrong_method_is_405_unrecognized_with_allow(server):
    r = requests.get(server.url + "/_matrix/client/v3/keys/upload")
    assert_error(r, 405, "M_UNRECOGNIZED")
    assert "POST" in r.headers["Allow"]
    assert_error(requests.delete(server.url + "/_mxkeys/health"), 405, "M_UNRECOGNIZED")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_client_routes_answer_under_every_prefix(server, login, prefix):
    user, device, c = login(server)
    auth = {"Authorization": f"Bearer {c.token}"}
    r = c.session.get(server.url + prefix + "/account/whoami", headers=auth)
    assert r.status_code == 200
    assert r.json() == {"user_id": user, "device_id": device}
    r = c.session.post(server.url + prefix + "/keys/query", json={"device_keys": {user: []}}, headers=auth)
    assert r.status_code == 200 and "device_keys" in r.json(), r.text
    # no backup yet: the handler's own 404, not the router's
    assert_error(c.session.get(server.url + prefix + "/room_keys/version", headers=auth), 404, "M_NOT_FOUND")


def test_body_not_json_is_400_not_json(server, login):
    _, _, c = login(server)
    # Duplicate keys are unparsable text for the layer (jansson's JSON_REJECT_DUPLICATES): M_NOT_JSON, not M_BAD_JSON.
    for body in [b"{", b"not json", b'{"a":1} trailing', b'{"a":"\xff"}', b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b"",
                 b"{'a':1}", b'{"a":NaN}', b'{"a":1e400}', b'{"a":"\\ud800"}', b'{"a":"\x00"}', b"\xef\xbb\xbf{}",
                 b"{}\x00"]:
        r = c.post("/keys/upload", data=body, headers={"Content-Type": "application/json"})
        assert_error(r, 400, "M_NOT_JSON")


def test_deeply_nested_body_is_refused_not_a_crash(server, login):
    _, _, c = login(server)
    for n in [5000, 100000]:
        assert_error(c.post("/keys/upload", data=b'{"a":' + b"[" * n + b"]" * n + b"}"), 400, "M_NOT_JSON")
        assert_error(c.post("/keys/upload", data=b'{"a":' + b'{"a":' * n + b"1" + b"}" * n + b"}"), 400, "M_NOT_JSON")
    assert c.get("/account/whoami").status_code == 200


def test_json_that_is_not_an_object_is_400_bad_json(server, login):
    _, _, c = login(server)
    for body in [b"[]", b'"text"', b"12", b"null"]:
        assert_error(c.post("/keys/upload", data=body), 400, "M_BAD_JSON")


def test_valid_body_without_token_is_401_json(server):
    # No token at all: the answer is still a Matrix error object.
    r = requests.post(server.url + "/_matrix/client/v3/keys/upload", data=b"{}")
    assert_error(r, 401, "M_MISSING_TOKEN")


def padded(size):
    """A /keys/query body of exactly `size` bytes (the handler ignores the unknown padding field)."""
    head, tail = b'{"device_keys":{},"pad":"', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def chunked(body, piece=100):
    """Sends `body` with Transfer-Encoding: chunked (requests does so for a generator)."""
    return (body[i:i + piece] for i in range(0, len(body), piece))


@pytest.fixture(scope="module")
def small(start_server):
    return start_server(max_body_bytes=1024)


def test_body_limit_boundary(small, login):
    _, _, c = login(small)
    # exactly at the limit: accepted by the layer and answered by the handler
    r = c.post("/keys/query", data=padded(1024))
    assert r.status_code == 200, r.text
    # one byte over: a Matrix 413 with CORS, whatever the route
    for path in ["/keys/query", "/keys/upload", "/room_keys/version"]:
        r = c.post(path, data=padded(1025))
        assert_error(r, 413, "M_TOO_LARGE")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    # far over the limit (past h2o's own cap): still 413, and the server lives on
    assert c.post("/keys/upload", data=b'{"x":"' + b"a" * 10000 + b'"}').status_code == 413
    assert c.get("/account/whoami").status_code == 200


def test_body_limit_applies_to_chunked_bodies(small, login):
    _, _, c = login(small)
    r = c.post("/keys/query", data=chunked(padded(1024)))
    assert r.status_code == 200, r.text
    assert_error(c.post("/keys/query", data=chunked(padded(1025))), 413, "M_TOO_LARGE")
    assert_error(c.post("/keys/query", data=chunked(b"[1,2]")), 400, "M_BAD_JSON")


def test_body_is_checked_before_auth(small):
    # Body checks run before the token is looked at, so even an unauthenticated oversize body is a 413.
    r = requests.post(small.url + "/_matrix/client/v3/keys/upload", data=padded(2000))
    assert_error(r, 413, "M_TOO_LARGE")


def sample_answers(server, login):
    """One response of each kind the layer and a handler produce: successes and every layer error."""
    _, _, c = login(server)
    v3 = server.url + "/_matrix/client/v3"
    return {
        "health 200": requests.get(server.url + "/_mxkeys/health"),
        "ready 200": requests.get(server.url + "/_mxkeys/ready"),
        "whoami 200": c.get("/account/whoami"),
        "keys/query 200": c.post("/keys/query", json={"device_keys": {}}),
        "404 unknown path": requests.get(server.url + "/nope"),
        "405 wrong method": requests.put(v3 + "/keys/query", data=b"{}"),
        "401 missing token": requests.get(v3 + "/account/whoami"),
        "401 unknown token": requests.get(v3 + "/account/whoami", headers={"Authorization": "Bearer nope"}),
        "400 not json": c.post("/keys/upload", data=b"{"),
        "400 bad json": c.post("/keys/upload", data=b"[]"),
    }


def test_cors_on_every_answer(server, login):
    for what, r in sample_answers(server, login).items():
        assert r.headers.get("Access-Control-Allow-Origin") == "*", what
        assert "Authorization" in r.headers.get("Access-Control-Allow-Headers", ""), what


def test_json_content_type_and_length_not_chunked(server, login):
    for what, r in sample_answers(server, login).items():
        assert r.headers["Content-Type"] == "application/json", what
        assert int(r.headers["Content-Length"]) == len(r.content), what
        assert "Transfer-Encoding" not in r.headers, what
        body = r.json()
        assert isinstance(body, dict), what
        if r.status_code >= 400:
            assert set(body) >= {"errcode", "error"} and body["errcode"].startswith("M_"), (what, body)


@pytest.mark.parametrize("path", ["/_matrix/client/v3/keys/upload", "/_matrix/client/r0/room_keys/keys/!r:x/s%2F1",
                                  "/_matrix/client/unstable/keys/device_signing/upload",
                                  "/_matrix/client/v3/not/a/route", "/_mxkeys/admin/v1/users/@a:x", "/metrics"])
def test_options_preflight_needs_no_auth(server, path):
    for headers in [{}, {"Authorization": "Bearer not-a-token"}]:
        r = requests.options(server.url + path, headers=dict(headers, Origin="https://app.example",
                                                             **{"Access-Control-Request-Method": "POST"}))
        assert r.status_code in (200, 204), (path, r.status_code, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        methods = r.headers["Access-Control-Allow-Methods"]
        for m in ["GET", "POST", "PUT", "DELETE"]:
            assert m in methods, (path, methods)
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed


def test_requests_session_reuses_one_connection(server, login):
    _, _, c = login(server)
    sockets = set()
    for _ in range(5):
        r = c.get("/account/whoami", stream=True)
        sockets.add(r.raw._connection.sock.getsockname())  # our end of the TCP connection
        r.content
        assert r.status_code == 200
    assert len(sockets) == 1, sockets


def test_keep_alive_reuses_one_connection(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        for _ in range(3):
            s.sendall(b"GET /_mxkeys/health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b'{"status":"ok"}' not in data:
                chunk = s.recv(4096)
                assert chunk, "server closed a keep-alive connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
    finally:
        s.close()


def test_percent_encoded_path_is_routed(server):
    # A malformed escape in a captured segment is a client error, never a crash.
    r = requests.get(server.url + "/_matrix/client/v3/room_keys/version/%zz")
    assert r.status_code in (400, 401)
