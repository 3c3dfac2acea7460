"""The embedded private PostgreSQL: serve with no --database-url, token create beside it, one owner per state dir."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests
from conftest import free_port, wait_for

pytestmark = pytest.mark.skipif(os.environ.get("MXKEYS_SKIP_EMBEDDED") == "1", reason="MXKEYS_SKIP_EMBEDDED=1")


def data_dirs(state_dir):
    """The cluster's data directory: <state>/pg, or wherever <state>/pg.location says it was placed."""
    dirs = [os.path.join(state_dir, "pg")]
    location = os.path.join(state_dir, "pg.location")
    if os.path.exists(location):
        for line in open(location):
            if line.startswith("data="):
                dirs.append(line.strip().split("=", 1)[1])
    return dirs


def postmaster_pids(state_dir):
    """PIDs of postgres processes whose data directory belongs to this state dir (wherever it was placed)."""
    dirs = data_dirs(state_dir)
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10).stdout
    return [l.split()[0] for l in out.splitlines() if "postgres" in l and any(d in l for d in dirs)]


def postmaster_pid_files(state_dir):
    return [d for d in data_dirs(state_dir) if os.path.exists(os.path.join(d, "postmaster.pid"))]


def new_state_dir():
    state = tempfile.mkdtemp(prefix="mxkeys-state-", dir="/tmp")
    os.chmod(state, 0o755)
    return state


def serve(mxkeysd_path, state, port):
    log = open(os.path.join(state, f"serve-{port}.log"), "w")
    proc = subprocess.Popen([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, open(os.path.join(state, f"serve-{port}.log")).read()
        try:
            return requests.get(url + "/_mxkeys/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(ready, 60, "embedded mxkeysd")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def token_create(mxkeysd_path, state, user, device):
    r = subprocess.run([mxkeysd_path, "token", "create", "--user", user, "--device", device, "--state-dir", state],
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def whoami(url, token):
    return requests.get(url + "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


def cleanup(state, proc=None):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    # a stray cluster must not outlive the test
    for pid in postmaster_pids(state):
        subprocess.run(["kill", "-TERM", pid])
    shutil.rmtree(state, ignore_errors=True)


def test_embedded_cluster_lifecycle(mxkeysd_path):
    state = new_state_dir()
    proc = None
    try:
        proc, url = serve(mxkeysd_path, state, free_port())
        assert requests.get(url + "/_mxkeys/health").status_code == 200
        assert postmaster_pids(state), "no postgres running for the state dir"
        assert postmaster_pid_files(state)

        # token create uses the running server's cluster
        token = token_create(mxkeysd_path, state, "@emb:localhost", "EMB")
        r = whoami(url, token)
        assert r.status_code == 200 and r.json() == {"user_id": "@emb:localhost", "device_id": "EMB"}

        # a second server on the same state dir fails quickly and clearly, and leaves the first one alone
        t0 = time.monotonic()
        r = subprocess.run([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{free_port()}", "--state-dir", state],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode != 0
        assert time.monotonic() - t0 < 10
        assert "in use" in r.stderr and state in r.stderr, r.stderr
        assert whoami(url, token).status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        wait_for(lambda: not postmaster_pids(state), 15, "embedded postgres to stop")
        assert not postmaster_pid_files(state), "postmaster.pid left behind"
    finally:
        cleanup(state, proc)


def test_embedded_data_survives_restart_and_token_create_runs_alone(mxkeysd_path):
    state = new_state_dir()
    proc = None
    try:
        # no server yet: token create brings the cluster up itself (initdb on first use) and takes it down again
        token = token_create(mxkeysd_path, state, "@early:localhost", "EARLY")
        assert not postmaster_pids(state) and not postmaster_pid_files(state), "token create left postgres running"

        proc, url = serve(mxkeysd_path, state, free_port())
        assert whoami(url, token).json() == {"user_id": "@early:localhost", "device_id": "EARLY"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0

        # a restart on the same state dir finds the same cluster and data
        proc, url = serve(mxkeysd_path, state, free_port())
        assert whoami(url, token).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        wait_for(lambda: not postmaster_pids(state), 15, "embedded postgres to stop")
    finally:
        cleanup(state, proc)
