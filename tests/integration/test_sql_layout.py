"""The SQL layout (docs/ARCHITECTURE.md, "the migration/function rule"): schema migrations in sql/NNN_*.sql,
checksummed; every mx_* function once in sql/functions/<family>.sql, applied on every start.

The evidence that moving the functions out of the migrations changed nothing it should not have is a database built
by the migrations as they stood before (tests/integration/data/sql-before-14/, applied the way that mxkeysd applied
them), compared catalog by catalog with one built by today's mxkeysd, and upgraded in place with data in it.
"""
import difflib
import glob
import hashlib
import json
import os
import re
import secrets
import subprocess

import olm
import pytest
from conftest import PG_BIN, REPO, HERE, Client, assert_error
from olmkeys import CrossSigning, Device

BEFORE_14 = os.path.join(HERE, "data", "sql-before-14")
SQL = os.path.join(REPO, "sql")
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"

# The functions changed on purpose since the frozen copy, with why; every other definition is byte for byte the one
# before.
CHANGED_ON_PURPOSE = {
    "mx_xsign_upload(p_user text, p_keys jsonb, p_expect_master text)":
        "a new current key through mx_xsign_set_current, the rule it shares with the import",
    "mx_import_begin(p_user text, p_doc jsonb)":
        "a new current cross-signing key through mx_xsign_set_current, as an upload does",
    "mx_identity_begin(p_users text[], p_ttl_ms integer)":
        "a comment in its body: why the marker's asynchronous commit loses nothing across a failover (issue 13)",
    "mx_backup_put(p_user text, p_version bigint, p_rooms jsonb)":
        "a write to a non-current version is raised, and the replacement rule is mx_backup_session_is_better",
    "mx_client_error(status integer, errcode text, message text)": "calls the form with extra members",
    "mx_keys_query(p_viewer text, p_wanted jsonb)": "the visibility rule of signatures is mx_signature_visible",
}
# Schema objects (pg_dump names) added since: the query cache's feed (issue 15), attached by its function file.
SCHEMA_ADDED_ON_PURPOSE = {f"{t} {t}_query_cache_feed; Type: TRIGGER; Schema: public"
                           for t in ("device_keys", "cross_signing_keys", "cross_signatures", "identity_writes_pending")}
ADDED_ON_PURPOSE = {
    "mx_xsign_set_current(p_user text, p_usage text, p_old_public_key text, p_public_key text, p_key_json jsonb)",
    "mx_backup_session_is_better(new backup_sessions, old backup_sessions)",
    "mx_client_error(status integer, errcode text, message text, extra jsonb)",
    "mx_signature_visible(p_viewer text, p_signer text, p_owner text)",
    "mx_keys_query_parts(p_wanted jsonb, p_settle boolean)",
    "mx_query_cache_notify_user()",
    "mx_query_cache_notify_target()",
}


class Database:
    """A database of its own on the session cluster."""

    def __init__(self, pg, label):
        self.pg = pg
        self.name = f"{label}_{secrets.token_hex(4)}"
        pg.psql(f"CREATE DATABASE {self.name}")
        self.conninfo = f"host=127.0.0.1 port={pg.port} user=mxkeys dbname={self.name}"

    def psql(self, script, options=(), **variables):
        """Runs a psql script (from stdin, so that it may use \\i and variables); keyword arguments become psql
        variables, used in the script as :'name' (quoted by psql: the values are never spliced into SQL text)."""
        argv = [f"{PG_BIN}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo] + list(options)
        for k, v in variables.items():
            argv += ["-v", f"{k}={v}"]
        if not script.rstrip().endswith(";"):
            script += ";"
        r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"psql failed: {r.stderr}\n{script[:300]}"
        return r.stdout.strip()

    def functions(self):
        """{"name(identity arguments)": pg_get_functiondef} for every mx_* function."""
        rows = self.psql("SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', "
                         "pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE n.nspname = 'public' AND p.proname LIKE 'mx\\_%' ORDER BY 1", options=("-F", "\x1f", "-R", "\x1e"))
        return dict(row.split("\x1f", 1) for row in rows.split("\x1e") if row)

    def schema(self):
        """pg_dump --schema-only cut into its objects ({"<name>; Type: <type>": text}), functions left out (see
        functions()); the random \\restrict keys of the dump and its preamble are no part of the schema."""
        r = subprocess.run([f"{PG_BIN}/pg_dump", "--schema-only", "--no-owner", "-d", self.conninfo],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        text = "\n".join(line for line in r.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))
        objects = {}
        for part in re.split(r"^-- Name: ", text, flags=re.M)[1:]:
            header, _, body = part.partition("\n")
            key = re.sub(r"; Owner: .*$", "", header)
            if "; Type: FUNCTION;" not in key:
                body = body.split("\n--\n-- PostgreSQL database dump complete")[0]  # the dump's epilogue
                objects[key] = body.strip("-\n ")
        return objects


def build_before_14(db):
    """What mxkeysd did before issue 14: the bookkeeping table, then each file in its own transaction."""
    db.psql("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    files = sorted(glob.glob(os.path.join(BEFORE_14, "*.sql")))
    assert [os.path.basename(f) for f in files] == sorted(os.path.basename(f) for f in migration_files())[:len(files)]
    for path in files:
        db.psql(f"BEGIN;\n\\i {path}\nINSERT INTO schema_migrations (name) VALUES (:'name');\nCOMMIT;\n",
                name=os.path.basename(path))


def migration_files():
    return sorted(glob.glob(os.path.join(SQL, "[0-9][0-9][0-9]_*.sql")))


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def migrate(binary, db, check=True):
    r = subprocess.run([binary, "migrate", "--database-url", db.conninfo], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def differences(a, b):
    """A readable account of where two {key: text} maps differ (the first few)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"== {k}\n" + "\n".join(difflib.unified_diff((a.get(k) or "").splitlines(),
                                                                     (b.get(k) or "").splitlines(), lineterm="")))
    return "\n".join(out[:5])


@pytest.fixture(scope="module")
def fresh(pg, mxkeysd_path):
    """A database built by today's sql/ (mxkeysd migrate on an empty database)."""
    db = Database(pg, "fresh")
    migrate(mxkeysd_path, db)
    return db


# ---- the layout itself ---------------------------------------------------------------------------------------------

def statements(path):
    with open(path) as f:
        text = f.read()
    return re.sub(r"--[^\n]*", "", text)  # comments may name functions freely


def test_migrations_hold_no_function_definitions():
    for path in migration_files():
        code = statements(path)
        assert not re.search(r"\b(CREATE|ALTER)\s+(OR\s+REPLACE\s+)?FUNCTION\b", code, re.I), \
            f"{os.path.basename(path)} defines a function: functions live in sql/functions/"
        assert not re.search(r"\bCREATE\s+TRIGGER\b", code, re.I), \
            f"{os.path.basename(path)}: a trigger is attached beside its function, in sql/functions/"


def test_every_function_is_defined_once_in_the_function_files(fresh):
    defined = {}
    for path in sorted(glob.glob(os.path.join(SQL, "functions", "*.sql"))):
        code = statements(path)
        assert not re.search(r"\bCREATE\s+FUNCTION\b", code, re.I), f"{path}: CREATE OR REPLACE, applied every start"
        for name in re.findall(r"\bCREATE\s+OR\s+REPLACE\s+FUNCTION\s+(\w+)\(", code, re.I):
            defined.setdefault(name, []).append(os.path.basename(path))
    in_db = {}
    for signature in fresh.functions():
        in_db.setdefault(signature.split("(")[0], []).append(signature)
    assert set(defined) == set(in_db), "every mx_* function in a database comes from sql/functions/, and only those"
    for name, files in defined.items():
        # one file per name; a second CREATE in that file is an overload, which the database must hold as such
        assert len(set(files)) == 1, f"{name} is defined in {files}"
        assert len(files) == len(in_db[name]), f"{name} is created {len(files)} times for {in_db[name]}"


# ---- (a) the new layout builds what the old migrations built --------------------------------------------------------

def test_new_layout_builds_the_schema_and_functions_of_the_migrations_before_14(pg, fresh):
    old = Database(pg, "before14")
    build_before_14(old)

    old_schema, new_schema = old.schema(), fresh.schema()
    # the bookkeeping table is the one thing that changed shape: it records checksums now
    bookkeeping = "schema_migrations; Type: TABLE; Schema: public"
    assert "sha256 text" in new_schema.pop(bookkeeping) and "sha256" not in old_schema.pop(bookkeeping)
    assert len(old_schema) > 40, "the dump was cut into its objects"
    added = {k: new_schema.pop(k, None) for k in SCHEMA_ADDED_ON_PURPOSE}
    assert all(added.values()), f"listed as added but missing: {[k for k, v in added.items() if not v]}"
    assert old_schema == new_schema, differences(old_schema, new_schema)

    old_fns, new_fns = old.functions(), fresh.functions()
    assert set(new_fns) - set(old_fns) == ADDED_ON_PURPOSE
    assert set(old_fns) <= set(new_fns), f"dropped: {set(old_fns) - set(new_fns)}"
    changed = {k for k in old_fns if old_fns[k] != new_fns[k]}
    unexpected = {k: old_fns[k] for k in changed - set(CHANGED_ON_PURPOSE)}
    assert not unexpected, differences(unexpected, {k: new_fns[k] for k in unexpected})
    assert changed == set(CHANGED_ON_PURPOSE), "a change listed on purpose that is not there: update the list"


# ---- (b) an upgrade in place, with data --------------------------------------------------------------------------

def key_data(index, verified=False):
    return {"first_message_index": index, "forwarded_count": 0, "is_verified": verified,
            "session_data": {"ciphertext": f"c{index}", "ephemeral": "e", "mac": "m"}}


def test_upgrade_from_before_14_keeps_and_serves_the_data(pg, fresh, start_server, new_user):
    old = Database(pg, "upgrade")
    build_before_14(old)

    # Data as the old mxkeysd wrote it: through the old functions, with real olm keys.
    alice = Device(new_user(), "ALICEDEV")
    dk = alice.device_keys(display_name="Alice's phone")
    otks = alice.one_time_keys(2)
    fallback = alice.fallback_keys()
    old.psql("SELECT mx_keys_upload(:'u', :'d', :'dk'::jsonb, :'otks'::jsonb, :'fb'::jsonb, 100)",
             u=alice.user_id, d=alice.device_id, dk=json.dumps(dk), otks=json.dumps(otks), fb=json.dumps(fallback))
    xs = CrossSigning(alice.user_id)
    body = xs.upload_body()
    old.psql("SELECT mx_xsign_upload(:'u', :'keys'::jsonb, NULL)", u=alice.user_id, keys=json.dumps(
        {"master": body["master_key"], "self_signing": body["self_signing_key"],
         "user_signing": body["user_signing_key"]}))
    auth_data = {"public_key": olm.PkDecryption().public_key}
    assert old.psql("SELECT mx_backup_create(:'u', :'alg', :'auth'::jsonb)", u=alice.user_id, alg=ALG,
                    auth=json.dumps(auth_data)) == "1"
    written = json.loads(old.psql("SELECT mx_backup_put(:'u', 1, :'rooms'::jsonb)", u=alice.user_id,
                                  rooms=json.dumps({"!r:x": {"sessions": {"s1": key_data(5)}}})))
    assert written == {"etag": "1", "count": 1}
    token = "mxk_" + secrets.token_urlsafe(32)
    old.psql("INSERT INTO access_tokens (user_id, device_id, token_hash) "
                   "VALUES (:'u', :'d', sha256(convert_to(:'t', 'UTF8')))", u=alice.user_id, d=alice.device_id,
             t=token)
    assert old.psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                          "information_schema.columns WHERE table_name = 'schema_migrations'") == "name,applied_at"

    server = start_server(database_url=old.conninfo, admin_token="admintest")
    assert "recorded the checksums of 9 migrations applied before checksums existed" in server.stderr_text()

    # The database is now the one a fresh start builds, bookkeeping included.
    recorded = dict(line.split("|") for line in old.psql("SELECT name, sha256 FROM schema_migrations").split())
    assert recorded == {os.path.basename(p): sha256_of(p) for p in migration_files()}
    assert old.functions() == fresh.functions(), differences(old.functions(), fresh.functions())
    assert old.schema() == fresh.schema(), differences(old.schema(), fresh.schema())

    # And it serves what it held.
    c = Client(server, token)
    bob_id = new_user()
    bob = Client(server, server.mint(bob_id, "BOBDEV"))
    r = bob.post("/keys/query", json={"device_keys": {alice.user_id: []}})
    assert r.status_code == 200, r.text
    served = r.json()
    assert served["device_keys"][alice.user_id] == {
        alice.device_id: {**dk, "unsigned": {"device_display_name": "Alice's phone"}}}
    assert served["master_keys"][alice.user_id] == body["master_key"]
    assert served["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert alice.user_id not in served["user_signing_keys"], "another user's user-signing key stays private"

    claimed = []
    for _ in range(3):
        r = bob.post("/keys/claim", json={"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
        assert r.status_code == 200, r.text
        claimed.append(r.json()["one_time_keys"][alice.user_id][alice.device_id])
    assert {k: v for got in claimed[:2] for k, v in got.items()} == otks, "the stored one-time keys, each once"
    assert claimed[2] == fallback, "then the fallback key"

    r = c.get("/room_keys/version")
    assert r.status_code == 200, r.text
    assert r.json() == {"algorithm": ALG, "auth_data": auth_data, "count": 1, "etag": "1", "version": "1"}
    assert c.get("/room_keys/keys/!r:x/s1", params={"version": "1"}).json() == key_data(5)
    # the replacement rule, now a function of its own, on data written before it existed
    worse = c.put("/room_keys/keys/!r:x/s1", params={"version": "1"}, json=key_data(9))
    assert worse.json() == {"etag": "1", "count": 1}, "a worse key changes nothing"
    better = c.put("/room_keys/keys/!r:x/s1", params={"version": "1"}, json=key_data(2, verified=True))
    assert better.json() == {"etag": "2", "count": 1}
    assert c.get("/room_keys/keys/!r:x/s1", params={"version": "1"}).json() == key_data(2, verified=True)

    # a second start finds nothing to do and changes nothing
    server.stop()
    before = (old.functions(), old.schema())
    again = start_server(database_url=old.conninfo)
    assert "recorded the checksums" not in again.stderr_text()
    assert "migrations: applied" not in again.stderr_text()
    assert (old.functions(), old.schema()) == before


# ---- (c) an applied migration whose text changed ------------------------------------------------------------------

def test_a_changed_applied_migration_refuses_the_start(pg, mxkeysd_path, start_server):
    db = Database(pg, "edited")
    migrate(mxkeysd_path, db)
    # The database applied a 003 that differs from the one compiled in (as after an edit of sql/003 in place).
    with open(os.path.join(SQL, "003_room_keys.sql"), "rb") as f:
        applied_text = f.read() + b"ALTER TABLE backup_versions ADD COLUMN note text;\n"
    applied_sha = hashlib.sha256(applied_text).hexdigest()
    db.psql("UPDATE schema_migrations SET sha256 = :'sha' WHERE name = '003_room_keys.sql'", sha=applied_sha)
    fns = db.functions()

    r = migrate(mxkeysd_path, db, check=False)
    assert r.returncode != 0
    message = r.stderr
    assert "migration 003_room_keys.sql was changed after this database applied it" in message, message
    assert applied_sha in message and sha256_of(os.path.join(SQL, "003_room_keys.sql")) in message
    assert "put the change in a new migration" in message

    with pytest.raises(AssertionError, match="003_room_keys.sql was changed"):
        start_server(database_url=db.conninfo)
    assert db.functions() == fns, "nothing was applied"
    # the lock is not left held: with the text restored, the next start goes through
    db.psql("UPDATE schema_migrations SET sha256 = :'sha' WHERE name = '003_room_keys.sql'",
            sha=sha256_of(os.path.join(SQL, "003_room_keys.sql")))
    migrate(mxkeysd_path, db)


def test_a_database_from_a_newer_mxkeysd_keeps_its_functions(pg, mxkeysd_path):
    """A newer mxkeysd's functions go with its schema: an older one starting on that database (a rolling upgrade)
    leaves them in place rather than put back its own."""
    db = Database(pg, "newer")
    migrate(mxkeysd_path, db)
    db.psql("INSERT INTO schema_migrations (name, sha256) VALUES ('999_from_the_future.sql', 'x');\n"
            "CREATE OR REPLACE FUNCTION mx_device_stream_position() RETURNS bigint LANGUAGE sql STABLE "
            "AS $$ SELECT 42::bigint $$;")
    r = migrate(mxkeysd_path, db)
    assert "999_from_the_future.sql" in r.stderr and "newer mxkeysd" in r.stderr
    assert db.psql("SELECT mx_device_stream_position()") == "42"
    db.psql("DELETE FROM schema_migrations WHERE name = '999_from_the_future.sql'")
    migrate(mxkeysd_path, db)
    assert db.psql("SELECT mx_device_stream_position()") == "0", "without it, the files win again"


def cli(mxkeysd_path, db, *args):
    r = subprocess.run([mxkeysd_path, *args, "--database-url", db.conninfo], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r


def test_token_commands_rewrite_the_functions_only_along_with_a_migration(pg, mxkeysd_path, fresh):
    """`token create` and `token revoke` use one table: on a current database they leave the functions as they are
    (rewriting them every call made bulk minting queue on the migration lock); a migration they apply brings the
    functions with it; every start and `mxkeysd migrate` make the files the definition again."""
    db = Database(pg, "tokens")
    token = cli(mxkeysd_path, db, "token", "create", "--user", "@t:localhost", "--device", "D").stdout.strip()
    assert db.functions() == fresh.functions(), "the first command on an empty database migrates, functions too"

    db.psql("CREATE OR REPLACE FUNCTION mx_device_stream_position() RETURNS bigint LANGUAGE sql STABLE "
            "AS $$ SELECT 42::bigint $$;")
    cli(mxkeysd_path, db, "token", "create", "--user", "@t:localhost", "--device", "E")
    cli(mxkeysd_path, db, "token", "revoke", token)
    assert db.psql("SELECT mx_device_stream_position()") == "42", "the token commands left the function alone"
    assert db.psql("SELECT count(*) FROM access_tokens") == "1"

    migrate(mxkeysd_path, db)
    assert db.functions() == fresh.functions(), "mxkeysd migrate put the file's definition back"
