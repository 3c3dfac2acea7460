"""doc/mxkeysd.8 stays in step with `mxkeysd --help`: every flag (and its variable) has an OPTIONS entry, the page
lists no flag the binary lacks, and groff renders it without a warning."""
import os
import re
import shutil
import subprocess

import pytest

MANPAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "doc", "mxkeysd.8")


def help_flags(mxkeysd_path):
    r = subprocess.run([mxkeysd_path, "--help"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    flags = dict(re.findall(r"^  --([a-z0-9-]+) \((MXKEYS_[A-Z0-9_]+)\)$", r.stdout, re.M))
    assert len(flags) >= 20, f"--help changed shape; parsed only {flags}"
    # The usage lines name the flags that take no variable.
    flags.update({f: None for f in re.findall(r"--(help|version)\b", r.stdout)})
    return flags


def manpage_options():
    """{flag: the text of its .TP entry} from the OPTIONS section, roff escapes undone."""
    text = open(MANPAGE).read()
    section = re.search(r"^\.SH OPTIONS\n(.*?)^\.SH ", text, re.M | re.S)
    assert section, "no OPTIONS section"
    entries = {}
    for entry in section.group(1).split(".TP\n")[1:]:
        head = entry.split("\n", 1)[0].replace("\\-", "-")
        m = re.match(r"^\.B[IR]? --([a-z0-9-]+)", head)
        assert m, f"an OPTIONS entry does not start with a flag: {head!r}"
        entries[m.group(1)] = entry.replace("\\-", "-")
    return entries


def test_every_flag_of_help_is_in_the_manual_page(mxkeysd_path):
    flags = help_flags(mxkeysd_path)
    entries = manpage_options()
    missing = sorted(set(flags) - set(entries))
    assert not missing, f"flags of `mxkeysd --help` missing from doc/mxkeysd.8: {missing}"
    extra = sorted(set(entries) - set(flags))
    assert not extra, f"doc/mxkeysd.8 describes flags mxkeysd does not have: {extra}"
    for flag, var in flags.items():
        if var is not None:
            assert re.search(rf"\b{var}\b", entries[flag]), f"--{flag}: its variable {var} is not named"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff (groff-base) not installed")
def test_manual_page_renders_without_warnings():
    r = subprocess.run(["groff", "-man", "-ww", "-z", MANPAGE], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
