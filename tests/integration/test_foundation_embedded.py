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


def postmaster_pids(state_dir):
    """PIDs of postgres processes whose data directory belongs to this state dir (wherever it was placed)."""
    data_dirs = [os.path.join(state_dir, "pg")]
    location = os.path.join(state_dir, "pg.location")
    if os.path.exists(location):
        for line in open(location):
            if line.startswith("data="):
                data_dirs.append(line.strip().split("=", 1)[1])
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if "postgres" in l and any(d in l for d in data_dirs)]


def test_embedded_cluster_lifecycle(mxkeysd_path):
    state = tempfile.mkdtemp(prefix="mxkeys-state-", dir="/tmp")
    os.chmod(state, 0o755)
    port = free_port()
    log = open(os.path.join(state, "serve.log"), "w")
    proc = subprocess.Popen([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            assert proc.poll() is None, open(os.path.join(state, "serve.log")).read()
            try:
                return requests.get(url + "/_mxkeys/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, 60, "embedded mxkeysd")
        assert postmaster_pids(state), "no postgres running for the state dir"

        # token create uses the running server's cluster
        r = subprocess.run([mxkeysd_path, "token", "create", "--user", "@emb:localhost", "--device", "EMB",
                            "--state-dir", state], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        r = requests.get(url + "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["user_id"] == "@emb:localhost"

        # a second server on the same state dir fails quickly and clearly
        t0 = time.monotonic()
        r = subprocess.run([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{free_port()}", "--state-dir", state],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert time.monotonic() - t0 < 10
        assert "in use" in r.stderr and state in r.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        wait_for(lambda: not postmaster_pids(state), 15, "embedded postgres to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        # a stray cluster must not outlive the test
        for pid in postmaster_pids(state):
            subprocess.run(["kill", "-TERM", pid])
        shutil.rmtree(state, ignore_errors=True)
