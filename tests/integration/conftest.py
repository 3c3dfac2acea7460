"""Shared fixtures: a throwaway PostgreSQL per test session, mxkeysd servers over real HTTP, token minting.

Fixture API (other test modules rely on these names and shapes):
  pg                       session cluster: .conninfo, .stop(), .start(), .psql(sql) -> str
  mxkeysd_path             the binary under test ($MXKEYSD, else ../../build/mxkeysd)
  start_server(**flags)    start another mxkeysd (kwargs become --flags, '_' -> '-'); stopped at session end
  server                   the default server: strict validation, local auth, admin token 'admintest'
  new_user()               a fresh unique local user id
  client(server, token)    requests wrapper: .get/.post/.put/.delete(path, json=, params=, headers=)
  login(server, user_id=None, device_id=None) -> (user_id, device_id, client)

Servers (start_server's answer): .url .port .proc .admin_token .stderr_text() .stop(sig=SIGTERM) -> exit status,
.mint(user_id, device_id) -> token, .cli(*args, check=True) -> CompletedProcess (a subcommand against its database).
start_server(database_url=None, state_dir=d) runs one on its own embedded cluster instead of the session's.

Helpers: assert_error(response, status, errcode) -> body; free_port(); wait_for(predicate, timeout, what).
Guards: every test gets MXKEYS_TEST_TIMEOUT seconds (default 120); a server that dies without .stop() fails the test
during which it died, with its stderr; SIGTERM to pytest still stops every server and the cluster.
"""
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

PG_BIN = "/usr/lib/postgresql/15/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLIENT_PREFIX = "/_matrix/client/v3"
STARTUP_TIMEOUT = 30  # seconds until /_mxkeys/health answers 200 (generous: sanitizer builds on a busy machine)
STARTUP_READY_GRACE = 5  # seconds a healthy server may take to become ready before a test starts anyway


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """A private cluster in a temp dir. As root it runs as the `postgres` user (PostgreSQL refuses root)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mxkeys-pg-", dir="/tmp")
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self):
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "mxkeys", "-E", "UTF8", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                # Servers stay up until the session ends, each with workers x --db-connections (default 2 x 4)
                # connections plus its query cache's feed: room for well over a hundred of them.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 1000\n"
                "include 'port.conf'\n"
            )
        self.start_on_free_port()
        self._run([f"{PG_BIN}/createdb", "-h", self.dir, "-p", str(self.port), "-U", "mxkeys", "mxkeys"])
        self.conninfo = f"host=127.0.0.1 port={self.port} user=mxkeys dbname=mxkeys"

    def _run(self, argv, check=True):
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--"] + argv
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout}{r.stderr}\n"
                                 f"server log tail:\n{self.log_text()[-2000:]}")
        return r

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start_on_free_port(self):
        """Starts the cluster on a free port (written to port.conf). The port can be taken by another process before
        the postmaster binds it: then another one is tried."""
        for attempt in range(3):
            self.port = free_port()
            with open(os.path.join(self.data, "port.conf"), "w") as f:
                f.write(f"port = {self.port}\n")
            try:
                self.start()
                return
            except AssertionError:
                if attempt == 2 or "could not bind" not in self.log_text():
                    raise

    def start(self):
        """Starts the cluster (again): same data dir, same port."""
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "start"])

    def stop(self):
        """Fast shutdown: open sessions (mxkeysd's pool) are disconnected; waits until the postmaster is gone."""
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop"], check=False)

    def running(self):
        return self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "status"], check=False).returncode == 0

    def psql(self, sql):
        r = subprocess.run(
            [f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mxkeys", "-d", "mxkeys", "-At", "-v",
             "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def destroy(self):
        if os.path.exists(os.path.join(self.dir, "data", "postmaster.pid")):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    cluster = Postgres()
    yield cluster
    cluster.destroy()


# ---------------------------------------------------------------------------------------------------------------------
# mxkeysd


@pytest.fixture(scope="session")
def mxkeysd_path():
    path = os.environ.get("MXKEYSD") or os.path.join(REPO, "build", "mxkeysd")
    assert os.access(path, os.X_OK), f"mxkeysd binary not found at {path} (set MXKEYSD)"
    return path


def flag_args(flags):
    argv = []
    for key, value in flags.items():
        if value is None:
            continue
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


class PortTaken(Exception):
    """The free port picked for a server was taken by someone else before the server bound it."""


class Server:
    def __init__(self, binary, pg, workdir, **flags):
        self.binary = binary
        self.pg = pg
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = flags.get("admin_token")
        self.flags = flags
        self.stopped = False  # set by stop(): a server that exits without it crashed
        self._healthy_at = None
        # database_url=None (with state_dir=...) starts a server on its embedded cluster instead of the session's
        self.database_url = flags.pop("database_url", pg.conninfo if pg else None)
        self.state_dir = flags.get("state_dir")
        self.stderr_path = os.path.join(workdir, f"mxkeysd-{self.port}.log")
        args = {"listen": f"127.0.0.1:{self.port}", "workers": 2, "log_level": "info"}
        args.update(flags)
        if self.database_url:
            args["database_url"] = self.database_url
        self.argv = [binary, "serve"] + flag_args(args)
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL)
        try:
            wait_for(self._started, STARTUP_TIMEOUT, f"mxkeysd on port {self.port}")
        except AssertionError as e:
            self.stop(signal.SIGKILL)
            if "Address already in use" in self.stderr_text():
                raise PortTaken() from e
            if str(e).startswith("mxkeysd exited"):
                raise  # the message already holds the stderr tail
            raise AssertionError(f"mxkeysd did not become healthy ({e}):\n{self.stderr_text()[-3000:]}") from None

    def _started(self):
        if not self._healthy():
            return False
        if self._healthy_at is None:
            self._healthy_at = time.monotonic()
        # Each worker accepts once its own pool connected (or after a few seconds without a database): wait for the
        # last one, so that a test's first request does not land on a worker still connecting. A server started
        # with its database down never gets ready: it counts as started a few seconds after it first answered.
        try:
            if requests.get(self.url + "/_mxkeys/ready", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        return time.monotonic() - self._healthy_at > STARTUP_READY_GRACE

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"mxkeysd exited with {self.proc.returncode}:\n{self.stderr_text()[-3000:]}")
        try:
            return requests.get(self.url + "/_mxkeys/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stderr_text(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Signals the server and waits for it; returns its exit status (negative: killed by that signal)."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def cli(self, *args, check=True):
        """Runs an mxkeysd subcommand against this server's database."""
        where = ["--database-url", self.database_url] if self.database_url else ["--state-dir", self.state_dir]
        argv = [self.binary] + list(args) + where
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def mint(self, user_id, device_id):
        r = self.cli("token", "create", "--user", user_id, "--device", device_id)
        token = r.stdout.strip()
        assert token and "\n" not in token, f"unexpected token output {r.stdout!r}"
        return token


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="mxkeys-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    if os.environ.get("MXKEYS_TEST_KEEP_WORKDIR"):  # the servers' logs, to read after a failure
        print(f"\nmxkeysd logs kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


_started_servers = []


@pytest.fixture(scope="session")
def start_server(mxkeysd_path, pg, workdir):
    def start(**flags):
        for attempt in range(3):
            try:
                s = Server(mxkeysd_path, pg, workdir, **dict(flags))
                break
            except PortTaken:
                if attempt == 2:
                    raise AssertionError("three free ports in a row were taken before mxkeysd could bind them")
        _started_servers.append(s)
        return s

    yield start
    for s in _started_servers:
        s.stop()
    _started_servers.clear()


@pytest.fixture(autouse=True)
def servers_stay_up():
    """A server that died during a test (crash, sanitizer abort) fails that test, with its stderr."""
    yield
    for s in _started_servers:
        if not s.stopped and s.proc.poll() is not None:
            s.stopped = True
            pytest.fail(f"mxkeysd on port {s.port} exited with status {s.proc.returncode} during this test:\n"
                        f"{s.stderr_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def server(start_server):
    return start_server(admin_token="admintest")


@pytest.fixture
def new_user():
    def make(localpart=None, server_name="localhost"):
        return f"@{localpart or 'u' + secrets.token_hex(6)}:{server_name}"

    return make


class Client:
    def __init__(self, server, token=None):
        self.server = server
        self.token = token
        self.session = requests.Session()

    def url(self, path):
        if path.startswith(("/keys", "/room_keys", "/account")):
            path = CLIENT_PREFIX + path
        return self.server.url + path

    def request(self, method, path, headers=None, **kwargs):
        h = dict(headers or {})
        if self.token is not None:
            h.setdefault("Authorization", f"Bearer {self.token}")
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url(path), headers=h, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


@pytest.fixture
def client():
    made = []

    def make(server, token=None):
        c = Client(server, token)
        made.append(c)
        return c

    yield make
    for c in made:
        c.session.close()


@pytest.fixture
def login(client, new_user):
    def make(server, user_id=None, device_id=None):
        user_id = user_id or new_user()
        device_id = device_id or "D" + secrets.token_hex(4).upper()
        token = server.mint(user_id, device_id)
        return user_id, device_id, client(server, token)

    return make


def assert_error(response, status, errcode):
    """Asserts a Matrix error object with the given status and errcode; returns the body."""
    assert response.status_code == status, f"expected {status} {errcode}, got {response.status_code}: {response.text}"
    body = response.json()
    assert body.get("errcode") == errcode, f"expected {errcode}, got {body}"
    assert isinstance(body.get("error"), str)
    return body


TEST_TIMEOUT = int(os.environ.get("MXKEYS_TEST_TIMEOUT", "120"))


@pytest.fixture(autouse=True)
def per_test_timeout():
    """No test may hang the suite: each gets TEST_TIMEOUT seconds (env MXKEYS_TEST_TIMEOUT), setup included."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def pytest_sessionstart(session):
    # meson test (or a CI job) ends a run that overstays with SIGTERM: turn it into KeyboardInterrupt so pytest still
    # runs the finalizers that stop every mxkeysd and the PostgreSQL cluster instead of leaving them behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
