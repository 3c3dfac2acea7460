"""Readiness under systemd's Type=notify, against a fake service manager: a unix datagram socket in NOTIFY_SOCKET.
READY=1 comes once the server serves (a request made right then is answered), WATCHDOG=1 follows at half of
WATCHDOG_USEC, STOPPING=1 when SIGTERM starts the drain. Without NOTIFY_SOCKET (every other test) nothing changes."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import requests

from conftest import free_port


def messages(sock, until, timeout):
    """Datagrams received until one contains `until` (or the timeout); returns all of them, decoded."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if until in got[-1].split("\n"):
            break
    return got


def test_ready_watchdog_and_stopping_reach_notify_socket(mxkeysd_path, pg, workdir):
    sockdir = tempfile.mkdtemp(prefix="notify-", dir=workdir)
    path = os.path.join(sockdir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    log = open(os.path.join(workdir, f"notify-{port}.log"), "w")
    proc = subprocess.Popen([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{port}", "--workers", "2",
                             "--database-url", pg.conninfo], env=env, stdout=subprocess.DEVNULL, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        got = messages(sock, "READY=1", 30)
        assert got and "READY=1" in got[-1].split("\n"), f"no READY=1 within 30 s; got {got}"
        assert proc.poll() is None
        assert any(line.startswith("STATUS=ready: http://127.0.0.1:") for line in got[-1].split("\n")), got
        # Ready means serving: the very first request after READY=1 is answered, the database included.
        assert requests.get(f"http://127.0.0.1:{port}/_mxkeys/ready", timeout=5).status_code == 200
        assert not any("WATCHDOG=1" in m for m in got), "watchdog pinged before READY=1"

        pings = [m for m in messages(sock, "never", 1.5) if m == "WATCHDOG=1"]
        assert 3 <= len(pings) <= 10, f"expected a ping every 200 ms for 1.5 s, got {len(pings)}"

        proc.send_signal(signal.SIGTERM)
        got = messages(sock, "STOPPING=1", 15)
        assert got and "STOPPING=1" in got[-1].split("\n"), f"no STOPPING=1 after SIGTERM; got {got}"
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        sock.close()


def test_watchdog_pid_of_another_process_turns_the_watchdog_off(mxkeysd_path, pg, workdir):
    """sd_watchdog_enabled's rule: WATCHDOG_PID names the process meant; any other one must not ping."""
    sockdir = tempfile.mkdtemp(prefix="notify-", dir=workdir)
    path = os.path.join(sockdir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    proc = subprocess.Popen([mxkeysd_path, "serve", "--listen", f"127.0.0.1:{port}", "--workers", "1",
                             "--database-url", pg.conninfo], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        got = messages(sock, "READY=1", 30)
        assert got and "READY=1" in got[-1].split("\n"), f"no READY=1 within 30 s; got {got}"
        assert not [m for m in messages(sock, "never", 0.8) if m == "WATCHDOG=1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
