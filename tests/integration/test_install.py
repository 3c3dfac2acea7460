"""`meson install` puts mxkeysd, its systemd unit, the environment file, the manual page and the docs in the standard
places, following --prefix and --sysconfdir, and the installed unit passes `systemd-analyze verify`."""
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

EXPECTED = [
    "usr/lib/systemd/system/mxkeysd.service",
    "etc/mxkeys/mxkeysd.env",
    "usr/share/man/man8/mxkeysd.8",
    "usr/share/doc/mxkeys/README.md",
    "usr/share/doc/mxkeys/SCALE-OUT.md",
    "usr/share/doc/mxkeys/api/openapi.yaml",
    "usr/share/doc/mxkeys/api/paths/keys.yaml",
    "usr/share/doc/mxkeys/examples/mxkeysd.env.example",
    "usr/share/doc/mxkeys/examples/nginx/mxkeys-locations.conf",
    "usr/share/doc/mxkeys/examples/grafana/mxkeys.json",
    "usr/share/doc/mxkeys/examples/prometheus/mxkeys-alerts.yml",
]


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **kw)
    assert r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
    return r


@pytest.fixture
def installed(mxkeysd_path):
    """A fresh configuration with its own prefix and sysconfdir, its data files installed there (no rebuild: the
    binary under test is copied to bindir)."""
    root = tempfile.mkdtemp(prefix="mxkeys-install-", dir="/tmp")
    try:
        run(["meson", "setup", os.path.join(root, "build"), "--prefix", os.path.join(root, "usr"),
             "--sysconfdir", os.path.join(root, "etc"), "-Dintegration=false"], cwd=REPO)
        run(["meson", "install", "-C", os.path.join(root, "build"), "--no-rebuild", "--quiet",
             "--tags", "systemd,config,man,doc"])
        os.makedirs(os.path.join(root, "usr", "bin"))
        shutil.copy2(mxkeysd_path, os.path.join(root, "usr", "bin", "mxkeysd"))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_files_land_under_prefix_and_sysconfdir(installed):
    missing = [p for p in EXPECTED if not os.path.isfile(os.path.join(installed, p))]
    assert not missing, f"not installed: {missing}"
    unit = open(os.path.join(installed, "usr/lib/systemd/system/mxkeysd.service")).read()
    assert f"ExecStart={installed}/usr/bin/mxkeysd serve\n" in unit
    assert f"EnvironmentFile={installed}/etc/mxkeys/mxkeysd.env\n" in unit
    assert "Type=notify\n" in unit and "@bindir@" not in unit and "@sysconfdir@" not in unit
    env = os.path.join(installed, "etc/mxkeys/mxkeysd.env")
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o640, "the environment file may hold secrets: 0640"


def test_environment_file_is_accepted_by_mxkeysd(installed):
    """Every active line of the shipped environment file is a valid setting (a bad one would stop start-up)."""
    env = {}
    for line in open(os.path.join(installed, "etc/mxkeys/mxkeysd.env")):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    assert env.get("MXKEYS_LISTEN") == "127.0.0.1:8088"
    r = subprocess.run([os.path.join(installed, "usr/bin/mxkeysd"), "--version"], env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) not installed")
def test_installed_unit_passes_systemd_analyze_verify(installed):
    unit = os.path.join(installed, "usr/lib/systemd/system/mxkeysd.service")
    # verify runs `man mxkeysd(8)` for Documentation= and checks that ExecStart exists: both point into the prefix.
    env = dict(os.environ, MANPATH=os.path.join(installed, "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    r = subprocess.run(["systemd-analyze", "verify", unit], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "mxkeysd.service" not in r.stderr, r.stderr


def test_meson_install_of_the_build_puts_the_binary_in_bindir(mxkeysd_path):
    """The build under test, installed with a DESTDIR: the binary lands in bindir and runs."""
    build = os.path.dirname(mxkeysd_path)
    if not os.path.exists(os.path.join(build, "meson-info", "intro-installed.json")):
        pytest.skip("MXKEYSD is not inside a meson build directory")
    dest = tempfile.mkdtemp(prefix="mxkeys-destdir-", dir="/tmp")
    try:
        run(["meson", "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", dest])
        options = run(["meson", "introspect", "--buildoptions", build]).stdout
        opts = {o["name"]: o["value"] for o in json.loads(options)}
        binary = os.path.join(dest + opts["prefix"], opts["bindir"], "mxkeysd")
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith("mxkeysd "), r.stderr
        assert os.path.isfile(os.path.join(dest + opts["prefix"], opts["mandir"], "man8", "mxkeysd.8"))
    finally:
        shutil.rmtree(dest, ignore_errors=True)
