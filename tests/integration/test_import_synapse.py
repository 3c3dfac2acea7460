"""`mxkeysd import synapse`: a fixture database with Synapse's layout is imported, imported again, changed and
imported again, interrupted and resumed; real Olm clients then open sessions with the claimed keys and restore the
backups from mxkeys as they would have from Synapse."""
import json
import re
import subprocess
import time

import olm
import pytest

from synapse_fixture import Fixture, create_database, lit
from olmkeys import Device


@pytest.fixture(scope="module")
def fx(pg):
    return Fixture(pg, "synapse_fixture")


@pytest.fixture(scope="module")
def mxdb(pg):
    return create_database(pg, "mxkeys_import")


@pytest.fixture(scope="module")
def srv(start_server, mxdb):
    return start_server(database_url=mxdb.conninfo, server_name="synapse.test", admin_token="admintest")


def run_import(srv, fx, *args):
    return srv.cli("import", "synapse", "--from", fx.conninfo, *args, check=False)


def summary(out):
    """{table: {read, written, unchanged, removed, skipped}} from the summary table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = dict(zip(("read", "written", "unchanged", "removed", "skipped"),
                                        map(int, m.groups()[1:])))
    assert "device_keys" in rows, out
    return rows


def query(client, user):
    r = client.post("/keys/query", json={"device_keys": {user: []}})
    assert r.status_code == 200, r.text
    body = r.json()
    return {k: body[k] for k in ("device_keys", "master_keys", "self_signing_keys", "user_signing_keys")}


def otk_count(client):
    r = client.post("/keys/upload", json={})
    assert r.status_code == 200, r.text
    return r.json()["one_time_key_counts"].get("signed_curve25519", 0)


def restore_and_read(fx, user, rooms):
    """Decrypts every backed-up session as a client restoring its backup would, and reads a message with it."""
    b = fx.backups[user]
    read = 0
    for room, r in rooms.items():
        for sid, s in r["sessions"].items():
            inbound = b.restore(s["session_data"])
            assert inbound.id == sid
            message, text = b.sessions[(room, sid)]
            assert inbound.decrypt(message)[0] == text
            read += 1
    return read


def test_dry_run_writes_nothing_and_users_filters(srv, fx, mxdb):
    r = run_import(srv, fx, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    assert s["device_keys"]["written"] == 4 and s["one_time_keys"]["written"] == 13
    assert s["device_keys"]["skipped"] == 1  # CAROLOLD: deleted in Synapse
    assert mxdb.run("SELECT count(*) FROM device_keys") == "0"
    assert mxdb.run("SELECT count(*) FROM backup_versions") == "0"
    r = run_import(srv, fx, "--dry-run", "--users", "^@bob:")
    s = summary(r.stdout)
    assert s["device_keys"]["read"] == 1 and s["one_time_keys"]["read"] == 4 and s["backup_sessions"]["read"] == 2


def test_import_then_clients_see_what_synapse_served(srv, fx, mxdb, client):
    r = run_import(srv, fx)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    assert s["device_keys"] == {"read": 5, "written": 4, "unchanged": 0, "removed": 0, "skipped": 1}
    assert s["cross_signing_keys"]["written"] == 6 and s["cross_signing_keys_history"]["written"] == 9
    assert s["backup_versions"]["written"] == 3 and s["backup_sessions"]["written"] == 5
    # the signature by alice's replaced self-signing key is reported (and kept, as Synapse serves it)
    assert re.search(r"invalid: @alice:synapse.test signature by .* on ALICE1: signing key .* not a current key",
                     r.stdout), r.stdout
    assert "duplicate row" in r.stdout

    clients = {}
    for user, device in ((fx.alice, "ALICE1"), (fx.bob, "BOB1"), (fx.carol, "CAROL1"), (fx.dave, "DAVE1")):
        clients[user] = client(srv, srv.mint(user, device))
        assert query(clients[user], user) == fx.expected_query(user)
    assert "CAROLOLD" not in query(clients[fx.carol], fx.carol)["device_keys"][fx.carol]
    assert otk_count(clients[fx.alice]) == fx.otk_count(fx.alice, "ALICE1") == 5
    assert otk_count(clients[fx.carol]) == 2
    assert mxdb.run("SELECT count(*) FROM one_time_keys WHERE device_id = 'CAROLOLD'") == "0"
    assert mxdb.run("SELECT device_id || ':' || used FROM fallback_keys ORDER BY 1") == "ALICE1:false\nBOB1:true"

    # bob claims alice's key: the oldest upload first; opens an Olm session that alice's own account accepts
    r = clients[fx.bob].post("/keys/claim", json={"one_time_keys": {fx.alice: {"ALICE1": "signed_curve25519"}}})
    assert r.status_code == 200, r.text
    (key_name, key), = r.json()["one_time_keys"][fx.alice]["ALICE1"].items()
    assert key_name == "signed_curve25519:" + sorted(fx.a1_batches[0])[0]
    olm.ed25519_verify(fx.a1.ed25519, json.dumps({"key": key["key"]}, separators=(",", ":")), key["signatures"][
        fx.alice]["ed25519:ALICE1"])
    outbound = olm.OutboundSession(fx.b1.account, fx.a1.curve25519, key["key"])
    message = outbound.encrypt("hello alice, from bob ✓")
    inbound = olm.InboundSession(fx.a1.account, message, fx.b1.curve25519)
    assert inbound.decrypt(message) == "hello alice, from bob ✓"

    # backups: the current version, its etag and count, every session restorable
    a = clients[fx.alice]
    v = a.get("/room_keys/version").json()
    assert (v["version"], v["etag"], v["count"], v["algorithm"]) == ("2", "5", 3, "m.megolm_backup.v1.curve25519-aes-sha2")
    assert v["auth_data"]["public_key"] == fx.backups[fx.alice].public_key
    assert a.get("/room_keys/version/1").status_code == 404
    rooms = a.get("/room_keys/keys", params={"version": "2"}).json()["rooms"]
    assert rooms == fx.backup_sessions(fx.alice, 2)
    assert restore_and_read(fx, fx.alice, rooms) == 3
    # a new version continues after Synapse's ids, deleted ones included
    bv = clients[fx.bob].get("/room_keys/version").json()
    assert (bv["version"], bv["etag"], bv["count"]) == ("1", "0", 2)
    assert restore_and_read(fx, fx.bob, clients[fx.bob].get("/room_keys/keys", params={"version": "1"}).json()[
        "rooms"]) == 2
    # the one-time key bob claimed is gone from mxkeys but still in the fixture: verify says so, and only that
    r = run_import(srv, fx, "--verify")
    assert r.returncode == 1
    assert [line for line in r.stdout.splitlines() if line.startswith("differs:")] == [
        f"differs: {fx.alice}: /keys/claim device and algorithm ALICE1\tsigned_curve25519: 5 one-time keys in Synapse, "
        "4 claimable in mxkeys"]
    # what Synapse does on a claim: the key goes
    fx.db.run("DELETE FROM e2e_one_time_keys_json WHERE device_id = 'ALICE1' AND key_id = "
              f"{lit(key_name.split(':')[1])}")


def test_reimport_writes_nothing_then_copies_what_changed(srv, fx, mxdb, client):
    r = run_import(srv, fx)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    assert all(row["written"] == 0 and row["removed"] == 0 for row in s.values()), r.stdout
    r = run_import(srv, fx, "--verify")
    assert r.returncode == 0 and ", 0 differences" in r.stdout, r.stdout

    # Synapse moves on: a claim there, a new device, a deleted device, a new backup session, a fallback used
    first_a2 = fx.db.run("SELECT key_id FROM e2e_one_time_keys_json WHERE device_id = 'ALICE2' ORDER BY key_id LIMIT 1")
    fx.db.run(f"DELETE FROM e2e_one_time_keys_json WHERE device_id = 'ALICE2' AND key_id = {lit(first_a2)}")
    b2 = fx.add_device(fx.bob, "BOB2", display_name="bob’s laptop")
    fx.add_otks(b2, 3, 3000)
    fx.db.flush()
    fx.db.run(f"DELETE FROM devices WHERE device_id = 'CAROL1'; DELETE FROM e2e_device_keys_json WHERE device_id = "
              "'CAROL1'; DELETE FROM e2e_one_time_keys_json WHERE device_id = 'CAROL1'")
    fx.add_backup_session(fx.alice, 2, "!room4:synapse.test", fx.a1, "a late message")
    fx.db.run(f"UPDATE e2e_room_keys_versions SET etag = 6 WHERE user_id = {lit(fx.alice)} AND version = 2")
    fx.db.run("UPDATE e2e_fallback_keys_json SET used = true WHERE device_id = 'ALICE1'")

    r = run_import(srv, fx)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    assert s["one_time_keys"]["removed"] == 1  # claimed on ALICE2 (CAROL1's went with the device)
    assert s["one_time_keys"]["written"] == 3
    assert s["device_keys"]["written"] == 1 and s["device_keys"]["removed"] == 1
    assert s["backup_sessions"]["written"] == 1 and s["fallback_keys"]["written"] == 1
    assert mxdb.run(f"SELECT count(*) FROM claimed_one_time_keys WHERE device_id = 'ALICE2' AND key_id = "
                     f"{lit(first_a2)}") == "1"

    a = client(srv, srv.mint(fx.alice, "ALICE2"))
    assert otk_count(a) == 1
    bob = client(srv, srv.mint(fx.bob, "BOB2"))
    assert query(bob, fx.bob) == fx.expected_query(fx.bob)
    assert otk_count(bob) == 3
    carol = client(srv, srv.mint(fx.carol, "X"))
    assert query(carol, fx.carol)["device_keys"] == {fx.carol: {}}
    v = a.get("/room_keys/version").json()
    assert (v["version"], v["etag"], v["count"]) == ("2", "6", 4)
    assert restore_and_read(fx, fx.alice, a.get("/room_keys/keys", params={"version": "2"}).json()["rooms"]) == 4
    # the next run of an unchanged Synapse changes nothing, and what mxkeys serves is what Synapse implies
    r = run_import(srv, fx, "--verify")
    assert r.returncode == 0 and ", 0 differences" in r.stdout, r.stdout
    changes = mxdb.run("SELECT count(*) FROM device_list_changes")
    s = summary(run_import(srv, fx).stdout)
    assert all(row["written"] == 0 and row["removed"] == 0 for row in s.values())
    assert mxdb.run("SELECT count(*) FROM device_list_changes") == changes


def test_what_clients_changed_in_mxkeys_is_left_alone(srv, fx, mxdb, client):
    # ALICE2 is reinstalled against mxkeys: new device keys and one-time keys, uploaded to mxkeys itself
    fresh = Device(fx.alice, "ALICE2")
    fresh.one_time_keys(10)  # libolm numbers key ids per account: move past the ids the old account used
    a = client(srv, srv.mint(fx.alice, "ALICE2"))
    r = a.post("/keys/upload", json={"device_keys": fresh.device_keys(), "one_time_keys": fresh.one_time_keys(2)})
    assert r.status_code == 200, r.text
    # and alice creates a backup version through mxkeys
    r = a.post("/room_keys/version", json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                                           "auth_data": {"public_key": fx.backups[fx.alice].public_key}})
    assert r.status_code == 200 and r.json()["version"] == "3", r.text
    # meanwhile Synapse still gets one-time keys of the old ALICE2 and a session in the old backup
    fx.add_otks(fx.a2, 2, 4000)
    fx.add_backup_session(fx.alice, 2, "!room5:synapse.test", fx.a1, "older news")
    fx.db.flush()

    r = run_import(srv, fx)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"skipped 1: device changed in mxkeys since the last import", r.stdout), r.stdout
    s = summary(r.stdout)
    assert s["device_keys"]["written"] == 0 and s["one_time_keys"]["written"] == 0
    assert s["backup_sessions"]["written"] == 0
    assert query(a, fx.alice)["device_keys"][fx.alice]["ALICE2"]["keys"] == fresh.device_keys()["keys"]
    assert otk_count(a) == 1 + 2  # the imported key still unclaimed, and the two uploaded to mxkeys
    assert a.get("/room_keys/version").json()["version"] == "3"
    r = run_import(srv, fx, "--verify")
    assert r.returncode == 1
    assert re.search(r"differs: @alice:synapse.test: /keys/query device ALICE2: Synapse implies", r.stdout), r.stdout


def test_invalid_keys_are_reported_and_skipped_on_request(srv, pg, start_server, client):
    fx = Fixture(pg, "synapse_invalid")
    # a one-time key whose signature no longer matches its content
    fx.db.run("UPDATE e2e_one_time_keys_json SET key_json = replace(key_json, '\"key\": \"', '\"key\": \"A') "
              "WHERE device_id = 'BOB1' AND key_id = (SELECT min(key_id) FROM e2e_one_time_keys_json "
              "WHERE device_id = 'BOB1')")
    db = create_database(pg, "mxkeys_invalid")
    s2 = start_server(database_url=db.conninfo, server_name="synapse.test")
    r = s2.cli("import", "synapse", "--from", fx.conninfo, "--invalid-keys", "skip", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"invalid: @bob:synapse.test device BOB1 one-time key signed_curve25519:\S+: signature by the "
                     r"device key: signature does not match \(skipped\)", r.stdout), r.stdout
    s = summary(r.stdout)
    assert s["one_time_keys"]["written"] == 12 and s["cross_signatures"]["skipped"] >= 1
    bob = client(s2, s2.mint(fx.bob, "BOB1"))
    assert otk_count(bob) == 3
    # the signature by alice's replaced self-signing key is gone too
    alice = client(s2, s2.mint(fx.alice, "ALICE1"))
    sigs = query(alice, fx.alice)["device_keys"][fx.alice]["ALICE1"]["signatures"][fx.alice]
    assert f"ed25519:{fx.cs[fx.alice].self_signing.public_key}" in sigs and len(sigs) == 2


def test_interrupted_import_resumes(srv, pg, start_server):
    fx = Fixture(pg, "synapse_many")
    users = [f"@u{i:03d}:synapse.test" for i in range(40)]
    for u in users:
        d = fx.add_device(u, "DEV")
        fx.add_otks(d, 5, 1000)
    fx.db.flush()
    db = create_database(pg, "mxkeys_resume")
    s2 = start_server(database_url=db.conninfo, server_name="synapse.test")
    # hold the import at user 20 (the importer takes this lock for the user's transaction), kill it there
    holder = subprocess.Popen(["/usr/lib/postgresql/15/bin/psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                               "mxkeys", "-d", "mxkeys_resume", "-q"], stdin=subprocess.PIPE, text=True,
                              stdout=subprocess.DEVNULL)
    holder.stdin.write(f"SELECT pg_advisory_lock(72836, hashtext({lit(users[20])}));\n")
    holder.stdin.flush()
    argv = [s2.binary, "import", "synapse", "--from", fx.conninfo, "--database-url", db.conninfo]
    time.sleep(0.5)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while db.run("SELECT count(*) FROM import_synapse_users WHERE user_id LIKE '@u%'") != "20":
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # waiting for the lock, in user 20's transaction
        proc.kill()
        proc.wait()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert db.run("SELECT count(*) FROM device_keys WHERE user_id LIKE '@u%'") == "20"
    assert db.run("SELECT count(*) FROM one_time_keys WHERE user_id LIKE '@u%'") == "100"
    r = s2.cli("import", "synapse", "--from", fx.conninfo, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(r.stdout)
    # the first run committed alice, bob, carol (4 devices, 13 one-time keys), dave and 20 of the 40
    assert s["device_keys"]["written"] == 20 and s["device_keys"]["unchanged"] == 20 + 4
    assert s["one_time_keys"]["written"] == 100 and s["one_time_keys"]["unchanged"] == 100 + 13
    r = s2.cli("import", "synapse", "--from", fx.conninfo, "--verify", check=False)
    assert r.returncode == 0 and ", 0 differences" in r.stdout, r.stdout


def test_import_flags_are_checked(mxkeysd_path):
    def run(*args):
        return subprocess.run([mxkeysd_path, "import", *args], capture_output=True, text=True, timeout=30)

    for args, message in ((["synapse"], "--from is required"),
                          (["synapse", "--from", "x", "--invalid-keys", "maybe"], "expected import or skip"),
                          (["synapse", "--from", "x", "--dry-run", "--verify"], "exclude each other"),
                          (["dendrite", "--from", "x"], "expected synapse")):
        r = run(*args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    r = subprocess.run([mxkeysd_path, "--help"], capture_output=True, text=True, timeout=30)
    assert "import synapse --from" in r.stdout
