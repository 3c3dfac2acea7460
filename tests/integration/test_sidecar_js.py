"""End to end with matrix-js-sdk and its Rust crypto (npm, tests/e2e-js/), as operators deploy mxkeys: Debian's nginx
with deploy/nginx/ in front of tesths (the test homeserver) and mxkeysd --auth homeserver, exactly like
test_sidecar_e2e.py does with matrix-nio. What nio cannot do is here: a used fallback key reported and replaced, a
cross-signing reset through user-interactive auth; and a conversation whose second device logs in later.

Each test runs one scenario of tests/e2e-js/scenarios.mjs (a node program; see its header) with a JSON job and
asserts on the JSON it prints. The node dependencies are installed by `npm ci` in tests/e2e-js (CI does it); without
them these tests fail, saying so.
"""
import json
import os
import secrets
import shutil
import subprocess

import pytest
from nginx import start_nginx  # noqa: F401  (the fixture)
from tesths import TestHomeserver

HERE = os.path.dirname(os.path.abspath(__file__))
JS_DIR = os.path.join(os.path.dirname(HERE), "e2e-js")
SCENARIOS = os.path.join(JS_DIR, "scenarios.mjs")
NODE = os.environ.get("NODE") or shutil.which("node") or "/usr/bin/node"
STEP_TIMEOUT_MS = 30000
RUN_TIMEOUT = 100  # seconds one scenario may take, all steps together (the node program stops itself 5 s earlier); the sanitizer build on a busy machine needs the room
ALG = "signed_curve25519"


def _require_js():
    if not os.access(NODE, os.X_OK):
        pytest.fail(f"node not found ({NODE}): install Debian's nodejs (or set NODE)", pytrace=False)
    with open(os.path.join(JS_DIR, "package.json")) as f:
        wanted = json.load(f)["dependencies"]["matrix-js-sdk"]
    try:
        with open(os.path.join(JS_DIR, "node_modules", "matrix-js-sdk", "package.json")) as f:
            have = json.load(f)["version"]
    except OSError:
        have = None
    if have != wanted:
        why = "is missing" if have is None else f"holds matrix-js-sdk {have}, not {wanted}"
        pytest.fail(f"{JS_DIR}/node_modules {why}: run `(cd tests/e2e-js && npm ci --no-audit --no-fund)` "
                    f"before these tests", pytrace=False)


@pytest.fixture
def deployment(start_server, start_nginx):  # noqa: F811
    _require_js()
    hs = TestHomeserver(server_name="localhost", remote_server_name="remote.test")
    server = start_server(auth="homeserver", homeserver_url=hs.url, homeserver_timeout_ms=5000)
    ngx = start_nginx(server.url, hs.url)
    yield hs, server, ngx
    server.stop()
    hs.close()


def run_scenario(name, ngx, hs, server, users=("alice", "bob")):
    """Runs one scenario against nginx; returns (its JSON result, the user ids). Fails with the program's stderr."""
    user_ids = [hs.register(f"{u}-{secrets.token_hex(4)}", password=f"pw-{u}") for u in users]
    job = {"scenario": name, "base_url": ngx.url,
           "users": [{"user_id": uid, "password": f"pw-{u}"} for uid, u in zip(user_ids, users)],
           "step_timeout_ms": STEP_TIMEOUT_MS, "total_timeout_ms": (RUN_TIMEOUT - 5) * 1000}
    try:
        p = subprocess.run([NODE, SCENARIOS], input=json.dumps(job), capture_output=True, text=True,
                           timeout=RUN_TIMEOUT, cwd=JS_DIR)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"scenario {name} did not end within {RUN_TIMEOUT} s; its stderr:\n{err[-6000:]}"
                    f"\nmxkeysd:\n{server.stderr_text()[-3000:]}", pytrace=False)
    result = None
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if lines:
        try:
            result = json.loads(lines[-1])
        except ValueError:
            pass
    if p.returncode != 0 or not isinstance(result, dict) or not result.get("ok"):
        pytest.fail(f"scenario {name} failed (exit {p.returncode}): "
                    f"{(result or {}).get('step', '?')}: {(result or {}).get('error', p.stdout[-2000:])}\n"
                    f"--- its stderr:\n{p.stderr[-6000:]}\n--- mxkeysd:\n{server.stderr_text()[-3000:]}\n"
                    f"--- nginx:\n{ngx.error_log_text()[-1500:]}", pytrace=False)
    return result, user_ids


def _path(r):
    return r["path"].split("?")[0]


def _upload_lines(ngx):
    return [ln for ln in ngx.access_log_text().splitlines() if '"POST /_matrix/client/v3/keys/upload' in ln
            or '"POST /_matrix/client/r0/keys/upload' in ln]


def test_a_used_fallback_key_is_reported_and_replaced(deployment):
    hs, server, ngx = deployment
    out, (alice, bob) = run_scenario("fallback", ngx, hs, server)
    first = out["first_upload"]
    assert first["otks"] > 0 and first["fallback"].startswith(ALG + ":"), out
    # mxkeys' counts reach the client in the homeserver's /sync (the homeserver holds neither kind of key)
    # (as many as were uploaded by some moment between the /sync's start and its answer: the client may top up once
    # more after a /sync that was in flight during its first upload reported the count from before it)
    assert out["fresh_syncs"] and all(
        set(x["otk"]) == {ALG} and max(x["uploaded_from"], first["otks"]) <= x["otk"][ALG] <= x["uploaded_to"]
        and x["fallback_types"] == [ALG] == x["msc2732"] for x in out["fresh_syncs"]), out
    with hs.lock:
        assert not hs.one_time_keys.get((alice, out["device"])) and not hs.fallback_keys.get((alice, out["device"]))
    assert out["idle_uploads_1"] == 0, f"the client uploaded keys while idle: {out['uploads']}"
    # every one-time key was handed out (some the client added while bob claimed), then the fallback key
    assert out["drain1"]["otks_claimed"] >= first["otks"], out
    assert out["drain1"]["fallback_key"] == first["fallback_key"], out
    # the used fallback key is reported to the client, which tops up its one-time keys
    assert out["reported_syncs"] and all(x["fallback_types"] == [] == x["msc2732"] for x in out["reported_syncs"]), out
    assert out["replenish_upload"]["otks"] > 0, out
    # the client replaced its fallback key by its own logic (the Rust crypto: by age, the clock moved a week on),
    # and mxkeys holds the new one: it is unused again in /sync and the next drain ends on the NEW key
    assert out["replaced_by"] in ("report", "rotation"), out
    assert out["fallback2_key"] != first["fallback_key"], out
    assert out["unused_again_syncs"] and all(x["fallback_types"] == [ALG] for x in out["unused_again_syncs"]), out
    assert out["drain2"]["fallback_key"] == out["fallback2_key"], out
    # no one-time keys re-uploaded on every sync: none over the idle syncs, and the counts agree
    assert out["idle_syncs_2"] >= 6 and out["idle_uploads_2"] == 0, f"uploads while idle: {out['uploads']}"
    claimed = out["drain1"]["otks_claimed"] + out["drain2"]["otks_claimed"]
    assert out["last_sync_counts"][ALG] == out["server_counts"][ALG] == out["otks_uploaded"] - claimed, out
    assert out["server_counts"][ALG] >= first["otks"], out
    uploads = out["uploads"]
    assert all(u["status"] == 200 for u in uploads), uploads
    # an independent witness: nginx saw exactly the uploads the client says it made
    assert len(_upload_lines(ngx)) == len(uploads) + 1, ngx.access_log_text()  # + the scenario's empty upload
    # one-time and fallback keys never reached the homeserver; claims were answered by mxkeys
    for r in hs.requests:
        if _path(r).endswith("/keys/upload"):
            assert set(json.loads(r["body"])) == {"device_keys"}, r
        assert not _path(r).endswith("/keys/claim"), r


def test_a_cross_signing_reset_goes_through_user_interactive_auth(deployment):
    hs, server, ngx = deployment
    out, (alice, bob) = run_scenario("cross_signing", ngx, hs, server)
    # first upload: no UIA asked (tesths xsign_uia="replace_only", MSC3967)
    assert out["uia_first"] == [{"auth": None, "status": 200}], out
    assert out["ready1"] is True, out
    # reset: the homeserver's UIA 401 reached the client unchanged, the password completed it
    first_try, second_try = out["uia_reset"]
    assert first_try["status"] == 401 and first_try["flows"] == [{"stages": ["m.login.password"]}], out
    assert first_try["session"], out
    assert second_try == {"auth": "m.login.password", "status": 200}, out
    assert out["master2"] != out["master1"], out
    assert out["ready2"] is True, out
    # what other users see through the base URL is the new master key, and the homeserver holds the same
    master = out["query2"]["master"]
    assert list(master["keys"].values()) == [out["master2"]] and master["usage"] == ["master"], out
    assert out["own_query"]["master"] == master, out
    assert out["query2"]["user_signing_seen_by_bob"] is None, "a user-signing key is shown only to its owner"
    assert out["own_query"]["user_signing"] is not None, out
    ssk = list(out["query2"]["self_signing"]["keys"].values())[0]
    assert ssk != list(out["query1"]["self_signing"]["keys"].values())[0], out
    assert f"ed25519:{ssk}" in out["query2"]["device_signatures"], out
    with hs.lock:
        held = json.loads(json.dumps(hs.cross_signing_keys.get(alice, {})))
    for kind in ("master", "self_signing", "user_signing"):
        assert held.get(kind, {}).get("keys") == out["own_query"][kind]["keys"], (kind, held, out)
    # the reset's device-signing uploads went to the homeserver: one refused with UIA, one with the password
    xs = [json.loads(r["body"]) for r in hs.requests if _path(r).endswith("/keys/device_signing/upload")]
    assert [("auth" in b) and b["auth"].get("type") for b in xs] == [False, False, "m.login.password"], xs


def test_a_second_js_device_logs_in_later_and_decrypts(deployment):
    hs, server, ngx = deployment
    out, (alice, bob) = run_scenario("conversation", ngx, hs, server)
    sent = out["sent"]
    assert out["bob1_plaintext"] == [sent[0], sent[1]], out
    assert out["bob2_plaintext"] == sent[1], out
    assert out["alice_plaintext"] == sent[2], out
    assert out["failures"]["alice"] == [] and out["failures"]["bob1"] == [], out
    # bob2 cannot read what was sent before it existed (there is no key backup here): only that message fails
    assert {f["event_id"] for f in out["failures"]["bob2"]} <= {out["event_ids"][0]}, out
    bob2 = out["bob_devices"][1]
    with hs.lock:
        assert bob2 in hs.device_keys.get(bob, {}), "bob2's device keys were mirrored to the homeserver"
    for r in hs.requests:
        assert not _path(r).endswith("/keys/claim") and not _path(r).endswith("/keys/query"), r
