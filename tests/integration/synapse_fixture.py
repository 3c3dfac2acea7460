"""A database with Synapse's table layout (table and column names as in Synapse 1.67's public schema; the DDL is our
own, only what the importer reads) filled with real Olm keys, signatures and backups, and the edge cases of the
cut-over: deleted devices, used and unused fallback keys, several cross-signing key generations, a deleted backup
version, non-ASCII and escaped JSON, duplicated signature rows.

Fixture(pg, dbname) creates the database; .users holds the client state (Olm accounts, backup keys, megolm sessions)
needed to check what mxkeys serves afterwards; .expected_query(user) is what a client of that user must see."""
import copy
import json
import subprocess

import olm

from olmkeys import CrossSigning, Device, add_signature, sign

PG_BIN = "/usr/lib/postgresql/15/bin"

DDL = """
CREATE TABLE devices (user_id text NOT NULL, device_id text NOT NULL, display_name text, last_seen bigint, ip text,
                      user_agent text, hidden boolean DEFAULT false, UNIQUE (user_id, device_id));
CREATE TABLE e2e_device_keys_json (user_id text NOT NULL, device_id text NOT NULL, ts_added_ms bigint NOT NULL,
                                   key_json text NOT NULL, UNIQUE (user_id, device_id));
CREATE TABLE e2e_one_time_keys_json (user_id text NOT NULL, device_id text NOT NULL, algorithm text NOT NULL,
                                     key_id text NOT NULL, ts_added_ms bigint NOT NULL, key_json text NOT NULL,
                                     UNIQUE (user_id, device_id, algorithm, key_id));
CREATE TABLE e2e_fallback_keys_json (user_id text NOT NULL, device_id text NOT NULL, algorithm text NOT NULL,
                                     key_id text NOT NULL, key_json text NOT NULL, used boolean NOT NULL DEFAULT false,
                                     UNIQUE (user_id, device_id, algorithm));
CREATE TABLE e2e_cross_signing_keys (user_id text NOT NULL, keytype text NOT NULL, keydata text NOT NULL,
                                     stream_id bigint NOT NULL);
CREATE UNIQUE INDEX ON e2e_cross_signing_keys (user_id, keytype, stream_id);
-- no unique constraint in Synapse either: duplicated rows happen
CREATE TABLE e2e_cross_signing_signatures (user_id text NOT NULL, key_id text NOT NULL, target_user_id text NOT NULL,
                                           target_device_id text NOT NULL, signature text NOT NULL);
CREATE TABLE e2e_room_keys_versions (user_id text NOT NULL, version bigint NOT NULL, algorithm text NOT NULL,
                                     auth_data text NOT NULL, deleted smallint NOT NULL DEFAULT 0, etag bigint);
CREATE UNIQUE INDEX ON e2e_room_keys_versions (user_id, version);
CREATE TABLE e2e_room_keys (user_id text NOT NULL, room_id text NOT NULL, session_id text NOT NULL,
                            version bigint NOT NULL, first_message_index int, forwarded_count int, is_verified boolean,
                            session_data text NOT NULL);
CREATE UNIQUE INDEX ON e2e_room_keys (user_id, version, room_id, session_id);
CREATE TABLE device_lists_stream (stream_id bigint NOT NULL, user_id text NOT NULL, device_id text NOT NULL);
"""

BACKUP_ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def lit(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class Sql:
    """psql against one database of the session cluster."""

    def __init__(self, pg, dbname):
        self.pg, self.dbname = pg, dbname
        self.conninfo = f"host=127.0.0.1 port={pg.port} user=mxkeys dbname={dbname}"
        self.pending = []  # inserts not sent yet: one psql per batch, not per row

    def run(self, sql):
        sql = "".join(self.pending) + sql
        self.pending = []
        r = subprocess.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "mxkeys", "-d",
                            self.dbname, "-At", "-v", "ON_ERROR_STOP=1", "-q"], input=sql, capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def insert(self, table, rows):
        if not rows:
            return
        cols = list(rows[0].keys())
        values = ",\n".join("(" + ", ".join(lit(r[c]) for c in cols) + ")" for r in rows)
        self.pending.append(f"INSERT INTO {table} ({', '.join(cols)}) VALUES {values};\n")

    def flush(self):
        if self.pending:
            self.run("")


def create_database(pg, dbname):
    pg.psql(f"DROP DATABASE IF EXISTS {dbname}")
    pg.psql(f"CREATE DATABASE {dbname}")
    return Sql(pg, dbname)


class Backup:
    """A user's key backup: the curve25519 key pair of m.megolm_backup.v1 and the megolm sessions backed up."""

    def __init__(self):
        self.decryption = olm.PkDecryption()
        self.public_key = self.decryption.public_key
        self.sessions = {}  # (room, session_id) -> (outbound session, a message encrypted with it)

    def auth_data(self, device):
        ad = {"public_key": self.public_key}
        ad["signatures"] = {device.user_id: {device.signer: sign(device.account, ad)}}
        return ad

    def add_session(self, room, sender, text):
        out = olm.OutboundGroupSession()
        inbound = olm.InboundGroupSession(out.session_key)  # before the first message: index 0
        message = out.encrypt(text)
        plain = {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": sender.curve25519,
                 "sender_claimed_keys": {"ed25519": sender.ed25519}, "forwarding_curve25519_key_chain": [],
                 "session_key": inbound.export_session(inbound.first_known_index)}
        enc = olm.PkEncryption(self.public_key).encrypt(json.dumps(plain))
        self.sessions[(room, out.id)] = (message, text)
        return out.id, {"ephemeral": enc.ephemeral_key, "ciphertext": enc.ciphertext, "mac": enc.mac}

    def restore(self, session_data):
        """What a client does with a backed-up session: decrypt it, import it; returns the inbound session."""
        msg = olm.PkMessage(session_data["ephemeral"], session_data["mac"], session_data["ciphertext"])
        plain = json.loads(self.decryption.decrypt(msg))
        return olm.InboundGroupSession.import_session(plain["session_key"])


class Fixture:
    SERVER = "synapse.test"

    def __init__(self, pg, dbname):
        self.db = create_database(pg, dbname)
        self.db.run(DDL)
        self.conninfo = self.db.conninfo
        self.ts = 1_600_000_000_000
        self.stream = 0
        self.devices = {}  # (user, device) -> Device
        self.cs = {}  # user -> CrossSigning (the current generation)
        self.backups = {}  # user -> Backup
        self.fallbacks = {}  # (user, device) -> (key id, used)
        self._build()
        self.db.flush()

    def uid(self, name):
        return f"@{name}:{self.SERVER}"

    def next_stream(self):
        self.stream += 1
        return self.stream

    # -- writers with Synapse's row shapes ----------------------------------------------------------------------------

    def add_device(self, user, device_id, display_name=None, extra=None, deleted=False, ensure_ascii=True):
        d = Device(user, device_id)
        dk = d.device_keys()
        if extra:
            dk.update(extra)
            dk.pop("signatures")
            dk["signatures"] = {user: {d.signer: sign(d.account, dk)}}
        if not deleted:
            self.db.insert("devices", [{"user_id": user, "device_id": device_id, "display_name": display_name,
                                        "hidden": False}])
            self.devices[(user, device_id)] = d
        self.db.insert("e2e_device_keys_json", [{"user_id": user, "device_id": device_id, "ts_added_ms": self.ts,
                                                 "key_json": json.dumps(dk, ensure_ascii=ensure_ascii)}])
        self.db.insert("device_lists_stream", [{"stream_id": self.next_stream(), "user_id": user,
                                                "device_id": device_id}])
        d.keys_obj = dk
        d.display_name = display_name
        return d

    def add_otks(self, d, n, ts):
        keys = d.one_time_keys(n)
        rows = []
        for name, obj in keys.items():
            alg, kid = name.split(":")
            rows.append({"user_id": d.user_id, "device_id": d.device_id, "algorithm": alg, "key_id": kid,
                         "ts_added_ms": ts, "key_json": json.dumps(obj)})
        self.db.insert("e2e_one_time_keys_json", rows)
        return sorted(k.split(":")[1] for k in keys)

    def add_fallback(self, d, used):
        (name, obj), = d.fallback_keys().items()
        alg, kid = name.split(":")
        self.db.insert("e2e_fallback_keys_json", [{"user_id": d.user_id, "device_id": d.device_id, "algorithm": alg,
                                                   "key_id": kid, "key_json": json.dumps(obj), "used": used}])
        self.fallbacks[(d.user_id, d.device_id)] = (kid, obj, used)

    def add_cross_signing(self, user):
        cs = CrossSigning(user)
        body = cs.upload_body()
        for usage, key in (("master", body["master_key"]), ("self_signing", body["self_signing_key"]),
                           ("user_signing", body["user_signing_key"])):
            self.db.insert("e2e_cross_signing_keys", [{"user_id": user, "keytype": usage, "keydata": json.dumps(key),
                                                       "stream_id": self.next_stream()}])
            # Synapse reserves each public key as a hidden device
            pk = getattr(cs, usage).public_key
            self.db.insert("devices", [{"user_id": user, "device_id": pk, "display_name": None, "hidden": True}])
        self.cs[user] = cs
        return cs

    def add_signature(self, signer_user, key_id, target_user, target, signature):
        self.db.insert("e2e_cross_signing_signatures", [{"user_id": signer_user, "key_id": key_id,
                                                         "target_user_id": target_user, "target_device_id": target,
                                                         "signature": signature}])

    def sign_device(self, cs, d):
        """The owner's self-signing key signs one of its devices."""
        signed = add_signature(d.keys_obj, cs.user_id, pk_signing=cs.self_signing)
        key_id = f"ed25519:{cs.self_signing.public_key}"
        self.add_signature(cs.user_id, key_id, d.user_id, d.device_id, signed["signatures"][cs.user_id][key_id])
        return key_id

    def add_backup_version(self, user, version, device, deleted=False, etag=None):
        b = self.backups.setdefault(user, Backup())
        self.db.insert("e2e_room_keys_versions", [{"user_id": user, "version": version, "algorithm": BACKUP_ALG,
                                                   "auth_data": json.dumps(b.auth_data(device)),
                                                   "deleted": 1 if deleted else 0, "etag": etag}])
        return b

    def add_backup_session(self, user, version, room, sender, text, fmi=0, fc=0, verified=True):
        b = self.backups[user]
        sid, data = b.add_session(room, sender, text)
        self.db.insert("e2e_room_keys", [{"user_id": user, "room_id": room, "session_id": sid, "version": version,
                                          "first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
                                          "session_data": json.dumps(data)}])
        return sid

    # -- the population --------------------------------------------------------------------------------------------

    def _build(self):
        alice, bob, carol, dave = (self.uid(n) for n in ("alice", "bob", "carol", "dave"))
        self.alice, self.bob, self.carol, self.dave = alice, bob, carol, dave
        # alice: two devices, one with a non-ASCII display name and escaped non-ASCII content (json.dumps escapes it)
        a1 = self.add_device(alice, "ALICE1", display_name="Alice’s phone ☎",
                             extra={"org.example.label": "Zoë ☃ \"quoted\" \\ back\u0007"})
        a2 = self.add_device(alice, "ALICE2", display_name=None, ensure_ascii=False)
        self.a1, self.a2 = a1, a2
        # two upload batches: the first batch must be claimed first
        self.a1_batches = [self.add_otks(a1, 3, 1000), self.add_otks(a1, 2, 2000)]
        self.add_otks(a2, 2, 1500)
        self.add_fallback(a1, used=False)
        # cross-signing: an old generation, then the current one; signatures by both
        old = self.add_cross_signing(alice)
        self.sign_device(old, a1)  # by an old self-signing key: not a current key any more
        cs = self.add_cross_signing(alice)
        self.sign_device(cs, a1)
        key_id = self.sign_device(cs, a2)
        # the same signature row twice (Synapse has no unique constraint on it)
        row = self.db.run(f"SELECT signature FROM e2e_cross_signing_signatures WHERE key_id = {lit(key_id)} "
                          f"AND target_device_id = 'ALICE2'")
        self.add_signature(alice, key_id, alice, "ALICE2", row)
        # alice's device signs her master key
        mk = cs.key_object("master")
        mk_signed = add_signature(mk, alice, device=a1)
        self.add_signature(alice, a1.signer, alice, cs.master.public_key, mk_signed["signatures"][alice][a1.signer])

        # bob: one device with a used fallback key, one generation of cross-signing; alice's user-signing key signs
        # bob's master key (visible to alice only)
        b1 = self.add_device(bob, "BOB1", display_name="bob")
        self.b1 = b1
        self.add_otks(b1, 4, 1000)
        self.add_fallback(b1, used=True)
        bcs = self.add_cross_signing(bob)
        self.sign_device(bcs, b1)
        bmk = add_signature(bcs.key_object("master"), alice, pk_signing=cs.user_signing)
        ukid = f"ed25519:{cs.user_signing.public_key}"
        self.add_signature(alice, ukid, bob, bcs.master.public_key, bmk["signatures"][alice][ukid])

        # carol: a live device and a deleted one whose keys Synapse still holds
        c1 = self.add_device(carol, "CAROL1")
        self.c1 = c1
        self.add_otks(c1, 2, 1000)
        gone = self.add_device(carol, "CAROLOLD", deleted=True)
        self.add_otks(gone, 2, 900)
        self.add_fallback(gone, used=False)
        self.fallbacks.pop((carol, "CAROLOLD"))

        # dave: a device without any keys
        self.db.insert("devices", [{"user_id": dave, "device_id": "DAVE1", "display_name": None, "hidden": False}])

        # backups: alice has a deleted version 1 and the current version 2; bob a version from before etags
        self.add_backup_version(alice, 1, a1, deleted=True, etag=3)
        self.add_backup_version(alice, 2, a1, etag=5)
        for i, room in enumerate(["!room1:synapse.test", "!room2:synapse.test", "!ü-room:synapse.test"]):
            self.add_backup_session(alice, 2, room, a1, f"hello {i} from alice ✓", fmi=0, fc=i % 2,
                                    verified=i != 1)
        self.add_backup_version(bob, 1, b1, etag=None)
        for i in range(2):
            self.add_backup_session(bob, 1, "!bobroom:synapse.test", b1, f"bob says {i}")

    # -- what a client must see ------------------------------------------------------------------------------------

    def current_xsign(self, user):
        rows = self.db.run(f"SELECT keytype, keydata FROM e2e_cross_signing_keys WHERE user_id = {lit(user)} "
                           "ORDER BY stream_id")
        cur = {}
        for line in rows.splitlines():
            usage, data = line.split("|", 1)
            cur[usage] = json.loads(data)
        return cur

    def expected_query(self, user):
        """The user's own /keys/query answer implied by the fixture (independent of the importer's code)."""
        devices = {}
        rows = self.db.run("SELECT d.device_id, d.display_name, k.key_json FROM devices d JOIN e2e_device_keys_json k "
                           f"USING (user_id, device_id) WHERE user_id = {lit(user)} AND NOT d.hidden")
        sigs = self.db.run("SELECT DISTINCT target_device_id, key_id, signature FROM e2e_cross_signing_signatures "
                           f"WHERE target_user_id = {lit(user)} AND user_id = {lit(user)}")
        sig_rows = [line.split("|") for line in sigs.splitlines()]
        xs = self.current_xsign(user)
        for line in rows.splitlines():
            device_id, name, key_json = line.split("|", 2)
            obj = json.loads(key_json)
            obj.pop("unsigned", None)
            for target, key_id, sig in sig_rows:
                # Synapse serves every signature of the owner on the device, also one by a replaced key
                if target == device_id:
                    obj.setdefault("signatures", {}).setdefault(user, {})[key_id] = sig
            obj["unsigned"] = {"device_display_name": name} if name else {}
            devices[device_id] = obj
        out = {"device_keys": {user: devices}, "master_keys": {}, "self_signing_keys": {}, "user_signing_keys": {}}
        for usage, key in xs.items():
            key = copy.deepcopy(key)
            pk = list(key["keys"].values())[0]
            for target, key_id, sig in sig_rows:
                if target == pk:
                    key.setdefault("signatures", {}).setdefault(user, {})[key_id] = sig
            out[usage + "_keys"][user] = key
        return out

    def otk_count(self, user, device):
        return int(self.db.run("SELECT count(*) FROM e2e_one_time_keys_json "
                               f"WHERE user_id = {lit(user)} AND device_id = {lit(device)}"))

    def backup_sessions(self, user, version):
        rows = self.db.run("SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, "
                           f"session_data FROM e2e_room_keys WHERE user_id = {lit(user)} AND version = {version}")
        out = {}
        for line in rows.splitlines():
            room, sid, fmi, fc, verified, data = line.split("|", 5)
            out.setdefault(room, {"sessions": {}})["sessions"][sid] = {
                "first_message_index": int(fmi), "forwarded_count": int(fc), "is_verified": verified == "t",
                "session_data": json.loads(data)}
        return out

