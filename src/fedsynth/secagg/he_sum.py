"""Homomorphic encryption (BFV, TenSEAL) as a second secure-sum backend.

Roles and threat model
----------------------
* **Clients** hold their vectors and the round's public key only. A client encrypts its vector,
  packed into BFV ciphertexts, and uploads them once.
* **The aggregator** (the FLAIM / Flower server) receives ciphertexts and adds them; it never holds
  the secret key, so under RLWE (IND-CPA) it learns nothing about any vector — only who uploaded
  and the sizes.
* **The decryptor** is a second server, distinct from the aggregator and not colluding with it. It
  generates the key pair, publishes the public key and decrypts *only aggregates* the aggregator
  hands it. Through the plain :class:`HESum` (the :class:`~fedsynth.secagg.secure_sum.SecureSum`
  contract: exact integer sums) the decryptor sees each exact sum — as SecAgg+'s server does.
  Through :class:`EncryptedAccumulator` (``flaim-he``) the aggregator keeps the sum encrypted over
  all rounds and the decryptor only ever decrypts values that already carry the clients' noise.

What breaks it: the aggregator and the decryptor colluding (the decryptor could decrypt a single
client's ciphertext); a decryptor that decrypts a non-aggregate ciphertext (it cannot tell — the
protocol relies on it following the rules). TenSEAL has no threshold decryption, so the key cannot
be split among the clients (OpenFHE can, but its only wheel here is built for Python 3.10). A
malicious client can still lie about its own values (as with SecAgg+); the bound check limits how
far.

Parameters (chosen for 128-bit security by the HE standard's table)
--------------------------------------------------------------------
BFV, ring degree n = 4096 (so 4096 slots per ciphertext), coefficient modulus 36 + 36 + 37 = 109
bits (the maximum for 128-bit security at n = 4096), plaintext modulus p = 67,084,289 (prime,
p ≡ 1 mod 2n, which batching needs). A slot holds an integer mod p decoded centred in
(−p/2, p/2], so a sum is exact iff every partial sum stays inside: checked before anything is
encrypted as ``n_clients · bound < p/2`` (default bound 2^16: up to 511 clients). The 36+36-bit
data modulus leaves room for one plaintext multiplication by a 0/1 mask (the accumulator's
per-marginal release; tested); the 40+20-bit split does not.

Packing and integrity: each ciphertext carries n − 2 data slots and 2 check slots. For a round the
decryptor draws two nonces r₁, r₂ ∈ [1, p) that every client writes into its check slots; after
the aggregator adds m uploads the check slots must decrypt to m·r₁, m·r₂ (mod p). A ciphertext
under another key decrypts to noise and one from another round carries other nonces, so either
fails the check (false accept ≈ p⁻²) and nothing is released (:class:`HEIntegrityError`). A
d-entry vector takes ⌈d / (n − 2)⌉ ciphertexts (6,500 entries → 2, 65,000 → 16) of ≈ 81 KB each;
the public key is ≈ 129 KB (no relinearisation or Galois keys: only additions and plaintext
products are used).

Faults: a malformed, oversized, wrongly tagged or wrongly shaped upload is refused and its client
left out (``last_refused`` says why); a client lost before uploading is simply not in the sum; one
lost after uploading is in it (there is no unmasking stage to fail). Fewer than
``max(2, threshold)`` accepted uploads abort the round (:class:`SecureSumAborted`).
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsynth.secagg.secure_sum import SecureSumAborted, SumResult, check_range

CHECK_SLOTS = 2


class HEError(ValueError):
    """An upload that cannot be part of the sum (malformed, oversized, another round or key)."""


class HEIntegrityError(SecureSumAborted):
    """The decrypted check slots disagree with the accepted uploads: nothing is released."""


@dataclass(frozen=True)
class HEParams:
    poly_degree: int = 4096
    coeff_bits: tuple[int, ...] = (36, 36, 37)
    plain_modulus: int = 67_084_289

    @property
    def data_slots(self) -> int:
        return self.poly_degree - CHECK_SLOTS

    @property
    def max_abs(self) -> int:
        """The largest |value| a slot decodes exactly (centred representation)."""
        return (self.plain_modulus - 1) // 2

    def ciphertexts(self, size: int) -> int:
        return max(1, -(-size // self.data_slots))


def _ts() -> Any:
    import tenseal  # heavy native module: only when the HE backend is used

    return tenseal


def _centred(v: np.ndarray, p: int) -> np.ndarray:
    v = np.mod(v.astype(np.int64), p)
    return np.where(v > p // 2, v - p, v)


@dataclass(frozen=True)
class RoundKey:
    """What a client receives for one round: the public key, its fingerprint, the round's tag and
    check nonces (public: they only bind uploads to this key and round)."""

    public_context: bytes
    fingerprint: str
    round_id: str
    nonces: tuple[int, int]
    params: HEParams

    @property
    def nbytes(self) -> int:
        return len(self.public_context) + len(self.round_id) + 16


@dataclass(frozen=True)
class Upload:
    """One client's ciphertexts for one round, with the header the aggregator checks first."""

    round_id: str
    fingerprint: str
    size: int
    chunks: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        head = len(self.round_id) + len(self.fingerprint) + 8
        return head + sum(4 + len(c) for c in self.chunks)

    def to_bytes(self) -> bytes:
        """Wire form: length-prefixed header fields and ciphertexts (what the Flower path ships)."""
        parts = [
            self.round_id.encode(),
            self.fingerprint.encode(),
            struct.pack("<Q", self.size),
            *self.chunks,
        ]
        return b"".join(struct.pack("<I", len(x)) + x for x in parts)

    @classmethod
    def from_bytes(cls, blob: bytes, *, max_bytes: int) -> Upload:
        if len(blob) > max_bytes:
            raise HEError(f"upload of {len(blob)} bytes exceeds the {max_bytes}-byte limit")
        parts, i = [], 0
        while i < len(blob):
            if i + 4 > len(blob):
                raise HEError("truncated upload (length prefix)")
            (n,) = struct.unpack_from("<I", blob, i)
            if i + 4 + n > len(blob):
                raise HEError("truncated upload (field shorter than its length prefix)")
            parts.append(blob[i + 4 : i + 4 + n])
            i += 4 + n
        if len(parts) < 4 or len(parts[2]) != 8:
            raise HEError("malformed upload header")
        try:
            rid, fp = parts[0].decode(), parts[1].decode()
        except UnicodeDecodeError:
            raise HEError("malformed upload header") from None
        return cls(rid, fp, struct.unpack("<Q", parts[2])[0], tuple(parts[3:]))


def encrypt_vector(key: RoundKey, vector: np.ndarray) -> Upload:
    """The client's step: pack ``vector`` (int64) into BFV ciphertexts under ``key``, with the
    round's check nonces in each ciphertext's last two slots."""
    ts = _ts()
    ctx = ts.context_from(key.public_context)
    prm = key.params
    v = np.asarray(vector, dtype=np.int64).ravel()
    if v.size and int(np.abs(v).max()) > prm.max_abs:
        raise HEError(f"a value exceeds the plaintext range ±{prm.max_abs}")
    chunks = []
    for k in range(prm.ciphertexts(v.size)):
        part = v[k * prm.data_slots : (k + 1) * prm.data_slots]
        slots = np.zeros(prm.poly_degree, dtype=np.int64)
        slots[: len(part)] = part
        slots[-CHECK_SLOTS:] = key.nonces
        chunks.append(ts.bfv_vector(ctx, slots.tolist()).serialize())
    return Upload(key.round_id, key.fingerprint, int(v.size), tuple(chunks))


class Decryptor:
    """The key holder (a second server): generates keys, opens rounds, decrypts aggregates."""

    def __init__(self, params: HEParams | None = None) -> None:
        ts = _ts()
        self.params = params or HEParams()
        self._ctx = ts.context(
            ts.SCHEME_TYPE.BFV,
            poly_modulus_degree=self.params.poly_degree,
            plain_modulus=self.params.plain_modulus,
            coeff_mod_bit_sizes=list(self.params.coeff_bits),
        )
        self.public_context = self._ctx.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
        )
        self.fingerprint = hashlib.sha256(self.public_context).hexdigest()[:32]
        self._rounds: dict[str, tuple[int, int]] = {}

    def open_round(self, round_id: str | None = None) -> RoundKey:
        rid = round_id or secrets.token_hex(8)
        if rid in self._rounds:
            raise ValueError(f"round {rid!r} is already open")
        p = self.params.plain_modulus
        nonces = (1 + secrets.randbelow(p - 1), 1 + secrets.randbelow(p - 1))
        self._rounds[rid] = nonces
        return RoundKey(self.public_context, self.fingerprint, rid, nonces, self.params)

    def decrypt(self, total: EncryptedTotal) -> np.ndarray:
        """The summed vector, after checking that the check slots equal Σ_rounds m_r · nonces_r."""
        p = self.params.plain_modulus
        want = np.zeros(CHECK_SLOTS, dtype=np.int64)
        for rid, m in total.counts.items():
            if rid not in self._rounds:
                raise HEIntegrityError(f"round {rid!r} was not opened by this decryptor")
            want = np.mod(want + m * np.array(self._rounds[rid], dtype=np.int64), p)
        out = []
        for ct in total.ciphertexts:
            ct.link_context(self._ctx)
            slots = np.array(ct.decrypt(self._ctx.secret_key()), dtype=np.int64)
            if not np.array_equal(np.mod(slots[-CHECK_SLOTS:], p), want):
                raise HEIntegrityError(
                    "the aggregate's check slots do not match the accepted uploads (a ciphertext under "
                    "another key or from another round): nothing is released"
                )
            out.append(_centred(slots[: self.params.data_slots], p))
        return np.concatenate(out)[: total.size]


@dataclass
class EncryptedTotal:
    """Ciphertexts of a running sum and how many uploads of each round it holds."""

    size: int
    ciphertexts: list[Any]
    counts: dict[str, int] = field(default_factory=dict)


class Aggregator:
    """The server's side: checks each upload's header and size, deserialises, adds."""

    def __init__(
        self, public_context: bytes, params: HEParams, *, max_chunk_bytes: int | None = None
    ) -> None:
        ts = _ts()
        self._ctx = ts.context_from(public_context)
        self.fingerprint = hashlib.sha256(public_context).hexdigest()[:32]
        self.params = params
        # a fresh ciphertext at these parameters is ≈ 81 KB; allow 2× for serialisation variance
        self.max_chunk_bytes = max_chunk_bytes or 2 * 8 * params.poly_degree * len(params.coeff_bits) * 2

    def parse(self, cid: int, up: Upload, key: RoundKey, size: int) -> list[Any]:
        """Deserialised ciphertexts of one upload, or :class:`HEError` naming what is wrong."""
        ts = _ts()
        if up.fingerprint != self.fingerprint:
            raise HEError(f"client {cid}: upload under another public key")
        if up.round_id != key.round_id:
            raise HEError(f"client {cid}: upload for round {up.round_id!r}, not {key.round_id!r}")
        if up.size != size or len(up.chunks) != self.params.ciphertexts(size):
            raise HEError(
                f"client {cid}: upload of {up.size} entries in {len(up.chunks)} ciphertexts, expected {size}"
            )
        cts = []
        for blob in up.chunks:
            if len(blob) > self.max_chunk_bytes:
                raise HEError(
                    f"client {cid}: a ciphertext of {len(blob)} bytes exceeds {self.max_chunk_bytes}"
                )
            try:
                cts.append(ts.bfv_vector_from(self._ctx, blob))
            except Exception as e:  # TenSEAL raises ValueError/RuntimeError on bad streams
                raise HEError(f"client {cid}: malformed ciphertext ({e})") from None
        return cts

    def add(self, total: EncryptedTotal | None, cts: list[Any], round_id: str, size: int) -> EncryptedTotal:
        if total is None:
            return EncryptedTotal(size, list(cts), {round_id: 1})
        if total.size != size:
            raise HEError(f"vector of {size} entries cannot join a sum of {total.size}")
        total.ciphertexts = [a + b for a, b in zip(total.ciphertexts, cts, strict=True)]
        total.counts[round_id] = total.counts.get(round_id, 0) + 1
        return total


class HESum:
    """The :class:`~fedsynth.secagg.secure_sum.SecureSum` contract over BFV: exact int64 sums over
    the accepted uploads, survivors reported, out-of-range values refused (or clipped), faulty
    uploads left out with the reason in ``last_refused``.

    ``drop_before_upload`` / ``drop_after_upload`` simulate lost clients; ``tamper`` maps a client
    to a function applied to its :class:`Upload` before the aggregator sees it (tests)."""

    def __init__(
        self,
        *,
        bound: int = 2**16,
        threshold: int | None = None,
        params: HEParams | None = None,
        on_out_of_range: Literal["refuse", "clip"] = "refuse",
        drop_before_upload: Collection[int] = (),
        drop_after_upload: Collection[int] = (),
        decryptor: Decryptor | None = None,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        if on_out_of_range not in ("refuse", "clip"):
            raise ValueError("on_out_of_range must be 'refuse' or 'clip'")
        self.params = params or (decryptor.params if decryptor else HEParams())
        self.bound, self.threshold, self.on_out_of_range = int(bound), threshold, on_out_of_range
        self.drop_before_upload, self.drop_after_upload = set(drop_before_upload), set(drop_after_upload)
        self.tamper: dict[int, Any] = {}
        self._decryptor = decryptor
        self.last_refused: dict[int, str] = {}
        self.last_clipped: dict[int, int] = {}
        # seconds of the last call: per client (encryption), aggregator (parse + add), decryptor
        self.last_timing: dict[str, Any] = {}
        self._totals: dict[str, EncryptedTotal] = {}

    @property
    def decryptor(self) -> Decryptor:
        if self._decryptor is None:  # keys generated once, on first use
            self._decryptor = Decryptor(self.params)
        return self._decryptor

    def check_bound(self, n_clients: int) -> None:
        if n_clients * self.bound > self.params.max_abs:
            raise ValueError(
                f"{n_clients} clients × bound {self.bound} exceed the plaintext range "
                f"±{self.params.max_abs}: a sum could wrap; lower the bound or use fewer clients per sum"
            )

    def upload_round(
        self, vectors: Mapping[int, np.ndarray], total: EncryptedTotal | None = None
    ) -> tuple[EncryptedTotal | None, list[int], dict[int, int], dict[int, int]]:
        """Clients encrypt, the aggregator adds to ``total``: (total, accepted, sent, received)."""
        if not vectors:
            raise ValueError("no client vectors to sum")
        self.check_bound(len(vectors))
        arrs, self.last_clipped = check_range(vectors, self.bound, self.on_out_of_range)
        dec = self.decryptor
        key = dec.open_round()
        agg = Aggregator(dec.public_context, self.params)
        size = int(next(iter(arrs.values())).size)
        accepted: list[int] = []
        sent: dict[int, int] = {}
        received: dict[int, int] = {}
        self.last_refused = {}
        client_s: dict[int, float] = {}
        agg_s = 0.0
        for cid in sorted(arrs):
            received[cid] = key.nbytes
            if cid in self.drop_before_upload:
                continue
            t0 = time.perf_counter()
            up = encrypt_vector(key, arrs[cid])
            client_s[cid] = time.perf_counter() - t0
            if cid in self.tamper:
                up = self.tamper[cid](up)
            sent[cid] = up.nbytes
            t0 = time.perf_counter()
            try:
                cts = agg.parse(cid, up, key, size)
            except HEError as e:
                self.last_refused[cid] = str(e)
                continue
            finally:
                agg_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            total = agg.add(total, cts, key.round_id, size)
            agg_s += time.perf_counter() - t0
            accepted.append(cid)
        self.last_timing = {"client_s": client_s, "aggregator_s": agg_s}
        need = max(2, self.threshold or 0)
        if len(accepted) < need:
            raise SecureSumAborted(
                f"only {len(accepted)} uploads accepted (need {need}); nothing is released"
            )
        return total, accepted, sent, received

    # -- deferred use: sums that stay encrypted across rounds (flaim-he) -------------------------
    def begin(self) -> None:
        """Start a new run: forget every encrypted running total (one run's totals must never be
        added to another's — the runner calls this before each deferred run)."""
        self._totals = {}

    def accumulate(self, key: str, vectors: Mapping[int, np.ndarray]) -> SumResult:
        """Add this round's uploads to the encrypted running total ``key`` without decrypting;
        the result's ``total`` is empty (nothing is revealed), survivors and bytes as usual."""
        total, accepted, sent, received = self.upload_round(vectors, self._totals.get(key))
        assert total is not None
        self._totals[key] = total
        return SumResult(np.zeros(0, dtype=np.int64), accepted, sent, received)

    def release(self, keys: Collection[str], cells: np.ndarray) -> np.ndarray:
        """Decrypt Σ_keys totals at the slot indices ``cells`` only: the aggregator multiplies each
        ciphertext by a 0/1 mask (check slots kept) and hands the decryptor only the ciphertexts
        that hold a released cell; every other slot decrypts to 0. The caller adds noise keys."""
        totals = [self._totals[k] for k in keys]
        size = totals[0].size
        if any(t.size != size for t in totals):
            raise ValueError("encrypted totals of different sizes cannot be added")
        cells = np.asarray(cells, dtype=np.int64)
        if cells.size and (cells.min() < 0 or cells.max() >= size):
            raise ValueError(f"cells outside the {size}-entry total")
        ds, n = self.params.data_slots, self.params.poly_degree
        counts: dict[str, int] = {}
        for t in totals:
            for rid, m in t.counts.items():
                counts[rid] = counts.get(rid, 0) + m
        out = np.zeros(size, dtype=np.int64)
        for k in sorted({int(c) // ds for c in cells}):
            local = cells[(cells >= k * ds) & (cells < (k + 1) * ds)] - k * ds
            mask = np.zeros(n, dtype=np.int64)
            mask[local] = 1
            mask[-CHECK_SLOTS:] = 1
            ct = totals[0].ciphertexts[k]
            for t in totals[1:]:
                ct = ct + t.ciphertexts[k]
            ct = ct * mask.tolist()
            vals = self.decryptor.decrypt(EncryptedTotal(ds, [ct], counts))
            out[k * ds + local] = vals[local]
        return out[cells]

    def __call__(self, vectors: Mapping[int, np.ndarray]) -> SumResult:
        total, accepted, sent, received = self.upload_round(vectors)
        assert total is not None
        # a client lost after uploading changes nothing: its ciphertext is already in the sum
        t0 = time.perf_counter()
        result = self.decryptor.decrypt(total)
        self.last_timing["decryptor_s"] = time.perf_counter() - t0
        shape = np.asarray(next(iter(vectors.values()))).shape
        return SumResult(result.astype(np.int64).reshape(shape), accepted, sent, received)


__all__ = [
    "CHECK_SLOTS",
    "Aggregator",
    "Decryptor",
    "EncryptedTotal",
    "HEError",
    "HEIntegrityError",
    "HEParams",
    "HESum",
    "RoundKey",
    "Upload",
    "encrypt_vector",
]
