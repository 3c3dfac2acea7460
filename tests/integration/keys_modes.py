"""Both validation modes for the key tests: `any_server` runs a test against the strict default server and against
one lenient server shared by the whole session (import the fixture into a test module to use it)."""
import pytest

_lenient = {}


def lenient_server(start_server):
    """The session's lenient server (started on first use, stopped with the others at session end)."""
    if "server" not in _lenient:
        _lenient["server"] = start_server(validation="lenient", admin_token="admintest")
    return _lenient["server"]


@pytest.fixture(params=["strict", "lenient"])
def any_server(request, server, start_server):
    s = server if request.param == "strict" else lenient_server(start_server)
    s.mode = request.param
    return s


def is_strict(server):
    return getattr(server, "mode", "strict") == "strict"
