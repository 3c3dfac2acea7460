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
    r = c.session.get(server.url + prefix + "/account/whoami", headers={"Authorization": f"Bearer {c.token}"})
    assert r.status_code == 200
    assert r.json() == {"user_id": user, "device_id": device}


def test_body_not_json_is_400_not_json(server, login):
    _, _, c = login(server)
    for body in [b"{", b"not json", b'{"a":1} trailing', b'{"a":"\xff"}', b'{"a":1,"a":2}', b""]:
        r = c.post("/keys/upload", data=body, headers={"Content-Type": "application/json"})
        assert_error(r, 400, "M_NOT_JSON")


def test_json_that_is_not_an_object_is_400_bad_json(server, login):
    _, _, c = login(server)
    for body in [b"[]", b'"text"', b"12", b"null"]:
        assert_error(c.post("/keys/upload", data=body), 400, "M_BAD_JSON")


def test_body_checks_come_before_auth_errors_are_json(server):
    # No token at all: the answer is still a Matrix error object.
    r = requests.post(server.url + "/_matrix/client/v3/keys/upload", data=b"{}")
    assert_error(r, 401, "M_MISSING_TOKEN")


def test_body_limit(start_server, login):
    small = start_server(max_body_bytes=1024)
    _, _, c = login(small)
    big = b'{"x":"' + b"a" * 2000 + b'"}'
    assert_error(c.post("/keys/upload", data=big), 413, "M_TOO_LARGE")
    # just under the limit passes the HTTP layer (whatever the handler then says, it is not 413)
    ok = b'{"x":"' + b"a" * 1000 + b'"}'
    assert len(ok) <= 1024
    assert c.post("/keys/upload", data=ok).status_code != 413
    # far over the limit: h2o itself refuses, still with 413
    huge = b'{"x":"' + b"a" * 10000 + b'"}'
    assert c.post("/keys/upload", data=huge).status_code == 413


def test_cors_on_every_answer_and_options_preflight(server):
    for r in [requests.get(server.url + "/_mxkeys/health"), requests.get(server.url + "/nope"),
              requests.get(server.url + "/_matrix/client/v3/account/whoami")]:
        assert r.headers.get("Access-Control-Allow-Origin") == "*"
    r = requests.options(server.url + "/_matrix/client/v3/keys/upload",
                         headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_json_content_type_and_length_not_chunked(server):
    r = requests.get(server.url + "/_matrix/client/v3/nope")
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert "Transfer-Encoding" not in r.headers


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
