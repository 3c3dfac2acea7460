"""Faults injected into a test's own PostgreSQL cluster: every process of it stopped (SIGSTOP) and continued, as a
frozen database host or a black-holed network looks to mxkeysd. Only the cluster's own pids are signalled: the
postmaster's (from postmaster.pid) and its children's (from /proc)."""
import os
import signal


def cluster_pids(pg):
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == postmaster:
            children.append(int(entry))
    return postmaster, children


class Stopped:
    """with Stopped(pg): every process of the cluster is stopped inside, and always continued on the way out."""

    def __init__(self, pg):
        self.pg = pg
        self.pids = []

    def __enter__(self):
        postmaster, children = cluster_pids(self.pg)
        # the postmaster first, so that it forks nothing new meanwhile
        for pid in [postmaster] + children:
            try:
                os.kill(pid, signal.SIGSTOP)
                self.pids.append(pid)
            except ProcessLookupError:
                pass
        return self

    def __exit__(self, *exc):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return False
