#!/usr/bin/python3
"""Produces the known-answer vectors the C unit tests read, with implementations that share no code with mxkeys:
Debian's python3-canonicaljson (encoding), python3-signedjson + python3-nacl (ed25519 signing) and python3-olm
(a real libolm OlmAccount signing its device keys, as a Matrix client does).

Run from anywhere with /usr/bin/python3; it rewrites the files next to it. The output is committed, so the tests
never need Python. Signing keys for signedjson come from fixed seeds (stable output); libolm accounts cannot be
seeded, so the olm vectors change on every run.

Files written:
  canonical.jsonl         {"name", "input": JSON text, "canonical": expected canonical text}
  canonical_reject.jsonl  {"name", "input", "path": first offending JSON path, or null when parsing already fails}
  parse_reject/*.json     raw request bodies a strict parser must refuse (invalid UTF-8 as raw bytes, etc.)
  base64.jsonl            {"hex", "b64"}: unpadded standard base64
  signed.jsonl            {"name", "object": JSON text, "signer", "key_id", "public_key", "expect", "payload"}
                          expect is one of ok, missing, malformed, bad_key, not_canonical, mismatch; payload is the
                          canonical text the signature covers (null when it cannot be encoded)
"""

import base64
import copy
import json
import os
import shutil
import sys

import canonicaljson
import nacl.exceptions
import nacl.signing
import olm
import signedjson.key
import signedjson.sign
from signedjson.sign import SignatureVerifyException

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_SAFE = 2**53 - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def canonical(value) -> str:
    return canonicaljson.encode_canonical_json(value).decode("utf-8")


def write_jsonl(name, rows):
    with open(os.path.join(HERE, name), "w", encoding="ascii", newline="\n") as f:
        for row in rows:
            # ASCII transport: the C test gets the exact bytes back from the JSON string escapes.
            f.write(json.dumps(row, ensure_ascii=True, sort_keys=True) + "\n")


def reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


# --- canonical encodings ----------------------------------------------------------------------------------------

CANONICAL_INPUTS = [
    ("empty object", "{}"),
    ("empty array", "[]"),
    ("empty containers nested", '{"a": {}, "b": [], "c": [{}, []]}'),
    ("whitespace removed, keys sorted", '{ "b" : 2,\n\t"a" : 1 }'),
    ("spec example one", '{"one": 1, "two": "Two"}'),
    ("spec example nested", '{"b": "2", "a": "1"}'),
    ("spec example deep", '{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {'
     '"display_name": "John Doe", "three_pids": [{"medium": "email", "address": "john.doe@example.org"}, '
     '{"medium": "msisdn", "address": "123456789"}]}}}'),
    ("non-ASCII verbatim", '{"a": "\u65e5\u672c\u8a9e"}'),
    ("non-ASCII from escapes", '{"a": "\\u00e9\\u65e5"}'),
    ("astral from surrogate escapes", '{"a": "\\ud83d\\ude00"}'),
    ("U+2028 and U+2029 verbatim", '{"a": "\\u2028\\u2029"}'),
    ("DEL verbatim", '{"a": "\\u007f"}'),
    ("short escapes", '{"a": "\\"\\\\\\b\\f\\n\\r\\t"}'),
    ("other control characters lowercase hex", '{"a": "\\u0001\\u001F\\u000b\\u001b\\u0010"}'),
    ("escaped slash becomes plain", '{"a": "http:\\/\\/example.org\\/x"}'),
    ("plain slash stays plain", '{"a": "a/b"}'),
    ("escaped letters become plain", '{"a": "\\u0041\\u0062"}'),
    ("escaped key", '{"\\u0062": 1, "a": 2}'),
    ("key ordering by code point", '{"b": 1, "a": 2, "\u00e9": 3, "\uff61": 4, "\U0001f600": 5, "A": 6, "aa": 7, '
     '"": 8, "\u007f": 9, "Z": 10, "_": 11, "a b": 12}'),
    ("astral key after BMP key (UTF-16 order would differ)", '{"\U0001f600": 1, "\uffff": 2, "\ue000": 3}'),
    ("prefix keys", '{"abc": 1, "ab": 2, "a": 3, "abd": 4}'),
    ("nested objects sorted at every level", '{"z": {"y": {"x": 1, "w": 2}, "v": 3}, "u": [{"t": 1, "s": 2}]}'),
    ("array order kept", '[3, 1, 2, "b", "a"]'),
    ("largest safe integer", '{"a": 9007199254740991}'),
    ("smallest safe integer", '{"a": -9007199254740991}'),
    ("zero and minus zero", '{"a": 0, "b": -0}'),
    ("integers", '[1, -1, 10, 100, 1234567890, -42]'),
    ("booleans and null", '{"t": true, "f": false, "n": null}'),
    ("scalar string", '"hello"'),
    ("scalar integer", "7"),
    ("scalar null", "null"),
    ("empty string", '{"": ""}'),
    ("mixed control and text", '{"a": "line1\\nline2\\u0002"}'),
    ("many members (heap sort path)", json.dumps({"k%03d" % (i * 37 % 101): i for i in range(101)})),
    ("typical device_keys shape", json.dumps({
        "user_id": "@alice:example.org", "device_id": "JLAFKJWSCS",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:JLAFKJWSCS": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
                 "ed25519:JLAFKJWSCS": "lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI"},
        "unsigned": {"device_display_name": "Alice's mobile phone"}}, indent=2)),
]

# Parses, but must not be canonicalised; the path names the first offender in document order.
CANONICAL_REJECTS = [
    ("float", '{"a": 1.5}', "a"),
    ("float with zero fraction", '{"a": 1.0}', "a"),
    ("exponent", '{"a": 1e2}', "a"),
    ("negative zero float", '{"a": -0.0}', "a"),
    ("integer just above range", '{"a": 9007199254740992}', "a"),
    ("integer just below range", '{"a": -9007199254740992}', "a"),
    ("int64 max", '{"a": 9223372036854775807}', "a"),
    ("nested one-time key", '{"one_time_keys": {"signed_curve25519:AAAA": {"key": 1.5, "signatures": {}}}}',
     "one_time_keys.signed_curve25519:AAAA.key"),
    ("inside an array", '{"a": [1, 2, {"b": [0, 2.5]}]}', "a[2].b[1]"),
    ("first in document order", '{"z": 1.5, "a": 2.5}', "z"),
    ("top-level float", "3.25", ""),
    # Beyond int64: parsers differ (jansson refuses to parse it); either way it is refused.
    ("integer beyond int64", '{"a": 18446744073709551616}', None),
    ("huge exponent", '{"a": 1e400}', None),
]


def canonical_vectors():
    rows = []
    for name, text in CANONICAL_INPUTS:
        value = json.loads(text, object_pairs_hook=reject_duplicates)
        assert canonicalisable(value), name
        rows.append({"name": name, "input": text, "canonical": canonical(value)})
    write_jsonl("canonical.jsonl", rows)

    rows = []
    for name, text, path in CANONICAL_REJECTS:
        value = json.loads(text)
        assert not canonicalisable(value), name
        rows.append({"name": name, "input": text, "path": path})
    write_jsonl("canonical_reject.jsonl", rows)


# --- bodies the strict parser must refuse -------------------------------------------------------------------------

PARSE_REJECTS = {
    "duplicate_key": b'{"a": 1, "a": 2}',
    "duplicate_key_nested": b'{"a": {"b": 1, "c": 2, "b": 3}}',
    "duplicate_key_via_escape": b'{"a": 1, "\\u0061": 2}',
    "trailing_garbage": b'{"a": 1} x',
    "trailing_second_value": b'{"a": 1}{"b": 2}',
    "nul_escape_in_string": b'{"a": "x\\u0000y"}',
    "nul_escape_in_key": b'{"x\\u0000": 1}',
    "raw_nul_in_string": b'{"a": "x\x00y"}',
    "raw_nul_after_value": b'{"a": 1}\x00',
    "raw_control_in_string": b'{"a": "x\x01y"}',
    "raw_newline_in_string": b'{"a": "x\ny"}',
    "utf8_lone_continuation": b'{"a": "\x80"}',
    "utf8_byte_ff": b'{"a": "\xff"}',
    "utf8_truncated_sequence": b'{"a": "\xe6\x97"}',
    "utf8_overlong_slash": b'{"a": "\xc0\xaf"}',
    "utf8_overlong_nul": b'{"a": "\xc0\x80"}',
    "utf8_encoded_surrogate": b'{"a": "\xed\xa0\x80"}',
    "utf8_above_max": b'{"a": "\xf4\x90\x80\x80"}',
    "utf8_invalid_in_key": b'{"\xfe": 1}',
    "lone_high_surrogate_escape": b'{"a": "\\ud83d"}',
    "lone_low_surrogate_escape": b'{"a": "\\ude00"}',
    "invalid_escape": b'{"a": "\\x41"}',
    "single_quotes": b"{'a': 1}",
    "trailing_comma": b'{"a": 1,}',
    "unterminated": b'{"a": 1',
    "nan": b'{"a": NaN}',
    "leading_zero": b'{"a": 01}',
    "integer_beyond_int64": b'{"a": 18446744073709551616}',
    "empty": b"",
}


def parse_reject_vectors():
    d = os.path.join(HERE, "parse_reject")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, body in PARSE_REJECTS.items():
        # Independent confirmation with Python's strict decoding where Python is strict about the same thing.
        try:
            text = body.decode("utf-8")
            json.loads(text, object_pairs_hook=reject_duplicates,
                       parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            python_refuses = False
        except (UnicodeDecodeError, ValueError):
            python_refuses = True
        if name not in ("nul_escape_in_string", "nul_escape_in_key", "lone_high_surrogate_escape",
                        "lone_low_surrogate_escape", "integer_beyond_int64"):
            assert python_refuses, name
        with open(os.path.join(d, name + ".json"), "wb") as f:
            f.write(body)


# --- base64 -------------------------------------------------------------------------------------------------------

def base64_vectors():
    rows = []
    for n in list(range(0, 10)) + [31, 32, 33, 63, 64, 65]:
        data = bytes((i * 73 + n * 11 + 5) & 0xFF for i in range(n))
        rows.append({"hex": data.hex(), "b64": b64(data)})
    write_jsonl("base64.jsonl", rows)


# --- signed JSON --------------------------------------------------------------------------------------------------

def signing_key(seed_byte: int, version: str):
    key = nacl.signing.SigningKey(bytes([seed_byte]) * 32)
    key.alg = "ed25519"
    key.version = version
    return key


def public_b64(key) -> str:
    return signedjson.key.encode_verify_key_base64(key.verify_key)


def canonicalisable(v) -> bool:
    """Python's canonicaljson encodes floats and big integers; the Matrix rules (and mxkeys) do not."""
    if isinstance(v, dict):
        return all(canonicalisable(x) for x in v.values())
    if isinstance(v, list):
        return all(canonicalisable(x) for x in v)
    if isinstance(v, float):
        return False
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) <= MAX_SAFE
    return True


def payload_of(obj):
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return canonical(stripped) if canonicalisable(stripped) else None


def signedjson_accepts(obj, signer, key) -> bool:
    try:
        signedjson.sign.verify_signed_json(copy.deepcopy(obj), signer, signedjson.key.get_verify_key(key))
        return True
    except SignatureVerifyException:
        return False


class SignedRows:
    def __init__(self):
        self.rows = []

    def add(self, name, obj, signer, key_id, public_key, expect, text=None):
        payload = payload_of(obj) if isinstance(obj, dict) else None
        if expect in ("ok", "mismatch"):
            # Every ok/mismatch verdict is confirmed with libsodium (through nacl) on the recorded payload.
            sig = obj["signatures"][signer][key_id]
            try:
                nacl.signing.VerifyKey(base64.b64decode(public_key + "==")).verify(
                    payload.encode("utf-8"), base64.b64decode(sig + "=" * (-len(sig) % 4)))
                verdict = "ok"
            except nacl.exceptions.BadSignatureError:
                verdict = "mismatch"
            assert verdict == expect, name
        self.rows.append({"name": name, "object": text if text is not None else json.dumps(obj, ensure_ascii=False),
                          "signer": signer, "key_id": key_id, "public_key": public_key, "expect": expect,
                          "payload": payload})


def signed_vectors():
    rows = SignedRows()
    alice = signing_key(1, "a")
    other = signing_key(2, "b")
    server = signing_key(3, "auto")
    alice_pk = public_b64(alice)

    # Plain object signed by signedjson; unsigned and existing signatures must not be covered.
    base = {"foo": "bar", "n": 42, "nested": {"z": [1, 2, {"y": None}], "a": True}}
    signed = signedjson.sign.sign_json(copy.deepcopy(base), "@alice:example.org", alice)
    assert signedjson_accepts(signed, "@alice:example.org", alice)
    rows.add("signedjson simple", signed, "@alice:example.org", "ed25519:a", alice_pk, "ok")

    with_unsigned = copy.deepcopy(base)
    with_unsigned["unsigned"] = {"age": 1234, "note": "not covered", "float": 1.5}
    with_unsigned = signedjson.sign.sign_json(with_unsigned, "@alice:example.org", alice)
    assert "unsigned" in with_unsigned and signedjson_accepts(with_unsigned, "@alice:example.org", alice)
    rows.add("unsigned ignored (holds a float)", with_unsigned, "@alice:example.org", "ed25519:a", alice_pk, "ok")

    changed_unsigned = copy.deepcopy(with_unsigned)
    changed_unsigned["unsigned"]["note"] = "changed after signing"
    assert signedjson_accepts(changed_unsigned, "@alice:example.org", alice)
    rows.add("unsigned changed after signing", changed_unsigned, "@alice:example.org", "ed25519:a", alice_pk, "ok")

    # Two signers: each signature verifies against its own key only.
    two = signedjson.sign.sign_json(copy.deepcopy(base), "@alice:example.org", alice)
    two = signedjson.sign.sign_json(two, "example.org", server)
    assert signedjson_accepts(two, "example.org", server)
    rows.add("second signer, first key", two, "@alice:example.org", "ed25519:a", alice_pk, "ok")
    rows.add("second signer, second key", two, "example.org", "ed25519:auto", public_b64(server), "ok")
    rows.add("signer/key swapped", two, "example.org", "ed25519:auto", alice_pk, "mismatch")

    # Only the top-level members are dropped: nested ones named signatures/unsigned are covered.
    inner = {"content": {"signatures": "inner", "unsigned": {"x": 1}}, "type": "m.test"}
    inner = signedjson.sign.sign_json(inner, "@alice:example.org", alice)
    rows.add("nested signatures/unsigned are covered", inner, "@alice:example.org", "ed25519:a", alice_pk, "ok")
    tampered_inner = copy.deepcopy(inner)
    tampered_inner["content"]["unsigned"]["x"] = 2
    assert not signedjson_accepts(tampered_inner, "@alice:example.org", alice)
    rows.add("nested unsigned tampered", tampered_inner, "@alice:example.org", "ed25519:a", alice_pk, "mismatch")

    # Text that needs every kind of canonicalisation: escapes, non-ASCII, ordering, whitespace.
    text_obj = {"\U0001f600": "emoji key", "\u00e9": "caf\u00e9", "ctl": "a\u0001b\u001fc\n\t\"\\", "sep": "\u2028",
                "slash": "a/b", "del": "\u007f", "big": MAX_SAFE, "neg": -MAX_SAFE, "b": [], "a": {}}
    text_signed = signedjson.sign.sign_json(text_obj, "@alice:example.org", alice)
    rows.add("non-ASCII, controls, limits", text_signed, "@alice:example.org", "ed25519:a", alice_pk, "ok")
    # Same object re-serialised with escapes, escaped slashes and odd whitespace: canonical form is unchanged.
    messy = json.dumps(text_signed, ensure_ascii=True, indent=3).replace("a/b", "a\\/b")
    assert json.loads(messy) == text_signed
    rows.add("same object, non-canonical text", text_signed, "@alice:example.org", "ed25519:a", alice_pk, "ok",
             text=messy)

    # Negative cases.
    tampered = copy.deepcopy(signed)
    tampered["foo"] = "baz"
    assert not signedjson_accepts(tampered, "@alice:example.org", alice)
    rows.add("tampered value", tampered, "@alice:example.org", "ed25519:a", alice_pk, "mismatch")
    added = copy.deepcopy(signed)
    added["extra"] = 1
    rows.add("member added", added, "@alice:example.org", "ed25519:a", alice_pk, "mismatch")
    rows.add("wrong public key", signed, "@alice:example.org", "ed25519:a", public_b64(other), "mismatch")
    rows.add("missing key id", signed, "@alice:example.org", "ed25519:zzz", alice_pk, "missing")
    rows.add("missing signer", signed, "@bob:example.org", "ed25519:a", alice_pk, "missing")
    rows.add("no signatures member", base, "@alice:example.org", "ed25519:a", alice_pk, "missing")
    not_object = dict(base, signatures=["x"])
    rows.add("signatures not an object", not_object, "@alice:example.org", "ed25519:a", alice_pk, "missing")
    not_string = dict(base, signatures={"@alice:example.org": {"ed25519:a": 5}})
    rows.add("signature not a string", not_string, "@alice:example.org", "ed25519:a", alice_pk, "missing")

    sig = signed["signatures"]["@alice:example.org"]["ed25519:a"]
    raw_sig = base64.b64decode(sig + "==")
    for name, bad in [("signature url-safe alphabet", base64.urlsafe_b64encode(raw_sig).decode().rstrip("=")
                       if "+" in sig or "/" in sig else sig[:-2] + "-_"),
                      ("signature truncated", sig[:-1]),
                      ("signature of 63 bytes", b64(raw_sig[:63])),
                      ("signature of 65 bytes", b64(raw_sig + b"\0")),
                      ("signature with whitespace", sig[:40] + " " + sig[40:]),
                      ("signature with newline", sig + "\n"),
                      ("signature empty", ""),
                      ("signature hex", raw_sig.hex())]:
        obj = copy.deepcopy(signed)
        obj["signatures"]["@alice:example.org"]["ed25519:a"] = bad
        rows.add(name, obj, "@alice:example.org", "ed25519:a", alice_pk, "malformed")
    padded = copy.deepcopy(signed)
    padded["signatures"]["@alice:example.org"]["ed25519:a"] = base64.b64encode(raw_sig).decode()
    assert padded["signatures"]["@alice:example.org"]["ed25519:a"].endswith("==")
    rows.add("padded signature accepted", padded, "@alice:example.org", "ed25519:a", alice_pk, "ok")

    raw_pk = alice.verify_key.encode()
    for name, bad in [("key of 31 bytes", b64(raw_pk[:31])), ("key of 33 bytes", b64(raw_pk + b"\0")),
                      ("key empty", ""), ("key with whitespace", " " + alice_pk),
                      ("key hex", raw_pk.hex())]:
        rows.add(name, signed, "@alice:example.org", "ed25519:a", bad, "bad_key")

    # Not canonicalisable: refused before any ed25519 work, whatever the signature.
    for name, value in [("float in signed part", 1.5), ("float 1.0 in signed part", 1.0),
                        ("integer 2^53", 2**53), ("integer -2^53", -(2**53))]:
        obj = copy.deepcopy(signed)
        obj["value"] = value
        rows.add(name, obj, "@alice:example.org", "ed25519:a", alice_pk, "not_canonical")
    # An unsafe integer only in unsigned does not matter.
    obj = copy.deepcopy(signed)
    obj["unsigned"] = {"big": 2**60}
    rows.add("unsafe integer only in unsigned", obj, "@alice:example.org", "ed25519:a", alice_pk, "ok")

    olm_vectors(rows)
    write_jsonl("signed.jsonl", rows.rows)


def olm_vectors(rows):
    """A real libolm account signs its device keys and one-time keys the way a Matrix client uploads them."""
    user, device = "@olm:example.org", "OLMDEVICE"
    account = olm.Account()
    ident = account.identity_keys
    ed_pk = ident["ed25519"]
    key_id = "ed25519:" + device
    verify_key = nacl.signing.VerifyKey(base64.b64decode(ed_pk + "=="))

    def olm_sign(obj):
        payload = payload_of(obj)
        sig = account.sign(payload)
        # Cross-check libolm's signature with libsodium (via nacl) before recording it.
        verify_key.verify(payload.encode("utf-8"), base64.b64decode(sig + "=="))
        obj.setdefault("signatures", {}).setdefault(user, {})[key_id] = sig
        return obj

    device_keys = olm_sign({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:" + device: ident["curve25519"], key_id: ed_pk},
    })
    device_keys["unsigned"] = {"device_display_name": "Olm test device \u00e9\U0001f600"}
    rows.add("olm device_keys", device_keys, user, key_id, ed_pk, "ok")
    tampered = copy.deepcopy(device_keys)
    tampered["algorithms"].append("m.evil")
    rows.add("olm device_keys tampered", tampered, user, key_id, ed_pk, "mismatch")
    swapped = copy.deepcopy(device_keys)
    swapped["keys"]["curve25519:" + device] = olm.Account().identity_keys["curve25519"]
    rows.add("olm device_keys curve25519 swapped", swapped, user, key_id, ed_pk, "mismatch")
    rows.add("olm device_keys other device key", device_keys, user, key_id,
             olm.Account().identity_keys["ed25519"], "mismatch")

    account.generate_one_time_keys(3)
    for kid, curve in sorted(account.one_time_keys["curve25519"].items()):
        otk = olm_sign({"key": curve})
        rows.add("olm signed_curve25519:" + kid, otk, user, key_id, ed_pk, "ok")
    account.mark_keys_as_published()
    account.generate_fallback_key()
    for kid, curve in account.fallback_key["curve25519"].items():
        fb = olm_sign({"key": curve, "fallback": True})
        rows.add("olm fallback " + kid, fb, user, key_id, ed_pk, "ok")
        unfallback = copy.deepcopy(fb)
        del unfallback["fallback"]
        rows.add("olm fallback flag removed", unfallback, user, key_id, ed_pk, "mismatch")


def main():
    canonical_vectors()
    parse_reject_vectors()
    base64_vectors()
    signed_vectors()
    print("vectors written to", HERE, file=sys.stderr)


if __name__ == "__main__":
    main()
