"""The command-line contract: --help, --version, bad flags exit 2 with one line."""
import re
import subprocess
import time

from conftest import free_port


def run(binary, *args, env=None):
    return subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=30, env=env,
                          stdin=subprocess.DEVNULL)


FLAGS = ["--listen", "--server-name", "--database-url", "--state-dir", "--workers", "--db-connections",
         "--db-queue-depth", "--max-body-bytes", "--max-keys-per-request", "--max-otks-per-device", "--auth",
         "--homeserver-url", "--token-cache-ms", "--token-negative-ms", "--admin-token", "--validation", "--log-level"]


def test_help_lists_every_flag_with_env(mxkeysd_path):
    r = run(mxkeysd_path, "--help")
    assert r.returncode == 0 and r.stderr == ""
    listed = dict(re.findall(r"(--[a-z][a-z0-9-]*) \((MXKEYS_[A-Z0-9_]+)\)", r.stdout))
    for flag in FLAGS:
        assert flag in listed, flag
    for flag, env in listed.items():
        assert env == "MXKEYS_" + flag[2:].upper().replace("-", "_"), (flag, env)
    for sub in ["serve", "migrate", "token create", "token revoke"]:
        assert sub in r.stdout, sub
    assert run(mxkeysd_path, "-h").stdout == r.stdout


def test_version(mxkeysd_path):
    r = run(mxkeysd_path, "--version")
    assert r.returncode == 0 and re.fullmatch(r"mxkeysd \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout


def test_bad_flags_and_values_exit_2_with_one_line(mxkeysd_path):
    for args in [["--bogus"], ["serve", "--workers", "x"], ["serve", "--listen", "nope"], ["--auth", "magic"],
                 ["--auth", "homeserver"], ["serve", "--max-body-bytes", "-1"], ["frobnicate"],
                 ["token", "create", "--user", "not-a-user", "--device", "D"], ["serve", "--workers=3x"], ["serve", "--listen"],
                 ["serve", "--log-level", "loud"], ["serve", "--validation", "sloppy"], ["serve", "--workers", "0"],
                 ["token", "create", "--user", "@a:b"], ["token", "create", "--device", "D"], ["token", "revoke"]]:
        r = run(mxkeysd_path, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("mxkeysd: "), (args, r.stderr)


def test_bad_environment_value_exits_2(mxkeysd_path):
    import os
    env = dict(os.environ, MXKEYS_WORKERS="zero")
    r = run(mxkeysd_path, "serve", env=env)
    assert r.returncode == 2 and "MXKEYS_WORKERS" in r.stderr


def test_migrate_against_a_database_that_is_down_fails_fast(mxkeysd_path):
    t0 = time.monotonic()
    r = run(mxkeysd_path, "migrate", "--database-url", f"host=127.0.0.1 port={free_port()} user=mxkeys dbname=mxkeys")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert time.monotonic() - t0 < 25
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "database" in lines[0], r.stderr


def test_migrate_twice_applies_nothing_the_second_time(mxkeysd_path, pg):
    url = pg.conninfo
    r1 = run(mxkeysd_path, "migrate", "--database-url", url)
    assert r1.returncode == 0, r1.stderr
    rows = pg.psql("SELECT string_agg(name || '@' || applied_at::text, ',' ORDER BY name) FROM schema_migrations")
    assert rows
    r2 = run(mxkeysd_path, "migrate", "--database-url", url)
    assert r2.returncode == 0, r2.stderr
    assert pg.psql("SELECT string_agg(name || '@' || applied_at::text, ',' ORDER BY name) FROM schema_migrations") == rows
