"""Other Matrix servers, as far as mxkeys sees them over federation: a remote server with its own ed25519 signing
keys that signs requests the way the server-server spec says, and a notary (standing in for our homeserver's
federation listener) answering GET /_matrix/key/v2/server and POST /_matrix/key/v2/query, with knobs for faults.

    notary = Notary(server_name="localhost")        notary.url, notary.port, notary.close() (also a context manager)
    remote = notary.add_remote("remote.test")       a RemoteServer the notary will vouch for
    remote.header(method, target, destination="localhost", content=None, key=None, sig_origin=None) -> str
                                                    an X-Matrix Authorization value (destination None: left out)
    remote.rotate()                                 a new current key; the old one moves to old_verify_keys
    remote.keys                                     {key_id: SigningKey} of every key it ever had
    notary.mode[remote_name] = "ok" | "unknown" | "expired" | "bad_notary_signature" | "error"
                                                    how the notary answers queries about that server: as it should;
                                                    with no keys; with valid_until_ts in the past; signed by a key
                                                    that is not the notary's; a 500
    notary.queries                                  [(server_name, key_id), ...] asked so far (POST /query)
    notary.self_fetches                             how many GET /_matrix/key/v2/server it answered
    fed_request(server_url, method, target, body=None, headers=None) -> (status, parsed JSON or text)
                                                    a raw HTTP request: the target goes out byte for byte
"""
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nacl.signing
import signedjson.key
import signedjson.sign

HOUR_MS = 3600_000


def now_ms():
    return int(time.time() * 1000)


def _new_key(version):
    return signedjson.key.decode_signing_key_base64(
        "ed25519", version, signedjson.key.encode_signing_key_base64(nacl.signing.SigningKey.generate()))


def _pub(k):
    return signedjson.key.encode_verify_key_base64(k.verify_key)


class RemoteServer:
    def __init__(self, name):
        self.name = name
        self.keys = {}
        self.old = {}
        self._n = 0
        self.current = None
        self.rotate()

    def rotate(self):
        if self.current is not None:
            self.old[self.current] = now_ms() - 1000
        self._n += 1
        kid = f"ed25519:k{self._n}"
        self.keys[kid] = _new_key(f"k{self._n}")
        self.current = kid
        return kid

    def key_object(self, valid_until_ts=None):
        obj = {"server_name": self.name,
               "valid_until_ts": valid_until_ts or now_ms() + HOUR_MS,
               "verify_keys": {self.current: {"key": _pub(self.keys[self.current])}},
               "old_verify_keys": {kid: {"key": _pub(self.keys[kid]), "expired_ts": ts} for kid, ts in self.old.items()}}
        return signedjson.sign.sign_json(obj, self.name, self.keys[self.current])

    def header(self, method, target, destination="localhost", content=None, key=None, quoted=True):
        kid = key or self.current
        req = {"method": method, "uri": target, "origin": self.name}
        if destination is not None:
            req["destination"] = destination
        if content is not None:
            req["content"] = content
        sig = signedjson.sign.sign_json(req, self.name, self.keys[kid])["signatures"][self.name][kid]
        q = (lambda v: f'"{v}"') if quoted else (lambda v: v)
        parts = [f"origin={q(self.name)}"]
        if destination is not None:
            parts.append(f"destination={q(destination)}")
        parts += [f"key={q(kid)}", f'sig="{sig}"']
        return "X-Matrix " + ",".join(parts)


class Notary:
    def __init__(self, server_name="localhost"):
        self.server_name = server_name
        self.key = _new_key("notary1")
        self.impostor = _new_key("notary1")
        self.remotes = {}
        self.mode = {}
        self.queries = []
        self.self_fetches = 0
        self.lock = threading.Lock()
        notary = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != "/_matrix/key/v2/server":
                    return self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"})
                with notary.lock:
                    notary.self_fetches += 1
                self._answer(200, notary.own_keys())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/_matrix/key/v2/query":
                    return self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"})
                status, answer = notary.query(body)
                self._answer(status, answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_remote(self, name):
        r = RemoteServer(name)
        with self.lock:
            self.remotes[name] = r
            self.mode[name] = "ok"
        return r

    def own_keys(self):
        obj = {"server_name": self.server_name, "valid_until_ts": now_ms() + HOUR_MS,
               "verify_keys": {"ed25519:notary1": {"key": _pub(self.key)}}, "old_verify_keys": {}}
        return signedjson.sign.sign_json(obj, self.server_name, self.key)

    def query(self, body):
        out = []
        for name, wanted in body.get("server_keys", {}).items():
            with self.lock:
                for kid in wanted or {"": None}:
                    self.queries.append((name, kid))
                remote, mode = self.remotes.get(name), self.mode.get(name, "unknown")
            if mode == "error":
                return 500, {"errcode": "M_UNKNOWN", "error": "notary trouble"}
            if remote is None or mode == "unknown":
                continue
            obj = remote.key_object(valid_until_ts=now_ms() - 1000 if mode == "expired" else None)
            signer = self.impostor if mode == "bad_notary_signature" else self.key
            out.append(signedjson.sign.sign_json(obj, self.server_name, signer))
        return 200, {"server_keys": out}


def fed_request(server_url, method, target, body=None, headers=None):
    host, port = server_url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.putrequest(method, target, skip_accept_encoding=True)
        hs = list(headers or [])
        if data is not None:
            hs += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        for k, v in hs:
            conn.putheader(k, v)
        conn.endheaders(data)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")
    finally:
        conn.close()
