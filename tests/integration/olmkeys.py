"""Real client key material from libolm (python3-olm), signed the way Matrix clients sign."""
import copy

import canonicaljson
import olm


def sign(account, obj):
    payload = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return account.sign(canonicaljson.encode_canonical_json(payload))


class Device:
    def __init__(self, user_id, device_id):
        self.user_id = user_id
        self.device_id = device_id
        self.account = olm.Account()
        self.curve25519 = self.account.identity_keys["curve25519"]
        self.ed25519 = self.account.identity_keys["ed25519"]

    @property
    def signer(self):
        return f"ed25519:{self.device_id}"

    def device_keys(self, display_name=None):
        dk = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": self.curve25519, f"ed25519:{self.device_id}": self.ed25519},
        }
        dk["signatures"] = {self.user_id: {self.signer: sign(self.account, dk)}}
        if display_name:
            dk["unsigned"] = {"device_display_name": display_name}
        return dk

    def signed_key(self, key, fallback=False):
        obj = {"key": key}
        if fallback:
            obj["fallback"] = True
        obj["signatures"] = {self.user_id: {self.signer: sign(self.account, obj)}}
        return obj

    def one_time_keys(self, n):
        self.account.generate_one_time_keys(n)
        keys = self.account.one_time_keys["curve25519"]
        self.account.mark_keys_as_published()
        return {f"signed_curve25519:{kid}": self.signed_key(key) for kid, key in keys.items()}

    def fallback_keys(self):
        self.account.generate_fallback_key()
        (kid, key), = self.account.fallback_key["curve25519"].items()
        self.account.mark_keys_as_published()
        return {f"signed_curve25519:{kid}": self.signed_key(key, fallback=True)}


def tampered(obj, path, value):
    """A deep copy with one member changed after signing."""
    out = copy.deepcopy(obj)
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return out


class CrossSigning:
    """A user's cross-signing keys (libolm PkSigning), producing the objects clients upload."""

    def __init__(self, user_id):
        self.user_id = user_id
        self.master = olm.PkSigning(olm.PkSigning.generate_seed())
        self.self_signing = olm.PkSigning(olm.PkSigning.generate_seed())
        self.user_signing = olm.PkSigning(olm.PkSigning.generate_seed())

    def key_object(self, usage, signer=None):
        pk = getattr(self, usage).public_key
        obj = {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{pk}": pk}}
        if signer is not None:
            obj["signatures"] = {self.user_id: {f"ed25519:{signer.public_key}": sign_pk(signer, obj)}}
        return obj

    def upload_body(self):
        return {"master_key": self.key_object("master"),
                "self_signing_key": self.key_object("self_signing", self.master),
                "user_signing_key": self.key_object("user_signing", self.master)}


def sign_pk(pk_signing, obj):
    payload = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return pk_signing.sign(canonicaljson.encode_canonical_json(payload).decode())


def add_signature(obj, user_id, pk_signing=None, device=None):
    """A copy of obj carrying one more signature, by a PkSigning key or a Device."""
    out = copy.deepcopy(obj)
    out.pop("unsigned", None)
    if device is not None:
        key_id, sig = device.signer, sign(device.account, out)
    else:
        key_id, sig = f"ed25519:{pk_signing.public_key}", sign_pk(pk_signing, out)
    out.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = sig
    return out
