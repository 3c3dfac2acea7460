#!/usr/bin/python3
"""Known-answer vectors for server-server request authentication, made with code that shares nothing with mxkeys:
Debian's python3-signedjson and python3-nacl (ed25519 signing of JSON) and python3-canonicaljson (the bytes signed).

Run with /usr/bin/python3 from anywhere; it rewrites the files below next to it (fixed seeds: stable output). The
output is committed, so the C tests never need Python.

  xmatrix.jsonl      {"name", "header", "expect": ok | other | malformed, "origin", "destination" (null: absent),
                      "key", "sig"}: Authorization header values and what a parser must make of them
  fed_requests.jsonl {"name", "method", "uri", "origin", "destination" (null: left out), "content" (JSON text or
                      null), "public_key", "sig", "expect": ok | mismatch, "payload"}: a request as the receiver sees
                      it, with the signature its origin made (over "payload" for ok rows)
  server_keys.jsonl  {"name", "object" (JSON text), "server_name", "notary" (null: self-signed only), "notary_keys"
                      [{"key_id", "public_key"}], "now_ms", "expect": ok | a phrase the refusal contains,
                      "valid_until_ms" (ok rows), "find": {key_id: current | old | absent}}
"""
import copy
import json
import os

import canonicaljson
import nacl.signing
import signedjson.key
import signedjson.sign

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_700_000_000_000
WEEK = 7 * 24 * 3600 * 1000


def key(seed_byte, version):
    k = signedjson.key.decode_signing_key_base64("ed25519", version, signedjson.key.encode_signing_key_base64(
        nacl.signing.SigningKey(bytes([seed_byte]) * 32)))
    return k


def pub(k):
    return signedjson.key.encode_verify_key_base64(k.verify_key)


def write_jsonl(name, rows):
    with open(os.path.join(HERE, name), "w", encoding="ascii", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True, sort_keys=True) + "\n")


# --- X-Matrix headers ----------------------------------------------------------------------------------------------

SIG = "dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgNjQgYnl0ZXMgbG9uZyBmb3IgdGhlIHRlc3Q"


def header_rows():
    rows = []

    def ok(name, header, origin="remote.test", destination="localhost", key_id="ed25519:a_1", sig=SIG):
        rows.append({"name": name, "header": header, "expect": "ok", "origin": origin, "destination": destination,
                     "key": key_id, "sig": sig})

    def bad(name, header, expect="malformed"):
        rows.append({"name": name, "header": header, "expect": expect, "origin": None, "destination": None,
                     "key": None, "sig": None})

    ok("spec form", f'X-Matrix origin="remote.test",destination="localhost",key="ed25519:a_1",sig="{SIG}"')
    ok("unquoted tokens", f"X-Matrix origin=remote.test,destination=localhost,key=ed25519:a_1,sig={SIG}")
    ok("any order", f'X-Matrix sig="{SIG}",key="ed25519:a_1",destination="localhost",origin="remote.test"')
    ok("names in any case", f'X-Matrix ORIGIN="remote.test",Destination="localhost",kEy="ed25519:a_1",SIG="{SIG}"')
    ok("scheme in any case", f'x-matrix origin="remote.test",destination="localhost",key="ed25519:a_1",sig="{SIG}"')
    ok("several spaces after the scheme",
       f'X-Matrix   origin="remote.test",destination="localhost",key="ed25519:a_1",sig="{SIG}"')
    ok("spaces around commas and equals",
       f'X-Matrix origin = "remote.test" , destination= "localhost",\tkey ="ed25519:a_1" ,sig="{SIG}"')
    ok("empty list elements", f'X-Matrix ,origin="remote.test",,destination="localhost",key="ed25519:a_1",sig="{SIG}",')
    ok("unknown parameters ignored",
       f'X-Matrix origin="remote.test",foo=bar,destination="localhost",x="y,z=\\"w\\"",key="ed25519:a_1",sig="{SIG}"')
    ok("no destination (before Matrix 1.3)", f'X-Matrix origin=remote.test,key="ed25519:a_1",sig="{SIG}"',
       destination=None)
    ok("unquoted colon and port (older servers)",
       f'X-Matrix origin=remote.test:8448,destination=localhost:8448,key=ed25519:a_1,sig="{SIG}"',
       origin="remote.test:8448", destination="localhost:8448")
    ok("escapes in quoted values", f'X-Matrix origin="re\\mote.test",destination="local\\host",key="ed25519:a\\_1",'
       f'sig="{SIG}"')
    ok("escaped quote and backslash", 'X-Matrix origin="a\\"b\\\\c",destination="localhost",key="ed25519:a_1",'
       f'sig="{SIG}"', origin='a"b\\c')
    ok("IPv6 server name quoted", f'X-Matrix origin="[::1]:8448",destination="localhost",key="ed25519:a_1",sig="{SIG}"',
       origin="[::1]:8448")
    ok("base64 with slash and plus quoted",
       'X-Matrix origin="remote.test",destination="localhost",key="ed25519:a_1",sig="ab/cd+ef"', sig="ab/cd+ef")
    bad("bearer is another scheme", "Bearer syt_abc", "other")
    bad("prefix of the scheme", f'X-Matrixx origin="remote.test",key="ed25519:a_1",sig="{SIG}"', "other")
    bad("no space after the scheme", f'X-Matrix,origin="remote.test",key="ed25519:a_1",sig="{SIG}"')
    bad("scheme alone", "X-Matrix")
    bad("no origin", f'X-Matrix destination="localhost",key="ed25519:a_1",sig="{SIG}"')
    bad("no key", f'X-Matrix origin="remote.test",destination="localhost",sig="{SIG}"')
    bad("no sig", 'X-Matrix origin="remote.test",destination="localhost",key="ed25519:a_1"')
    bad("empty origin", f'X-Matrix origin="",key="ed25519:a_1",sig="{SIG}"')
    bad("not an ed25519 key", f'X-Matrix origin="remote.test",key="curve25519:a_1",sig="{SIG}"')
    bad("ed25519 without a version", f'X-Matrix origin="remote.test",key="ed25519:",sig="{SIG}"')
    bad("unterminated quote", f'X-Matrix origin="remote.test,key="ed25519:a_1",sig="{SIG}')
    bad("missing equals", f'X-Matrix origin "remote.test",key="ed25519:a_1",sig="{SIG}"')
    bad("missing comma", f'X-Matrix origin="remote.test" key="ed25519:a_1",sig="{SIG}"')
    bad("parameter twice", f'X-Matrix origin="remote.test",origin="evil.test",key="ed25519:a_1",sig="{SIG}"')
    bad("empty unquoted value", f'X-Matrix origin=,key="ed25519:a_1",sig="{SIG}"')
    bad("slash unquoted", f'X-Matrix origin=remote.test/x,key="ed25519:a_1",sig="{SIG}"')
    bad("control character in quotes", f'X-Matrix origin="remote\x01test",key="ed25519:a_1",sig="{SIG}"')
    bad("origin too long", f'X-Matrix origin="{"a" * 300}",key="ed25519:a_1",sig="{SIG}"')
    return rows


# --- signed requests -----------------------------------------------------------------------------------------------

def request_rows():
    k = key(7, "a_1")
    other = key(8, "b_2")
    rows = []

    def sign(method, uri, origin, destination, content, signer=k):
        req = {"method": method, "uri": uri, "origin": origin}
        if destination is not None:
            req["destination"] = destination
        if content is not None:
            req["content"] = content
        signed = signedjson.sign.sign_json(copy.deepcopy(req), origin, signer)
        return req, signed["signatures"][origin][f"ed25519:{signer.version}"]

    def row(name, method, uri, origin, destination, content, sig, expect, payload_req):
        rows.append({"name": name, "method": method, "uri": uri, "origin": origin, "destination": destination,
                     "content": None if content is None else json.dumps(content, ensure_ascii=False),
                     "public_key": pub(k), "sig": sig, "expect": expect,
                     "payload": canonicaljson.encode_canonical_json(payload_req).decode("utf-8")})

    claim = {"one_time_keys": {"@alice:localhost": {"JLAFKJWSCS": "signed_curve25519"}}}
    cases = [
        ("claim", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim),
        ("no destination", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", None, claim),
        ("get without content", "GET", "/_matrix/federation/v1/version", "remote.test", "localhost", None),
        ("percent-encoded target kept as sent", "POST",
         "/_matrix/federation/v1/user/keys/claim?x=%2F%41%20b", "remote.test:8448", "localhost:8448", claim),
        ("non-ASCII content", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost",
         {"one_time_keys": {"@\u00e9l\u00e8ve:localhost": {"D\u65e5": "signed_curve25519"}}, "n": -5}),
        ("empty object content", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", {}),
    ]
    for name, method, uri, origin, dest, content in cases:
        req, sig = sign(method, uri, origin, dest, content)
        row(name, method, uri, origin, dest, content, sig, "ok", req)
    # what a receiver that decodes the target, or ignores a member, would compute: the signature must not match
    req, sig = sign("POST", "/_matrix/federation/v1/user/keys/claim?x=%2F", "remote.test", "localhost", claim)
    row("decoded target does not verify", "POST", "/_matrix/federation/v1/user/keys/claim?x=/", "remote.test",
        "localhost", claim, sig, "mismatch", req)
    req, sig = sign("POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "elsewhere.test", claim)
    row("other destination", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim,
        sig, "mismatch", req)
    req, sig = sign("POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim)
    row("other method", "PUT", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim, sig,
        "mismatch", req)
    row("other content", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost",
        {"one_time_keys": {"@bob:localhost": {"JLAFKJWSCS": "signed_curve25519"}}}, sig, "mismatch", req)
    row("destination left out by the receiver", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", None,
        claim, sig, "mismatch", req)
    req, sig = sign("POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim, other)
    row("another key's signature", "POST", "/_matrix/federation/v1/user/keys/claim", "remote.test", "localhost", claim,
        sig, "mismatch", req)
    return rows


# --- server key objects ------------------------------------------------------------------------------------------

def key_object(server, signing, until, verify=None, old=None, extra_signers=()):
    obj = {"server_name": server, "valid_until_ts": until,
           "verify_keys": verify if verify is not None else {f"ed25519:{signing.version}": {"key": pub(signing)}}}
    if old is not None:
        obj["old_verify_keys"] = old
    obj = signedjson.sign.sign_json(obj, server, signing)
    for name, k in extra_signers:
        obj = signedjson.sign.sign_json(obj, name, k)
    return obj


def server_key_rows():
    origin = key(1, "o_1")
    rotated = key(2, "o_2")
    notary = key(3, "n_1")
    impostor = key(4, "n_1")  # same key id as the notary's, another key
    notary_keys = [{"key_id": "ed25519:n_1", "public_key": pub(notary)}]
    rows = []

    def row(name, obj, expect, notary_name="localhost", valid_until=None, find=None, server="remote.test",
            keys=notary_keys):
        rows.append({"name": name, "object": json.dumps(obj), "server_name": server, "notary": notary_name,
                     "notary_keys": keys, "now_ms": NOW, "expect": expect, "valid_until_ms": valid_until,
                     "find": find or {}})

    until = NOW + 3600_000
    row("notarised", key_object("remote.test", origin, until, extra_signers=[("localhost", notary)]), "ok",
        valid_until=until, find={"ed25519:o_1": "current", "ed25519:zz": "absent"})
    row("validity capped at 7 days",
        key_object("remote.test", origin, NOW + 30 * WEEK, extra_signers=[("localhost", notary)]), "ok",
        valid_until=NOW + WEEK)
    row("rotated: old key listed as old",
        key_object("remote.test", rotated, until, old={"ed25519:o_1": {"key": pub(origin), "expired_ts": NOW - 10}},
                   extra_signers=[("localhost", notary)]), "ok", valid_until=until,
        find={"ed25519:o_2": "current", "ed25519:o_1": "old"})
    row("self-signed, no notary asked", key_object("localhost", notary, until), "ok", notary_name=None,
        valid_until=until, server="localhost", find={"ed25519:n_1": "current"})
    row("expired", key_object("remote.test", origin, NOW - 1, extra_signers=[("localhost", notary)]), "expired")
    row("no notary signature", key_object("remote.test", origin, until), "notary")
    row("notary signature by another key",
        key_object("remote.test", origin, until, extra_signers=[("localhost", impostor)]), "does not match")
    row("signed by the notary only",
        signedjson.sign.sign_json({"server_name": "remote.test", "valid_until_ts": until,
                                   "verify_keys": {"ed25519:o_1": {"key": pub(origin)}}}, "localhost", notary),
        "not signed by remote.test")
    forged = key_object("remote.test", origin, until, extra_signers=[("localhost", notary)])
    forged["verify_keys"]["ed25519:o_1"]["key"] = pub(rotated)
    row("key replaced after signing", forged, "own signature")
    row("another server's keys", key_object("evil.test", origin, until, extra_signers=[("localhost", notary)]),
        "not remote.test's")
    return rows


if __name__ == "__main__":
    write_jsonl("xmatrix.jsonl", header_rows())
    write_jsonl("fed_requests.jsonl", request_rows())
    write_jsonl("server_keys.jsonl", server_key_rows())
