#!/usr/bin/env bash
# The Debian package, end to end, as an operator would use it (run by `./mxkeys package-check`, root only):
#   build it from a copy of the checkout with dpkg-buildpackage (the checkout's build dirs stay untouched), lintian it,
#   `apt-get install ./mxkeys_*.deb`, start mxkeysd as the package's user with the package's environment file on the
#   embedded database (by hand: this machine may have no systemd as PID 1), mint a token with the installed binary,
#   make one authenticated request, stop it, then remove and purge the package and check nothing is left.
# Every wait is bounded; only the processes this script started are signalled, by pid.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

say() { printf 'package-check: %s\n' "$*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs and purges the mxkeys package)"
if dpkg-query -W -f='${Status}' mxkeys 2>/dev/null | grep -q 'installed'; then
    fail "the mxkeys package is already installed here; this check installs and purges it, so remove it first"
fi

WORK=$(mktemp -d /tmp/mxkeys-package.XXXXXX)
SERVER_PID=
INSTALLED=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$INSTALLED" ]; then
        env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq mxkeys >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say "building the package from a copy of the checkout"
mkdir "$WORK/mxkeys"
tar --exclude='./build*' --exclude=./var --exclude=node_modules --exclude=./.git -cf - . | tar -xf - -C "$WORK/mxkeys"
(cd "$WORK/mxkeys" && dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) ||
    { tail -40 "$WORK/build.log" >&2; fail "dpkg-buildpackage"; }
DEB=$(ls "$WORK"/mxkeys_*.deb)

say "lintian (every tag fails the check unless debian/mxkeys.lintian-overrides explains it)"
lintian_rc=0
lintian --pedantic --fail-on error,warning,info,pedantic "$WORK"/mxkeys_*.changes >"$WORK/lintian.log" 2>&1 ||
    lintian_rc=$?
grep -v '^running with root privileges' "$WORK/lintian.log" >"$WORK/lintian.tags" || true
if [ "$lintian_rc" -ne 0 ] || [ -s "$WORK/lintian.tags" ]; then
    cat "$WORK/lintian.tags" >&2
    fail "lintian (exit status $lintian_rc)"
fi

say "apt-get install ./$(basename "$DEB")"
INSTALLED=1
(cd "$WORK" && env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$(basename "$DEB")" >"$WORK/apt.log" 2>&1) ||
    { cat "$WORK/apt.log" >&2; fail "apt-get install"; }

getent passwd mxkeys >/dev/null || fail "no mxkeys system user"
[ "$(stat -c %U:%G:%a /var/lib/mxkeys)" = mxkeys:mxkeys:750 ] || fail "/var/lib/mxkeys: $(stat -c %U:%G:%a /var/lib/mxkeys)"
[ "$(stat -c %U:%G:%a /etc/mxkeys/mxkeysd.env)" = root:mxkeys:640 ] ||
    fail "/etc/mxkeys/mxkeysd.env: $(stat -c %U:%G:%a /etc/mxkeys/mxkeysd.env)"
[ -x /usr/bin/mxkeysd ] && [ -f /lib/systemd/system/mxkeysd.service ] && [ -f /usr/share/man/man8/mxkeysd.8.gz ] ||
    fail "binary, unit or manual page missing"
[ -L /etc/systemd/system/multi-user.target.wants/mxkeysd.service ] || fail "the unit was not enabled"
systemd-analyze verify /lib/systemd/system/mxkeysd.service || fail "systemd-analyze verify of the installed unit"

# As the unit runs it: its Environment= first, then the environment file, as user mxkeys in /var/lib/mxkeys. Only
# the port is moved off 8088, which a developer's own server may hold.
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting /usr/bin/mxkeysd as mxkeys on 127.0.0.1:$PORT (embedded database under /var/lib/mxkeys)"
(
    cd /var/lib/mxkeys
    set -a
    MXKEYS_STATE_DIR=/var/lib/mxkeys
    # shellcheck disable=SC1091
    . /etc/mxkeys/mxkeysd.env
    MXKEYS_LISTEN=127.0.0.1:$PORT
    set +a
    exec setpriv --reuid=mxkeys --regid=mxkeys --init-groups -- /usr/bin/mxkeysd serve
) </dev/null >"$WORK/mxkeysd.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$PORT/_mxkeys/ready" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/mxkeysd.log" >&2; fail "mxkeysd exited during start-up"; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/_mxkeys/ready" >/dev/null || { cat "$WORK/mxkeysd.log" >&2; fail "not ready in 60 s"; }
grep -q ' ready: http://127.0.0.1:' "$WORK/mxkeysd.log" || fail "no ready line in the log"

TOKEN=$(setpriv --reuid=mxkeys --regid=mxkeys --init-groups -- \
    /usr/bin/mxkeysd token create --user @alice:localhost --device PKGCHECK --state-dir /var/lib/mxkeys)
WHOAMI=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/_matrix/client/v3/account/whoami")
[ "$WHOAMI" = '{"user_id":"@alice:localhost","device_id":"PKGCHECK"}' ] || fail "whoami answered $WHOAMI"
say "authenticated request answered: $WHOAMI"

kill -TERM "$SERVER_PID"
for _ in $(seq 1 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "mxkeysd still running 40 s after SIGTERM"
wait "$SERVER_PID" || fail "mxkeysd exited with status $?"
SERVER_PID=
# The embedded cluster stops with mxkeysd. Zombies do not count: reaping the orphaned postmaster is PID 1's job.
alive_as_mxkeys() { ps -u mxkeys -o pid=,stat=,args= | awk '$2 !~ /^Z/'; }
for _ in $(seq 1 50); do [ -z "$(alive_as_mxkeys)" ] && break; sleep 0.2; done
[ -z "$(alive_as_mxkeys)" ] || fail "processes of user mxkeys left after the stop: $(alive_as_mxkeys)"

say "apt-get remove, then purge"
env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq mxkeys >/dev/null 2>&1 || fail "apt-get remove"
[ ! -e /usr/bin/mxkeysd ] || fail "/usr/bin/mxkeysd left after remove"
[ -f /etc/mxkeys/mxkeysd.env ] || fail "remove must keep the configuration"
env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq mxkeys >/dev/null 2>&1 || fail "apt-get purge"
INSTALLED=
dpkg-query -W -f='${Status}' mxkeys 2>/dev/null | grep -q 'installed\|config-files' && fail "mxkeys still known to dpkg"
for left in /etc/mxkeys /var/lib/mxkeys /lib/systemd/system/mxkeysd.service \
    /etc/systemd/system/multi-user.target.wants/mxkeysd.service /usr/share/doc/mxkeys; do
    [ ! -e "$left" ] || fail "$left left after purge"
done
dpkg-statoverride --list /etc/mxkeys/mxkeysd.env >/dev/null && fail "statoverride left after purge"
say "ok: built, lintian clean, installed, served an authenticated request, removed and purged"
