"""The secure-aggregation protocol of Bonawitz et al. (CCS 2017), one round, with the
consistency round of its malicious-server version.

Five steps, every message relayed by the aggregator (sites never talk to each other):

1. ``advertise``    each site makes two fresh X25519 key pairs: ``c`` to encrypt shares to
                    one another, ``s`` to agree on pairwise masks; it signs them, with its
                    id, its name, the round's context and the researcher's session, with its
                    long-term Ed25519 key.
2. ``share_keys``   every advert's signature is checked with ``verify``: keys the site
                    trusts, never keys in the relayed message. Then the site draws a
                    self-mask seed ``b`` and Shamir-splits ``b`` and its ``s`` private key
                    among the roster (threshold ``t``, more than half of the roster), each
                    share encrypted (AES-GCM, key from X25519 + HKDF) for its holder.
3. ``masked_input`` y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)  (mod 2^64)
                    over the sites ``U2`` whose shares reached i (at least ``t``), x_i the
                    fixed-point update, PRG = AES-256-CTR keyed by HKDF output.
4. ``agree``        told the survivors ``U3`` (the sites whose y arrived), each survivor
                    signs (context, session, the adverts of ``U2``, ``U2``, ``U3``). Once per
                    round.
5. ``unmask``       only if EVERY survivor signed exactly what this site signed: its shares
                    of the survivors' ``b`` and of the dropped sites' (``U2 - U3``) ``s``
                    keys, never both for one site, once per round. The aggregator removes
                    the self-masks and the dropped sites' dangling pairwise masks; the
                    pairwise masks between survivors cancel.

Once it signed the survivor set, a site may mask one more vector per named purpose with
the same keys (``masked_extra``: the round's noised evaluation). Its sum over exactly the
agreed survivors unmasks with the shares step 5 reveals anyway; one survivor missing and
the sum stays masked, and no share reveals a survivor's own vector.

What a lying relay cannot do, and why:

- tell sites different survivor sets (one then reveals j's ``s`` share, another j's ``b``
  share): a holder reveals one of the two, once, and ``t`` is more than half of the
  holders, so never ``t`` of both; and an agreement needs the signatures of all of its
  survivors (at least ``t``), so two different ones would share a site that signed twice;
- shrink a site's ``U2`` so that its y carries few pairwise masks (down to none) and its
  ``b`` alone unmasks it: ``U2`` is in the signed agreement, and a survivor's ``b`` is
  revealed only with that survivor's own signature on the same ``U2`` and ``U3``, so each
  survivor's y is masked with every other survivor;
- swap a site's advertised keys for its own (man in the middle): adverts are signed;
- replay signatures or adverts from another round, study or researcher: they sign the
  context, the session and (agreements) this round's fresh keys.

What it still learns: the sum over a survivor set of at least ``t`` sites, as with honest
dropouts. Primitives come from ``cryptography``; Shamir sharing is ``secagg.shamir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from typing import Callable

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import shamir
from .fixed_point import FixedPoint

__all__ = ["SecAggSite", "SecAggServer", "AggregationFailed", "secure_sum", "flatten", "unflatten",
           "advert_message", "consistency_message", "trusting", "Verify"]

SHARE_BYTES = 66  # an element of GF(2^521 - 1)
KEY_BYTES = 32
SIGNATURE_BYTES = 64

Verify = Callable[[str, bytes, bytes], bool]
"""``verify(site_name, message, signature)``: True only for that site's signature under a key
the caller trusts (never one that came with the relayed message)."""


class AggregationFailed(RuntimeError):
    """Too few sites remain to unmask the sum, or a site refused; the message says which."""


def flatten(update: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(update[k], dtype=np.float64).ravel() for k in sorted(update)]) \
        if update else np.zeros(0)


def unflatten(vector: np.ndarray, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for k in sorted(shapes):
        size = int(np.prod(shapes[k], dtype=np.int64))
        out[k] = vector[at:at + size].reshape(shapes[k])
        at += size
    return out


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _kdf(secret: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(secret)


def prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random uint64 values: the AES-256-CTR keystream of ``seed``."""
    stream = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor().update(b"\0" * (8 * length))
    return np.frombuffer(stream, dtype=np.uint64).copy()


def _pair_seed(private: X25519PrivateKey, peer_public: bytes, context: str, a: int, b: int) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _kdf(shared, f"medsyft-secagg/mask/{context}/{min(a, b)}-{max(a, b)}")


def _pair_masks(private: X25519PrivateKey, me: int, publics: dict[int, bytes], context: str,
                length: int) -> np.ndarray:
    total = np.zeros(length, dtype=np.uint64)
    for other, public in publics.items():
        if other == me:
            continue
        mask = prg(_pair_seed(private, public, context, me, other), length)
        total = total + mask if me < other else total - mask
    return total


def _site_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"site ids are positive integers, got {value!r}")
    return int(value)


def _ids(values, what: str) -> list[int]:
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ValueError(f"{what} must be a list of site ids")
    ids = [_site_id(v) for v in values]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} lists a site twice")
    return sorted(ids)


def _bytes(value, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or (size is not None and len(value) != size):
        raise ValueError(f"{what} must be {size or 'some'} bytes")
    return bytes(value)


def _advert(entry) -> dict:
    """One roster entry, checked for shape (its signature is checked by the caller's trust)."""
    if not isinstance(entry, dict):
        raise ValueError("a roster entry must be an advert (a dict)")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError("an advert must name its site")
    return {"site": _site_id(entry.get("site")), "name": name,
            "c_pk": _bytes(entry.get("c_pk"), "an advert's c_pk", KEY_BYTES),
            "s_pk": _bytes(entry.get("s_pk"), "an advert's s_pk", KEY_BYTES),
            "signature": _bytes(entry.get("signature", b""), "an advert's signature")}


def advert_message(context: str, session: str, advert: dict) -> bytes:
    """What a site signs when it advertises its round keys: binds them to its id and name, the
    round and the researcher it runs for."""
    head = json.dumps(["medsyft-secagg/advert/v2", context, session, int(advert["site"]), str(advert["name"])])
    return head.encode() + b"\0" + bytes(advert["c_pk"]) + bytes(advert["s_pk"])


def consistency_message(context: str, session: str, roster: dict[int, dict], shared, survivors) -> bytes:
    """What a survivor signs in the consistency round: the round, the researcher, the adverts
    of the sites it masked with (``shared``, U2) and the survivors (U3). Fixed size (a digest)."""
    body = json.dumps([context, session, [[i, roster[i]["name"], roster[i]["c_pk"].hex(), roster[i]["s_pk"].hex()]
                                          for i in sorted(shared)], sorted(survivors)])
    return b"medsyft-secagg/consistency/v2\0" + hashlib.sha256(body.encode()).digest()


class SecAggSite:
    """One site's side of one aggregation round; its secrets never leave it unshared.

    ``name``: the site's name in the federation (what ``verify`` knows it by); ``session``:
    who the round runs for (the same at every site), so that nothing signed for another
    researcher's round of the same context is accepted here."""

    def __init__(self, site_id: int, *, context: str, name: str = "", session: str = "",
                 codec: FixedPoint | None = None):
        self.id = _site_id(site_id)
        if not isinstance(context, str) or not context:
            raise ValueError("a round needs a context (study and round)")
        self.context, self.name, self.session = context, str(name or f"site-{self.id}"), str(session)
        self.codec = codec or FixedPoint()
        self._c, self._s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self._b = secrets.token_bytes(32)
        self._threshold = 0
        self._roster: dict[int, dict] = {}
        self._inbox: dict[int, bytes] = {}
        self._masked = False
        self._agreed: list[int] | None = None
        self._unmasked = False
        self._extras: list[str] = []

    def advertise(self, sign: Callable[[bytes], bytes] | None = None) -> dict:
        """This round's public keys, signed with ``sign`` (the site's long-term key)."""
        advert = {"site": self.id, "name": self.name, "c_pk": _raw(self._c.public_key()),
                  "s_pk": _raw(self._s.public_key())}
        if sign is not None:
            advert["signature"] = bytes(sign(advert_message(self.context, self.session, advert)))
        return advert

    @property
    def stage(self) -> str:
        return "unmasked" if self._unmasked else "agreed" if self._agreed is not None else "masked" \
            if self._masked else "shared" if self._roster else "advertised"

    def to_state(self) -> dict:
        """Everything this site must remember between the round's steps (secret: keep it at the site)."""
        def private(key):
            return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()).hex()
        return {"version": 2, "id": self.id, "name": self.name, "session": self.session, "context": self.context,
                "fraction_bits": self.codec.fraction_bits, "threshold": self._threshold,
                "c": private(self._c), "s": private(self._s), "b": self._b.hex(),
                "roster": [{"site": r["site"], "name": r["name"], "c_pk": r["c_pk"].hex(), "s_pk": r["s_pk"].hex()}
                           for r in self._roster.values()],
                "inbox": {str(k): v.hex() for k, v in self._inbox.items()},
                "masked": self._masked, "agreed": self._agreed, "unmasked": self._unmasked, "extras": list(self._extras)}

    @classmethod
    def from_state(cls, state: dict) -> "SecAggSite":
        if not isinstance(state, dict) or state.get("version") != 2:
            raise AggregationFailed("this round's state predates the consistency round; start a new round")
        site = cls(state["id"], context=state["context"], name=state["name"], session=state["session"],
                   codec=FixedPoint(state["fraction_bits"]))
        site._c = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["c"]))
        site._s = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["s"]))
        site._b = bytes.fromhex(state["b"])
        site._threshold = int(state["threshold"])
        site._roster = {int(r["site"]): {"site": int(r["site"]), "name": r["name"], "c_pk": bytes.fromhex(r["c_pk"]),
                                         "s_pk": bytes.fromhex(r["s_pk"])} for r in state["roster"]}
        site._inbox = {int(k): bytes.fromhex(v) for k, v in state["inbox"].items()}
        site._masked, site._unmasked = bool(state["masked"]), bool(state["unmasked"])
        site._agreed = None if state["agreed"] is None else [int(i) for i in state["agreed"]]
        site._extras = [str(p) for p in state.get("extras", [])]
        return site

    def _channel(self, other: int) -> AESGCM:
        peer = X25519PublicKey.from_public_bytes(self._roster[other]["c_pk"])
        a, b = sorted((self.id, other))
        return AESGCM(_kdf(self._c.exchange(peer), f"medsyft-secagg/share/{self.context}/{a}-{b}"))

    def share_keys(self, roster: list[dict], *, threshold: int, verify: Verify) -> dict[int, bytes]:
        """Encrypted shares of ``b`` and of the ``s`` key, one per site in ``roster``, once every
        advert in it is checked with ``verify``. Once per round."""
        if self._roster:
            raise AggregationFailed(f"site {self.id} already shared its keys this round")
        if not isinstance(roster, (list, tuple)):
            raise ValueError("the roster must be a list of adverts")
        adverts = [_advert(entry) for entry in roster]
        by_id = {a["site"]: a for a in adverts}
        if len(by_id) != len(adverts) or len({a["name"] for a in adverts}) != len(adverts):
            raise AggregationFailed("the roster lists a site twice")
        own = self.advertise()
        if {k: (by_id.get(self.id) or {}).get(k) for k in own} != own:
            raise AggregationFailed("the roster does not carry this site's own advert")
        for a in adverts:
            if not verify(a["name"], advert_message(self.context, self.session, a), a["signature"]):
                raise AggregationFailed(f"the advert of site {a['site']} ({a['name']}) is not signed by that site "
                                        "with the key this site trusts: its keys may have been replaced")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 2 \
                or 2 * threshold <= len(by_id) or threshold > len(by_id):
            raise AggregationFailed(f"threshold {threshold!r} must be an integer of at least 2, at most the "
                                    f"{len(by_id)} sites and more than half of them")
        self._threshold = int(threshold)
        self._roster = {i: {k: a[k] for k in ("site", "name", "c_pk", "s_pk")} for i, a in by_id.items()}
        holders = sorted(self._roster)
        s_private = self._s.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())
        b_shares = shamir.split(self._b, threshold=threshold, holders=holders)
        s_shares = shamir.split(s_private, threshold=threshold, holders=holders)
        out = {}
        for j in holders:
            plain = b_shares[j].to_bytes(SHARE_BYTES, "big") + s_shares[j].to_bytes(SHARE_BYTES, "big")
            nonce = os.urandom(12)
            out[j] = nonce + self._channel(j).encrypt(nonce, plain, f"{self.id}->{j}".encode())
        return out

    def masked_input(self, update: dict[str, np.ndarray], *, inbox: dict[int, bytes]) -> dict[str, np.ndarray]:
        """The update, fixed-point encoded and masked; ``inbox``: the shares sent to this site.

        Once per round: two inputs under the same masks would reveal their difference."""
        if self._masked:
            raise AggregationFailed(f"site {self.id} already masked an update this round")
        if not self._roster:
            raise AggregationFailed(f"site {self.id} has not shared its keys this round")
        if not isinstance(inbox, dict):
            raise ValueError("the inbox must map sender ids to encrypted shares")
        received = {_site_id(k): _bytes(v, "an encrypted share") for k, v in inbox.items()}
        if self.id not in received:
            raise ValueError("the inbox lacks this site's own share")
        if not set(received) <= set(self._roster):
            raise AggregationFailed(f"the inbox holds shares from sites {sorted(set(received) - set(self._roster))} "
                                    "that are not in this round's roster")
        if len(received) < self._threshold:
            raise AggregationFailed(f"shares from {len(received)} sites cannot reach threshold {self._threshold}")
        for j, blob in received.items():  # an inbox that will not decrypt would only fail at unmasking
            self._open(j, blob)
        x = self.codec.encode(flatten(update))
        self._inbox = received
        publics = {j: self._roster[j]["s_pk"] for j in received}
        y = x + prg(_kdf(self._b, f"medsyft-secagg/self/{self.context}"), len(x)) \
            + _pair_masks(self._s, self.id, publics, self.context, len(x))
        self._masked = True
        return unflatten(y, {k: np.shape(v) for k, v in update.items()})

    def _open(self, sender: int, blob: bytes) -> bytes:
        try:
            return self._channel(sender).decrypt(blob[:12], blob[12:], f"{sender}->{self.id}".encode())
        except (InvalidTag, ValueError):
            raise AggregationFailed(f"the share from site {sender} does not decrypt: it was not made for "
                                    "this site this round") from None

    def agree(self, survivors: list[int]) -> bytes:
        """The consistency round: remember the survivor set this site was told and return the
        message it signs (which also names the sites it masked with). Once per round."""
        if not self._masked:
            raise AggregationFailed(f"site {self.id} has not masked an update this round")
        if self._agreed is not None:
            raise AggregationFailed(f"site {self.id} already signed this round's survivor set")
        told = _ids(survivors, "the survivor set")
        if not set(told) <= set(self._inbox) or self.id not in told:
            raise AggregationFailed("the survivor set does not match the sites this site masked with")
        if len(told) < self._threshold:
            raise AggregationFailed(f"{len(told)} survivors cannot reach threshold {self._threshold}")
        self._agreed = told
        return self._agreement()

    def _agreement(self) -> bytes:
        return consistency_message(self.context, self.session, self._roster, self._inbox, self._agreed)

    def masked_extra(self, vector: dict[str, np.ndarray], *, purpose: str) -> dict[str, np.ndarray]:
        """Another vector of this round (a noised evaluation, say) masked with the round's keys
        under its own ``purpose``. Only after this site signed the survivor set, once per
        purpose: its sum over exactly those survivors unmasks with the shares the round
        reveals anyway (survivors' ``b``, dropped sites' ``s``), and nothing less does."""
        if self._agreed is None:
            raise AggregationFailed(f"site {self.id} has not signed this round's survivor set: nothing else is "
                                    "masked with its keys before that")
        if not isinstance(purpose, str) or not purpose.isidentifier():
            raise ValueError("a purpose is a short name (letters, digits, _)")
        if purpose in self._extras:
            raise AggregationFailed(f"site {self.id} already masked its {purpose} of this round: two vectors "
                                    "under one mask would reveal their difference")
        context = f"{self.context}/{purpose}"
        x = self.codec.encode(flatten(vector))
        publics = {j: self._roster[j]["s_pk"] for j in self._inbox}
        y = x + prg(_kdf(self._b, f"medsyft-secagg/self/{context}"), len(x)) \
            + _pair_masks(self._s, self.id, publics, context, len(x))
        self._extras.append(purpose)
        return unflatten(y, {k: np.shape(v) for k, v in vector.items()})

    def unmask(self, *, survivors: list[int], dropped: list[int], signatures: dict[int, bytes],
               verify: Verify) -> dict:
        """Shares of the survivors' self-masks and the dropped sites' keys; once per round, and
        only if every survivor signed (``verify``: trusted keys) the agreement this site signed."""
        if self._unmasked:
            raise AggregationFailed(f"site {self.id} already answered the unmasking of this round")
        if not self._masked:
            raise AggregationFailed(f"site {self.id} has not masked an update this round")
        if self._agreed is None:
            raise AggregationFailed(f"site {self.id} has not signed a survivor set this round; the consistency "
                                    "step comes first")
        survivors, dropped = _ids(survivors, "the survivor set"), _ids(dropped, "the dropped list")
        if set(survivors) & set(dropped):
            raise AggregationFailed(f"sites {sorted(set(survivors) & set(dropped))} cannot be both survivors and "
                                    "dropped: that would expose their updates")
        if survivors != self._agreed:
            raise AggregationFailed("the survivor set differs from the one this site signed: the relay told sites "
                                    "different things, so no share is revealed")
        if dropped != sorted(set(self._inbox) - set(survivors)):
            raise AggregationFailed("the dropped list must be the sites this site masked with that did not survive")
        if not isinstance(signatures, dict):
            raise ValueError("signatures must map site ids to signatures")
        message, signed = self._agreement(), {_site_id(k): v for k, v in signatures.items()}
        missing = [i for i in survivors if not (isinstance(signed.get(i), (bytes, bytearray))
                                                and verify(self._roster[i]["name"], message, bytes(signed[i])))]
        if missing:
            raise AggregationFailed(f"sites {missing} did not sign the survivor set this site signed (or the relay "
                                    "showed them other sites); every survivor must, so no share is revealed")
        self._unmasked = True
        out = {"site": self.id, "b": {}, "s": {}}
        for j, blob in self._inbox.items():
            plain = self._open(j, blob)
            if j in survivors:
                out["b"][j] = int.from_bytes(plain[:SHARE_BYTES], "big")
            else:
                out["s"][j] = int.from_bytes(plain[SHARE_BYTES:], "big")
        return out


class SecAggServer:
    """The aggregator's side of one round: relays messages, holds only masked vectors and the sum."""

    def __init__(self, *, context: str, threshold: int, codec: FixedPoint | None = None):
        if threshold < 2:
            raise ValueError("threshold must be at least 2: one site alone would be its own sum")
        self.context, self.threshold, self.codec = context, threshold, codec or FixedPoint()
        self.roster: list[dict] = []
        self.inboxes: dict[int, dict[int, bytes]] = {}
        self.masked: dict[int, dict[str, np.ndarray]] = {}
        self.signatures: dict[int, bytes] = {}

    def collect_adverts(self, adverts: list[dict]) -> list[dict]:
        if len(adverts) < self.threshold:
            raise AggregationFailed(f"only {len(adverts)} sites advertised keys; the threshold is {self.threshold}")
        self.roster = sorted(adverts, key=lambda a: a["site"])
        return self.roster

    def route_shares(self, shares: dict[int, dict[int, bytes]]) -> dict[int, dict[int, bytes]]:
        """Sender -> {holder: ciphertext} becomes holder -> {sender: ciphertext}."""
        if len(shares) < self.threshold:
            raise AggregationFailed(f"only {len(shares)} sites shared keys; the threshold is {self.threshold}")
        self.inboxes = {}
        for sender, outgoing in shares.items():
            for holder, blob in outgoing.items():
                if holder in shares:
                    self.inboxes.setdefault(holder, {})[sender] = blob
        return self.inboxes

    def collect_masked(self, masked: dict[int, dict[str, np.ndarray]]) -> tuple[list[int], list[int]]:
        """Survivors and dropped sites, from the masked inputs that arrived."""
        self.masked = dict(masked)
        survivors = sorted(masked)
        dropped = sorted(set(self.inboxes) - set(masked))
        if len(survivors) < self.threshold:
            raise AggregationFailed(f"only {len(survivors)} masked updates arrived; the threshold is "
                                    f"{self.threshold}, so the sum cannot be unmasked")
        return survivors, dropped

    def collect_signatures(self, signatures: dict[int, bytes]) -> dict[int, bytes]:
        """The survivors' signatures on the survivor set: every survivor's, or no site will unmask."""
        missing = sorted(set(self.masked) - set(signatures))
        if missing:
            raise AggregationFailed(f"sites {missing} did not sign the survivor set; every survivor must before "
                                    "any site reveals a share, so this round cannot be unmasked")
        self.signatures = {i: signatures[i] for i in sorted(self.masked)}
        return self.signatures

    def unmask(self, responses: list[dict]) -> dict[str, np.ndarray]:
        """The sum of the survivors' updates, from their shares."""
        survivors, dropped = sorted(self.masked), sorted(set(self.inboxes) - set(self.masked))
        if len(responses) < self.threshold:
            raise AggregationFailed(f"only {len(responses)} sites answered the unmasking; need {self.threshold}")
        self._self_seeds = {j: shamir.combine({r["site"]: r["b"][j] for r in responses}, threshold=self.threshold)
                            for j in survivors}
        self._dropped_keys = {u: X25519PrivateKey.from_private_bytes(
            shamir.combine({r["site"]: r["s"][u] for r in responses}, threshold=self.threshold)) for u in dropped}
        return self._remove_masks(self.masked, self.context)

    def unmask_extra(self, masked: dict[int, dict[str, np.ndarray]], *, purpose: str) -> dict[str, np.ndarray]:
        """The sum of a vector every survivor masked with :meth:`SecAggSite.masked_extra`,
        after :meth:`unmask`; it needs every survivor's, as the round's sum did."""
        if not hasattr(self, "_self_seeds"):
            raise AggregationFailed("unmask the round's sum first")
        missing = sorted(set(self.masked) - set(masked))
        if missing or set(masked) - set(self.masked):
            raise AggregationFailed(f"the {purpose} of this round needs every survivor's masked vector "
                                    f"(missing: sites {missing}); without one the sum stays masked")
        return self._remove_masks(masked, f"{self.context}/{purpose}")

    def _remove_masks(self, masked: dict[int, dict[str, np.ndarray]], context: str) -> dict[str, np.ndarray]:
        survivors = sorted(masked)
        shapes = {k: np.shape(v) for k, v in next(iter(masked.values())).items()}
        total = np.zeros(sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()), dtype=np.uint64)
        for y in masked.values():
            total = total + flatten_uint(y)
        for j in survivors:
            total = total - prg(_kdf(self._self_seeds[j], f"medsyft-secagg/self/{context}"), len(total))
        publics = {a["site"]: a["s_pk"] for a in self.roster}
        for u, key in self._dropped_keys.items():
            for j in survivors:  # j's y carries +-PRG(s_uj) with nobody left to cancel it
                mask = prg(_pair_seed(key, publics[j], context, u, j), len(total))
                total = total - mask if j < u else total + mask
        return unflatten(self.codec.decode(total), shapes)


def flatten_uint(update: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(update[k], dtype=np.uint64).ravel() for k in sorted(update)])


def secure_sum(updates: dict[int, dict[str, np.ndarray]], *, threshold: int, context: str,
               drop_after_masking: set[int] = frozenset(), codec: FixedPoint | None = None):
    """All five steps in one process (tests, benchmarks, labs), each site with a long-term
    Ed25519 key the others trust. Returns ``(sum, masked_inputs)``; the sites in
    ``drop_after_masking`` mask their update and then never deliver it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    codec = codec or FixedPoint()
    sites = {i: SecAggSite(i, context=context, codec=codec) for i in updates}
    keys = {s.name: Ed25519PrivateKey.generate() for s in sites.values()}
    verify = trusting({name: key.public_key() for name, key in keys.items()})
    server = SecAggServer(context=context, threshold=threshold, codec=codec)
    roster = server.collect_adverts([s.advertise(keys[s.name].sign) for s in sites.values()])
    inboxes = server.route_shares({i: s.share_keys(roster, threshold=threshold, verify=verify)
                                   for i, s in sites.items()})
    masked = {i: s.masked_input(updates[i], inbox=inboxes[i]) for i, s in sites.items()}
    arrived = {i: y for i, y in masked.items() if i not in drop_after_masking}
    survivors, dropped = server.collect_masked(arrived)
    signatures = server.collect_signatures({i: keys[sites[i].name].sign(sites[i].agree(survivors))
                                            for i in survivors})
    responses = [sites[i].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify)
                 for i in survivors]
    return server.unmask(responses), arrived


def trusting(keys: dict) -> Verify:
    """A :data:`Verify` over ``{site name: Ed25519 public key (object or 32 raw bytes)}``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    trusted = {str(n): k if isinstance(k, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(bytes(k))
               for n, k in keys.items()}

    def verify(name: str, message: bytes, signature: bytes) -> bool:
        key = trusted.get(name)
        if key is None or not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            key.verify(bytes(signature), message)
            return True
        except InvalidSignature:
            return False
    return verify
