"""Secure summation of integer vectors across clients: the only way client data reaches the server.

Interface shared by the FLAIM core (which only ever needs a sum) and its implementations:
``plain_sum`` (the reference: no security, for tests), ``SecAggPlusSum`` (an in-process execution of
the SecAgg+ protocol built on Flower's secure-aggregation primitives), and the Flower deployment
(``fedsynth.federated``).

``SecAggPlusSum`` — what it guarantees and its limits
-----------------------------------------------------
* Arithmetic is modulo 2^64 (numpy ``uint64`` wraps natively). The result is the exact int64 sum as long
  as every client value satisfies ``|x| <= bound`` and ``n * bound < 2^63`` (``n`` = clients in the round),
  which is checked before anything is sent. Default ``bound = 2^53`` (counts are exactly representable as
  floats too), so up to 1024 clients per round. A value outside ``[-bound, bound]`` is refused with
  :class:`OutOfRangeError` naming the client (``on_out_of_range="refuse"``, the default) or clipped to the
  bound and recorded in ``last_clipped`` (``"clip"``); it is never wrapped silently.
* Dropout *before key sharing* (a client that never delivers its encrypted key shares — stage 0 or 1):
  the client is **excluded** from the round — nobody masks with it and its vector is not in the sum;
  ``SumResult.survivors`` says so. If fewer than ``max(2, threshold)`` clients are left the round is
  aborted with :class:`SecureSumAborted` (nothing is returned). Note Flower's own ``SecAggPlusWorkflow``
  halts the round in this case instead (see ``docs/flower.md``).
* Dropout *after key sharing* (stage 2: no masked vector): the survivors reveal Shamir shares of the
  dropped client's mask key, the server removes its pairwise masks, and the sum over survivors is exact.
  Clients that drop during unmasking (stage 3) are tolerated as long as every needed secret still has
  ``threshold`` shares; otherwise :class:`SecureSumAborted`.
* Primitives from ``flwr.common.secure_aggregation``: ECDH key agreement + HKDF (``generate_shared_key``),
  Fernet for the share messages, Shamir sharing (``create_shares``/``combine_shares``); key pairs from
  ``flwr.supercore.primitives.asymmetric``. Masks are expanded with AES-256-CTR keyed by SHA-256 of the
  seed (vectorised; unlike Flower's ``pseudo_rand_gen`` it does not fold seeds to 32 bits).
* Neighbour graph as in SecAgg+: a random ring where each client shares with ``num_shares`` neighbours
  (itself included); ``num_shares=None`` means everyone (classic SecAgg).
* Bytes are counted from the serialised protocol messages (length-prefixed framing, keys as compressed
  EC points), per client, both directions.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


@dataclass
class SumResult:
    total: np.ndarray  # int64, the exact sum over surviving clients
    survivors: list[int]  # client ids whose vectors are included
    bytes_sent: dict[int, int] = field(default_factory=dict)  # per client, counted from messages
    bytes_received: dict[int, int] = field(default_factory=dict)


class SecureSum(Protocol):
    def __call__(self, vectors: Mapping[int, np.ndarray]) -> SumResult: ...


def plain_sum(vectors: Mapping[int, np.ndarray]) -> SumResult:
    """Reference: the exact int64 sum, no protection. Bytes = the raw int64 payload."""
    if not vectors:
        raise ValueError("no client vectors to sum")
    arrs = [np.asarray(v, dtype=np.int64) for v in vectors.values()]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError("client vectors have different shapes")
    # numpy's stub allows a scalar here; summing a stack along axis 0 gives an array
    total = cast(np.ndarray, np.sum(np.stack(arrs), axis=0, dtype=np.int64))
    return SumResult(total, sorted(vectors), {k: int(np.asarray(v).size * 8) for k, v in vectors.items()}, {})


class SecureSumAborted(RuntimeError):
    """The round could not complete securely (too few clients left); no sum is released."""


class OutOfRangeError(ValueError):
    """A client vector has values outside the range the modular sum can represent exactly."""


# --------------------------------------------------------------------------- helpers

_CURVE = ec.SECP384R1()
_MOD_BITS = 64


def _pack(*parts: bytes) -> bytes:
    """Length-prefixed framing: what would go on the wire (used to count bytes)."""
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def _pk_bytes(pk: ec.EllipticCurvePublicKey) -> bytes:
    return pk.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def _pk_from(b: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, b)


def _sk_bytes(sk: ec.EllipticCurvePrivateKey) -> bytes:
    return sk.private_numbers().private_value.to_bytes(48, "big")


def _sk_from(b: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b, "big"), _CURVE)


def mask_prg(seed: bytes, size: int) -> np.ndarray:
    """Uniform uint64 mask of ``size`` entries: AES-256-CTR keystream keyed by SHA-256(seed)."""
    key = hashlib.sha256(seed).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    return np.frombuffer(enc.update(b"\x00" * (8 * size)) + enc.finalize(), dtype="<u8").copy()


def check_range(
    vectors: Mapping[int, np.ndarray], bound: int, on_out_of_range: Literal["refuse", "clip"]
) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Validate dtype/shape/range; return int64 copies and the number of clipped entries per client."""
    out: dict[int, np.ndarray] = {}
    clipped: dict[int, int] = {}
    shape = None
    for cid, v in vectors.items():
        a = np.asarray(v)
        if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
            raise OutOfRangeError(f"client {cid}: vector dtype {a.dtype} is not an integer type")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"client {cid}: vector shape {a.shape} differs from {shape}")
        if a.size:
            lo, hi = int(a.min()), int(a.max())  # Python ints: no overflow for uint64 input
        else:
            lo = hi = 0
        if lo < -bound or hi > bound:
            if on_out_of_range == "refuse":
                raise OutOfRangeError(
                    f"client {cid}: values in [{lo}, {hi}] exceed the secure-sum bound ±{bound}; "
                    "refusing rather than wrapping modulo 2^64"
                )
            if np.issubdtype(a.dtype, np.unsignedinteger):
                n_bad = int(np.count_nonzero(a > bound))
                a = np.minimum(a, np.uint64(bound))
            else:
                n_bad = int(np.count_nonzero((a > bound) | (a < -bound)))
                a = np.clip(a.astype(np.int64), -bound, bound)
            clipped[cid] = n_bad
        out[cid] = a.astype(np.int64)
    return out, clipped


# --------------------------------------------------------------------------- protocol


@dataclass
class _Client:
    cid: int
    x: np.ndarray
    sk1: ec.EllipticCurvePrivateKey
    sk2: ec.EllipticCurvePrivateKey
    pk1: bytes
    pk2: bytes
    rd_seed: bytes = b""
    neighbour_pks: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    seed_shares: dict[int, bytes] = field(default_factory=dict)  # owner -> share held by this client
    sk1_shares: dict[int, bytes] = field(default_factory=dict)
    enc_keys: dict[int, bytes] = field(default_factory=dict)


class SecAggPlusSum:
    """In-process SecAgg+ (Bell et al. 2020) over Flower's primitives; see the module docstring.

    ``drop_before_keys`` / ``drop_after_keys`` / ``drop_in_unmask`` simulate clients failing at those
    stages (constructor defaults, or per call). ``seed`` fixes the neighbour graph (secrets always come
    from ``os.urandom``).
    """

    def __init__(
        self,
        *,
        bound: int = 2**53,
        num_shares: int | None = None,
        threshold: int | None = None,
        on_out_of_range: Literal["refuse", "clip"] = "refuse",
        drop_before_keys: Collection[int] = (),
        drop_after_keys: Collection[int] = (),
        drop_in_unmask: Collection[int] = (),
        seed: int | None = None,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        if on_out_of_range not in ("refuse", "clip"):
            raise ValueError("on_out_of_range must be 'refuse' or 'clip'")
        if num_shares is not None and num_shares < 3:
            raise ValueError("num_shares must be >= 3 (or None for all clients)")
        self.bound = int(bound)
        self.num_shares = num_shares
        self.threshold = threshold
        self.on_out_of_range = on_out_of_range
        self.drop_before_keys = set(drop_before_keys)
        self.drop_after_keys = set(drop_after_keys)
        self.drop_in_unmask = set(drop_in_unmask)
        self._rng = np.random.default_rng(seed)
        self.last_clipped: dict[int, int] = {}

    def max_clients(self) -> int:
        """Largest round for which n * bound < 2^63 (exactness of the signed sum mod 2^64)."""
        return (2**63 - 1) // self.bound

    def __call__(
        self,
        vectors: Mapping[int, np.ndarray],
        *,
        drop_before_keys: Collection[int] | None = None,
        drop_after_keys: Collection[int] | None = None,
        drop_in_unmask: Collection[int] | None = None,
    ) -> SumResult:
        # Flower's primitives load the Flower package (≈ 0.5 s, tens of MB): only when a sum runs.
        from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
            decrypt,
            encrypt,
            generate_shared_key,
        )
        from flwr.supercore.primitives.asymmetric import generate_key_pairs

        if not vectors:
            raise ValueError("no client vectors to sum")
        n = len(vectors)
        if n < 2:
            raise SecureSumAborted(
                f"{n} client in the round: a secure sum of one vector would reveal it; "
                "skip the round or wait for more clients"
            )
        if n * self.bound >= 2**63:
            raise OutOfRangeError(
                f"{n} clients × bound {self.bound} >= 2^63: the modular sum could wrap; lower the bound"
            )
        xs, self.last_clipped = check_range(vectors, self.bound, self.on_out_of_range)
        before = self.drop_before_keys if drop_before_keys is None else set(drop_before_keys)
        after = self.drop_after_keys if drop_after_keys is None else set(drop_after_keys)
        in_unmask = self.drop_in_unmask if drop_in_unmask is None else set(drop_in_unmask)
        shape = next(iter(xs.values())).shape
        flat = {cid: x.reshape(-1) for cid, x in xs.items()}
        size = next(iter(flat.values())).size

        ids = sorted(flat)
        sent = dict.fromkeys(ids, 0)
        recv = dict.fromkeys(ids, 0)

        # Neighbour graph: random ring, each node linked to num_shares//2 on each side (+ itself).
        k = n if self.num_shares is None or self.num_shares >= n else self.num_shares | 1
        t = self.threshold if self.threshold is not None else max(2, k // 2 + 1)
        if t > k:
            raise ValueError(f"threshold {t} exceeds the number of shares {k}")
        order = [ids[i] for i in self._rng.permutation(n)]
        half = k // 2
        neighbours = {
            cid: {order[(i + o) % n] for o in range(-half, half + 1)} for i, cid in enumerate(order)
        }
        if k == n:
            neighbours = {cid: set(ids) for cid in ids}

        # Stage 0 — setup/advertise keys: server -> config; client -> (pk1, pk2).
        cfg = _pack(struct.pack("<QQQQ", n, k, t, size))
        clients: dict[int, _Client] = {}
        for cid in ids:
            recv[cid] += len(cfg)
            sk1, pk1 = generate_key_pairs()
            sk2, pk2 = generate_key_pairs()
            clients[cid] = _Client(cid, flat[cid], sk1, sk2, _pk_bytes(pk1), _pk_bytes(pk2))
            sent[cid] += len(_pack(clients[cid].pk1, clients[cid].pk2))
        u1 = set(ids)  # a stage-0 failure behaves exactly like a stage-1 one: excluded below

        # Stage 1 — share keys: server forwards neighbours' public keys; client -> encrypted shares.
        ciphertexts: dict[int, dict[int, bytes]] = {}  # dst -> src -> ciphertext
        u2: set[int] = set()
        for cid in sorted(u1):
            c = clients[cid]
            nbrs = sorted(neighbours[cid] & u1)
            c.neighbour_pks = {j: (clients[j].pk1, clients[j].pk2) for j in nbrs}
            recv[cid] += len(_pack(*(struct.pack("<Q", j) + a + b for j, (a, b) in c.neighbour_pks.items())))
            if len(nbrs) < t:
                continue  # this client cannot share its secrets safely; it stays out
            if cid in before:
                continue  # dropped before delivering its shares
            c.rd_seed = os.urandom(32)
            b_shares = create_shares(c.rd_seed, t, len(nbrs))
            s_shares = create_shares(_sk_bytes(c.sk1), t, len(nbrs))
            out = []
            for idx, j in enumerate(nbrs):
                if j == cid:
                    c.seed_shares[cid], c.sk1_shares[cid] = b_shares[idx], s_shares[idx]
                    continue
                key = generate_shared_key(c.sk2, _pk_from(c.neighbour_pks[j][1]))
                c.enc_keys[j] = key
                ct = encrypt(key, _pack(struct.pack("<QQ", cid, j), b_shares[idx], s_shares[idx]))
                ciphertexts.setdefault(j, {})[cid] = ct
                out.append(struct.pack("<Q", j) + ct)
            sent[cid] += len(_pack(*out))
            u2.add(cid)
        if len(u2) < max(2, t):
            raise SecureSumAborted(
                f"only {len(u2)} clients delivered key shares (need {max(2, t)}); round aborted"
            )

        # Stage 2 — masked input: server forwards shares from U2; client -> masked vector (mod 2^64).
        masked_total = np.zeros(size, dtype=np.uint64)
        u3: set[int] = set()
        for cid in sorted(u2):
            c = clients[cid]
            inbox = {src: ct for src, ct in ciphertexts.get(cid, {}).items() if src in u2}
            recv[cid] += len(_pack(*(struct.pack("<Q", s) + ct for s, ct in inbox.items())))
            if cid in after:
                continue  # dropped after key sharing: its masks are removed in stage 3
            for src, ct in inbox.items():
                key = c.enc_keys.get(src) or generate_shared_key(c.sk2, _pk_from(c.neighbour_pks[src][1]))
                plain = decrypt(key, ct)
                hdr, b_share, s_share = _unpack(plain)
                s, d = struct.unpack("<QQ", hdr)
                if s != src or d != cid:
                    raise SecureSumAborted(f"client {cid}: share message routed wrongly ({s}->{d})")
                c.seed_shares[src], c.sk1_shares[src] = b_share, s_share
            y = c.x.view(np.uint64) + mask_prg(c.rd_seed, size)
            for j in inbox:
                m = mask_prg(generate_shared_key(c.sk1, _pk_from(c.neighbour_pks[j][0])), size)
                y = y + m if cid > j else y - m  # uint64 wraps: arithmetic mod 2^64
            sent[cid] += len(_pack(y.tobytes()))
            masked_total += y
            u3.add(cid)
        if len(u3) < max(2, t):
            raise SecureSumAborted(
                f"only {len(u3)} masked vectors received (need {max(2, t)}); round aborted"
            )
        dead = u2 - u3

        # Stage 3 — unmask: server -> (survivors, dropped); client -> seed shares of survivors,
        # mask-key shares of dropped clients (never both for the same client).
        seed_pool: dict[int, list[bytes]] = {j: [] for j in u3}
        sk_pool: dict[int, list[bytes]] = {j: [] for j in dead}
        for cid in sorted(u3):
            c = clients[cid]
            nb = neighbours[cid] & u2
            alive, gone = sorted(nb & u3), sorted(nb & dead)
            recv[cid] += len(_pack(np.asarray(alive, "<u8").tobytes(), np.asarray(gone, "<u8").tobytes()))
            if cid in in_unmask:
                continue
            if set(alive) & set(gone):
                raise SecureSumAborted("server asked for both shares of one client")
            reply = []
            for j in alive:
                if j in c.seed_shares:
                    seed_pool[j].append(c.seed_shares[j])
                    reply.append(struct.pack("<Q", j) + c.seed_shares[j])
            for j in gone:
                if j in c.sk1_shares:
                    sk_pool[j].append(c.sk1_shares[j])
                    reply.append(struct.pack("<Q", j) + c.sk1_shares[j])
            sent[cid] += len(_pack(*reply))

        total = masked_total
        for j, shares in seed_pool.items():
            if len(shares) < t:
                raise SecureSumAborted(f"not enough shares to unmask client {j} ({len(shares)} < {t})")
            total -= mask_prg(combine_shares(shares[:t]), size)
        for j, shares in sk_pool.items():
            if len(shares) < t:
                raise SecureSumAborted(f"not enough shares to remove dropped client {j}'s masks")
            sk1 = _sk_from(combine_shares(shares[:t]))
            for other in neighbours[j] & u3:
                if other == j:
                    continue
                m = mask_prg(generate_shared_key(sk1, _pk_from(clients[other].pk1)), size)
                # survivor `other` added +m if other > j, else -m: take it back out
                total = total - m if other > j else total + m

        result = total.view(np.int64).reshape(shape)
        return SumResult(result, sorted(u3), sent, recv)


def _unpack(blob: bytes) -> list[bytes]:
    parts, i = [], 0
    while i < len(blob):
        (ln,) = struct.unpack_from("<I", blob, i)
        parts.append(blob[i + 4 : i + 4 + ln])
        i += 4 + ln
    return parts
