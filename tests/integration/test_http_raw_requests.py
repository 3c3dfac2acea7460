"""Every byte a client can send gets a clean answer, over raw sockets (no HTTP library tidying the request): path
captures and query values that are not UTF-8 or hold NUL are 400 M_INVALID_PARAM before any handler; ambiguous
framing (Content-Length twice, or with Transfer-Encoding) is 400 and closes the connection; a too-large body is a
Matrix 413 however it is sent; h2o's own refusals are Matrix JSON too. Every error body must be strict UTF-8 JSON."""
import json
import socket

import pytest

V3 = "/_matrix/client/v3"
LIMIT = 1024


def exchange(server, data, timeout=10, want_close=False):
    """Sends raw bytes; returns (status, headers dict, body bytes, closed) for the first answer (closed is only
    looked at with want_close: it waits for the server to close)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"connection closed without an answer: {buf!r}"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            assert k.lower().decode() not in headers, f"header {k!r} twice in the answer"
            headers[k.lower().decode()] = v.strip().decode()
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = s.recv(65536)
            assert chunk, "body cut short"
            body += chunk
        if not want_close:
            return status, headers, body[:length], None
        # closed? the server must not leave a connection open after an ambiguous request
        s.settimeout(5)
        try:
            rest = body[length:] + s.recv(65536)
            closed = rest == b""
        except socket.timeout:
            closed = False
        except ConnectionResetError:
            closed = True
        return status, headers, body[:length], closed
    finally:
        s.close()


def matrix_error(status, headers, body, want_status, want_errcode):
    assert status == want_status, (status, body)
    assert headers["content-type"] == "application/json", headers
    assert headers.get("access-control-allow-origin") == "*"
    text = body.decode("utf-8")  # strict: raises on any invalid byte
    obj = json.loads(text)
    assert obj["errcode"] == want_errcode, obj
    assert isinstance(obj["error"], str) and obj["error"]
    return obj


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server(max_body_bytes=LIMIT, admin_token="admintest")


@pytest.fixture(scope="module")
def token(srv):
    return srv.mint("@raw:localhost", "RAWDEV")


def req(method, target, token=None, body=b"", extra=b""):
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n".encode()
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


BAD_BYTES = {
    "0xFF": "%FF",
    "NUL": "%00",
    "lone continuation": "%80",
    "overlong slash": "%C0%AF",
    "surrogate": "%ED%A0%80",
    "truncated sequence": "a%E2%82",
    "above U+10FFFF": "%F4%90%80%80",
}


@pytest.mark.parametrize("what", sorted(BAD_BYTES))
def test_path_captures_that_are_not_utf8_are_400(srv, token, what):
    bad = BAD_BYTES[what]
    admin = "admintest"
    cases = [
        ("PUT", f"{V3}/room_keys/keys/{bad}/s?version=1", token, b'{"first_message_index":0}'),
        ("PUT", f"{V3}/room_keys/keys/!r:localhost/{bad}?version=1", token, b"{}"),
        ("GET", f"{V3}/room_keys/keys/{bad}?version=1", token, b""),
        ("DELETE", f"{V3}/room_keys/keys/{bad}?version=1", token, b""),
        ("GET", f"{V3}/room_keys/version/{bad}", token, b""),
        ("DELETE", f"/_mxkeys/admin/v1/users/{bad}", admin, b""),
        ("DELETE", f"/_mxkeys/admin/v1/users/@a:localhost/devices/{bad}", admin, b""),
        ("POST", f"/_mxkeys/admin/v1/users/{bad}/allow_cross_signing_replacement", admin, b"{}"),
    ]
    for method, target, tok, body in cases:
        st, h, b, _ = exchange(srv, req(method, target, tok, body))
        matrix_error(st, h, b, 400, "M_INVALID_PARAM")
    # unauthenticated too: the check comes before the token is looked at
    st, h, b, _ = exchange(srv, req("GET", f"{V3}/room_keys/keys/{bad}", None))
    matrix_error(st, h, b, 400, "M_INVALID_PARAM")


def test_raw_high_bytes_in_the_path_are_400(srv, token):
    st, h, b, _ = exchange(srv, b"GET " + V3.encode() + b"/room_keys/keys/\xff\xfe?version=1 HTTP/1.1\r\n"
                           b"Host: localhost\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n")
    matrix_error(st, h, b, 400, "M_INVALID_PARAM")


@pytest.mark.parametrize("what", sorted(BAD_BYTES) + ["bad escape", "cut escape"])
def test_query_values_that_are_not_utf8_are_400(srv, token, what):
    bad = {"bad escape": "%G1", "cut escape": "%F"}.get(what) or BAD_BYTES.get(what)
    for target in [f"{V3}/room_keys/keys?version={bad}", f"{V3}/keys/changes?from={bad}&to=x",
                   f"{V3}/account/whoami?unknown_param={bad}", f"{V3}/room_keys/version?{bad}=1"]:
        st, h, b, _ = exchange(srv, req("GET", target, token))
        matrix_error(st, h, b, 400, "M_INVALID_PARAM")
    # as the access token: still a 400, not a 401 or a 500
    st, h, b, _ = exchange(srv, req("GET", f"{V3}/account/whoami?access_token={bad}"))
    matrix_error(st, h, b, 400, "M_INVALID_PARAM")


def test_valid_non_ascii_is_still_fine(srv, token):
    st, h, b, _ = exchange(srv, req("GET", f"{V3}/room_keys/keys/%E2%82%AC%F0%9F%98%80?version=1", token))
    assert st in (200, 404), b  # routed to the handler: no backup version yet is a 404 M_NOT_FOUND
    json.loads(b.decode("utf-8"))
    st, h, b, _ = exchange(srv, req("GET", f"{V3}/account/whoami?x=%E2%82%AC+y&z", token))
    assert st == 200, b


FRAMING = {
    "two different Content-Length": b"Content-Length: 2\r\nContent-Length: 40\r\n",
    "the same Content-Length twice": b"Content-Length: 2\r\nContent-Length: 2\r\n",
    "Content-Length and Transfer-Encoding": b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding and Content-Length": b"Transfer-Encoding: chunked\r\ncontent-length: 2\r\n",
    "Transfer-Encoding twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("what", sorted(FRAMING))
def test_ambiguous_framing_is_400_and_closes(srv, token, what):
    chunked = b"transfer-encoding" in FRAMING[what].lower()
    body = b"2\r\n{}\r\n0\r\n\r\n" if chunked else b"{}"
    smuggled = b"GET " + V3.encode() + b"/account/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = (f"POST {V3}/keys/query HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n".encode() +
            FRAMING[what] + b"\r\n" + body + smuggled)
    st, h, b, closed = exchange(srv, data, want_close=True)
    obj = matrix_error(st, h, b, 400, "M_UNKNOWN")
    assert "Content-Length" in obj["error"] or "Transfer-Encoding" in obj["error"]
    assert h.get("connection") == "close" and closed, "the connection must not be reused after ambiguous framing"


H2O_REFUSALS = {
    "Content-Length not a number": (b"Content-Length: abc\r\n", 400),
    "Content-Length list": (b"Content-Length: 2, 2\r\n", 400),
    "unknown Transfer-Encoding": (b"Transfer-Encoding: gzip\r\n", 400),
    "unknown Expect": (b"Expect: teapot\r\nContent-Length: 2\r\n", 417),
    "huge Content-Length": (b"Content-Length: 99999999999\r\n", 413),
}


@pytest.mark.parametrize("what", sorted(H2O_REFUSALS))
def test_h2o_refusals_are_matrix_json(srv, what):
    extra, status = H2O_REFUSALS[what]
    st, h, b, _ = exchange(srv, f"POST {V3}/keys/query HTTP/1.1\r\nHost: localhost\r\n".encode() + extra + b"\r\n")
    matrix_error(st, h, b, status, "M_TOO_LARGE" if status == 413 else "M_UNKNOWN")


def chunks(body, piece=300):
    out = b""
    for i in range(0, len(body), piece):
        part = body[i:i + piece]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


@pytest.mark.parametrize("size", [LIMIT + 1, 2 * LIMIT, 3 * LIMIT, 100 * LIMIT])
def test_too_large_is_always_matrix_413(srv, token, size):
    body = b'{"device_keys":{},"pad":"' + b"a" * size + b'"}'
    # by Content-Length, with the whole body sent
    st, h, b, _ = exchange(srv, req("POST", f"{V3}/keys/query", token, body))
    matrix_error(st, h, b, 413, "M_TOO_LARGE")
    # by Content-Length, announced only (h2o answers before reading past its own cap; the handler after reading)
    head = f"POST {V3}/keys/query HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if len(body) > 2 * LIMIT + 65536:
        st, h, b, _ = exchange(srv, head)
        matrix_error(st, h, b, 413, "M_TOO_LARGE")
    # chunked
    st, h, b, _ = exchange(srv, f"POST {V3}/keys/query HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n".encode() + chunks(body))
    matrix_error(st, h, b, 413, "M_TOO_LARGE")


def test_still_serving_after_all_that(srv, token):
    st, h, b, _ = exchange(srv, req("GET", f"{V3}/account/whoami", token))
    assert st == 200 and json.loads(b)["user_id"] == "@raw:localhost"
