"""A small client of the Matrix key endpoints for the bench scripts (staleness.py, churn.py, cache_population.py):
keep-alive HTTP/1.1 connections, device keys signed with a fresh ed25519 key (so a re-upload really changes what
/keys/query answers), and the markdown helpers the scripts print with. Debian's python3 and python3-nacl only."""

import base64
import http.client
import json
import time

import nacl.public
import nacl.signing

CLIENT = "/_matrix/client/v3"


def b64(raw):
    return base64.b64encode(raw).decode().rstrip("=")


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_device_keys(user_id, device_id):
    """Device keys for (user_id, device_id) under a new ed25519 key, self-signed as strict validation wants.
    Returns (device_keys object, the ed25519 public key in unpadded base64)."""
    signing = nacl.signing.SigningKey.generate()
    ed = b64(bytes(signing.verify_key))
    curve = b64(bytes(nacl.public.PrivateKey.generate().public_key))
    keys = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:" + device_id: curve, "ed25519:" + device_id: ed},
    }
    keys["signatures"] = {user_id: {"ed25519:" + device_id: b64(signing.sign(canonical(keys)).signature)}}
    return keys, ed


class Conn:
    """One keep-alive connection; reconnects once when the server closed it between requests."""

    def __init__(self, url, timeout=10.0):
        hostport = url.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.c = None

    def _conn(self):
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.c

    def send(self, method, path, token=None, body=None):
        """Sends a request without reading the answer (two connections can then be in flight at once)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        try:
            self._conn().request(method, path, body=data, headers=headers)
        except (ConnectionError, http.client.HTTPException, OSError):
            self.close()
            self._conn().request(method, path, body=data, headers=headers)

    def receive(self):
        """(status, parsed JSON body or None, monotonic arrival time in seconds)."""
        r = self.c.getresponse()
        raw = r.read()
        t = time.monotonic()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        return r.status, doc, t

    def call(self, method, path, token=None, body=None):
        self.send(method, path, token, body)
        return self.receive()

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def query_body(user_ids):
    return {"device_keys": {u: [] for u in user_ids}}


def device_ed25519(doc, user_id, device_id):
    """The ed25519 key a /keys/query answer shows for the device, or None."""
    try:
        return doc["device_keys"][user_id][device_id]["keys"]["ed25519:" + device_id]
    except (KeyError, TypeError):
        return None


def metrics(url):
    """Prometheus metrics of an mxkeysd as {name: value summed over label sets}."""
    c = Conn(url)
    try:
        c.send("GET", "/metrics")
        r = c.c.getresponse()
        text = r.read().decode()
        if r.status != 200:
            raise RuntimeError("GET %s/metrics answered %d" % (url, r.status))
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        name = parts[0].split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(parts[1])
        except ValueError:
            pass
    return out


def quantile(sorted_values, q):
    """Nearest-rank quantile of an ascending list (the value below which a fraction q of the samples lie)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 1)) - 1))
    return sorted_values[k]
