"""The secure-aggregation protocol of Bonawitz et al. (CCS 2017), one round.

Four steps, every message relayed by the aggregator (sites never talk to each other):

1. ``advertise``   each site makes two fresh X25519 key pairs: ``c`` to encrypt shares to
                   one another, ``s`` to agree on pairwise masks.
2. ``share_keys``  each site draws a self-mask seed ``b`` and Shamir-splits ``b`` and its
                   ``s`` private key among all sites (threshold ``t``), each share encrypted
                   (AES-GCM, key from X25519 + HKDF) for its holder.
3. ``masked_input`` y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)  (mod 2^64),
                   x_i the fixed-point update, PRG = AES-256-CTR keyed by HKDF output.
4. ``unmask``      told which sites' y arrived, each survivor returns its shares of the
                   survivors' ``b`` and of the dropped sites' ``s`` keys, never both for
                   one site. The aggregator removes the self-masks and the dropped sites'
                   dangling pairwise masks; the pairwise masks between survivors cancel.

A dropped site's update is never revealed (its y never arrived; if it arrives late, its
self-mask is still unknown), and no survivor's update is: its ``b`` is only rebuilt once
its y is in the sum. Primitives come from ``cryptography``; Shamir sharing is
``secagg.shamir``.

Against a lying relay (the malicious-server version of the paper): the aggregator could
tell one site that j dropped (it reveals j's ``s`` share) and another that j survived (it
reveals j's ``b`` share), then rebuild both and unmask j alone. So, between masking and
unmasking, a consistency round: each survivor signs the survivor set it was told
(:meth:`SecAggSite.agree`) and reveals shares only with at least ``t`` valid signatures of
distinct sites on exactly that set (:meth:`SecAggSite.unmask`). A site signs one set per
round and ``t`` is more than half the sites, so two different sets can never both gather
``t`` signatures. Signatures, and the adverts' keys, are checked by the caller with keys
it trusts (the sites' long-term Ed25519 keys), never keys the relay supplies.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import shamir
from .fixed_point import FixedPoint

__all__ = ["SecAggSite", "SecAggServer", "AggregationFailed", "secure_sum", "flatten", "unflatten",
           "consistency_message", "advert_message"]

SHARE_BYTES = 66  # an element of GF(2^521 - 1)


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


class SecAggSite:
    """One site's side of one aggregation round; its secrets never leave it unshared."""

    def __init__(self, site_id: int, *, context: str, codec: FixedPoint | None = None):
        if site_id < 1:
            raise ValueError("site ids are positive integers")
        self.id, self.context, self.codec = site_id, context, codec or FixedPoint()
        self._c, self._s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self._b = secrets.token_bytes(32)
        self._roster: dict[int, dict] = {}
        self._inbox: dict[int, bytes] = {}
        self._masked = False
        self._unmasked = False
        self._agreed: list[int] | None = None

    def advertise(self) -> dict:
        return {"site": self.id, "c_pk": _raw(self._c.public_key()), "s_pk": _raw(self._s.public_key())}

    @property
    def stage(self) -> str:
        return "unmasked" if self._unmasked else "masked" if self._masked else "shared" if self._roster \
            else "advertised"

    def to_state(self) -> dict:
        """Everything this site must remember between the round's steps (secret: keep it at the site)."""
        def private(key):
            return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()).hex()
        return {"id": self.id, "context": self.context, "fraction_bits": self.codec.fraction_bits,
                "c": private(self._c), "s": private(self._s), "b": self._b.hex(),
                "roster": [{"site": r["site"], "name": r.get("name", ""), "c_pk": r["c_pk"].hex(),
                            "s_pk": r["s_pk"].hex()} for r in self._roster.values()],
                "inbox": {str(k): v.hex() for k, v in self._inbox.items()},
                "masked": self._masked, "unmasked": self._unmasked, "agreed": self._agreed}

    @classmethod
    def from_state(cls, state: dict) -> "SecAggSite":
        site = cls(state["id"], context=state["context"], codec=FixedPoint(state["fraction_bits"]))
        site._c = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["c"]))
        site._s = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["s"]))
        site._b = bytes.fromhex(state["b"])
        site._roster = {int(r["site"]): {"site": int(r["site"]), "name": r.get("name", ""),
                                         "c_pk": bytes.fromhex(r["c_pk"]), "s_pk": bytes.fromhex(r["s_pk"])}
                        for r in state["roster"]}
        site._inbox = {int(k): bytes.fromhex(v) for k, v in state["inbox"].items()}
        site._masked, site._unmasked = state["masked"], state["unmasked"]
        site._agreed = state.get("agreed")
        return site

    def roster_names(self) -> dict[int, dict]:
        """``{site id: {"name": ...}}`` of the roster this site shared its keys with."""
        return {i: {"name": r.get("name", "")} for i, r in self._roster.items()}

    def _channel(self, other: int) -> AESGCM:
        peer = X25519PublicKey.from_public_bytes(self._roster[other]["c_pk"])
        a, b = sorted((self.id, other))
        return AESGCM(_kdf(self._c.exchange(peer), f"medsyft-secagg/share/{self.context}/{a}-{b}"))

    def share_keys(self, roster: list[dict], *, threshold: int) -> dict[int, bytes]:
        """Encrypted shares of ``b`` and of the ``s`` key, one per site in ``roster``."""
        if self._roster:
            raise AggregationFailed(f"site {self.id} already shared its keys this round")
        self._roster = {int(r["site"]): {"site": int(r["site"]), "name": str(r.get("name", "")),
                                         "c_pk": bytes(r["c_pk"]), "s_pk": bytes(r["s_pk"])} for r in roster}
        if self.id not in self._roster:
            raise ValueError("this site is not in the roster it was given")
        if len(self._roster) < max(2, threshold):
            raise AggregationFailed(f"{len(self._roster)} sites cannot reach threshold {threshold}")
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
        self._inbox = {int(k): v for k, v in inbox.items()}
        senders = set(self._inbox)
        if self.id not in senders:
            raise ValueError("the inbox lacks this site's own share")
        x = self.codec.encode(flatten(update))
        publics = {j: self._roster[j]["s_pk"] for j in senders}
        y = x + prg(_kdf(self._b, f"medsyft-secagg/self/{self.context}"), len(x)) \
            + _pair_masks(self._s, self.id, publics, self.context, len(x))
        self._masked = True
        return unflatten(y, {k: np.shape(v) for k, v in update.items()})

    def agree(self, survivors: list[int], *, threshold: int) -> bytes:
        """The consistency round: remember the survivor set this site was told and return the
        message it signs. Once per round, and only after masking."""
        if not self._masked:
            raise AggregationFailed(f"site {self.id} has not masked an update this round")
        if self._agreed is not None:
            raise AggregationFailed(f"site {self.id} already signed this round's survivor set")
        told = sorted({int(i) for i in survivors})
        if not set(told) <= set(self._inbox) or self.id not in told:
            raise AggregationFailed("the survivor set does not match this round's sites")
        if len(told) < threshold:
            raise AggregationFailed(f"{len(told)} survivors cannot reach threshold {threshold}")
        self._agreed = told
        return consistency_message(self.context, told)

    def unmask(self, *, survivors: list[int], dropped: list[int], signatures: dict[int, bytes] | None = None,
               verify=None, threshold: int | None = None) -> dict:
        """Shares of the survivors' self-masks and the dropped sites' keys; once per round.

        With ``verify(site_id, message, signature) -> bool`` (trusted keys), the survivors must
        be the set this site signed in :meth:`agree`, and ``signatures`` must hold at least
        ``threshold`` valid ones from distinct survivors on that same set."""
        survivors, dropped = set(survivors), set(dropped)
        if self._unmasked:
            raise AggregationFailed(f"site {self.id} already answered the unmasking of this round")
        if verify is not None:
            if self._agreed is None or sorted(survivors) != self._agreed:
                raise AggregationFailed("the survivor set differs from the one this site signed: the relay "
                                        "told sites different things, so no share is revealed")
            message = consistency_message(self.context, self._agreed)
            valid = {int(i) for i, sig in (signatures or {}).items()
                     if int(i) in survivors and verify(int(i), message, bytes(sig))}
            if len(valid) < (threshold or 2):
                raise AggregationFailed(f"only {len(valid)} valid signatures on the survivor set; "
                                        f"{threshold} are needed before any share is revealed")
        if survivors & dropped:
            raise AggregationFailed(f"sites {sorted(survivors & dropped)} cannot be both survivors and dropped: "
                                    "that would expose their updates")
        if not self._masked:
            raise AggregationFailed(f"site {self.id} has not masked an update this round")
        if not (survivors | dropped) <= set(self._inbox) or self.id not in survivors:
            raise AggregationFailed("the survivor / dropped lists do not match this round's sites")
        self._unmasked = True
        out = {"site": self.id, "b": {}, "s": {}}
        for j, blob in self._inbox.items():
            plain = self._channel(j).decrypt(blob[:12], blob[12:], f"{j}->{self.id}".encode())
            if j in survivors:
                out["b"][j] = int.from_bytes(plain[:SHARE_BYTES], "big")
            elif j in dropped:
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

    def unmask(self, responses: list[dict]) -> dict[str, np.ndarray]:
        """The sum of the survivors' updates, from their shares."""
        survivors, dropped = sorted(self.masked), sorted(set(self.inboxes) - set(self.masked))
        if len(responses) < self.threshold:
            raise AggregationFailed(f"only {len(responses)} sites answered the unmasking; need {self.threshold}")
        shapes = {k: np.shape(v) for k, v in next(iter(self.masked.values())).items()}
        total = np.zeros(sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()), dtype=np.uint64)
        for y in self.masked.values():
            total = total + flatten_uint(y)
        for j in survivors:
            b = shamir.combine({r["site"]: r["b"][j] for r in responses}, threshold=self.threshold)
            total = total - prg(_kdf(b, f"medsyft-secagg/self/{self.context}"), len(total))
        publics = {a["site"]: a["s_pk"] for a in self.roster}
        for u in dropped:
            key = X25519PrivateKey.from_private_bytes(
                shamir.combine({r["site"]: r["s"][u] for r in responses}, threshold=self.threshold))
            for j in survivors:  # j's y carries +-PRG(s_uj) with nobody left to cancel it
                mask = prg(_pair_seed(key, publics[j], self.context, u, j), len(total))
                total = total - mask if j < u else total + mask
        return unflatten(self.codec.decode(total), shapes)


def consistency_message(context: str, survivors) -> bytes:
    return f"medsyft-secagg/consistency/{context}/{','.join(str(int(i)) for i in sorted(survivors))}".encode()


def advert_message(context: str, advert: dict) -> bytes:
    """What a site signs when it advertises its round keys (binds them to its name and id)."""
    return (f"medsyft-secagg/advert/{context}/{int(advert['site'])}/{advert.get('name', '')}/".encode()
            + bytes(advert["c_pk"]) + bytes(advert["s_pk"]))


def flatten_uint(update: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(update[k], dtype=np.uint64).ravel() for k in sorted(update)])


def secure_sum(updates: dict[int, dict[str, np.ndarray]], *, threshold: int, context: str,
               drop_after_masking: set[int] = frozenset(), codec: FixedPoint | None = None):
    """All four steps in one process (tests, benchmarks). Returns ``(sum, masked_inputs)``;
    the sites in ``drop_after_masking`` mask their update and then never deliver it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    codec = codec or FixedPoint()
    sites = {i: SecAggSite(i, context=context, codec=codec) for i in updates}
    keys = {i: Ed25519PrivateKey.generate() for i in updates}  # each site's long-term signing key

    def verify(i, message, signature):
        try:
            keys[i].public_key().verify(signature, message)
            return True
        except (InvalidSignature, KeyError):
            return False

    server = SecAggServer(context=context, threshold=threshold, codec=codec)
    roster = server.collect_adverts([s.advertise() for s in sites.values()])
    inboxes = server.route_shares({i: s.share_keys(roster, threshold=threshold) for i, s in sites.items()})
    masked = {i: s.masked_input(updates[i], inbox=inboxes[i]) for i, s in sites.items()}
    arrived = {i: y for i, y in masked.items() if i not in drop_after_masking}
    survivors, dropped = server.collect_masked(arrived)
    signatures = {i: keys[i].sign(sites[i].agree(survivors, threshold=threshold)) for i in survivors}
    responses = [sites[i].unmask(survivors=survivors, dropped=dropped, signatures=signatures, verify=verify,
                                 threshold=threshold) for i in survivors]
    return server.unmask(responses), arrived
