"""Client errors raised in SQL (mx_client_error: SQLSTATE MXERR, DETAIL "<status> <errcode> [<extra members>]")
arrive as Matrix errors through one path, mx_call_db_error; extra members ride along with the error.

The wrong-version answer of a backup write was a normal result parsed again in C until issue 14; its bytes on the
wire are pinned here, as that code produced them."""
import json

import olm
import pytest
from conftest import assert_error

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
KEY = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
       "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"}}


def new_version(c):
    r = c.post("/room_keys/version", json={"algorithm": ALG, "auth_data": {"public_key": olm.PkDecryption().public_key}})
    assert r.status_code == 200, r.text
    return r.json()["version"]


@pytest.mark.parametrize("level", ["all", "room", "session"])
def test_a_write_to_an_old_backup_version_names_the_current_one(server, login, level):
    _, _, c = login(server)
    v1, v2 = new_version(c), new_version(c)
    path, body = {"all": ("/room_keys/keys", {"rooms": {"!r:x": {"sessions": {"s": KEY}}}}),
                  "room": ("/room_keys/keys/!r:x", {"sessions": {"s": KEY}}),
                  "session": ("/room_keys/keys/!r:x/s", KEY)}[level]
    r = c.put(path, params={"version": v1}, json=body)
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.content == ('{"errcode":"M_WRONG_ROOM_KEYS_VERSION","error":"writes go to the current backup version, '
                         f'which is {v2}","current_version":"{v2}"}}').encode()
    assert c.get(f"/room_keys/version/{v1}").json()["count"] == 0, "nothing was written"


def test_an_error_without_extra_members_has_errcode_and_error_only(server, login):
    _, _, c = login(server)
    new_version(c)
    # raised by mx_backup_update: the handler checked the body, only the database knows the versions
    r = c.put("/room_keys/version/99", json={"algorithm": ALG,
                                              "auth_data": {"public_key": olm.PkDecryption().public_key}})
    assert r.status_code == 404
    assert r.content == b'{"errcode":"M_NOT_FOUND","error":"no backup version 99"}'


def test_the_raised_error_carries_the_extra_members_in_its_detail(pg, server, login):
    """What mx_call_db_error reads: the error as PostgreSQL reports it to any client."""
    user, _, c = login(server)
    v1, v2 = new_version(c), new_version(c)
    with pytest.raises(AssertionError) as raised:
        pg.psql(f"SELECT mx_backup_put('{user}', {int(v1)}, '{{}}'::jsonb)")  # ids from the server: no quoting
    message = str(raised.value)
    assert "ERROR:  writes go to the current backup version, which is " + v2 in message
    detail = message.split("DETAIL:", 1)[1].strip().split("\n")[0]
    status, errcode, extra = detail.split(" ", 2)
    assert (status, errcode, json.loads(extra)) == ("403", "M_WRONG_ROOM_KEYS_VERSION", {"current_version": v2})
