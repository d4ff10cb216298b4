"""Hash functions H: V^m -> V^k for the hash-then-payload family (claim C3), as explicit tables.

A hash is stored as `table[y] = H(y)`: payload y in V^m and hash h in V^k are both read as base-V
numbers with the first token most significant, so `table` has shape [V^m] and values in [0, V^k).
Every hash here is computed for all V^m payloads at construction (V^m <= MAX_PAYLOADS), which is what
makes the process exact.

- "balanced": a random table in which every hash value has exactly V^(m-k) preimages (needs k <= m).
  No structure at all: inverting it means memorising the table.
- "modular": h_j = (c_j + sum_i a_{j,i} y_i^3) mod V for j = 1..k. Each payload token adds its own
  term to each of k running sums, so a verifier reading the payload needs only the k sums mod V (a
  finite automaton with V^k states, and the terms can be gathered in parallel by attention). A
  generator must carry the same sums and then solve the cubic system for its last digits; a model that
  does neither is the non-inverting Q0. Balanced when V is prime, cubing permutes Z_V (V = 2, 3, 5,
  11, ...; for V = 2 and 3 the cube is the identity, so the hash is affine) and k <= m: the
  coefficients are redrawn until the matrix a has rank k mod V. Otherwise it can be unbalanced;
  `HashThenPayload.is_balanced` says which.
- "mix": a multiply-xorshift mixer over a 32-bit state, one round per payload token; h is the top
  base-V digits of the final state. Verification is one cheap round per token (32 bits of state);
  one changed digit changes the whole state, so there is no algebra to exploit, and finding a suffix
  with a given hash means searching V^k suffixes. Close to balanced for long payloads, never exactly.
- an explicit integer array `table` of shape [V^m] with values in [0, V^k): any hash at all,
  including ones with hash values that have no preimage.
"""

from __future__ import annotations

import numpy as np

MAX_PAYLOADS = 2**20  # V^m and V^k: the tables are O(V^m) and O(V^k) integers
NAMED_HASHES = ("balanced", "modular", "mix")
_MASK32 = np.uint64(0xFFFFFFFF)


def payload_digits(vocab_size: int, length: int, index: np.ndarray) -> np.ndarray:
    """[..., length] base-V digits of `index`, first digit most significant."""
    powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (np.asarray(index, np.int64)[..., None] // powers) % vocab_size


def balanced_table(vocab_size: int, payload_length: int, hash_length: int, seed: int) -> np.ndarray:
    """A random permutation of the payloads, cut into V^k blocks of V^(m-k): H(y) = block of y."""
    num_payloads = vocab_size**payload_length
    table = np.empty(num_payloads, np.int64)
    table[np.random.default_rng(seed).permutation(num_payloads)] = np.arange(num_payloads) // vocab_size ** (
        payload_length - hash_length
    )
    return table


def _rank_mod_prime(matrix: np.ndarray, prime: int) -> int:
    """Rank over the field Z_p by Gaussian elimination."""
    a = matrix.copy() % prime
    rank = 0
    for col in range(a.shape[1]):
        pivots = np.nonzero(a[rank:, col])[0]
        if pivots.size == 0:
            continue
        pivot = rank + pivots[0]
        a[[rank, pivot]] = a[[pivot, rank]]
        a[rank] = (a[rank] * pow(int(a[rank, col]), -1, prime)) % prime
        others = np.arange(a.shape[0]) != rank
        a[others] = (a[others] - np.outer(a[others, col], a[rank])) % prime
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def modular_coefficients(vocab_size: int, payload_length: int, hash_length: int, seed: int):
    """(a [k, m], c [k]) of the "modular" hash, deterministic in `seed`. For prime V with k <= m the
    draw is repeated until a has rank k mod V (with V = 2, a random 0/1 matrix can be singular)."""
    rng = np.random.default_rng(seed)
    full_rank_possible = _is_prime(vocab_size) and hash_length <= payload_length
    for _ in range(1000):
        a = rng.integers(0, vocab_size, size=(hash_length, payload_length))
        if not full_rank_possible or _rank_mod_prime(a, vocab_size) == hash_length:
            break
    c = rng.integers(0, vocab_size, size=hash_length)
    return a.astype(np.int64), c.astype(np.int64)


def modular_table(vocab_size: int, payload_length: int, hash_length: int, seed: int) -> np.ndarray:
    a, c = modular_coefficients(vocab_size, payload_length, hash_length, seed)
    digits = payload_digits(vocab_size, payload_length, np.arange(vocab_size**payload_length))
    hash_digits = (c + (digits**3 % vocab_size) @ a.T) % vocab_size  # [N, k]
    return hash_digits @ (vocab_size ** np.arange(hash_length - 1, -1, -1, dtype=np.int64))


def mix_table(vocab_size: int, payload_length: int, hash_length: int, seed: int) -> np.ndarray:
    """z_0 = a seeded 32-bit value; per token z = xorshift(multiply(z xor (y_i + 1))); h = the top
    base-V digits of z_m: floor(z_m V^k / 2^32)."""
    digits = payload_digits(vocab_size, payload_length, np.arange(vocab_size**payload_length)).astype(np.uint64)
    z = np.full(digits.shape[0], np.uint64(np.random.default_rng(seed).integers(0, 2**32)))
    for i in range(payload_length):
        z = ((z ^ (digits[:, i] + np.uint64(1))) * np.uint64(0x9E3779B1)) & _MASK32
        z ^= z >> np.uint64(15)
        z = (z * np.uint64(0x85EBCA77)) & _MASK32
        z ^= z >> np.uint64(13)
    return ((z * np.uint64(vocab_size**hash_length)) >> np.uint64(32)).astype(np.int64)


def hash_table(hash, vocab_size: int, payload_length: int, hash_length: int, seed: int) -> tuple[str, np.ndarray]:
    """(name, table [V^m]) for a named hash or an explicit table; ValueError on a bad `hash`."""
    num_payloads, num_hashes = vocab_size**payload_length, vocab_size**hash_length
    if isinstance(hash, str):
        if hash == "balanced":
            if hash_length > payload_length:
                raise ValueError(
                    f"hash_length={hash_length} exceeds payload_length={payload_length}: a balanced hash "
                    "needs hash_length <= payload_length (every hash value has V^(m-k) preimages)"
                )
            return hash, balanced_table(vocab_size, payload_length, hash_length, seed)
        if hash == "modular":
            return hash, modular_table(vocab_size, payload_length, hash_length, seed)
        if hash == "mix":
            return hash, mix_table(vocab_size, payload_length, hash_length, seed)
        raise ValueError(f"hash must be one of {NAMED_HASHES} or an integer array of shape [V^m], got {hash!r}")
    table = np.asarray(hash)
    if table.dtype == object or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"hash as an explicit table must hold integer hash indices, got dtype {table.dtype}")
    if table.shape != (num_payloads,):
        raise ValueError(
            f"hash as an explicit table must have shape [V^m] = [{num_payloads}] (one hash index per payload), "
            f"got {table.shape}"
        )
    if table.min() < 0 or table.max() >= num_hashes:
        raise ValueError(f"hash table values must lie in [0, V^k) = [0, {num_hashes}), got [{table.min()}, {table.max()}]")
    return "table", table.astype(np.int64)
