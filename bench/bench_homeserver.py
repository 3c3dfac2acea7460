#!/usr/bin/python3
"""bench_homeserver: the smallest homeserver that mxkeys' sidecar benchmark needs, built to be cheap per request and
per held connection, so that the figures measure mxkeys and not this server.

Debian's /usr/bin/python3, standard library only: one asyncio event loop, HTTP/1.1 with keep-alive (asyncio.Protocol,
no stream objects), every answer with Content-Length. It listens on 127.0.0.1 only. A held /sync long-poll costs one
loop timer and the connection, no thread and no coroutine.

    bench/bench_homeserver.py --port 0 --tokens 10000 --tokens-out tokens.json --ready-file port.txt

Served (under /_matrix/client/r0 and /v3):
  GET  /account/whoami            {user_id, device_id} for a token it issued (--tokens at start-up, or /login)
  POST /login                     m.login.password for any @bench<n> user with --password: a new device and token
  GET  /sync                      `timeout` 0 or absent: at once, a small incremental answer (next_batch, to_device,
                                  device_lists, the key counts, three joined rooms with a message each); otherwise
                                  held for `timeout` ms (at most --max-timeout-ms), then an empty answer, or answered
                                  with news as soon as POST /_bench/release comes
  POST /keys/upload               stores the device keys, counts one-time keys; {"one_time_key_counts": {...}}
  POST /keys/device_signing/upload, /keys/signatures/upload   accepted ({} / {"failures": {}}), not stored
  GET  /keys/changes              {"changed": [], "left": []}
  GET  /_matrix/client/versions
Bench control (127.0.0.1 only, no token):
  GET  /_bench/stats              {"held": n, "connections": n, "requests": {...}, "pos": n}
  POST /_bench/release            answers every held /sync now (new stream position, one message in a room)

Bounded: --max-connections (others are closed at once), --max-held (further long-polls are answered at once),
request heads of 16 KiB and bodies of 1 MiB at most (431/413 and close), --max-timeout-ms per poll, --max-tokens.
The device keys it stores are bounded by the tokens it issued.
"""
import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import signal
import sys
from urllib.parse import unquote

MAX_HEAD = 16384
MAX_BODY = 1 << 20
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
           405: b"Method Not Allowed", 411: b"Length Required", 413: b"Payload Too Large",
           431: b"Request Header Fields Too Large"}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class State:
    def __init__(self, args):
        self.args = args
        self.server_name = args.server_name
        self.tokens = {}          # access token -> (user_id, device_id)
        self.device_keys = {}     # (user_id, device_id) -> bytes of the device keys as uploaded
        self.otk_counts = {}      # (user_id, device_id) -> one-time keys received
        self.held = {}            # Conn -> (TimerHandle, since)
        self.connections = 0
        self.pos = 1
        self.counts = {"sync": 0, "sync_held": 0, "sync_timeout": 0, "sync_released": 0, "whoami": 0,
                       "keys_upload": 0, "identity_other": 0, "login": 0, "unknown_token": 0, "other": 0}
        self.next_device = 0
        self._build_bodies()

    def issue(self, user_id, device_id=None):
        if len(self.tokens) >= self.args.max_tokens:
            return None
        if device_id is None:
            device_id = "BENCHDEV%d" % self.next_device
            self.next_device += 1
        token = "syt_bench_" + secrets.token_urlsafe(24)
        self.tokens[token] = (user_id, device_id)
        return token, device_id

    # ---- /sync bodies: built once, only next_batch changes ----
    def _build_bodies(self):
        sn = self.server_name
        counts = {"device_one_time_keys_count": {"signed_curve25519": 0},
                  "org.matrix.msc2732.device_unused_fallback_key_types": [],
                  "device_unused_fallback_key_types": []}

        def room(i, ts):
            rid = "!benchroom%d:%s" % (i, sn)
            return rid, {
                "timeline": {"events": [{
                    "type": "m.room.encrypted", "sender": "@bench%d:%s" % (i, sn),
                    "event_id": "$bench%dev%d" % (i, ts), "origin_server_ts": 1767225600000 + ts,
                    "content": {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "Rg4k8Jr3A1h6tHk9mUv3yKrm0T4m2cQ",
                                "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg" * 2,
                                "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
                                "device_id": "BENCHDEV%d" % i},
                    "unsigned": {"age": 120}}], "limited": False, "prev_batch": "t%d-%d" % (ts, i)},
                "state": {"events": []},
                "ephemeral": {"events": [{"type": "m.typing", "content": {"user_ids": []}}]},
                "account_data": {"events": []},
                "unread_notifications": {"highlight_count": 0, "notification_count": 1},
                "summary": {}}

        def body(rooms, changed):
            return {"account_data": {"events": []}, "to_device": {"events": []},
                    "device_lists": {"changed": changed, "left": []}, "presence": {"events": []},
                    "rooms": {"join": dict(rooms), "invite": {}, "leave": {}, "knock": {}}, **counts}

        news = body([room(i, 7) for i in range(3)], ["@bench1:%s" % sn])
        empty = body([], [])
        # next_batch first, as Synapse orders it; the rest is the same bytes every time
        self.news_tail = dumps(news)[1:]
        self.empty_tail = dumps(empty)[1:]

    def sync_body(self, news):
        head = b'{"next_batch":"s%d",' % self.pos
        return head + (self.news_tail if news else self.empty_tail)

    def release(self):
        """Answers every held /sync with news at a new stream position."""
        self.pos += 1
        held, self.held = self.held, {}
        body = self.sync_body(True)
        for conn, (handle, _since) in held.items():
            handle.cancel()
            self.counts["sync_released"] += 1
            conn.finish_held(200, body)
        return len(held)

    def on_poll_timeout(self, conn):
        if self.held.pop(conn, None) is not None:
            self.counts["sync_timeout"] += 1
            conn.finish_held(200, self.sync_body(False))


def error(errcode, message, **extra):
    return dumps({"errcode": errcode, "error": message, **extra})


class Conn(asyncio.Protocol):
    __slots__ = ("st", "transport", "buf", "busy", "closing", "counted")

    def __init__(self, st):
        self.st = st
        self.transport = None
        self.buf = b""
        self.busy = False  # a held request: later (pipelined) requests wait for its answer
        self.closing = False
        self.counted = False

    def connection_made(self, transport):
        st = self.st
        if st.connections >= st.args.max_connections:
            self.closing = True
            transport.abort()
            return
        self.transport = transport
        self.counted = True
        st.connections += 1

    def connection_lost(self, exc):
        st = self.st
        if self.counted:
            st.connections -= 1
            self.counted = False
        self.transport = None
        entry = st.held.pop(self, None)
        if entry is not None:
            entry[0].cancel()

    def data_received(self, data):
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.process()
        elif len(self.buf) > MAX_HEAD + MAX_BODY:  # pipelined behind a held poll: bounded too
            self.closing = True
            self.transport.abort()

    def respond(self, status, body, close=False, extra=b""):
        t = self.transport
        if t is None:
            return
        t.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
            status, REASONS.get(status, b"OK"), len(body), extra, b"Connection: close\r\n" if close else b"", body))
        if close:
            self.closing = True
            t.close()

    def finish_held(self, status, body):
        self.busy = False
        self.respond(status, body)
        if self.buf and self.transport is not None:
            self.process()

    def process(self):
        while self.buf and not self.busy and not self.closing:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.respond(431, error("M_UNKNOWN", "request head too large"), close=True)
                return
            if end > MAX_HEAD:
                self.respond(431, error("M_UNKNOWN", "request head too large"), close=True)
                return
            lines = buf[:end].split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.respond(400, error("M_UNKNOWN", "bad request line"), close=True)
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self.respond(411, error("M_UNKNOWN", "chunked request bodies are not supported"), close=True)
                return
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self.respond(400, error("M_UNKNOWN", "bad Content-Length"), close=True)
                return
            if length > MAX_BODY or length < 0:
                self.respond(413, error("M_TOO_LARGE", "request body too large"), close=True)
                return
            total = end + 4 + length
            if len(buf) < total:
                return
            body = buf[end + 4:total]
            self.buf = buf[total:]
            close = version != b"HTTP/1.1" or headers.get(b"connection", b"").lower() == b"close"
            self.handle(method, target.decode("latin-1"), headers, body, close)

    # ---- routing ----
    def handle(self, method, target, headers, body, close):
        st = self.st
        path, _, query = target.partition("?")
        params = {}
        if query:
            for part in query.split("&"):
                k, _, v = part.partition("=")
                params[k] = unquote(v)
        if path.startswith("/_matrix/client/v3/"):
            rest = path[19:]
        elif path.startswith("/_matrix/client/r0/"):
            rest = path[19:]
        elif path.startswith("/_bench/"):
            return self.bench_control(method, path[8:], close)
        elif path == "/_matrix/client/versions":
            return self.respond(200, b'{"versions":["r0.6.1","v1.1","v1.2","v1.3","v1.4","v1.5"]}', close)
        else:
            st.counts["other"] += 1
            return self.respond(404, error("M_UNRECOGNIZED", "Unrecognized request"), close)
        if rest == "login":
            return self.login(method, body, close)
        auth = headers.get(b"authorization")
        token = auth[7:].decode("latin-1") if auth is not None and auth[:7].lower() == b"bearer " \
            else params.get("access_token")
        if token is None:
            return self.respond(401, error("M_MISSING_TOKEN", "Missing access token"), close)
        who = st.tokens.get(token)
        if who is None:
            st.counts["unknown_token"] += 1
            return self.respond(401, error("M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=False),
                                close)
        if rest == "sync":
            if method != b"GET":
                return self.respond(405, error("M_UNRECOGNIZED", "Unrecognized request"), close)
            return self.sync(params, close)
        if rest == "account/whoami":
            st.counts["whoami"] += 1
            return self.respond(200, dumps({"user_id": who[0], "device_id": who[1]}), close)
        if rest == "keys/upload" and method == b"POST":
            return self.keys_upload(who, body, close)
        if rest in ("keys/device_signing/upload", "keys/signatures/upload") and method == b"POST":
            st.counts["identity_other"] += 1
            return self.respond(200, b"{}" if rest[5] == "d" else b'{"failures":{}}', close)
        if rest == "keys/changes" and method == b"GET":
            return self.respond(200, b'{"changed":[],"left":[]}', close)
        st.counts["other"] += 1
        return self.respond(404, error("M_UNRECOGNIZED", "Unrecognized request"), close)

    def sync(self, params, close):
        st = self.st
        st.counts["sync"] += 1
        try:
            timeout = int(params.get("timeout", "0"))
        except ValueError:
            timeout = 0
        timeout = max(0, min(timeout, st.args.max_timeout_ms))
        if timeout == 0 or close or len(st.held) >= st.args.max_held:
            return self.respond(200, st.sync_body(True), close)
        st.counts["sync_held"] += 1
        self.busy = True
        handle = asyncio.get_running_loop().call_later(timeout / 1000.0, st.on_poll_timeout, self)
        st.held[self] = (handle, params.get("since"))

    def keys_upload(self, who, body, close):
        st = self.st
        st.counts["keys_upload"] += 1
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return self.respond(400, error("M_NOT_JSON", "Content not JSON."), close)
        if not isinstance(req, dict):
            return self.respond(400, error("M_BAD_JSON", "Content must be a JSON object."), close)
        dk = req.get("device_keys")
        if dk is not None:
            if not isinstance(dk, dict) or dk.get("user_id") != who[0] or dk.get("device_id") != who[1]:
                return self.respond(400, error("M_INVALID_PARAM", "device_keys do not match the access token"),
                                    close)
            st.device_keys[who] = dumps(dk)
        otks = req.get("one_time_keys")
        n = st.otk_counts.get(who, 0) + (len(otks) if isinstance(otks, dict) else 0)
        if n:
            st.otk_counts[who] = n
        return self.respond(200, dumps({"one_time_key_counts": {"signed_curve25519": n}}), close)

    def login(self, method, body, close):
        st = self.st
        if method != b"POST":
            return self.respond(200, b'{"flows":[{"type":"m.login.password"}]}', close)
        try:
            req = json.loads(body)
            ident = req.get("identifier") or {}
            user = ident.get("user") or req.get("user")
            password = req.get("password")
        except (ValueError, AttributeError):
            return self.respond(400, error("M_NOT_JSON", "Content not JSON."), close)
        if not isinstance(user, str) or password != st.args.password:
            return self.respond(403, error("M_FORBIDDEN", "Invalid username or password"), close)
        user_id = user if user.startswith("@") else "@%s:%s" % (user, st.server_name)
        issued = st.issue(user_id, req.get("device_id") if isinstance(req.get("device_id"), str) else None)
        if issued is None:
            return self.respond(403, error("M_LIMIT_EXCEEDED", "--max-tokens reached"), close)
        st.counts["login"] += 1
        return self.respond(200, dumps({"user_id": user_id, "access_token": issued[0], "device_id": issued[1],
                                        "home_server": st.server_name}), close)

    def bench_control(self, method, what, close):
        st = self.st
        if what == "stats" and method == b"GET":
            return self.respond(200, dumps({"held": len(st.held), "connections": st.connections, "pos": st.pos,
                                            "requests": st.counts, "tokens": len(st.tokens),
                                            "device_keys": len(st.device_keys)}), close)
        if what == "release" and method == b"POST":
            n = st.release()
            return self.respond(200, dumps({"released": n}), close)
        return self.respond(404, error("M_UNRECOGNIZED", "Unrecognized request"), close)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port (see --ready-file)")
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--tokens", type=int, default=100, help="tokens issued at start-up (one device each)")
    ap.add_argument("--devices-per-user", type=int, default=1)
    ap.add_argument("--tokens-out", help="write the start-up tokens here: [{user_id, device_id, access_token}]")
    ap.add_argument("--ready-file", help="write the port here once listening")
    ap.add_argument("--password", default="bench", help="the password of every @bench<n> user for /login")
    ap.add_argument("--max-connections", type=int, default=None, help="default: what RLIMIT_NOFILE allows")
    ap.add_argument("--max-held", type=int, default=20000)
    ap.add_argument("--max-timeout-ms", type=int, default=300000)
    ap.add_argument("--max-tokens", type=int, default=100000)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.max_connections is None:
        args.max_connections = max(1, min(30000, hard - 64))
    elif hard < args.max_connections + 64:
        print("bench_homeserver: RLIMIT_NOFILE %d bounds connections to about %d" % (hard, hard - 64),
              file=sys.stderr)
        args.max_connections = max(1, hard - 64)

    st = State(args)
    issued = []
    for i in range(args.tokens):
        user_id = "@bench%d:%s" % (i // args.devices_per_user, args.server_name)
        token, device_id = st.issue(user_id)
        issued.append({"user_id": user_id, "device_id": device_id, "access_token": token})
    if args.tokens_out:
        tmp = args.tokens_out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(issued, f)
        os.replace(tmp, args.tokens_out)
    del issued
    gc.collect()
    gc.freeze()  # the start-up objects are never collected: no full collections walking them later

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Conn(st), "127.0.0.1", args.port, backlog=4096,
                                          reuse_address=True)
        port = server.sockets[0].getsockname()[1]
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        if args.ready_file:
            with open(args.ready_file + ".tmp", "w") as f:
                f.write("%d\n" % port)
            os.replace(args.ready_file + ".tmp", args.ready_file)
        print("bench_homeserver: http://127.0.0.1:%d (%d tokens)" % (port, len(st.tokens)), file=sys.stderr,
              flush=True)
        await stop
        server.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
