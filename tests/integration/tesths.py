#!/usr/bin/python3
"""tesths: a small but real-behaving Matrix homeserver for the tests (client-server API only, no federation).

It answers every path under /_matrix/client/{r0,v3} that it serves the way the client-server spec (and, where the
spec leaves room, Synapse) does, well enough for matrix-nio to run an encrypted conversation against it directly, and
it behaves like a real homeserver where mxkeys relies on one when mxkeys runs beside it as a sidecar: whoami,
login/logout, devices with user-interactive auth, /keys/* stored and announced in a device-list stream, /sync with
long-polls, simplified sliding sync (MSC4186) with its e2ee and to_device extensions, plus knobs for faults.

Run by hand:  python3 tests/integration/tesths.py --port 8008 --server-name localhost [--user alice:pw ...]

Python API (everything thread-safe; the server runs in daemon threads, one per connection, HTTP/1.1 keep-alive,
Content-Length on every answer unless chunked framing is asked for; it listens on 127.0.0.1 only):

    hs = TestHomeserver(server_name="localhost", remote_server_name="remote.test", port=0,
                        xsign_uia="replace_only", timeline_limit=20)
    hs.url                        "http://127.0.0.1:<port>"; also hs.port, hs.server_name, hs.remote_server_name
    hs.register(localpart, password="pw", displayname=None) -> user_id     ("@x:server" is accepted as localpart too)
    hs.login(user_id, device_id=None, display_name=None) -> (access_token, device_id)
                                  like POST /login without HTTP: a new device is created (and announced in the
                                  device-list stream) unless device_id names an existing one of that user
    hs.remove_device(user_id, device_id)   like DELETE /devices/{id} without HTTP or UIA (tokens, keys gone; announced)
    hs.expire_token(token, soft_logout=True)
                                  the token stops working: every authenticated request (whoami included) answers
                                  401 {"errcode": "M_UNKNOWN_TOKEN", "soft_logout": <soft_logout>}; the device stays
    hs.fault(method, path_regex, status=None, body=None, delay=0.0, drop=False, hang=False, times=None,
             chunked=None, headers=None) -> Fault
                                  requests whose method matches (None or "*": any) and whose path without the query
                                  matches path_regex (re.search) get, in this order: `delay` seconds of sleep; then
                                  `drop`: the connection closed without an answer; or `hang`: no answer until the
                                  client goes away (at most 120 s, then the connection is closed); or, when `status`
                                  is given, that status with `body` (dict/list: JSON; bytes/str: as is; None: a Matrix
                                  error object M_UNKNOWN) and extra `headers` instead of the normal handling; otherwise
                                  the normal answer. chunked=True/False forces the framing of the answer (fixed or
                                  normal). `times` (None: unlimited) bounds how many requests the fault hits; the
                                  first matching fault with hits left applies. Fault: .hits (requests it hit so far),
                                  .remove(). Every request is still recorded in hs.requests.
    hs.clear_faults()
    hs.on_identity_stored = callable(user_id, kind)
                                  called in the request's thread right after an identity write was stored and
                                  announced (held /syncs already woken), before the answer is sent; kind is
                                  "device_keys" (new or changed device keys in /keys/upload), "cross_signing"
                                  (/keys/device_signing/upload stored keys), "signatures" (/keys/signatures/upload
                                  stored at least one signature) or "device_removed" (logout, logout/all,
                                  DELETE /devices/{id}, /delete_devices, deactivation, hs.remove_device). One call
                                  per request and user. Exceptions it raises are kept in hs.callback_errors.
    hs.requests                   list of {"method", "path" (with query), "headers" (dict, lower-case names),
                                  "body" (bytes)} of every request, in arrival order (clear with hs.requests.clear())
    hs.sync_padding(nbytes)       from now on every /sync answer (initial or not, every user) carries at least nbytes
                                  of padding: a joined room "!padding:<server_name>" whose timeline holds many
                                  m.room.message events; sync_padding(0) stops it. Padding is not news: a held
                                  long-poll still waits for real news (or its timeout).
    hs.sync_chunked = False       True: /sync (and sliding sync) answers use Transfer-Encoding: chunked (64 KiB
                                  chunks) instead of Content-Length
    hs.sync_counts_last = False   False: Synapse's member order (next_batch ... device_one_time_keys_count,
                                  device_unused_fallback_key_types before "rooms"); True: the count members come last,
                                  after the rooms (and the padding)
    hs.sync_omit_empty = False    False: every /sync answer has every section (empty lists/objects included);
                                  True: like Synapse, empty account_data, to_device, presence, device_lists (and its
                                  changed/left), rooms sections are left out (the count members always stay)
    hs.timeline_limit = 20        events per room timeline in /sync (older ones: "limited": true, their state in
                                  "state"); /sync filters are stored but not applied
    hs.xsign_uia                  "replace_only" (default; MSC3967 / current spec: the first cross-signing upload
                                  needs no UIA, replacing existing keys does; re-uploading identical keys answers 200
                                  without UIA) or "always" (Synapse 1.67: every upload needs UIA)
    hs.refuse_signature(user_id, key_id, errcode="M_INVALID_SIGNATURE", error="refused by the test")
                                  /keys/signatures/upload answers that failure for that (target user, key id) entry
                                  and stores nothing for it; hs.signature_refusals is the dict behind it
    hs.add_remote_device(user_id, device_id, device_keys, one_time_keys=[(key_id, obj), ...], fallback_key=None)
                                  a device of a user of remote_server_name, as that server would answer federation
                                  queries and claims: one-time keys are handed out once each (in order), then the
                                  fallback key (key_id, obj) every time
    hs.add_remote_cross_signing(user_id, master_key, self_signing_key)
    hs.token() -> "s<n>"          the current stream position as a /sync token
    hs.device_list_changes(user_id, from_token, to_token=None) -> (changed, left)   what /keys/changes would answer
    hs.otk_counts(user_id, device_id) -> {"signed_curve25519": n, ...}               what /sync would say
    hs.unused_fallback_key_types(user_id, device_id) -> [algorithm, ...]
    hs.close()                    stops serving and closes every connection (held requests end); also a context manager

Stored state, for assertions (live structures: read them under `with hs.lock:` or copy them):
    hs.users                {user_id: {"password", "displayname", "deactivated"}}
    hs.devices              {user_id: {device_id: {"display_name", "last_seen_ts"}}}
    hs.tokens               {access_token: (user_id, device_id)}
    hs.device_keys          {user_id: {device_id: device key object as uploaded, without "unsigned"}}
    hs.one_time_keys        {(user_id, device_id): {"<algorithm>:<key id>": key object}} in upload (= claim) order
    hs.fallback_keys        {(user_id, device_id): {algorithm: {"key_id": "<alg>:<id>", "key": obj, "used": bool}}}
    hs.cross_signing_keys   {user_id: {"master" | "self_signing" | "user_signing": key object}}
    hs.signatures           {(target_user_id, target_key_id): {signer_user_id: {signer_key_id: signature}}}
                            signatures stored by /keys/signatures/upload (merged into /keys/query answers);
                            target_key_id is a device id or a master key's public key
    hs.remote_devices       {user_id: {device_id: {"keys", "one_time_keys" (list), "fallback_key"}}}
    hs.remote_cross_signing {user_id: {"master", "self_signing"}}
    hs.rooms                {room_id: Room} (Room: .events [(pos, event)], .state {(type, state_key): event},
                            .membership(user_id) -> "join" | "invite" | "leave" | "ban" | None)
    hs.account_data         {user_id: {type: content}}

Behaviour notes (what a client sees):
  * Access tokens come from "Authorization: Bearer" or ?access_token=; they look like Synapse's ("syt_..."). Device
    ids are 10 random upper-case letters unless given. Unknown paths: 404 M_UNRECOGNIZED; a known path with another
    method: 405 M_UNRECOGNIZED; bad JSON: 400 M_NOT_JSON / M_BAD_JSON; registration: 403 (use hs.register()).
  * One global stream position counts room events, to-device messages, device-list changes and account data;
    /sync next_batch is "s<n>". device_lists.changed of a /sync (and /keys/changes between two tokens) holds every
    user sharing a joined room with the caller (and the caller) whose devices or identity keys changed: login of a
    new device, new or changed device keys, device display name, cross-signing keys, signatures on their own keys,
    device removal; and users who start sharing a room; `left` holds users who no longer share any room. A change
    wakes held long-polls at once. To-device messages are delivered until the device syncs with a since token past
    them (or a sliding-sync to_device `since` past them), then deleted.
  * device_one_time_keys_count / device_unused_fallback_key_types (and the org.matrix.msc2732 alias) are computed
    from the keys this server stores for the calling device; signed_curve25519 is always present (0 when none).
  * Cross-signing replacement and device deletion use user-interactive auth with one flow, m.login.password: the
    first request gets 401 {"flows": [{"stages": ["m.login.password"]}], "params": {}, "session": "..."}; a wrong
    password 401 with errcode M_FORBIDDEN and the same session. A completed session may be submitted again for the
    same operation.
  * Simplified sliding sync: POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync, pos and timeout in
    the query (or the body); lists (range, filters is_invited/is_encrypted/is_dm), room_subscriptions, required_state
    (both [[type, state_key]] and {"include": [...]} forms), extensions e2ee (sticky "enabled"; every answer has
    device_one_time_keys_count and device_unused_fallback_key_types, incremental answers device_lists) and to_device
    (since/limit/next_batch). An unknown pos: 400 M_UNKNOWN_POS.
"""
import argparse
import base64
import copy
import json
import re
import secrets
import select
import socket
import string
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

try:
    from canonicaljson import encode_canonical_json
except ImportError:  # same bytes for the JSON clients sign (no floats)
    def encode_canonical_json(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
try:
    from olm import ed25519_verify
except ImportError:
    def ed25519_verify(key, message, signature):
        import nacl.signing

        def unb64(s):
            return base64.b64decode(s + "=" * (-len(s) % 4))
        nacl.signing.VerifyKey(unb64(key)).verify(message, unb64(signature))

CLIENT = r"/_matrix/client/(?:r0|v3)"
SLIDING_SYNC_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
UIA_FLOWS = [{"stages": ["m.login.password"]}]
HANG_LIMIT = 120.0  # seconds a hanging fault holds a connection at most
MAX_SYNC_TIMEOUT = 600.0  # seconds a /sync long-poll is held at most
MAX_BODY = 128 * 1024 * 1024
CHUNK = 64 * 1024
_PAD_MARK = "\x00tesths-padding\x00"


class MatrixError(Exception):
    def __init__(self, status, errcode, error, **extra):
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.body = {"errcode": errcode, "error": error, **extra}
        self.headers = {}


class _Answer(Exception):
    """A complete non-error answer raised from deep inside (UIA 401s)."""

    def __init__(self, status, body):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = {}


class _ClientGone(Exception):
    pass


def _rand(n, alphabet=string.ascii_letters):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _b62(n, width):
    digits = string.digits + string.ascii_letters
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = digits[r] + out
    return out.rjust(width, "0")


def _strip(obj):
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _verify(obj, user_id, key_id, public_key):
    """True when obj carries a valid ed25519 signature by key_id of user_id made with public_key."""
    try:
        sig = obj["signatures"][user_id][key_id]
        ed25519_verify(public_key, encode_canonical_json(_strip(obj)), sig)
        return True
    except Exception:
        return False


def _only_ed25519(key_obj):
    keys = key_obj.get("keys") if isinstance(key_obj, dict) else None
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    (kid, pub), = keys.items()
    if not isinstance(pub, str) or kid != "ed25519:" + pub:
        return None
    return pub


def _server_of(user_id):
    return user_id.split(":", 1)[1] if isinstance(user_id, str) and ":" in user_id else ""


def _parse_token(tok, prefix="s"):
    if not isinstance(tok, str) or not tok.startswith(prefix) or not tok[len(prefix):].isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid stream token {tok!r}")
    return int(tok[len(prefix):])


class Room:
    def __init__(self, room_id):
        self.room_id = room_id
        self.events = []  # [(pos, event)]
        self.state = {}  # {(type, state_key): event}
        self.member_pos = {}  # user_id -> pos of their latest member event
        self.aliases = set()

    def membership(self, user_id):
        ev = self.state.get(("m.room.member", user_id))
        return ev["content"].get("membership") if ev else None

    def members(self, membership="join"):
        return [k for (t, k), ev in self.state.items()
                if t == "m.room.member" and ev["content"].get("membership") == membership]

    def last_pos(self):
        return self.events[-1][0] if self.events else 0

    def state_at(self, pos):
        """State before the event at pos (events with a smaller position)."""
        st = {}
        for p, ev in self.events:
            if p >= pos:
                break
            if "state_key" in ev:
                st[(ev["type"], ev["state_key"])] = ev
        return st

    def encrypted(self):
        return ("m.room.encryption", "") in self.state


class Fault:
    def __init__(self, hs, method, path_regex, status, body, delay, drop, hang, times, chunked, headers):
        self._hs = hs
        self.method = None if method in (None, "*") else method.upper()
        self.regex = re.compile(path_regex)
        self.status, self.body, self.delay = status, body, delay
        self.drop, self.hang, self.times, self.chunked = drop, hang, times, chunked
        self.headers = dict(headers or {})
        self.hits = 0

    def remove(self):
        with self._hs.lock:
            if self in self._hs._faults:
                self._hs._faults.remove(self)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tesths/1.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        if self.server.hs.verbose:
            sys.stderr.write("tesths: " + (fmt % args) + "\n")

    def setup(self):
        super().setup()
        self.server.hs._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.hs._conn_closed(self.connection)

    def do_GET(self):
        self.server.hs._handle(self)

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class TestHomeserver:
    __test__ = False  # not a pytest test class

    def __init__(self, server_name="localhost", remote_server_name="remote.test", port=0, xsign_uia="replace_only",
                 timeline_limit=20, verbose=False):
        self.server_name = server_name
        self.remote_server_name = remote_server_name
        self.xsign_uia = xsign_uia
        self.timeline_limit = timeline_limit
        self.verbose = verbose
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._closing = False
        self._pos = 0
        self.users = {}
        self.devices = {}
        self.tokens = {}
        self._expired = {}  # token -> soft_logout
        self.device_keys = {}
        self.one_time_keys = {}
        self.fallback_keys = {}
        self.cross_signing_keys = {}
        self.signatures = {}
        self.signature_refusals = {}
        self.remote_devices = {}
        self.remote_cross_signing = {}
        self.rooms = {}
        self.aliases = {}
        self.account_data = {}
        self._account_data_pos = {}  # (user, type) -> pos
        self.filters = {}
        self._inbox = {}  # (user, device) -> [(pos, event)]
        self._dl_notices = {}  # user -> [(pos, other_user, "changed" | "left")]
        self._user_pos = {}  # user -> last pos with news for them
        self._device_pos = {}  # (user, device) -> last pos of a to-device message for them
        self._txns = {}  # (user, device, kind, txn) -> answer
        self._event_txn = {}  # event_id -> (user, device, txn)
        self._uia_sessions = {}
        self._ss_conns = {}  # (user, device, conn_id) -> {"tokens": {pos: {...}}, "ext": {...}}
        self._ss_seq = 0
        self._faults = []
        self._padding = 0
        self._padding_cache = (0, b"")
        self.sync_chunked = False
        self.sync_counts_last = False
        self.sync_omit_empty = False
        self.on_identity_stored = None
        self.callback_errors = []
        self.requests = []
        self._conns = set()
        self._local = threading.local()
        self._routes = self._make_routes()
        self.httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.hs = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="tesths", daemon=True)
        self._thread.start()

    # ---- public knobs ---------------------------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self.lock:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self.httpd.shutdown()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.httpd.server_close()

    def register(self, localpart, password="pw", displayname=None):
        user_id = localpart if localpart.startswith("@") else f"@{localpart}:{self.server_name}"
        if _server_of(user_id) != self.server_name:
            raise ValueError(f"{user_id} is not a user of {self.server_name}")
        with self.lock:
            if user_id in self.users:
                raise ValueError(f"{user_id} is already registered")
            self.users[user_id] = {"password": password,
                                   "displayname": displayname or user_id[1:].split(":")[0],
                                   "deactivated": False}
            self.devices[user_id] = {}
        return user_id

    def login(self, user_id, device_id=None, display_name=None):
        with self.lock:
            if user_id not in self.users:
                raise ValueError(f"unknown user {user_id}")
            return self._login(user_id, device_id, display_name)

    def remove_device(self, user_id, device_id):
        with self.lock:
            removed = self._remove_devices(user_id, [device_id])
        if removed:
            self._identity_stored(user_id, "device_removed")
        self._run_callbacks()

    def expire_token(self, token, soft_logout=True):
        with self.lock:
            self._expired[token] = bool(soft_logout)

    def fault(self, method, path_regex, status=None, body=None, delay=0.0, drop=False, hang=False, times=None,
              chunked=None, headers=None):
        f = Fault(self, method, path_regex, status, body, delay, drop, hang, times, chunked, headers)
        with self.lock:
            self._faults.append(f)
        return f

    def clear_faults(self):
        with self.lock:
            self._faults.clear()

    def refuse_signature(self, user_id, key_id, errcode="M_INVALID_SIGNATURE", error="refused by the test"):
        with self.lock:
            self.signature_refusals[(user_id, key_id)] = (errcode, error)

    def sync_padding(self, nbytes):
        with self.lock:
            self._padding = int(nbytes)

    def add_remote_device(self, user_id, device_id, device_keys, one_time_keys=(), fallback_key=None):
        if _server_of(user_id) != self.remote_server_name:
            raise ValueError(f"{user_id} is not a user of {self.remote_server_name}")
        with self.lock:
            self.remote_devices.setdefault(user_id, {})[device_id] = {
                "keys": copy.deepcopy(device_keys), "one_time_keys": list(one_time_keys),
                "fallback_key": fallback_key}
            self._announce(user_id)

    def add_remote_cross_signing(self, user_id, master_key, self_signing_key):
        with self.lock:
            self.remote_cross_signing[user_id] = {"master": copy.deepcopy(master_key),
                                                  "self_signing": copy.deepcopy(self_signing_key)}
            self._announce(user_id)

    def token(self):
        with self.lock:
            return f"s{self._pos}"

    def device_list_changes(self, user_id, from_token, to_token=None):
        with self.lock:
            a = _parse_token(from_token)
            b = _parse_token(to_token) if to_token else self._pos
            return self._dl_between(user_id, a, b)

    def otk_counts(self, user_id, device_id):
        with self.lock:
            return self._otk_counts(user_id, device_id)

    def unused_fallback_key_types(self, user_id, device_id):
        with self.lock:
            return self._unused_fallback(user_id, device_id)

    # ---- internals: stream, devices, announcements ----------------------------------------------------------------

    def _next_pos(self):
        self._pos += 1
        return self._pos

    def _wake(self):
        self._cond.notify_all()

    def _login(self, user_id, device_id, display_name):
        devs = self.devices.setdefault(user_id, {})
        if not device_id:
            device_id = _rand(10, string.ascii_uppercase)
            while device_id in devs:
                device_id = _rand(10, string.ascii_uppercase)
        new = device_id not in devs
        if new:
            devs[device_id] = {"display_name": display_name, "last_seen_ts": int(time.time() * 1000)}
        localpart = user_id[1:].split(":")[0]
        lp = base64.urlsafe_b64encode(localpart.encode()).decode().rstrip("=")
        body = f"syt_{lp}_{_rand(20)}"
        token = f"{body}_{_b62(zlib.crc32(body.encode()), 6)}"
        self.tokens[token] = (user_id, device_id)
        if new:
            self._announce(user_id)  # like Synapse: a new device is announced at login, before any keys exist
        return token, device_id

    def _remove_devices(self, user_id, device_ids):
        """Removes devices with their tokens, keys and pending messages; announces once. Returns the removed ids."""
        devs = self.devices.get(user_id, {})
        removed = [d for d in device_ids if d in devs]
        for d in removed:
            del devs[d]
            for tok in [t for t, (u, dv) in self.tokens.items() if u == user_id and dv == d]:
                del self.tokens[tok]
                self._expired.pop(tok, None)
            self.device_keys.get(user_id, {}).pop(d, None)
            self.one_time_keys.pop((user_id, d), None)
            self.fallback_keys.pop((user_id, d), None)
            self.signatures.pop((user_id, d), None)
            self._inbox.pop((user_id, d), None)
        if removed:
            self._announce(user_id)
        return removed

    def _sharers(self, user_id):
        out = set()
        for room in self.rooms.values():
            if room.membership(user_id) == "join":
                out.update(room.members("join"))
        out.discard(user_id)
        return out

    def _notice(self, recipient, pos, other, kind):
        if _server_of(recipient) != self.server_name or recipient not in self.users:
            return
        self._dl_notices.setdefault(recipient, []).append((pos, other, kind))
        self._user_pos[recipient] = pos

    def _announce(self, user_id):
        """A change to user_id's devices or identity keys: everyone sharing a room (and the user) is told at once."""
        pos = self._next_pos()
        for r in self._sharers(user_id) | {user_id}:
            self._notice(r, pos, user_id, "changed")
        self._wake()
        return pos

    def _dl_between(self, user_id, a, b):
        final = {}
        for pos, other, kind in self._dl_notices.get(user_id, []):
            if a < pos <= b:
                final[other] = kind
        changed = sorted(u for u, k in final.items() if k == "changed")
        left = sorted(u for u, k in final.items() if k == "left")
        return changed, left

    def _identity_stored(self, user_id, kind):
        cbs = getattr(self._local, "callbacks", None)
        if cbs is None:
            cbs = self._local.callbacks = []
        cbs.append((user_id, kind))

    def _run_callbacks(self):
        cbs = getattr(self._local, "callbacks", None) or []
        self._local.callbacks = []
        cb = self.on_identity_stored
        for user_id, kind in cbs:
            if cb is None:
                continue
            try:
                cb(user_id, kind)
            except Exception as e:  # a test's callback must not break the homeserver
                self.callback_errors.append(e)

    def _otk_counts(self, user_id, device_id):
        counts = {}
        for key_id in self.one_time_keys.get((user_id, device_id), {}):
            alg = key_id.split(":", 1)[0]
            counts[alg] = counts.get(alg, 0) + 1
        counts.setdefault("signed_curve25519", 0)
        return counts

    def _unused_fallback(self, user_id, device_id):
        return sorted(alg for alg, fk in self.fallback_keys.get((user_id, device_id), {}).items() if not fk["used"])

    # ---- internals: rooms -----------------------------------------------------------------------------------------

    def _new_event_id(self):
        return "$" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    def _add_event(self, room, etype, sender, content, state_key=None, txn=None):
        pos = self._next_pos()
        ev = {"type": etype, "event_id": self._new_event_id(), "sender": sender,
              "origin_server_ts": int(time.time() * 1000), "content": content, "room_id": room.room_id}
        if state_key is not None:
            ev["state_key"] = state_key
            prev = room.state.get((etype, state_key))
            if prev is not None:
                ev["unsigned"] = {"replaces_state": prev["event_id"], "prev_content": prev["content"]}
        target = state_key if etype == "m.room.member" else None
        before = self._sharers(target) if target else None
        room.events.append((pos, ev))
        if state_key is not None:
            room.state[(etype, state_key)] = ev
        if txn is not None:
            self._event_txn[ev["event_id"]] = txn
        if target:
            room.member_pos[target] = pos
            after = self._sharers(target)
            for other in after - before:
                self._notice(other, pos, target, "changed")
                self._notice(target, pos, other, "changed")
            for other in before - after:
                self._notice(other, pos, target, "left")
                self._notice(target, pos, other, "left")
            self._user_pos[target] = pos
        for m in room.members("join") + room.members("invite"):
            self._user_pos[m] = pos
        self._wake()
        return ev

    def _room(self, room_id):
        room = self.rooms.get(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        return room

    def _member_content(self, user_id, membership, **extra):
        c = {"membership": membership}
        u = self.users.get(user_id)
        if u and membership in ("join", "invite"):
            c["displayname"] = u["displayname"]
        c.update(extra)
        return c

    def _joined(self, room, user_id):
        if room.membership(user_id) != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"User {user_id} not in room {room.room_id}")

    def _client_event(self, ev, user_id, device_id, keep_room_id=False):
        txn = self._event_txn.get(ev["event_id"])
        out = ev
        if not keep_room_id or (txn and txn[:2] == (user_id, device_id)):
            out = dict(ev)
            if not keep_room_id:
                out.pop("room_id", None)
            if txn and txn[:2] == (user_id, device_id):
                out["unsigned"] = dict(ev.get("unsigned", {}), transaction_id=txn[2])
        return out

    def _stripped_state(self, room, user_id):
        out = []
        for key in [("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.name", ""), ("m.room.avatar", ""),
                    ("m.room.canonical_alias", ""), ("m.room.encryption", ""), ("m.room.member", user_id)]:
            ev = room.state.get(key)
            if ev:
                out.append({"type": ev["type"], "state_key": ev["state_key"], "content": ev["content"],
                            "sender": ev["sender"]})
        inv = room.state.get(("m.room.member", user_id))
        if inv and inv["sender"] != user_id:
            ev = room.state.get(("m.room.member", inv["sender"]))
            if ev:
                out.insert(-1, {"type": ev["type"], "state_key": ev["state_key"], "content": ev["content"],
                                "sender": ev["sender"]})
        return out

    def _summary(self, room, user_id):
        joined, invited = room.members("join"), room.members("invite")
        heroes = sorted(u for u in joined + invited if u != user_id)[:5]
        return {"m.heroes": heroes, "m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}

    # ---- HTTP plumbing --------------------------------------------------------------------------------------------

    def _conn_opened(self, sock):
        with self.lock:
            self._conns.add(sock)

    def _conn_closed(self, sock):
        with self.lock:
            self._conns.discard(sock)

    @staticmethod
    def _client_gone(sock):
        try:
            r, _, _ = select.select([sock], [], [], 0)
            if r:
                return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
        return False

    def _read_body(self, h):
        te = (h.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts, total = [], 0
            while True:
                line = h.rfile.readline(1024)
                if not line:
                    raise _ClientGone()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers
                        if h.rfile.readline(1024) in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
                parts.append(h.rfile.read(size))
                h.rfile.readline(1024)
            return b"".join(parts)
        n = int(h.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
        data = h.rfile.read(n) if n else b""
        if len(data) < n:
            raise _ClientGone()
        return data

    def _send(self, h, status, chunks, headers=None, chunked=False, content_type="application/json"):
        try:
            h.send_response(status)
            if content_type:
                h.send_header("Content-Type", content_type)
            h.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
            h.send_header("Access-Control-Allow-Origin", "*")
            for k, v in (headers or {}).items():
                h.send_header(k, str(v))
            if chunked:
                h.send_header("Transfer-Encoding", "chunked")
            else:
                h.send_header("Content-Length", str(sum(len(c) for c in chunks)))
            h.end_headers()
            if chunked:
                for c in chunks:
                    for i in range(0, len(c), CHUNK):
                        piece = c[i:i + CHUNK]
                        h.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                h.wfile.write(b"0\r\n\r\n")
            else:
                for c in chunks:
                    h.wfile.write(c)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _handle(self, h):
        self._local.callbacks = []
        try:
            body = self._read_body(h)
        except _ClientGone:
            h.close_connection = True
            return
        except MatrixError as e:
            self._send(h, e.status, [json.dumps(e.body).encode()])
            h.close_connection = True
            return
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self.lock:
            self.requests.append({"method": h.command, "path": h.path, "headers": headers, "body": body})
        split = urlsplit(h.path)
        path = split.path
        fault = None
        with self.lock:
            for f in self._faults:
                if (f.method is None or f.method == h.command) and f.regex.search(path) and \
                        (f.times is None or f.hits < f.times):
                    f.hits += 1
                    fault = f
                    break
        chunked = None
        if fault:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                h.close_connection = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault.hang:
                deadline = time.monotonic() + HANG_LIMIT
                while time.monotonic() < deadline and not self._closing and not self._client_gone(h.connection):
                    time.sleep(0.05)
                h.close_connection = True
                return
            chunked = fault.chunked
            if fault.status is not None:
                b = fault.body
                if b is None:
                    b = {"errcode": "M_UNKNOWN", "error": "fault injected by the test"}
                data = b if isinstance(b, bytes) else b.encode() if isinstance(b, str) else json.dumps(b).encode()
                self._send(h, fault.status, [data], fault.headers, bool(chunked))
                return
        self._local.chunked = False
        try:
            status, chunks, extra = self._route(h, split, body)
        except (MatrixError, _Answer) as e:
            status, chunks, extra = e.status, [json.dumps(e.body).encode()], e.headers
        except _ClientGone:
            h.close_connection = True
            self._run_callbacks()
            return
        except Exception as e:  # a bug here must still give a Matrix answer
            import traceback
            traceback.print_exc()
            status, chunks, extra = 500, [json.dumps({"errcode": "M_UNKNOWN", "error": repr(e)}).encode()], {}
        self._run_callbacks()
        if chunked is None:
            chunked = self._local.chunked
        if fault and fault.headers:
            extra = dict(extra, **fault.headers)
        self._send(h, status, chunks, extra, bool(chunked))

    def _route(self, h, split, body):
        path = split.path
        if h.command == "OPTIONS":
            return 200, [b"{}"], {"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                                   "Access-Control-Allow-Headers": "Authorization, Content-Type"}
        known = False
        for method, regex, fn, auth in self._routes:
            m = regex.fullmatch(path)
            if not m:
                continue
            known = True
            if method != h.command:
                continue
            args = [unquote(g) for g in m.groups()]
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            ctx = {"h": h, "query": query, "raw": body, "path": path}
            if auth:
                ctx["user"], ctx["device"], ctx["token"] = self._auth(h, query)
            res = fn(ctx, *args)
            if isinstance(res, tuple):
                status, obj = res
            else:
                status, obj = 200, res
            if isinstance(obj, list) and obj and isinstance(obj[0], bytes):
                return status, obj, {}
            return status, [json.dumps(obj).encode()], {}
        if known:
            raise MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request")
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _auth(self, h, query):
        auth = h.headers.get("Authorization")
        token = None
        if auth:
            if not auth.startswith("Bearer "):
                raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header")
            if "access_token" in query:  # as Synapse does
                raise MatrixError(401, "M_MISSING_TOKEN",
                                  "Mixing Authorization headers and access_token query parameters.")
            token = auth[len("Bearer "):].strip()
        elif "access_token" in query:
            token = query["access_token"]
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        with self.lock:
            if token in self._expired:
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired",
                                  soft_logout=self._expired[token])
            who = self.tokens.get(token)
            if who is None:
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
            dev = self.devices.get(who[0], {}).get(who[1])
            if dev is not None:
                dev["last_seen_ts"] = int(time.time() * 1000)
        return who[0], who[1], token

    @staticmethod
    def _json(ctx, required=True):
        raw = ctx["raw"]
        if not raw.strip():
            if required:
                raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
        if not isinstance(obj, dict):
            raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
        return obj

    def _make_routes(self):
        C = CLIENT
        table = [
            ("GET", "/_matrix/client/versions", self.r_versions, False),
            ("GET", "/.well-known/matrix/client", self.r_well_known, False),
            ("GET", C + "/login", self.r_login_flows, False),
            ("POST", C + "/login", self.r_login, False),
            ("POST", C + "/register", self.r_register, False),
            ("POST", C + "/logout", self.r_logout, True),
            ("POST", C + "/logout/all", self.r_logout_all, True),
            ("GET", C + "/account/whoami", self.r_whoami, True),
            ("POST", C + "/account/deactivate", self.r_deactivate, True),
            ("GET", C + "/capabilities", self.r_capabilities, True),
            ("GET", C + "/devices", self.r_devices, True),
            ("GET", C + "/devices/([^/]+)", self.r_device_get, True),
            ("PUT", C + "/devices/([^/]+)", self.r_device_put, True),
            ("DELETE", C + "/devices/([^/]+)", self.r_device_delete, True),
            ("POST", C + "/delete_devices", self.r_delete_devices, True),
            ("POST", C + "/createRoom", self.r_create_room, True),
            ("POST", C + "/rooms/([^/]+)/invite", self.r_invite, True),
            ("POST", C + "/join/([^/]+)", self.r_join, True),
            ("POST", C + "/rooms/([^/]+)/join", self.r_join, True),
            ("POST", C + "/rooms/([^/]+)/leave", self.r_leave, True),
            ("POST", C + "/rooms/([^/]+)/forget", self.r_forget, True),
            ("PUT", C + "/rooms/([^/]+)/send/([^/]+)/([^/]+)", self.r_send, True),
            ("PUT", C + "/rooms/([^/]+)/state/([^/]+)/?", self.r_put_state_empty, True),
            ("PUT", C + "/rooms/([^/]+)/state/([^/]+)/([^/]+)", self.r_put_state, True),
            ("GET", C + "/rooms/([^/]+)/state", self.r_get_state_all, True),
            ("GET", C + "/rooms/([^/]+)/state/([^/]+)/?", self.r_get_state_empty, True),
            ("GET", C + "/rooms/([^/]+)/state/([^/]+)/([^/]+)", self.r_get_state, True),
            ("GET", C + "/rooms/([^/]+)/joined_members", self.r_joined_members, True),
            ("GET", C + "/rooms/([^/]+)/members", self.r_members, True),
            ("GET", C + "/rooms/([^/]+)/messages", self.r_messages, True),
            ("PUT", C + "/rooms/([^/]+)/typing/([^/]+)", self.r_empty_ok, True),
            ("POST", C + "/rooms/([^/]+)/receipt/([^/]+)/([^/]+)", self.r_empty_ok, True),
            ("POST", C + "/rooms/([^/]+)/read_markers", self.r_empty_ok, True),
            ("GET", C + "/joined_rooms", self.r_joined_rooms, True),
            ("GET", C + "/directory/room/([^/]+)", self.r_resolve_alias, False),
            ("PUT", C + "/sendToDevice/([^/]+)/([^/]+)", self.r_send_to_device, True),
            ("POST", C + "/user/([^/]+)/filter", self.r_filter_post, True),
            ("GET", C + "/user/([^/]+)/filter/([^/]+)", self.r_filter_get, True),
            ("GET", C + "/pushrules/?", self.r_pushrules, True),
            ("GET", C + "/user/([^/]+)/account_data/([^/]+)", self.r_account_data_get, True),
            ("PUT", C + "/user/([^/]+)/account_data/([^/]+)", self.r_account_data_put, True),
            ("GET", C + "/profile/([^/]+)", self.r_profile, False),
            ("GET", C + "/profile/([^/]+)/(displayname|avatar_url)", self.r_profile_field, False),
            ("PUT", C + "/profile/([^/]+)/(displayname|avatar_url)", self.r_profile_put, True),
            ("GET", C + "/presence/([^/]+)/status", self.r_presence_get, True),
            ("PUT", C + "/presence/([^/]+)/status", self.r_empty_ok, True),
            ("GET", C + "/sync", self.r_sync, True),
            ("POST", SLIDING_SYNC_PATH, self.r_sliding_sync, True),
            ("POST", C + "/keys/upload", self.r_keys_upload, True),
            ("POST", C + "/keys/query", self.r_keys_query, True),
            ("POST", C + "/keys/claim", self.r_keys_claim, True),
            ("GET", C + "/keys/changes", self.r_keys_changes, True),
            ("POST", C + "/keys/device_signing/upload", self.r_device_signing_upload, True),
            ("POST", C + "/keys/signatures/upload", self.r_signatures_upload, True),
        ]
        return [(m, re.compile(p), fn, auth) for m, p, fn, auth in table]

    # ---- user-interactive auth ------------------------------------------------------------------------------------

    def _uia(self, ctx, body, purpose):
        """Returns when the request carries completed password auth; raises the 401 UIA answer otherwise."""
        user = ctx["user"]
        auth = body.get("auth")
        with self.lock:
            if not isinstance(auth, dict) or not auth:
                sid = _rand(24)
                self._uia_sessions[sid] = {"user": user, "purpose": purpose, "completed": []}
                raise _Answer(401, {"flows": UIA_FLOWS, "params": {}, "session": sid})
            sid = auth.get("session")
            if sid is None:
                sid = _rand(24)
                self._uia_sessions[sid] = {"user": user, "purpose": purpose, "completed": []}
            sess = self._uia_sessions.get(sid)
            if sess is None:
                raise MatrixError(400, "M_UNKNOWN", f"Unknown session ID: {sid}")
            if sess["user"] != user or sess["purpose"] != purpose:
                raise MatrixError(403, "M_FORBIDDEN",
                                  "Requested operation has changed during the UI authentication session.")
            if "m.login.password" in sess["completed"]:
                return
            typ = auth.get("type")
            if typ is None:
                raise _Answer(401, {"flows": UIA_FLOWS, "params": {}, "session": sid, "completed": []})
            if typ != "m.login.password":
                raise MatrixError(400, "M_UNRECOGNIZED", f"Unrecognised login type {typ}")
            who = self._identifier_user(auth)
            ok = (who == user and self.users.get(user, {}).get("password") == auth.get("password"))
            if not ok:
                raise _Answer(401, {"errcode": "M_FORBIDDEN", "error": "Invalid username or password",
                                    "flows": UIA_FLOWS, "params": {}, "session": sid, "completed": []})
            sess["completed"].append("m.login.password")

    def _identifier_user(self, body):
        ident = body.get("identifier")
        name = None
        if isinstance(ident, dict):
            if ident.get("type") == "m.id.user":
                name = ident.get("user")
            else:
                return None
        elif isinstance(body.get("user"), str):
            name = body["user"]
        if not isinstance(name, str) or not name:
            return None
        return name if name.startswith("@") else f"@{name}:{self.server_name}"

    # ---- endpoints: general, login, account -----------------------------------------------------------------------

    def r_versions(self, ctx):
        return {"versions": ["r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
                             "v1.8", "v1.9", "v1.10", "v1.11"],
                "unstable_features": {"org.matrix.simplified_msc3575": True, "org.matrix.msc2732": True,
                                      "org.matrix.msc3967": True}}

    def r_well_known(self, ctx):
        return {"m.homeserver": {"base_url": self.url}}

    def r_login_flows(self, ctx):
        return {"flows": [{"type": "m.login.password"}]}

    def r_register(self, ctx):
        raise MatrixError(403, "M_FORBIDDEN", "Registration has been disabled")

    def r_login(self, ctx):
        body = self._json(ctx)
        if body.get("type") != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {body.get('type')}")
        user_id = self._identifier_user(body)
        device_id = body.get("device_id")
        name = body.get("initial_device_display_name")
        if device_id is not None and not isinstance(device_id, str):
            raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a string")
        with self.lock:
            u = self.users.get(user_id) if user_id else None
            if u is None or u["password"] != body.get("password"):
                raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")
            if u["deactivated"]:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            token, device_id = self._login(user_id, device_id, name)
        return {"user_id": user_id, "access_token": token, "device_id": device_id, "home_server": self.server_name}

    def r_logout(self, ctx):
        with self.lock:
            self._remove_devices(ctx["user"], [ctx["device"]])
        self._identity_stored(ctx["user"], "device_removed")
        return {}

    def r_logout_all(self, ctx):
        with self.lock:
            self._remove_devices(ctx["user"], list(self.devices.get(ctx["user"], {})))
        self._identity_stored(ctx["user"], "device_removed")
        return {}

    def r_whoami(self, ctx):
        return {"user_id": ctx["user"], "device_id": ctx["device"], "is_guest": False}

    def r_deactivate(self, ctx):
        body = self._json(ctx, required=False)
        self._uia(ctx, body, "deactivate")
        user = ctx["user"]
        with self.lock:
            self.users[user]["deactivated"] = True
            for room in self.rooms.values():
                if room.membership(user) in ("join", "invite"):
                    self._add_event(room, "m.room.member", user, {"membership": "leave"}, state_key=user)
            self._remove_devices(user, list(self.devices.get(user, {})))
        self._identity_stored(user, "device_removed")
        return {"id_server_unbind_result": "no-support"}

    def r_capabilities(self, ctx):
        return {"capabilities": {"m.change_password": {"enabled": False},
                                 "m.room_versions": {"default": "10", "available": {"10": "stable"}},
                                 "m.set_displayname": {"enabled": True}, "m.set_avatar_url": {"enabled": True},
                                 "m.3pid_changes": {"enabled": False}}}

    # ---- devices --------------------------------------------------------------------------------------------------

    def _device_json(self, device_id, d):
        return {"device_id": device_id, "display_name": d["display_name"], "last_seen_ip": "127.0.0.1",
                "last_seen_ts": d["last_seen_ts"]}

    def r_devices(self, ctx):
        with self.lock:
            return {"devices": [self._device_json(k, d) for k, d in self.devices.get(ctx["user"], {}).items()]}

    def r_device_get(self, ctx, device_id):
        with self.lock:
            d = self.devices.get(ctx["user"], {}).get(device_id)
            if d is None:
                raise MatrixError(404, "M_NOT_FOUND", "No device found")
            return self._device_json(device_id, d)

    def r_device_put(self, ctx, device_id):
        body = self._json(ctx)
        with self.lock:
            d = self.devices.get(ctx["user"], {}).get(device_id)
            if d is None:
                raise MatrixError(404, "M_NOT_FOUND", "No device found")
            if "display_name" in body:
                if body["display_name"] is not None and not isinstance(body["display_name"], str):
                    raise MatrixError(400, "M_INVALID_PARAM", "display_name must be a string")
                if body["display_name"] != d["display_name"]:
                    d["display_name"] = body["display_name"]
                    self._announce(ctx["user"])
        return {}

    def r_device_delete(self, ctx, device_id):
        body = self._json(ctx, required=False)
        with self.lock:
            if device_id not in self.devices.get(ctx["user"], {}):
                raise MatrixError(404, "M_NOT_FOUND", "No device found")
        self._uia(ctx, body, "delete_devices")
        with self.lock:
            removed = self._remove_devices(ctx["user"], [device_id])
        if removed:
            self._identity_stored(ctx["user"], "device_removed")
        return {}

    def r_delete_devices(self, ctx):
        body = self._json(ctx)
        devices = body.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise MatrixError(400, "M_BAD_JSON", "devices must be a list of device ids")
        self._uia(ctx, body, "delete_devices")
        with self.lock:
            removed = self._remove_devices(ctx["user"], devices)
        if removed:
            self._identity_stored(ctx["user"], "device_removed")
        return {}

    # ---- rooms ----------------------------------------------------------------------------------------------------

    def r_create_room(self, ctx):
        body = self._json(ctx, required=False)
        user = ctx["user"]
        preset = body.get("preset") or ("public_chat" if body.get("visibility") == "public" else "private_chat")
        if preset not in ("private_chat", "public_chat", "trusted_private_chat"):
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset}")
        invite = body.get("invite") or []
        if not isinstance(invite, list) or not all(isinstance(u, str) for u in invite):
            raise MatrixError(400, "M_INVALID_PARAM", "invite must be a list of user ids")
        initial_state = body.get("initial_state") or []
        if not isinstance(initial_state, list) or not all(isinstance(e, dict) for e in initial_state):
            raise MatrixError(400, "M_INVALID_PARAM", "initial_state must be a list of state events")
        with self.lock:
            alias = None
            if body.get("room_alias_name"):
                alias = f"#{body['room_alias_name']}:{self.server_name}"
                if alias in self.aliases:
                    raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
            room_id = f"!{_rand(18)}:{self.server_name}"
            room = self.rooms[room_id] = Room(room_id)
            create = {"room_version": str(body.get("room_version") or "10"), "creator": user}
            create.update(body.get("creation_content") or {})
            self._add_event(room, "m.room.create", user, create, state_key="")
            self._add_event(room, "m.room.member", user, self._member_content(user, "join"), state_key=user)
            users_pl = {user: 100}
            if preset == "trusted_private_chat":
                users_pl.update({u: 100 for u in invite})
            pl = {"users": users_pl, "users_default": 0, "events": {}, "events_default": 0, "state_default": 50,
                  "ban": 50, "kick": 50, "redact": 50, "invite": 0, "historical": 100,
                  "notifications": {"room": 50}}
            pl.update(body.get("power_level_content_override") or {})
            self._add_event(room, "m.room.power_levels", user, pl, state_key="")
            if alias:
                self.aliases[alias] = room_id
                room.aliases.add(alias)
                self._add_event(room, "m.room.canonical_alias", user, {"alias": alias}, state_key="")
            self._add_event(room, "m.room.join_rules", user,
                            {"join_rule": "public" if preset == "public_chat" else "invite"}, state_key="")
            self._add_event(room, "m.room.history_visibility", user, {"history_visibility": "shared"},
                            state_key="")
            if preset != "public_chat":
                self._add_event(room, "m.room.guest_access", user, {"guest_access": "can_join"}, state_key="")
            for ev in initial_state:
                if not isinstance(ev.get("type"), str) or not isinstance(ev.get("state_key", ""), str):
                    raise MatrixError(400, "M_INVALID_PARAM", "initial_state events need a type and a state_key")
            for ev in initial_state:
                self._add_event(room, ev.get("type"), user, ev.get("content") or {}, state_key=ev.get("state_key", ""))
            if body.get("name"):
                self._add_event(room, "m.room.name", user, {"name": body["name"]}, state_key="")
            if body.get("topic"):
                self._add_event(room, "m.room.topic", user, {"topic": body["topic"]}, state_key="")
            for u in invite:
                extra = {"is_direct": True} if body.get("is_direct") else {}
                self._add_event(room, "m.room.member", user, self._member_content(u, "invite", **extra),
                                state_key=u)
        return {"room_id": room_id}

    def r_invite(self, ctx, room_id):
        body = self._json(ctx)
        target = body.get("user_id")
        if not isinstance(target, str) or not target.startswith("@") or ":" not in target:
            raise MatrixError(400, "M_INVALID_PARAM", "user_id must be a user id")
        with self.lock:
            room = self._room(room_id)
            self._joined(room, ctx["user"])
            if _server_of(target) == self.server_name and target not in self.users:
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {target}")
            m = room.membership(target)
            if m in ("join", "ban"):
                raise MatrixError(403, "M_FORBIDDEN", f"{target} is {'already in' if m == 'join' else 'banned from'}"
                                                      " the room.")
            if m != "invite":
                content = self._member_content(target, "invite")
                if body.get("reason"):
                    content["reason"] = body["reason"]
                self._add_event(room, "m.room.member", ctx["user"], content, state_key=target)
        return {}

    def r_join(self, ctx, room_id_or_alias):
        user = ctx["user"]
        with self.lock:
            room_id = self.aliases.get(room_id_or_alias, room_id_or_alias)
            room = self._room(room_id)
            m = room.membership(user)
            if m != "join":
                rules = room.state.get(("m.room.join_rules", ""))
                public = rules is not None and rules["content"].get("join_rule") == "public"
                if m == "ban" or (m != "invite" and not public):
                    raise MatrixError(403, "M_FORBIDDEN", "You are not invited to this room.")
                self._add_event(room, "m.room.member", user, self._member_content(user, "join"), state_key=user)
        return {"room_id": room_id}

    def r_leave(self, ctx, room_id):
        user = ctx["user"]
        with self.lock:
            room = self._room(room_id)
            if room.membership(user) not in ("join", "invite"):
                raise MatrixError(403, "M_FORBIDDEN", f"User {user} not in room {room_id}")
            self._add_event(room, "m.room.member", user, {"membership": "leave"}, state_key=user)
        return {}

    def r_forget(self, ctx, room_id):
        with self.lock:
            room = self._room(room_id)
            if room.membership(ctx["user"]) in ("join", "invite"):
                raise MatrixError(400, "M_UNKNOWN", "User is in room")
        return {}

    def r_send(self, ctx, room_id, etype, txn_id):
        content = self._json(ctx)
        key = (ctx["user"], ctx["device"], "send", room_id, etype, txn_id)
        with self.lock:
            if key in self._txns:
                return self._txns[key]
            room = self._room(room_id)
            self._joined(room, ctx["user"])
            ev = self._add_event(room, etype, ctx["user"], content, txn=(ctx["user"], ctx["device"], txn_id))
            self._txns[key] = {"event_id": ev["event_id"]}
            return self._txns[key]

    def r_put_state_empty(self, ctx, room_id, etype):
        return self.r_put_state(ctx, room_id, etype, "")

    def r_put_state(self, ctx, room_id, etype, state_key):
        content = self._json(ctx)
        user = ctx["user"]
        with self.lock:
            room = self._room(room_id)
            if etype == "m.room.member" and state_key == user and content.get("membership") == "join":
                self.r_join(ctx, room_id)
                return {"event_id": room.state[("m.room.member", user)]["event_id"]}
            self._joined(room, user)
            ev = self._add_event(room, etype, user, content, state_key=state_key)
        return {"event_id": ev["event_id"]}

    def r_get_state_all(self, ctx, room_id):
        with self.lock:
            room = self._room(room_id)
            self._joined(room, ctx["user"])
            return 200, [json.dumps([self._client_event(e, None, None, True) for e in room.state.values()]).encode()]

    def r_get_state_empty(self, ctx, room_id, etype):
        return self.r_get_state(ctx, room_id, etype, "")

    def r_get_state(self, ctx, room_id, etype, state_key):
        with self.lock:
            room = self._room(room_id)
            self._joined(room, ctx["user"])
            ev = room.state.get((etype, state_key))
            if ev is None:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found.")
            return ev["content"]

    def r_joined_members(self, ctx, room_id):
        with self.lock:
            room = self._room(room_id)
            self._joined(room, ctx["user"])
            out = {}
            for u in room.members("join"):
                c = room.state[("m.room.member", u)]["content"]
                out[u] = {"display_name": c.get("displayname"), "avatar_url": c.get("avatar_url")}
            return {"joined": out}

    def r_members(self, ctx, room_id):
        q = ctx["query"]
        with self.lock:
            room = self._room(room_id)
            if room.membership(ctx["user"]) is None:
                raise MatrixError(403, "M_FORBIDDEN", "User not in room")
            chunk = []
            for (t, k), ev in room.state.items():
                if t != "m.room.member":
                    continue
                m = ev["content"].get("membership")
                if q.get("membership") and m != q["membership"]:
                    continue
                if q.get("not_membership") and m == q["not_membership"]:
                    continue
                chunk.append(self._client_event(ev, None, None, True))
            return {"chunk": chunk}

    def r_messages(self, ctx, room_id):
        q = ctx["query"]
        direction = q.get("dir", "b")
        try:
            limit = max(1, min(int(q.get("limit", "10")), 1000))
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer")
        with self.lock:
            room = self._room(room_id)
            if room.membership(ctx["user"]) is None:
                raise MatrixError(403, "M_FORBIDDEN", "User not in room")
            if direction == "b":
                start = _parse_token(q["from"]) if q.get("from") else self._pos
                evs = [(p, e) for p, e in room.events if p <= start][-limit:][::-1]
                end = f"s{evs[-1][0] - 1}" if evs else None
            elif direction == "f":
                start = _parse_token(q["from"]) if q.get("from") else 0
                evs = [(p, e) for p, e in room.events if p > start][:limit]
                end = f"s{evs[-1][0]}" if evs else None
            else:
                raise MatrixError(400, "M_INVALID_PARAM", "dir must be b or f")
            out = {"chunk": [self._client_event(e, ctx["user"], ctx["device"], True) for _, e in evs],
                   "start": f"s{start}"}
            if end and len(evs) == limit:
                out["end"] = end
            return out

    def r_empty_ok(self, ctx, *args):
        self._json(ctx, required=False)
        return {}

    def r_joined_rooms(self, ctx):
        with self.lock:
            return {"joined_rooms": [r for r, room in self.rooms.items() if room.membership(ctx["user"]) == "join"]}

    def r_resolve_alias(self, ctx, alias):
        with self.lock:
            if alias not in self.aliases:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
            return {"room_id": self.aliases[alias], "servers": [self.server_name]}

    # ---- to-device, filters, account data, profile ----------------------------------------------------------------

    def r_send_to_device(self, ctx, etype, txn_id):
        body = self._json(ctx)
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise MatrixError(400, "M_BAD_JSON", "messages must be an object")
        key = (ctx["user"], ctx["device"], "to_device", txn_id)
        with self.lock:
            if key in self._txns:
                return {}
            self._txns[key] = True
            for user_id, by_device in messages.items():
                if not isinstance(by_device, dict):
                    raise MatrixError(400, "M_BAD_JSON", "messages must map users to devices to contents")
                if user_id not in self.users:
                    continue  # remote or unknown users: nothing to deliver here
                for device_id, content in by_device.items():
                    targets = list(self.devices.get(user_id, {})) if device_id == "*" else [device_id]
                    for d in targets:
                        if d not in self.devices.get(user_id, {}):
                            continue
                        pos = self._next_pos()
                        self._inbox.setdefault((user_id, d), []).append(
                            (pos, {"sender": ctx["user"], "type": etype, "content": content}))
                        self._device_pos[(user_id, d)] = pos
            self._wake()
        return {}

    def _own(self, ctx, user_id):
        if user_id != ctx["user"]:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot act on behalf of another user")

    def r_filter_post(self, ctx, user_id):
        self._own(ctx, user_id)
        body = self._json(ctx)
        with self.lock:
            fid = str(len(self.filters))
            self.filters[fid] = (user_id, body)
        return {"filter_id": fid}

    def r_filter_get(self, ctx, user_id, fid):
        self._own(ctx, user_id)
        with self.lock:
            f = self.filters.get(fid)
            if f is None or f[0] != user_id:
                raise MatrixError(404, "M_NOT_FOUND", "No such filter")
            return f[1]

    def r_pushrules(self, ctx):
        return {"global": {"content": [], "override": [], "room": [], "sender": [], "underride": []}}

    def r_account_data_get(self, ctx, user_id, etype):
        self._own(ctx, user_id)
        with self.lock:
            c = self.account_data.get(user_id, {}).get(etype)
            if c is None:
                raise MatrixError(404, "M_NOT_FOUND", "Account data not found")
            return c

    def r_account_data_put(self, ctx, user_id, etype):
        self._own(ctx, user_id)
        body = self._json(ctx)
        with self.lock:
            self.account_data.setdefault(user_id, {})[etype] = body
            pos = self._next_pos()
            self._account_data_pos[(user_id, etype)] = pos
            self._user_pos[user_id] = pos
            self._wake()
        return {}

    def r_profile(self, ctx, user_id):
        with self.lock:
            u = self.users.get(user_id)
            if u is None:
                raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
            out = {"displayname": u["displayname"]}
            if u.get("avatar_url"):
                out["avatar_url"] = u["avatar_url"]
            return out

    def r_profile_field(self, ctx, user_id, field):
        prof = self.r_profile(ctx, user_id)
        if field not in prof:
            raise MatrixError(404, "M_NOT_FOUND", "Profile field not set")
        return {field: prof[field]}

    def r_profile_put(self, ctx, user_id, field):
        self._own(ctx, user_id)
        body = self._json(ctx)
        with self.lock:
            self.users[user_id]["displayname" if field == "displayname" else "avatar_url"] = body.get(field)
        return {}

    def r_presence_get(self, ctx, user_id):
        return {"presence": "online", "currently_active": True}

    # ---- /sync ----------------------------------------------------------------------------------------------------

    def _has_news(self, user, device, since):
        return self._user_pos.get(user, 0) > since or self._device_pos.get((user, device), 0) > since

    def _hold(self, ctx, since, timeout_s):
        """Waits (lock held by the caller) until there is news for the caller or the timeout passes."""
        deadline = time.monotonic() + min(timeout_s, MAX_SYNC_TIMEOUT)
        sock = ctx["h"].connection
        while not self._closing and not self._has_news(ctx["user"], ctx["device"], since):
            rem = deadline - time.monotonic()
            if rem <= 0:
                break
            self._cond.wait(min(rem, 0.25))
            if self._client_gone(sock):
                raise _ClientGone()
            if ctx["token"] not in self.tokens or ctx["token"] in self._expired:
                break

    def _timeline(self, room, user, device, lo, hi):
        """Events with lo < pos <= hi, limited to the last timeline_limit; (events, limited, first_pos)."""
        evs = [(p, e) for p, e in room.events if lo < p <= hi]
        limited = len(evs) > self.timeline_limit
        if limited:
            evs = evs[-self.timeline_limit:]
        first = evs[0][0] if evs else hi + 1
        return [self._client_event(e, user, device) for _, e in evs], limited, first

    def _build_sync(self, user, device, since, full_state):
        now = self._pos
        if since is not None and since > now:
            since = now
        join, invite, leave = {}, {}, {}
        for room_id, room in self.rooms.items():
            m = room.membership(user)
            mpos = room.member_pos.get(user, 0)
            if m == "join":
                newly = since is None or mpos > since
                if newly or full_state:
                    lo = 0 if newly else since
                    tl, limited, first = self._timeline(room, user, device, lo, now)
                    if newly:
                        limited = limited or any(p < first for p, _ in room.events)
                    st = room.state_at(first)
                    state = [self._client_event(e, user, device) for e in st.values()]
                else:
                    tl, limited, first = self._timeline(room, user, device, since, now)
                    state = []
                    if limited:
                        changed = {}
                        for p, e in room.events:
                            if since < p < first and "state_key" in e:
                                changed[(e["type"], e["state_key"])] = e
                        state = [self._client_event(e, user, device) for e in changed.values()]
                    if not tl and not state:
                        continue
                join[room_id] = {"timeline": {"events": tl, "limited": limited, "prev_batch": f"s{first - 1}"},
                                 "state": {"events": state}, "ephemeral": {"events": []},
                                 "account_data": {"events": []}, "summary": self._summary(room, user),
                                 "unread_notifications": {"notification_count": 0, "highlight_count": 0}}
            elif m == "invite":
                if since is None or mpos > since:
                    invite[room_id] = {"invite_state": {"events": self._stripped_state(room, user)}}
            elif m in ("leave", "ban"):
                if since is not None and mpos > since:
                    tl, limited, first = self._timeline(room, user, device, since, mpos)
                    leave[room_id] = {"timeline": {"events": tl, "limited": limited, "prev_batch": f"s{first - 1}"},
                                      "state": {"events": []}, "account_data": {"events": []}}
        inbox = self._inbox.get((user, device), [])
        if since is not None:
            inbox[:] = [(p, e) for p, e in inbox if p > since]  # acknowledged by syncing past them
        to_device = [e for p, e in inbox if p <= now]
        acc = [{"type": t, "content": c} for t, c in self.account_data.get(user, {}).items()
               if since is None or self._account_data_pos.get((user, t), 0) > since]
        changed, left = self._dl_between(user, since, now) if since is not None else ([], [])
        resp = {"next_batch": f"s{now}", "account_data": {"events": acc}, "to_device": {"events": to_device},
                "device_lists": {"changed": changed, "left": left}, "presence": {"events": []}}
        counts = {"device_one_time_keys_count": self._otk_counts(user, device),
                  "org.matrix.msc2732.device_unused_fallback_key_types": self._unused_fallback(user, device),
                  "device_unused_fallback_key_types": self._unused_fallback(user, device)}
        if not self.sync_counts_last:
            resp.update(counts)
        pad = self._padding
        if pad > 0:
            join[f"!padding:{self.server_name}"] = {"timeline": {"events": [_PAD_MARK], "limited": False,
                                                                 "prev_batch": "s0"},
                                                    "state": {"events": []}}
        resp["rooms"] = {"join": join, "invite": invite, "leave": leave, "knock": {}}
        if self.sync_counts_last:
            resp.update(counts)
        if self.sync_omit_empty:  # Synapse leaves out what is empty
            for k in ("account_data", "to_device", "presence"):
                if not resp[k]["events"]:
                    del resp[k]
            for k in ("changed", "left"):
                if not resp["device_lists"][k]:
                    del resp["device_lists"][k]
            for k in ("device_lists", "rooms"):
                for sub in [x for x, v in resp[k].items() if not v] if k == "rooms" else []:
                    del resp[k][sub]
                if not resp[k]:
                    del resp[k]
        return resp, pad

    def _padding_bytes(self, nbytes):
        with self.lock:
            cached_n, cached = self._padding_cache
            if cached_n == nbytes:
                return cached
        body = "x" * 1000
        sender = f"@padding:{self.server_name}"
        ts = int(time.time() * 1000)
        parts, total, i = [], 0, 0
        while total < nbytes:
            s = ('{"type":"m.room.message","event_id":"$pad%08d","sender":"%s","origin_server_ts":%d,'
                 '"content":{"msgtype":"m.text","body":"%s"}}' % (i, sender, ts, body))
            parts.append(s)
            total += len(s) + 1
            i += 1
        data = ",".join(parts).encode()
        with self.lock:
            self._padding_cache = (nbytes, data)
        return data

    def _encode_sync(self, resp, pad):
        data = json.dumps(resp).encode()
        if pad <= 0:
            return [data]
        mark = json.dumps(_PAD_MARK).encode()
        i = data.index(mark)
        return [data[:i], self._padding_bytes(pad), data[i + len(mark):]]

    def r_sync(self, ctx):
        q = ctx["query"]
        since = _parse_token(q["since"]) if q.get("since") else None
        try:
            timeout_s = max(0, int(q.get("timeout") or 0)) / 1000.0
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer")
        full_state = q.get("full_state") == "true"
        with self.lock:
            if since is not None and not full_state and timeout_s > 0:
                self._hold(ctx, since, timeout_s)
            if ctx["token"] not in self.tokens or ctx["token"] in self._expired:
                self._auth(ctx["h"], q)  # raises the right 401
            resp, pad = self._build_sync(ctx["user"], ctx["device"], since, full_state)
        self._local.chunked = self.sync_chunked
        return 200, self._encode_sync(resp, pad)

    # ---- simplified sliding sync ----------------------------------------------------------------------------------

    @staticmethod
    def _ss_state_wanted(spec, ev, user, senders):
        """Does required_state `spec` (list of [type, key] pairs or {"include", "exclude", "lazy_members"}) want ev?"""
        t, k = ev["type"], ev["state_key"]

        def match(et, ek):
            if et not in (None, "*") and et != t:
                return False
            if ek in (None, "*"):
                return True
            if ek == "$ME":
                return k == user
            if ek == "$LAZY":
                return t == "m.room.member" and k in senders
            return ek == k

        if isinstance(spec, dict):
            inc = spec.get("include") or []
            exc = spec.get("exclude") or []
            if spec.get("lazy_members") and t == "m.room.member" and k in senders:
                return True
            if any(match(e.get("type"), e.get("state_key")) for e in exc if isinstance(e, dict)):
                return False
            if spec.get("lazy_members") and t == "m.room.member":
                return False
            return any(match(e.get("type"), e.get("state_key")) for e in inc if isinstance(e, dict))
        if isinstance(spec, list):
            return any(isinstance(p, list) and len(p) == 2 and match(p[0], p[1]) for p in spec)
        return False

    def _ss_room(self, room, user, device, cfg, since, initial, lists):
        m = room.membership(user)
        base = {"bump_stamp": room.last_pos(), "membership": m}
        if lists:
            base["lists"] = sorted(lists)
        if m == "invite":
            ss = self._stripped_state(room, user)
            base.update(initial=True, stripped_state=ss, invite_state=ss)
            return base
        limit = max(0, int(cfg.get("timeline_limit") or 0))
        lo = 0 if initial else since
        evs = [(p, e) for p, e in room.events if p > lo]
        limited = len(evs) > limit
        evs = evs[-limit:] if limit else []
        live = sum(1 for p, _ in evs if since is not None and p > since)
        senders = {e["sender"] for _, e in evs} | {user}
        first = evs[0][0] if evs else self._pos + 1
        if initial:
            state = [e for e in room.state.values() if self._ss_state_wanted(cfg.get("required_state"), e, user,
                                                                           senders)]
        else:
            state = [e for p, e in room.events if since < p and "state_key" in e
                     and room.state.get((e["type"], e["state_key"])) is e
                     and self._ss_state_wanted(cfg.get("required_state"), e, user, senders)]
        name = room.state.get(("m.room.name", ""))
        if initial:
            base["initial"] = True
            if name:
                base["name"] = name["content"].get("name")
            else:
                base["heroes"] = [{"user_id": u} for u in self._summary(room, user)["m.heroes"]]
        base.update({
            "required_state": [self._client_event(e, user, device) for e in state],
            "timeline_events": [self._client_event(e, user, device) for _, e in evs],
            "prev_batch": f"s{first - 1}", "limited": limited, "num_live": live,
            "joined_count": len(room.members("join")), "invited_count": len(room.members("invite")),
            "notification_count": 0, "highlight_count": 0})
        return base

    def r_sliding_sync(self, ctx):
        body = self._json(ctx, required=False)
        q = ctx["query"]
        user, device = ctx["user"], ctx["device"]
        pos_tok = q.get("pos") or body.get("pos")
        try:
            timeout_s = max(0, int(q.get("timeout") or body.get("timeout") or 0)) / 1000.0
        except (TypeError, ValueError):
            raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer")
        lists_req = body.get("lists") or {}
        subs_req = body.get("room_subscriptions") or {}
        if not isinstance(lists_req, dict) or not isinstance(subs_req, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "lists and room_subscriptions must be objects")
        conn_key = (user, device, body.get("conn_id") or "")
        deadline = time.monotonic() + min(timeout_s, MAX_SYNC_TIMEOUT)
        with self.lock:
            conn = self._ss_conns.setdefault(conn_key, {"tokens": {}, "ext": {}})
            if pos_tok:
                prev = conn["tokens"].get(pos_tok)
                if prev is None:
                    raise MatrixError(400, "M_UNKNOWN_POS", "Unknown position")
                since, sent = prev["stream"], prev["sent"]
            else:
                since, sent = None, frozenset()
                conn["ext"] = {}
            for name, cfg in (body.get("extensions") or {}).items():
                if isinstance(cfg, dict):
                    conn["ext"].setdefault(name, {}).update({k: v for k, v in cfg.items() if k != "since"})
            ext = conn["ext"]
            e2ee_on = bool(ext.get("e2ee", {}).get("enabled"))
            td_on = bool(ext.get("to_device", {}).get("enabled"))
            td_cfg = (body.get("extensions") or {}).get("to_device") or {}
            while True:
                resp, has_content, new_sent = self._ss_build(user, device, since, sent, lists_req, subs_req,
                                                             e2ee_on, td_on, td_cfg)
                if since is None or has_content or self._closing:
                    break
                rem = deadline - time.monotonic()
                if rem <= 0:
                    break
                self._cond.wait(min(rem, 0.25))
                if self._client_gone(ctx["h"].connection):
                    raise _ClientGone()
            self._ss_seq += 1
            tok = f"{self._pos}_{self._ss_seq}"
            conn["tokens"][tok] = {"stream": self._pos, "sent": new_sent}
            resp["pos"] = tok
            if len(conn["tokens"]) > 64:
                for old in list(conn["tokens"])[:-64]:
                    del conn["tokens"][old]
        self._local.chunked = self.sync_chunked
        return 200, [json.dumps(resp).encode()]

    def _ss_build(self, user, device, since, sent, lists_req, subs_req, e2ee_on, td_on, td_cfg):
        now = self._pos
        candidates = [r for r in self.rooms.values() if r.membership(user) in ("join", "invite")]
        candidates.sort(key=lambda r: r.last_pos(), reverse=True)
        direct = set()
        for rooms_ in (self.account_data.get(user, {}).get("m.direct") or {}).values():
            if isinstance(rooms_, list):
                direct.update(rooms_)
        matched = {}  # room_id -> (cfg, lists)
        lists_out = {}
        for name, lcfg in lists_req.items():
            if not isinstance(lcfg, dict):
                continue
            filt = lcfg.get("filters") or {}
            rooms_ = []
            for r in candidates:
                if "is_invited" in filt and (r.membership(user) == "invite") != bool(filt["is_invited"]):
                    continue
                if "is_encrypted" in filt and r.encrypted() != bool(filt["is_encrypted"]):
                    continue
                if "is_dm" in filt and (r.room_id in direct) != bool(filt["is_dm"]):
                    continue
                rooms_.append(r)
            lists_out[name] = {"count": len(rooms_)}
            rng = lcfg.get("range") or (lcfg.get("ranges") or [None])[0]
            if isinstance(rng, list) and len(rng) == 2:
                rooms_ = rooms_[int(rng[0]):int(rng[1]) + 1]
            for r in rooms_:
                cfg, names = matched.get(r.room_id, ({}, set()))
                matched[r.room_id] = (self._ss_merge(cfg, lcfg), names | {name})
        for room_id, scfg in subs_req.items():
            r = self.rooms.get(room_id)
            if r is None or r.membership(user) not in ("join", "invite") or not isinstance(scfg, dict):
                continue
            cfg, names = matched.get(room_id, ({}, set()))
            matched[room_id] = (self._ss_merge(cfg, scfg), names)
        rooms_out = {}
        new_sent = set(sent)
        for room_id, (cfg, names) in matched.items():
            r = self.rooms[room_id]
            initial = room_id not in sent
            if not initial and not any(p > since for p, _ in r.events):
                continue
            rooms_out[room_id] = self._ss_room(r, user, device, cfg, since, initial, names)
            new_sent.add(room_id)
        resp = {"lists": lists_out, "rooms": rooms_out, "extensions": {}}
        content = bool(rooms_out)
        if e2ee_on:
            e2ee = {"device_one_time_keys_count": self._otk_counts(user, device),
                    "device_unused_fallback_key_types": self._unused_fallback(user, device)}
            if since is not None:
                changed, left = self._dl_between(user, since, now)
                e2ee["device_lists"] = {"changed": changed, "left": left}
                content = content or bool(changed or left)
            resp["extensions"]["e2ee"] = e2ee
        if td_on:
            inbox = self._inbox.get((user, device), [])
            td_since = td_cfg.get("since")
            if td_since is not None:
                try:
                    acked = int(td_since)
                except (TypeError, ValueError):
                    raise MatrixError(400, "M_INVALID_PARAM", "to_device.since must be a to-device token")
                inbox[:] = [(p, e) for p, e in inbox if p > acked]
            limit = td_cfg.get("limit") or 100
            batch = [(p, e) for p, e in inbox if p <= now][:limit]
            next_batch = str(batch[-1][0]) if len(batch) == limit else str(now)
            resp["extensions"]["to_device"] = {"next_batch": next_batch, "events": [e for _, e in batch]}
            content = content or bool(batch)
        return resp, content, frozenset(new_sent)

    @staticmethod
    def _ss_merge(a, b):
        out = dict(a)
        out["timeline_limit"] = max(int(a.get("timeline_limit") or 0), int(b.get("timeline_limit") or 0))
        ra, rb = a.get("required_state"), b.get("required_state")
        if ra is None:
            out["required_state"] = rb
        elif rb is not None:
            if isinstance(ra, list) and isinstance(rb, list):
                out["required_state"] = ra + rb
            else:
                def as_dict(x):
                    if isinstance(x, dict):
                        return x
                    return {"include": [{"type": p[0], "state_key": p[1]} for p in x
                                        if isinstance(p, list) and len(p) == 2]}
                da, db = as_dict(ra), as_dict(rb)
                out["required_state"] = {"include": (da.get("include") or []) + (db.get("include") or []),
                                         "lazy_members": bool(da.get("lazy_members") or db.get("lazy_members"))}
        return out

    # ---- keys -----------------------------------------------------------------------------------------------------

    def r_keys_upload(self, ctx):
        body = self._json(ctx)
        user, device = ctx["user"], ctx["device"]
        dk = body.get("device_keys")
        otks = body.get("one_time_keys") or {}
        fbks = body.get("fallback_keys") or body.get("org.matrix.msc2732.fallback_keys") or {}
        if dk is not None:
            if not isinstance(dk, dict):
                raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
            if dk.get("user_id") != user or dk.get("device_id") != device:
                raise MatrixError(400, "M_INVALID_PARAM", "Can only upload keys for the current user and device")
            if not isinstance(dk.get("keys"), dict) or not isinstance(dk.get("algorithms"), list):
                raise MatrixError(400, "M_BAD_JSON", "device_keys needs keys and algorithms")
        for name, keys in (("one_time_keys", otks), ("fallback_keys", fbks)):
            if not isinstance(keys, dict):
                raise MatrixError(400, "M_BAD_JSON", f"{name} must be an object")
            for key_id, obj in keys.items():
                if ":" not in key_id or not isinstance(obj, (dict, str)):
                    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} entry {key_id}")
        announced = False
        with self.lock:
            store = self.one_time_keys.setdefault((user, device), {})
            for key_id, obj in otks.items():
                if key_id in store and store[key_id] != obj:
                    raise MatrixError(400, "M_INVALID_PARAM", f"One time key {key_id} already exists. "
                                                              f"Old key: {json.dumps(store[key_id])}; "
                                                              f"new key: {json.dumps(obj)}")
            for key_id, obj in otks.items():
                store.setdefault(key_id, copy.deepcopy(obj))
            fstore = self.fallback_keys.setdefault((user, device), {})
            for key_id, obj in fbks.items():
                alg = key_id.split(":", 1)[0]
                old = fstore.get(alg)
                if old is None or old["key_id"] != key_id or old["key"] != obj:
                    fstore[alg] = {"key_id": key_id, "key": copy.deepcopy(obj), "used": False}
            if dk is not None:
                new = {k: copy.deepcopy(v) for k, v in dk.items() if k != "unsigned"}
                if self.device_keys.get(user, {}).get(device) != new:
                    self.device_keys.setdefault(user, {})[device] = new
                    self._announce(user)
                    announced = True
            counts = self._otk_counts(user, device)
        if announced:
            self._identity_stored(user, "device_keys")
        return {"one_time_key_counts": counts}

    def _with_signatures(self, obj, user_id, key_id, requester):
        out = copy.deepcopy(obj)
        extra = self.signatures.get((user_id, key_id), {})
        for signer, sigs in extra.items():
            if signer != user_id and signer != requester:
                continue  # a user-signing signature is visible to its signer only
            out.setdefault("signatures", {}).setdefault(signer, {}).update(sigs)
        return out

    def r_keys_query(self, ctx):
        body = self._json(ctx)
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
        requester = ctx["user"]
        out = {"device_keys": {}, "failures": {}, "master_keys": {}, "self_signing_keys": {},
               "user_signing_keys": {}}
        with self.lock:
            for user_id, devs in wanted.items():
                if not isinstance(devs, list):
                    raise MatrixError(400, "M_BAD_JSON", "device_keys must map users to lists of devices")
                server = _server_of(user_id)
                if server == self.server_name:
                    res = {}
                    for device_id, keys in self.device_keys.get(user_id, {}).items():
                        if devs and device_id not in devs:
                            continue
                        k = self._with_signatures(keys, user_id, device_id, requester)
                        name = self.devices.get(user_id, {}).get(device_id, {}).get("display_name")
                        if name is not None:
                            k["unsigned"] = {"device_display_name": name}
                        res[device_id] = k
                    out["device_keys"][user_id] = res
                    cs = self.cross_signing_keys.get(user_id, {})
                    if "master" in cs:
                        pub = _only_ed25519(cs["master"])
                        out["master_keys"][user_id] = self._with_signatures(cs["master"], user_id, pub, requester)
                    if "self_signing" in cs:
                        out["self_signing_keys"][user_id] = copy.deepcopy(cs["self_signing"])
                    if "user_signing" in cs and user_id == requester:
                        out["user_signing_keys"][user_id] = copy.deepcopy(cs["user_signing"])
                elif server == self.remote_server_name:
                    res = {}
                    for device_id, d in self.remote_devices.get(user_id, {}).items():
                        if devs and device_id not in devs:
                            continue
                        res[device_id] = self._with_signatures(d["keys"], user_id, device_id, requester)
                    out["device_keys"][user_id] = res
                    cs = self.remote_cross_signing.get(user_id, {})
                    if "master" in cs:
                        pub = _only_ed25519(cs["master"])
                        out["master_keys"][user_id] = self._with_signatures(cs["master"], user_id, pub, requester)
                    if "self_signing" in cs:
                        out["self_signing_keys"][user_id] = copy.deepcopy(cs["self_signing"])
                else:
                    out["failures"][server or user_id] = {"status": 503, "message": "Not ready for retry"}
        return out

    def r_keys_claim(self, ctx):
        body = self._json(ctx)
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(400, "M_BAD_JSON", "one_time_keys must be an object")
        out = {"one_time_keys": {}, "failures": {}}
        with self.lock:
            for user_id, devs in wanted.items():
                if not isinstance(devs, dict):
                    raise MatrixError(400, "M_BAD_JSON", "one_time_keys must map users to devices to algorithms")
                server = _server_of(user_id)
                if server not in (self.server_name, self.remote_server_name):
                    out["failures"][server or user_id] = {"status": 503, "message": "Not ready for retry"}
                    continue
                for device_id, alg in devs.items():
                    got = self._claim_one(server, user_id, device_id, alg)
                    if got:
                        out["one_time_keys"].setdefault(user_id, {})[device_id] = {got[0]: got[1]}
        return out

    def _claim_one(self, server, user_id, device_id, alg):
        if not isinstance(alg, str):
            raise MatrixError(400, "M_BAD_JSON", "algorithm must be a string")
        if server == self.server_name:
            store = self.one_time_keys.get((user_id, device_id), {})
            for key_id in store:
                if key_id.split(":", 1)[0] == alg:
                    return key_id, store.pop(key_id)
            fk = self.fallback_keys.get((user_id, device_id), {}).get(alg)
            if fk:
                fk["used"] = True
                return fk["key_id"], copy.deepcopy(fk["key"])
            return None
        d = self.remote_devices.get(user_id, {}).get(device_id)
        if d is None:
            return None
        for i, (key_id, obj) in enumerate(d["one_time_keys"]):
            if key_id.split(":", 1)[0] == alg:
                del d["one_time_keys"][i]
                return key_id, copy.deepcopy(obj)
        fb = d["fallback_key"]
        if fb and fb[0].split(":", 1)[0] == alg:
            return fb[0], copy.deepcopy(fb[1])
        return None

    def r_keys_changes(self, ctx):
        q = ctx["query"]
        if not q.get("from") or not q.get("to"):
            raise MatrixError(400, "M_MISSING_PARAM", "from and to are required")
        a, b = _parse_token(q["from"]), _parse_token(q["to"])
        with self.lock:
            changed, left = self._dl_between(ctx["user"], a, b)
        return {"changed": changed, "left": left}

    def r_device_signing_upload(self, ctx):
        body = self._json(ctx)
        user = ctx["user"]
        given = {}
        for field, usage in (("master_key", "master"), ("self_signing_key", "self_signing"),
                             ("user_signing_key", "user_signing")):
            if field in body:
                given[usage] = body[field]
        with self.lock:
            existing = dict(self.cross_signing_keys.get(user, {}))
        different = any(existing.get(u) != k for u, k in given.items())
        if self.xsign_uia == "always" or ("master" in existing and different):
            self._uia(ctx, body, "device_signing_upload")
        elif "master" in existing and not different:
            return {}
        for usage, key in given.items():
            if not isinstance(key, dict) or key.get("user_id") != user or \
                    not isinstance(key.get("usage"), list) or usage not in key["usage"] or _only_ed25519(key) is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {usage} key")
        master = given.get("master") or existing.get("master")
        for usage in ("self_signing", "user_signing"):
            if usage in given:
                if master is None:
                    raise MatrixError(400, "M_INVALID_PARAM", "No master key available to verify signature")
                mpub = _only_ed25519(master)
                if not _verify(given[usage], user, "ed25519:" + mpub, mpub):
                    raise MatrixError(400, "M_INVALID_SIGNATURE", f"Invalid signature on {usage} key")
        if not given:
            return {}
        with self.lock:
            store = self.cross_signing_keys.setdefault(user, {})
            for usage, key in given.items():
                store[usage] = copy.deepcopy(key)
            self._announce(user)
        self._identity_stored(user, "cross_signing")
        return {}

    def r_signatures_upload(self, ctx):
        body = self._json(ctx)
        signer = ctx["user"]
        failures = {}
        stored_any = False

        def fail(u, k, errcode, error):
            failures.setdefault(u, {})[k] = {"errcode": errcode, "error": error}

        with self.lock:
            own_cs = self.cross_signing_keys.get(signer, {})
            for target, objs in body.items():
                if not isinstance(objs, dict):
                    raise MatrixError(400, "M_BAD_JSON", "signatures must map users to key ids to objects")
                for key_id, obj in objs.items():
                    if (target, key_id) in self.signature_refusals:
                        fail(target, key_id, *self.signature_refusals[(target, key_id)])
                        continue
                    if not isinstance(obj, dict) or not isinstance(obj.get("signatures"), dict):
                        fail(target, key_id, "M_INVALID_PARAM", "Invalid signed object")
                        continue
                    new_sigs = obj["signatures"].get(signer)
                    if not isinstance(new_sigs, dict) or not new_sigs:
                        fail(target, key_id, "M_INVALID_SIGNATURE", "Missing signature")
                        continue
                    err = self._check_signature(signer, own_cs, target, key_id, obj, new_sigs)
                    if isinstance(err, tuple):
                        fail(target, key_id, *err)
                        continue
                    self.signatures.setdefault((target, key_id), {}).setdefault(signer, {}).update(err)
                    stored_any = True
            if stored_any:
                self._announce(signer)
        if stored_any:
            self._identity_stored(signer, "signatures")
        return {"failures": failures}

    def _check_signature(self, signer, own_cs, target, key_id, obj, new_sigs):
        """Returns {signer_key_id: signature} to store, or (errcode, error)."""
        if target == signer:
            dk = self.device_keys.get(signer, {}).get(key_id)
            master = own_cs.get("master")
            if dk is not None:
                ssk = own_cs.get("self_signing")
                if ssk is None:
                    return "M_NOT_FOUND", "No self-signing key found"
                if _strip(obj) != _strip(dk):
                    return "M_INVALID_SIGNATURE", "Key does not match"
                spub = _only_ed25519(ssk)
                kid = "ed25519:" + spub
                if kid not in new_sigs or not _verify(obj, signer, kid, spub):
                    return "M_INVALID_SIGNATURE", "Invalid signature"
                return {kid: new_sigs[kid]}
            if master is not None and key_id == _only_ed25519(master):
                if _strip(obj) != _strip(master):
                    return "M_INVALID_SIGNATURE", "Key does not match"
                good = {}
                for kid, sig in new_sigs.items():
                    if kid == "ed25519:" + key_id:
                        continue  # the master key's own signature
                    dev = self.device_keys.get(signer, {}).get(kid.split(":", 1)[-1])
                    pub = dev and dev.get("keys", {}).get(kid)
                    if not pub or not _verify(obj, signer, kid, pub):
                        return "M_INVALID_SIGNATURE", f"Invalid signature {kid}"
                    good[kid] = sig
                if not good:
                    return "M_INVALID_SIGNATURE", "Missing signature"
                return good
            return "M_NOT_FOUND", "Not a known device or master key"
        usk = own_cs.get("user_signing")
        if _server_of(target) == self.server_name:
            tmaster = self.cross_signing_keys.get(target, {}).get("master")
        else:
            tmaster = self.remote_cross_signing.get(target, {}).get("master")
        if tmaster is None or key_id != _only_ed25519(tmaster):
            return "M_NOT_FOUND", "Not a known master key"
        if usk is None:
            return "M_MISSING_PARAM", "No user-signing key found"
        if _strip(obj) != _strip(tmaster):
            return "M_INVALID_SIGNATURE", "Key does not match"
        upub = _only_ed25519(usk)
        kid = "ed25519:" + upub
        if kid not in new_sigs or not _verify(obj, signer, kid, upub):
            return "M_INVALID_SIGNATURE", "Invalid signature"
        return {kid: new_sigs[kid]}


def main(argv=None):
    p = argparse.ArgumentParser(description="A small Matrix homeserver for tests (127.0.0.1 only).")
    p.add_argument("--port", type=int, default=8008)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--remote-server-name", default="remote.test")
    p.add_argument("--xsign-uia", choices=["replace_only", "always"], default="replace_only")
    p.add_argument("--user", action="append", default=[], metavar="LOCALPART:PASSWORD",
                   help="register a user at start (repeatable)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.add_argument("--lifetime", type=float, default=12 * 3600, help="exit after this many seconds (default 12 h)")
    a = p.parse_args(argv)
    hs = TestHomeserver(server_name=a.server_name, remote_server_name=a.remote_server_name, port=a.port,
                        xsign_uia=a.xsign_uia, verbose=a.verbose)
    for spec in a.user:
        localpart, _, password = spec.partition(":")
        print("registered", hs.register(localpart, password or "pw"), flush=True)
    print(f"tesths serving {a.server_name} on {hs.url}", flush=True)
    try:
        time.sleep(a.lifetime)
    except KeyboardInterrupt:
        pass
    finally:
        hs.close()


if __name__ == "__main__":
    main()
