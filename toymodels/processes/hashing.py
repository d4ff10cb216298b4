"""Claim C3, verification can be easier than generation: the hash-then-payload process.

A document is (h, y, tail): the payload y is uniform on V^m, the hash h = H(y) in V^k comes *first*,
then y, then a fixed tail process (by default an absorbing end-of-document token V). Predicting the
hash needs only its marginal p(h); predicting the payload exactly needs inverting H: p(y_s | h, y_<s)
is uniform over the preimages of h that continue y_<s. Hash functions: see `hash_functions`.

This is not finite-state at useful sizes (an HMM would need a state per payload), so the process is
exact by enumerating preimages instead: `hashing_inference` keeps the payloads sorted by (hash,
payload), where every prefix is a range. `hash_then_payload_hmm` builds the equivalent HMMProcess for
tiny sizes, to check one against the other. `non_inverting_predictor` is C3's Q0.

Latents:
- "consistent" ("no", "yes"): the probe target for claim C3's verifier. Its posterior after a prefix is
  the probability that the document is consistent (H(y) = h) in the *hash-blind* world of the
  non-inverting predictor Q0 (h drawn from p(h), y uniform, independently), given the prefix: the
  chance that a uniformly random completion of the payload matches the hash. It starts at
  sum_h p(h)^2, is p(h) once the hash is read, falls to 0 the moment the payload prefix has no
  consistent completion, and ends at exactly 1 or 0 when the payload is complete, where it stays. So it
  is meaningful on a model's inconsistent generations, which this process itself gives probability 0:
  only tokens that are impossible in the hash-blind world too (a non-payload token inside the hash or
  payload, a hash prefix of probability 0, an impossible tail token) freeze it at its last value.
- "preimage" (only when V^m <= MAX_PREIMAGE_LATENT; labels are the payload digits): this process's own
  posterior over y, uniform on the payloads consistent with the prefix; it stays at its last value after
  an impossible prefix (the convention of every process).
- "tail_<name>" for each latent of a custom tail: the tail's prior until the tail starts, then the
  tail's posterior on the tail tokens (the prior, if the hash and payload were impossible).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.predictors import PytreeNode, check_predictor, check_tokens, supports_step
from toymodels.processes import hashing_inference as inference
from toymodels.processes._validation import device_dtype
from toymodels.processes.hash_functions import MAX_PAYLOADS, hash_table, payload_digits
from toymodels.processes.hmm import HMMProcess, _check_sizes
from toymodels.processes.registry import register_family

MAX_PREIMAGE_LATENT = 4096  # a posterior over more payloads than this is [B, L+1, V^m] of mostly zeros


def _positive_int(value, name: str, low: int = 1) -> int:
    whole = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class EndOfDocument(PytreeNode):
    """The default tail: the end-of-document token forever. The same process as the one-state HMM
    emitting `eod_token`, without a filter to run (or to compile): p(eod | all ends so far) = 1."""

    _static_fields = ("eod_token",)
    max_length = None

    def __init__(self, eod_token: int):
        self.eod_token = int(eod_token)

    vocab_size = property(lambda self: self.eod_token + 1)
    info = property(lambda self: {"eod_token": self.eod_token})
    latents = property(lambda self: {"end": ("end",)})

    def _log_next(self, alive):
        return jnp.where(alive[..., None] & (jnp.arange(self.vocab_size) == self.eod_token), 0.0, -jnp.inf)

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        ends = check_tokens(tokens) == self.eod_token
        all_ends = jnp.cumprod(jnp.pad(ends, ((0, 0), (1, 0)), constant_values=True), axis=1).astype(bool)
        return self._log_next(all_ends[:, :-1])  # alive before x_t: every tail token so far ended

    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        return jnp.where(jnp.all(check_tokens(tokens) == self.eod_token, axis=1), 0.0, -jnp.inf)

    def posterior(self, tokens: Int[Array, "B L"], latent: str | None = None) -> Float[Array, "B L+1 1"]:
        if latent not in (None, "end"):
            raise ValueError(f"latent must be 'end', got {latent!r}")
        tokens = check_tokens(tokens)
        return jnp.ones((tokens.shape[0], tokens.shape[1] + 1, 1))

    def init_state(self, batch: int):
        alive = jnp.ones((batch,), bool)
        return alive, self._log_next(alive)

    def step(self, state, token: Int[Array, " B"]):
        alive = state & (token == self.eod_token)
        return alive, self._log_next(alive)

    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        num_sequences, length = _check_sizes(num_sequences, length)
        return jnp.full((num_sequences, length), self.eod_token, jnp.int32)


@register_family("hash_then_payload", example=dict(vocab_size=2, payload_length=3, hash_length=1))
def hash_then_payload(vocab_size: int, payload_length: int, hash_length: int, hash="balanced", tail=None, seed: int = 0):
    """C3's process: hash h = H(y) in V^k, then payload y uniform on V^m, then a tail.

    Args:
        vocab_size: V, the alphabet of hash and payload tokens 0..V-1. The process's own vocab_size is
            V + 1 with the default tail (token V is the end of document), max(V, W) with a tail of
            vocabulary W.
        payload_length: m, with V^m <= 2^20.
        hash_length: k, with V^k <= 2^20 (and k <= m for a balanced hash).
        hash: "balanced", "modular", "mix" (see `hash_functions`) or an integer array [V^m] of hash
            indices in [0, V^k) (base V, first digit most significant).
        tail: None for the absorbing end-of-document token, or any Process with max_length None
            (e.g. a small HMMProcess) that runs after the payload.
        seed: draws the random hash (its table or coefficients); the process itself is exact.

    info: eod_token (None for a custom tail without one), hash_length, payload_length, alphabet_size,
    hash (its name, or "table").
    """
    vocab_size = _positive_int(vocab_size, "vocab_size", 2)
    payload_length = _positive_int(payload_length, "payload_length")
    hash_length = _positive_int(hash_length, "hash_length")
    seed = _positive_int(seed, "seed", 0)
    if vocab_size**payload_length > MAX_PAYLOADS:
        raise ValueError(f"payload_length: V^m = {vocab_size}^{payload_length} exceeds {MAX_PAYLOADS} payloads; shorten it")
    if vocab_size**hash_length > MAX_PAYLOADS:
        raise ValueError(f"hash_length: V^k = {vocab_size}^{hash_length} exceeds {MAX_PAYLOADS} hash values; shorten it")
    name, table = hash_table(hash, vocab_size, payload_length, hash_length, seed)
    custom_tail = tail is not None
    if tail is None:
        tail, eod = EndOfDocument(vocab_size), vocab_size
    else:
        check_predictor(tail, "tail")
        for method in ("sample", "log_prob", "posterior"):
            if not callable(getattr(tail, method, None)):
                raise ValueError(f"tail must be a Process (it has no {method} method)")
        if tail.max_length is not None:
            raise ValueError(f"tail must be defined at every length (max_length None), got max_length={tail.max_length}")
        eod = dict(getattr(tail, "info", {}) or {}).get("eod_token")
    info = dict(eod_token=eod, hash_length=hash_length, payload_length=payload_length, alphabet_size=vocab_size, hash=name)
    return HashThenPayload(table, vocab_size, payload_length, hash_length, tail, info, custom_tail)


class HashThenPayload(PytreeNode):
    """The hash-then-payload process (see the module docstring); built by `hash_then_payload`."""

    _data_fields = ("tables",)
    _static_fields = ("custom_tail", "info_items")
    max_length = None

    def __init__(self, table, alphabet: int, payload_length: int, hash_length: int, tail, info, custom_tail: bool):
        dtype = device_dtype(np.zeros(0, np.float64))
        self.tables = inference.HashTables(table, alphabet, payload_length, hash_length, tail, dtype)
        self.custom_tail = custom_tail
        self.info_items = tuple(sorted(info.items()))

    # ---- sizes and metadata -------------------------------------------------------------------------
    vocab_size = property(lambda self: self.tables.vocab_size)
    alphabet = property(lambda self: self.tables.alphabet, doc="V: hash and payload tokens are 0..V-1")
    payload_length = property(lambda self: self.tables.payload_length, doc="m")
    hash_length = property(lambda self: self.tables.hash_length, doc="k")
    head_length = property(lambda self: self.tables.head_length, doc="k + m: where the tail starts")
    num_payloads = property(lambda self: self.tables.num_payloads, doc="V^m")
    tail = property(lambda self: self.tables.tail, doc="the process after the payload")
    hash_of = property(lambda self: self.tables.hash_of, doc="[V^m] H(y) as a base-V index, for every payload y")

    @property
    def info(self) -> dict:
        return dict(self.info_items)

    @property
    def supports_step(self) -> bool:
        return supports_step(self.tail)

    @property
    def latents(self) -> dict[str, tuple[str, ...]]:
        out = {"consistent": ("no", "yes")}
        if self.num_payloads <= MAX_PREIMAGE_LATENT:
            digits = payload_digits(self.alphabet, self.payload_length, np.arange(self.num_payloads))
            separator = "" if self.alphabet <= 10 else ","  # "1,10" and "11,0", not "110" twice
            out["preimage"] = tuple(separator.join(map(str, row)) for row in digits)
        if self.custom_tail:
            out.update({f"tail_{name}": labels for name, labels in self.tail.latents.items()})
        return out

    def hash_marginal(self) -> Float[Array, " H"]:
        """p(h) for every hash value h in V^k: its number of preimages / V^m."""
        return jnp.diff(self.tables.offsets).astype(self.tables.dtype_name) / self.num_payloads

    @property
    def is_balanced(self) -> bool:
        """Whether every hash value has exactly V^(m-k) preimages."""
        counts = np.diff(np.asarray(self.tables.offsets))
        return bool(np.all(counts == counts[0]) and counts[0] > 0)

    # ---- exact inference ----------------------------------------------------------------------------
    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        """log P(x_1..x_L) = log((hi - lo) / V^m) for the hash and payload, plus the tail's log-probability."""
        return inference.log_prob(self.tables, check_tokens(tokens))

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """log p(x_t = v | x_<t); -inf for every v after an impossible prefix."""
        return inference.log_conditionals(self.tables, check_tokens(tokens), blind=False)

    def posterior(self, tokens: Int[Array, "B L"], latent: str | None = None) -> Float[Array, "B L+1 K"]:
        """Posterior over a latent after t = 0..L tokens (see the module docstring); default "consistent"."""
        latent = "consistent" if latent is None else latent
        if latent not in self.latents:
            raise ValueError(f"latent must be one of {tuple(self.latents)}, got {latent!r}")
        tokens = check_tokens(tokens)
        lo, hi, chance, head_alive = inference.prefix_states(self.tables, tokens)
        if latent == "consistent":
            return jnp.stack([1.0 - chance, chance], axis=-1)
        if latent == "preimage":
            return inference.uniform_on_ranges(self.tables.sorted_position, lo, hi.astype(chance.dtype))
        return inference.tail_posterior(self.tables, tokens, head_alive, name=latent[len("tail_") :])

    # ---- incremental interface and sampling ---------------------------------------------------------
    def init_state(self, batch: int):
        return inference.init(self.tables, batch, blind=False)

    def step(self, state, token: Int[Array, " B"]):
        return inference.step(self.tables, state, token, blind=False)

    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        """y uniform on V^m, then (H(y), y, a tail sample), cut to `length` tokens."""
        num_sequences, length = _check_sizes(num_sequences, length)
        head_key, tail_key = jax.random.split(key)
        head = inference.sample_head(self.tables, head_key, num_sequences)[:, :length]
        if length <= self.head_length:
            return head
        return jnp.concatenate([head, self.tail.sample(tail_key, num_sequences, length - self.head_length)], axis=1)


class NonInvertingPredictor(PytreeNode):
    """Claim C3's Q0: the hash marginal p(h) exactly, then every payload uniformly on V^m (it never
    inverts H), then the tail process, whether or not the payload was consistent (it never checks).

    It is the exact predictor of the hash-blind world (h ~ p(h) and y uniform, independently), so it
    generates a consistent document with probability sum_h p(h)^2 and has F = H(h) on the data."""

    _data_fields = ("process",)
    _static_fields = ()
    max_length = None

    def __init__(self, process):
        if not isinstance(process, HashThenPayload):
            raise ValueError(f"process must be a hash_then_payload process, got {type(process).__name__}")
        self.process = process

    @property
    def vocab_size(self) -> int:
        return self.process.vocab_size

    @property
    def supports_step(self) -> bool:
        return self.process.supports_step

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        return inference.log_conditionals(self.process.tables, check_tokens(tokens), blind=True)

    def init_state(self, batch: int):
        return inference.init(self.process.tables, batch, blind=True)

    def step(self, state, token: Int[Array, " B"]):
        return inference.step(self.process.tables, state, token, blind=True)


def non_inverting_predictor(process: HashThenPayload) -> NonInvertingPredictor:
    """Q0 of claim C3 for a hash_then_payload process."""
    return NonInvertingPredictor(process)


# --------------------------------------------------------------------------------------------------
# The same process as an explicit HMM, for tests on tiny sizes
# --------------------------------------------------------------------------------------------------

MAX_HMM_STATES = 4096


def hash_then_payload_hmm(process: HashThenPayload) -> HMMProcess:
    """The same process as an HMMProcess, whose generic filter checks the direct form on tiny sizes.

    Hidden states: (y, t, s) while the hash and payload are emitted, then (y, s) in the tail. The payload
    y is drawn uniformly at the start together with the tail's initial state s; state (y, t, s) emits the
    t-th token of (H(y), y) with probability 1; then the tail runs with y remembered. Latents: "preimage"
    (y) and, for a custom tail, the tail's latents; not "consistent", which belongs to the hash-blind
    world. Needs an HMMProcess tail and at most MAX_HMM_STATES states.
    """
    if not isinstance(process, HashThenPayload):
        raise ValueError(f"process must be a hash_then_payload process, got {type(process).__name__}")
    tail = process.tail
    if isinstance(tail, EndOfDocument):
        tail_transitions, tail_initial = np.zeros((tail.vocab_size, 1, 1)), np.ones(1)
        tail_transitions[tail.eod_token] = 1.0
    elif isinstance(tail, HMMProcess):
        tail_transitions, tail_initial = np.asarray(tail.transitions, np.float64), np.asarray(tail.initial, np.float64)
    else:
        raise ValueError(f"process.tail must be an HMMProcess for an HMM form, got {type(tail).__name__}")
    n, head, tail_states = process.num_payloads, process.head_length, tail_initial.size
    num_states = n * (head + 1) * tail_states
    if num_states > MAX_HMM_STATES:
        raise ValueError(f"process: its HMM form needs {num_states} > {MAX_HMM_STATES} states; use a smaller one")
    alphabet, k, m = process.alphabet, process.hash_length, process.payload_length
    payloads = np.arange(n)
    symbols = np.concatenate(
        [payload_digits(alphabet, k, np.asarray(process.hash_of)), payload_digits(alphabet, m, payloads)], axis=1
    )
    y, t, s = (a.reshape(-1) for a in np.meshgrid(payloads, np.arange(head), np.arange(tail_states), indexing="ij"))
    head_state = (y * head + t) * tail_states + s
    tail_index = n * head * tail_states + payloads[:, None] * tail_states + np.arange(tail_states)  # [N, S_tail]
    transitions = np.zeros((process.vocab_size, num_states, num_states))
    moved = np.where(t < head - 1, head_state + tail_states, tail_index[y, s])
    transitions[symbols[y, t], head_state, moved] = 1.0
    transitions[: tail.vocab_size, tail_index[:, :, None], tail_index[:, None, :]] = tail_transitions[:, None]
    initial = np.zeros(num_states)
    initial[head_state[t == 0]] = tail_initial[s[t == 0]] / n

    state_payload = np.concatenate([y, np.repeat(payloads, tail_states)])
    state_tail = np.concatenate([s, np.tile(np.arange(tail_states), n)])
    latents = {"preimage": (process.latents["preimage"], state_payload)}
    if process.custom_tail:
        for name, labels, value in zip(tail.latent_names, tail.latent_labels, tail.latent_maps):
            latents[f"tail_{name}"] = (labels, np.argmax(np.asarray(value), axis=1)[state_tail])
    return HMMProcess(transitions, initial, latents=latents, info=process.info)
