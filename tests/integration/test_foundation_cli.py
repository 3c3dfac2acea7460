"""The command-line contract: --help, --version, bad flags exit 2 with one line."""
import subprocess


def run(binary, *args, env=None):
    return subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=30, env=env,
                          stdin=subprocess.DEVNULL)


def test_help_lists_every_flag_with_env(mxkeysd_path):
    r = run(mxkeysd_path, "--help")
    assert r.returncode == 0
    for flag in ["--listen", "--server-name", "--database-url", "--state-dir", "--workers", "--db-connections",
                 "--max-body-bytes", "--auth", "--homeserver-url", "--log-level", "--validation", "--admin-token"]:
        assert flag in r.stdout, flag
    assert "MXKEYS_LISTEN" in r.stdout


def test_version(mxkeysd_path):
    r = run(mxkeysd_path, "--version")
    assert r.returncode == 0 and r.stdout.startswith("mxkeysd ")


def test_bad_flags_and_values_exit_2_with_one_line(mxkeysd_path):
    for args in [["--bogus"], ["serve", "--workers", "x"], ["serve", "--listen", "nope"], ["--auth", "magic"],
                 ["--auth", "homeserver"], ["serve", "--max-body-bytes", "-1"], ["frobnicate"],
                 ["token", "create", "--user", "not-a-user", "--device", "D"]]:
        r = run(mxkeysd_path, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("mxkeysd: "), (args, r.stderr)


def test_bad_environment_value_exits_2(mxkeysd_path):
    import os
    env = dict(os.environ, MXKEYS_WORKERS="zero")
    r = run(mxkeysd_path, "serve", env=env)
    assert r.returncode == 2 and "MXKEYS_WORKERS" in r.stderr
