"""GET /keys/changes, the stream position, and the admin API that removes devices and users (both validation
modes)."""
import urllib.parse

import pytest
import requests
from conftest import assert_error
from keys_modes import any_server  # noqa: F401 (fixture)
from olmkeys import Device


def position(c):
    r = c.get("/_mxkeys/v1/stream_position")
    assert r.status_code == 200
    assert set(r.json()) == {"device_list"}
    token = r.json()["device_list"]
    assert token.startswith("mxk_dl_")
    return token


def changes(c, since, to=None):
    params = {"from": since} if to is None else {"from": since, "to": to}
    r = c.get("/keys/changes", params=params)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"changed", "left"} and r.json()["left"] == []
    return r.json()["changed"]


@pytest.mark.parametrize("bad", ["s72594_4483_1934", "mxk_dl_", "mxk_dl_12x", "12", "mxk_dl_-1", "mxk_dl_+1",
                                 "mxk_dl_ 1", "MXK_DL_1", "mxk_dl_1.0", "mxk_dl_99999999999999999999", "", "mxk_dl_01",
                                 "mxk_dl_1 ", "mxk_dl_\u0661"])
def test_changes_rejects_tokens_it_did_not_make(server, login, bad):
    _, _, c = login(server)
    err = assert_error(c.get("/keys/changes", params={"from": bad}), 400, "M_INVALID_PARAM")
    assert "from" in err["error"]
    err = assert_error(c.get("/keys/changes", params={"from": "mxk_dl_0", "to": bad}), 400, "M_INVALID_PARAM")
    assert "to" in err["error"]


def test_changes_tokens_and_errors(any_server, login):
    user, device_id, c = login(any_server)
    assert_error(c.get("/keys/changes"), 400, "M_MISSING_PARAM")
    assert_error(c.get("/keys/changes", params={"to": "mxk_dl_0"}), 400, "M_MISSING_PARAM")
    assert_error(requests.get(any_server.url + "/_mxkeys/v1/stream_position"), 401, "M_MISSING_TOKEN")
    start = position(c)
    dev = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    end = position(c)
    assert int(end[7:]) > int(start[7:])
    assert user in changes(c, start, end)
    assert user in changes(c, start)
    assert changes(c, end, end) == []
    assert user not in changes(c, end)
    # a range that ends before the change, and one that is backwards, see nothing
    assert user not in changes(c, "mxk_dl_0", start)
    assert changes(c, end, start) == []
    # a token from the future is accepted and sees nothing yet
    assert changes(c, "mxk_dl_999999999999") == []
    # a user with several changes is listed once
    other = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": other.device_keys()}).status_code == 200
    assert changes(c, start).count(user) == 1


def test_changes_respect_the_audience(any_server, pg, login):
    """A change recorded for one user only (a user-signing key change) is visible to that user alone."""
    owner, _, c_owner = login(any_server)
    _, _, c_other = login(any_server)
    start = position(c_owner)
    pg.psql(f"SELECT mx_record_device_change('{owner}', NULL, '{owner}')")
    assert owner in changes(c_owner, start)
    assert owner not in changes(c_other, start)


def admin(server, method, path, token="admintest"):
    return requests.request(method, server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def quote(s):
    return urllib.parse.quote(s, safe="")


def test_admin_delete_device_and_user(any_server, login, pg):
    user, device_id, c = login(any_server)
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(3), "fallback_keys": dev.fallback_keys()}
    assert c.post("/keys/upload", json=body).status_code == 200
    second = Device(user, "SECOND")
    c2 = login(any_server, user_id=user, device_id="SECOND")[2]
    assert c2.post("/keys/upload", json={"device_keys": second.device_keys(),
                                         "one_time_keys": second.one_time_keys(2)}).status_code == 200
    _, _, viewer = login(any_server)

    path = f"/_mxkeys/admin/v1/users/{quote(user)}/devices/{quote(device_id)}"
    assert_error(admin(any_server, "DELETE", path, token="wrong"), 401, "M_UNKNOWN_TOKEN")
    assert_error(requests.delete(any_server.url + path), 401, "M_MISSING_TOKEN")
    assert_error(admin(any_server, "DELETE", path, token=c.token), 401, "M_UNKNOWN_TOKEN")
    start = position(c)
    r = admin(any_server, "DELETE", path)
    assert r.status_code == 200 and r.json() == {}
    after = position(c)
    assert after != start
    assert admin(any_server, "DELETE", path).status_code == 200  # idempotent
    assert position(c) == after, "a second delete finds nothing and records nothing"
    q = viewer.post("/keys/query", json={"device_keys": {user: []}}).json()["device_keys"][user]
    assert list(q) == ["SECOND"]
    claim = viewer.post("/keys/claim", json={"one_time_keys": {user: {device_id: "signed_curve25519"}}}).json()
    assert claim["one_time_keys"] == {}, "one-time and fallback keys went with the device"
    assert user in changes(viewer, start)
    for table in ("device_keys", "one_time_keys", "fallback_keys", "claimed_one_time_keys"):
        assert pg.psql(f"SELECT count(*) FROM {table} WHERE user_id = '{user}' AND device_id = '{device_id}'") == "0"
    # the device id can be used again, from scratch
    again = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": again.device_keys()}).status_code == 200
    assert c.post("/keys/upload", json={}).json()["one_time_key_counts"] == {"signed_curve25519": 0}

    before_user = position(c)
    assert admin(any_server, "DELETE", f"/_mxkeys/admin/v1/users/{quote(user)}").status_code == 200
    assert viewer.post("/keys/query", json={"device_keys": {user: []}}).json()["device_keys"][user] == {}
    assert user in changes(viewer, before_user)
    after_user = position(c)
    assert admin(any_server, "DELETE", f"/_mxkeys/admin/v1/users/{quote(user)}").status_code == 200
    assert position(c) == after_user
    for table in ("device_keys", "one_time_keys", "fallback_keys", "claimed_one_time_keys"):
        assert pg.psql(f"SELECT count(*) FROM {table} WHERE user_id = '{user}'") == "0"
    # unknown users and devices: nothing to do, still 200
    assert admin(any_server, "DELETE", f"/_mxkeys/admin/v1/users/{quote('@nobody:localhost')}").status_code == 200
    assert admin(any_server, "DELETE", f"/_mxkeys/admin/v1/users/{quote(user)}/devices/NOPE").status_code == 200
    assert_error(admin(any_server, "DELETE", "/_mxkeys/admin/v1/users/not-a-user"), 400, "M_INVALID_PARAM")
    assert_error(admin(any_server, "DELETE", "/_mxkeys/admin/v1/users/not-a-user/devices/D"), 400,
                 "M_INVALID_PARAM")


def test_admin_api_disabled_without_admin_token(start_server, new_user):
    s = start_server()
    r = admin(s, "DELETE", f"/_mxkeys/admin/v1/users/{new_user()}")
    assert_error(r, 403, "M_FORBIDDEN")
    s.stop()
