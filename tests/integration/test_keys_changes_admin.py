"""GET /keys/changes, the stream position, and the admin API that removes devices and users."""
import requests
from conftest import assert_error
from olmkeys import Device


def position(c):
    r = c.get("/_mxkeys/v1/stream_position")
    assert r.status_code == 200
    token = r.json()["device_list"]
    assert token.startswith("mxk_dl_")
    return token


def test_changes_tokens_and_errors(server, login):
    user, device_id, c = login(server)
    assert_error(c.get("/keys/changes"), 400, "M_MISSING_PARAM")
    for bad in ["s72594_4483_1934", "mxk_dl_", "mxk_dl_12x", "12"]:
        assert_error(c.get("/keys/changes", params={"from": bad}), 400, "M_INVALID_PARAM")
    assert_error(c.get("/keys/changes", params={"from": "mxk_dl_0", "to": "nope"}), 400, "M_INVALID_PARAM")
    start = position(c)
    dev = Device(user, device_id)
    assert c.post("/keys/upload", json={"device_keys": dev.device_keys()}).status_code == 200
    end = position(c)
    r = c.get("/keys/changes", params={"from": start, "to": end})
    assert r.status_code == 200
    assert user in r.json()["changed"] and r.json()["left"] == []
    assert c.get("/keys/changes", params={"from": end, "to": end}).json() == {"changed": [], "left": []}
    assert user not in c.get("/keys/changes", params={"from": end}).json()["changed"]


def admin(server, method, path, token="admintest"):
    return requests.request(method, server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_admin_delete_device_and_user(server, login):
    user, device_id, c = login(server)
    dev = Device(user, device_id)
    body = {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(3), "fallback_keys": dev.fallback_keys()}
    assert c.post("/keys/upload", json=body).status_code == 200
    second = Device(user, "SECOND")
    c2 = login(server, user_id=user, device_id="SECOND")[2]
    assert c2.post("/keys/upload", json={"device_keys": second.device_keys()}).status_code == 200

    path = f"/_mxkeys/admin/v1/users/{user}/devices/{device_id}"
    assert_error(admin(server, "DELETE", path, token="wrong"), 401, "M_UNKNOWN_TOKEN")
    assert_error(requests.delete(server.url + path), 401, "M_MISSING_TOKEN")
    assert_error(admin(server, "DELETE", path, token=c.token), 401, "M_UNKNOWN_TOKEN")
    start = position(c)
    assert admin(server, "DELETE", path).status_code == 200
    after = position(c)
    assert after != start
    assert admin(server, "DELETE", path).status_code == 200  # idempotent
    assert position(c) == after, "a second delete finds nothing and records nothing"
    q = c.post("/keys/query", json={"device_keys": {user: []}}).json()["device_keys"][user]
    assert list(q) == ["SECOND"]
    claim = c.post("/keys/claim", json={"one_time_keys": {user: {device_id: "signed_curve25519"}}}).json()
    assert claim["one_time_keys"] == {}
    assert user in c.get("/keys/changes", params={"from": start}).json()["changed"]

    assert admin(server, "DELETE", f"/_mxkeys/admin/v1/users/{user}").status_code == 200
    assert c.post("/keys/query", json={"device_keys": {user: []}}).json()["device_keys"][user] == {}
    assert_error(admin(server, "DELETE", "/_mxkeys/admin/v1/users/not-a-user"), 400, "M_INVALID_PARAM")


def test_admin_api_disabled_without_admin_token(start_server, new_user):
    s = start_server()
    r = admin(s, "DELETE", f"/_mxkeys/admin/v1/users/{new_user()}")
    assert_error(r, 403, "M_FORBIDDEN")
