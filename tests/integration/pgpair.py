"""A primary and a streaming standby of a test's own (never the session cluster of conftest.py), with synchronous
replication: a commit is acknowledged only once the standby has flushed its WAL, so a promoted standby holds every
write the primary acknowledged. Both listen on 127.0.0.1 at free ports, data and sockets under /tmp, run as the
`postgres` user when the tests run as root.

  pair = Pair()        primary started, standby made with pg_basebackup -R and streaming, replication synchronous
  pair.primary, pair.standby   conftest.Postgres-like: .port .data .psql(sql) .running()
  pair.multi_host_url(standby_first)   a libpq URI naming both servers
  pair.kill_primary()          SIGKILL to the primary's postmaster (pid from postmaster.pid); its orphaned children
                               are reaped by pid in destroy()
  pair.promote()               pg_ctl promote -w on the standby
  pair.destroy()
"""
import os
import pwd
import shutil
import signal
import tempfile
import time

from conftest import PG_BIN, Postgres
from pgfaults import cluster_pids


class Standby(Postgres):
    """A hot standby of `primary`, made with pg_basebackup -R (standby.signal and primary_conninfo written for us)."""

    def __init__(self, primary):
        self.primary = primary
        super().__init__()

    def _create(self):
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "mxkeys",
                   "-D", self.data, "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        # The copy carries the primary's settings: give the standby its own socket directory and port.
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"unix_socket_directories = '{self.dir}'\n")
        self.start_on_free_port()
        self.conninfo = f"host=127.0.0.1 port={self.port} user=mxkeys dbname=mxkeys"

    def promote(self):
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-w", "-t", "30", "promote"])


class Pair:
    def __init__(self):
        self.primary = Postgres()
        self.standby = None
        self.orphans = []
        try:
            self.standby = Standby(self.primary)
            # conftest's cluster turns synchronous_commit off for speed; this pair needs every commit to wait for the
            # standby. Later settings win, and both take effect on reload.
            with open(os.path.join(self.primary.data, "postgresql.conf"), "a") as f:
                f.write("synchronous_commit = on\nsynchronous_standby_names = '*'\n")
            self.primary._run([f"{PG_BIN}/pg_ctl", "-D", self.primary.data, "reload"])
            deadline = time.monotonic() + 30
            while self.primary.psql("SELECT string_agg(sync_state, ',') FROM pg_stat_replication") != "sync":
                assert time.monotonic() < deadline, "the standby never became a synchronous standby"
                time.sleep(0.05)
            assert self.primary.psql("SHOW synchronous_commit") == "on"
        except BaseException:
            self.destroy()
            raise

    def multi_host_url(self, standby_first):
        # The standby first: a client must pass over it (read-only) to the primary from the start, and after the
        # promotion it is the first host that answers. The primary first: a client must give up on it when it stops
        # answering and go on to the next host.
        hosts = [self.standby.port, self.primary.port] if standby_first else [self.primary.port, self.standby.port]
        return (f"postgresql://mxkeys@127.0.0.1:{hosts[0]},127.0.0.1:{hosts[1]}/mxkeys"
                "?application_name=mxkeysd-failover-test")

    def kill_primary(self):
        postmaster, children = cluster_pids(self.primary)
        self.orphans = children
        os.kill(postmaster, signal.SIGKILL)

    def promote(self):
        self.standby.promote()

    def _reap_orphans(self):
        # Children of a killed postmaster exit by themselves once they notice; stop any that did not (ours, by pid,
        # and only while the pid still runs postgres).
        for pid in self.orphans:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"postgres" not in f.read():
                        continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.orphans = []

    def destroy(self):
        self._reap_orphans()
        for cluster in (self.standby, self.primary):
            if cluster is None:
                continue
            if cluster.running():
                cluster.stop()
            shutil.rmtree(cluster.dir, ignore_errors=True)
