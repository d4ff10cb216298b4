"""The generic exact finite-state process: an edge-emitting hidden Markov model.

T[v, i, j] = P(emit v, go to state j | state i), initial state distribution pi. The belief after t
tokens is b_t(j) = P(state j | x_1..x_t) (b_0 = pi); one normalised filtering recursion

    u = b_t T[x_{t+1}],   p(x_{t+1} | x_<=t) = sum_j u_j,   b_{t+1} = u / sum_j u_j

gives next-token conditionals and belief states in a single `lax.scan`. log_prob needs only the masses:
on the CPU a C++ kernel computes them (toymodels/native/hmm_log_prob.cc), elsewhere, or where the kernel
cannot be built, a scan that normalises once per block of tokens instead of after each (see
_xla_log_likelihood).

Two common structures have a cheaper step, detected exactly when the process is built:
  emit_then_move  T[v, i, j] = B[i, v] A[i, j]  (a standard HMM: emit from the current state, then move)
  move_then_emit  T[v, i, j] = A[i, j] C[j, v]  (move, then emit from the new state; e.g. Mess3)
Both cost one S x S matmul per token instead of one S x VS matmul.
"""

from __future__ import annotations

from functools import partial
from typing import Hashable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.native import hmm_log_prob as native
from toymodels.predictors import PytreeNode, check_tokens
from toymodels.processes._validation import as_probabilities, check_sums_to_one, device_dtype
from toymodels.precision import einsum, matmul

GENERAL, EMIT_THEN_MOVE, MOVE_THEN_EMIT = "general", "emit_then_move", "move_then_emit"


def _factorise(transitions: np.ndarray, dtype) -> tuple[str, np.ndarray, np.ndarray]:
    """Return (structure, A, E) where E is the per-state emission table of that structure.

    A factorisation is accepted only if it reproduces every zero of T exactly (an impossible event must
    stay impossible) and every other entry to a few ulps of the dtype, relative to the entry itself.
    """
    t = transitions.astype(np.float64)
    moves = t.sum(axis=0)  # A[i, j] = P(go to j | i)
    emit_now = t.sum(axis=2).T  # B[i, v] = P(emit v | i)
    arrivals = moves.sum(axis=0)  # total weight of arriving at j
    emit_on_arrival = np.divide(t.sum(axis=1).T, arrivals[:, None], out=np.zeros_like(emit_now), where=arrivals[:, None] > 0)
    candidates = (
        (EMIT_THEN_MOVE, emit_now, emit_now.T[:, :, None] * moves[None]),
        (MOVE_THEN_EMIT, emit_on_arrival, moves[None] * emit_on_arrival.T[:, None, :]),
    )
    relative = 16 * np.finfo(dtype).eps
    for structure, emissions, rebuilt in candidates:
        same_zeros = np.array_equal(t == 0, rebuilt == 0)
        if same_zeros and np.all(np.abs(t - rebuilt) <= relative * t):
            return structure, moves, emissions
    return GENERAL, moves, emit_now


class _Recursion(PytreeNode):
    """The arrays the filtering recursion reads, and its structure. Jitted inference takes this and not
    the whole process, so processes that differ only in latents or info share compiled code."""

    _data_fields = ("transitions", "initial", "moves", "emissions")
    _static_fields = ("structure",)

    def __init__(self, transitions, initial, moves, emissions, structure):
        self.transitions, self.initial, self.moves, self.emissions = transitions, initial, moves, emissions
        self.structure = structure

    @property
    def vocab_size(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_states(self) -> int:
        return self.transitions.shape[1]


class HMMProcess(PytreeNode):
    """An exact edge-emitting HMM process; see the module docstring.

    Args:
        transitions: [V, S, S], T[v, i, j] = P(emit v, go to j | i); each T[:, i, :] sums to 1.
        initial: [S], the distribution of the state before the first token.
        latents: optional map from a latent's name to (labels of its K values, the value of each of the
            S states as an int array [S]); `posterior(tokens, name)` is the belief pushed through that
            map. Without it, the one latent "state" is the hidden state itself.
        info: optional structural facts a family exposes with the process, read as `process.info`:
            hashable values such as a reveal or end-of-document token id or a segment length. They are
            static pytree metadata, so keep parameter values (probabilities) out of them.

    Subnormal numbers (below 1.2e-38 in float32, 2.2e-308 in float64): `log_prob`'s CPU kernel keeps
    them; XLA's CPU code (conditionals, beliefs, sampling, and log_prob without the kernel) flushes them
    to zero, and accelerators may too, so there a probability that small acts as an impossible event.
    Use float64 for such processes.
    """

    _data_fields = ("recursion", "latent_maps")
    _static_fields = ("latent_names", "latent_labels", "info_items")

    def __init__(
        self,
        transitions: Float[Array, "V S S"],
        initial: Float[Array, " S"],
        latents: Mapping[str, tuple[Sequence[str], Sequence[int]]] | None = None,
        info: Mapping[str, Hashable] | None = None,
    ):
        t = as_probabilities(transitions, "transitions", ndim=3)
        if t.shape[1] != t.shape[2]:
            raise ValueError(f"transitions must have shape [V, S, S], got {t.shape}")
        pi = as_probabilities(initial, "initial", ndim=1)
        if pi.shape[0] != t.shape[1]:
            raise ValueError(
                f"initial has {pi.shape[0]} states but transitions has {t.shape[1]}; they must agree"
            )
        dtype = device_dtype(t)
        check_sums_to_one(t.sum(axis=(0, 2)), "transitions", "each row T[:, i, :] over (token, next state)", dtype)
        check_sums_to_one(np.asarray([pi.sum()]), "initial", "the initial distribution", dtype)
        structure, moves, emissions = _factorise(t, dtype)

        num_states = t.shape[1]
        latents = dict(latents) if latents else {"state": ([f"s{i}" for i in range(num_states)], np.arange(num_states))}
        names, labels, maps = [], [], []
        for name, (value_labels, of_state) in latents.items():
            of_state = np.asarray(of_state)
            value_labels = tuple(str(x) for x in value_labels)
            if of_state.shape != (num_states,) or not np.issubdtype(of_state.dtype, np.integer):
                raise ValueError(f"latents[{name!r}] must map each of the {num_states} states to an int, got {of_state}")
            if of_state.min() < 0 or of_state.max() >= len(value_labels):
                raise ValueError(f"latents[{name!r}] maps a state outside its {len(value_labels)} labels")
            names.append(str(name))
            labels.append(value_labels)
            maps.append(jnp.asarray(np.eye(len(value_labels))[of_state], dtype))

        self.recursion = _Recursion(
            *(jnp.asarray(a, dtype) for a in (t, pi, moves, emissions)), structure=structure
        )
        self.latent_maps = tuple(maps)
        self.latent_names = tuple(names)
        self.latent_labels = tuple(labels)
        self.info_items = _info_items(info)

    # ---- parameters, sizes and metadata -------------------------------------------------------------
    @property
    def transitions(self) -> Float[Array, "V S S"]:
        return self.recursion.transitions

    @property
    def initial(self) -> Float[Array, " S"]:
        return self.recursion.initial

    @property
    def structure(self) -> str:
        """"general", "emit_then_move" or "move_then_emit": which filtering step this process uses."""
        return self.recursion.structure

    @property
    def vocab_size(self) -> int:
        return self.recursion.vocab_size

    @property
    def num_states(self) -> int:
        return self.recursion.num_states

    max_length = None

    @property
    def latents(self) -> dict[str, tuple[str, ...]]:
        return dict(zip(self.latent_names, self.latent_labels))

    @property
    def info(self) -> dict[str, Hashable]:
        return dict(self.info_items)

    # ---- exact inference ----------------------------------------------------------------------------
    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        """log P(x_1..x_L); -inf for a sequence the process cannot produce."""
        return _log_likelihood(self.recursion, check_tokens(tokens))

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """log p(x_t = v | x_<t); -inf for every v after an impossible prefix."""
        return _filter(self.recursion, check_tokens(tokens), want_conditionals=True, want_beliefs=False)[0]

    def belief_states(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L+1 S"]:
        """P(state after t tokens | x_1..x_t) for t = 0..L; stays at the last possible belief after an
        impossible token."""
        return _filter(self.recursion, check_tokens(tokens), want_conditionals=False, want_beliefs=True)[1]

    def posterior(self, tokens: Int[Array, "B L"], latent: str | None = None) -> Float[Array, "B L+1 K"]:
        """Exact posterior over the named latent after t tokens (entry 0 is its prior)."""
        index = self._latent_index(latent)
        return matmul(self.belief_states(tokens), self.latent_maps[index])

    def _latent_index(self, latent: str | None) -> int:
        if latent is None:
            return 0
        if latent not in self.latent_names:
            raise ValueError(f"latent must be one of {self.latent_names}, got {latent!r}")
        return self.latent_names.index(latent)

    # ---- incremental interface ----------------------------------------------------------------------
    def init_state(self, batch: int):
        belief = jnp.broadcast_to(self.initial, (batch, self.num_states))
        alive = jnp.ones((batch,), bool)
        return (belief, alive), _log_next(self.recursion, belief, alive)

    def step(self, state, token: Int[Array, " B"]):
        belief, alive = state
        belief, alive, _ = _update(self.recursion, belief, alive, token)
        return (belief, alive), _log_next(self.recursion, belief, alive)

    # ---- sampling -----------------------------------------------------------------------------------
    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        """Exact ancestral sampling of the joint (token, next state) chain."""
        num_sequences, length = _check_sizes(num_sequences, length)
        parallel = _parallel_sampling(self.num_states, self.vocab_size, num_sequences, length)
        return _sample(self.transitions, self.initial, key, num_sequences, length, parallel=parallel)


def _info_items(info) -> tuple:
    """Family facts as a sorted tuple of pairs: static pytree metadata must be hashable."""
    items = tuple(sorted((str(k), v) for k, v in (info or {}).items()))
    for key, value in items:
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"info[{key!r}] must be hashable (an int, str, float or tuple), got {type(value).__name__}")
    return items


def _check_sizes(num_sequences, length) -> tuple[int, int]:
    if int(num_sequences) != num_sequences or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive int, got {num_sequences}")
    if int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length}")
    return int(num_sequences), int(length)


# --------------------------------------------------------------------------------------------------
# The recursion. `_update` consumes one token per sequence; `_log_next` gives the next conditionals.
# --------------------------------------------------------------------------------------------------


def _log_next(process: _Recursion, belief, alive):
    if process.structure == MOVE_THEN_EMIT:
        probs = matmul(matmul(belief, process.moves), process.emissions)
    else:
        probs = matmul(belief, process.emissions)
    return jnp.where(alive[:, None], jnp.log(probs), -jnp.inf)


def _joint_next(process: _Recursion, belief, token):
    """P(token, next state | past) up to the belief's normalisation: [B, S] for in-vocabulary ids,
    with the step specialised to the process's structure."""
    if process.structure == EMIT_THEN_MOVE:
        return matmul(belief * process.emissions.T[token], process.moves)
    if process.structure == MOVE_THEN_EMIT:
        return matmul(belief, process.moves) * process.emissions.T[token]
    all_tokens = einsum("bi,vij->bvj", belief, process.transitions)
    return jnp.take_along_axis(all_tokens, token[:, None, None], axis=1)[:, 0]


def _update(process: _Recursion, belief, alive, token):
    """One filtering step. Returns (belief, alive, p(token | past)); impossible tokens (zero
    probability, or ids outside [0, V): a negative one reaches here only from traced code, which the
    boundary checks cannot see, and must not wrap around) leave the belief and mark the sequence dead."""
    in_vocab = (token >= 0) & (token < process.vocab_size)
    unnormalised = _joint_next(process, belief, jnp.where(in_vocab, token, 0))
    mass = jnp.where(in_vocab, unnormalised.sum(axis=-1), 0.0)
    ok = alive & (mass > 0)
    new_belief = jnp.where(ok[:, None], unnormalised / jnp.where(ok, mass, 1.0)[:, None], belief)
    return new_belief, ok, jnp.where(ok, mass, 0.0)


@partial(jax.jit, static_argnames=("want_conditionals", "want_beliefs"))
def _filter(process: _Recursion, tokens, *, want_conditionals: bool, want_beliefs: bool):
    """Returns (log conditionals [B, L, V] or None, beliefs [B, L+1, S] or None).

    Each step's outputs leave the loop flattened to one axis, [B * V] and [B * S], and are transposed to
    [B, L, .] once after it: XLA:CPU vectorises elementwise work (here the logarithm) over a wide minor
    axis but runs scalar code over a minor axis of 16 or 32. The scan is not unrolled: unrolled, its
    stacked outputs were copied whole at every step. Together these made log_conditionals 2x faster on
    the HMM benchmark's process (bench/bench_hmm_filter.py), with bitwise the same values."""
    batch, length = tokens.shape
    belief0 = jnp.broadcast_to(process.initial, (batch, process.num_states))
    alive0 = jnp.ones((batch,), bool)

    def body(carry, token):
        belief, alive = carry
        log_next = _log_next(process, belief, alive).reshape(-1) if want_conditionals else None
        belief, alive, _ = _update(process, belief, alive, token)
        return (belief, alive), (log_next, belief.reshape(-1) if want_beliefs else None)

    _, (log_next, beliefs) = jax.lax.scan(body, (belief0, alive0), tokens.T)
    if log_next is not None:
        log_next = jnp.swapaxes(log_next.reshape(length, batch, process.vocab_size), 0, 1)
    if beliefs is not None:
        beliefs = jnp.swapaxes(beliefs.reshape(length, batch, process.num_states), 0, 1)
        beliefs = jnp.concatenate([belief0[:, None], beliefs], axis=1)
    return log_next, beliefs


# The XLA log_prob filters blocks of this many tokens between normalisations (see _xla_log_likelihood).
_BLOCK = 8


@jax.jit
def _log_likelihood(process: _Recursion, tokens):
    """log P(x) [B]: by the CPU kernel where it is available, else by the XLA scan; both compute the
    filter's value up to rounding, and -inf for an impossible sequence. (The kernel was faster at every
    size measured, 2-6x, except a factorised S = 256, 0.9x.) On a machine whose default backend is an
    accelerator the kernel is not even built, so such a machine needs no C++ compiler."""
    on_cpu = jax.default_backend() == "cpu"
    if tokens.shape[1] == 0 or not on_cpu or not native.available(process.initial.dtype):
        return _xla_log_likelihood(process, tokens)
    return jax.lax.platform_dependent(process, tokens, cpu=_native_log_likelihood, default=_xla_log_likelihood)


@jax.custom_jvp
def _native_log_likelihood(process: _Recursion, tokens):
    """The kernel's step for the process's structure: A and the emission table E of that structure, or
    T itself (its E then only gives the vocabulary size)."""
    matrices = process.transitions if process.structure == GENERAL else process.moves[None]
    return native.log_prob(process.structure, process.emissions.T, matrices, process.initial, tokens)


@_native_log_likelihood.defjvp
def _native_log_likelihood_jvp(primals, tangents):
    """The kernel has no derivative of its own: differentiate the XLA scan, which computes the same value."""
    return jax.jvp(_xla_log_likelihood, primals, tangents)


def _xla_log_likelihood(process: _Recursion, tokens):
    """log P(x) [B]: the filter without the bookkeeping that conditionals and beliefs need.

    Normalising the belief costs a row sum and a division per token, about as much as the product itself
    at small S, and log_prob only needs the masses. So the recursion runs unnormalised through a block of
    _BLOCK tokens, u <- u T[x], and normalises once per block: P(block | past) is the block's final mass.
    Underflow is the only risk, and it is checked rather than assumed away (see _filter_block); a block
    whose mass falls too low (rare tokens, impossible ones) is recomputed one normalised step at a time,
    as are the tokens after the last whole block. An impossible token (mass 0, or an id >= V) makes the
    sequence -inf."""
    batch, length = tokens.shape
    in_vocab = (tokens >= 0) & (tokens < process.vocab_size)
    safe_LxB = jnp.where(in_vocab, tokens, 0).T
    num_blocks = length // _BLOCK
    belief0 = jnp.broadcast_to(process.initial, (batch, process.num_states))

    blocks = safe_LxB[: num_blocks * _BLOCK].reshape(num_blocks, _BLOCK, batch)
    belief, log_masses = jax.lax.scan(partial(_filter_block, process), belief0, blocks)
    _, log_remainder = _filter_stepwise(process, belief, safe_LxB[num_blocks * _BLOCK :])
    return jnp.where(in_vocab.all(axis=1), log_masses.sum(axis=0) + log_remainder, -jnp.inf)


def _block_scale(dtype) -> tuple[float, float]:
    """(2^e, 2^-e) with 2^e about the largest power of two the dtype holds, less 8 binary orders of margin
    (a row of T[x] may sum to 1 plus rounding): 2^120 in float32, 2^1016 in float64."""
    exponent = jnp.finfo(dtype).maxexp - 8
    return 2.0**exponent, 2.0**-exponent


def _filter_block(process: _Recursion, belief, tokens_KxB):
    """(belief after the block, log P(block | past) [B]) from a normalised belief: unnormalised through
    the block (unrolled), or stepwise for the rows whose mass fell too low.

    The block starts from the belief scaled by M = _block_scale: every T[x] is substochastic, so the
    vector only shrinks and never overflows, and a state's entry, M beta f (start belief beta, product f
    of its path's factors), underflows only when beta f < tiny / M. The normalised filter keeps a
    state while beta f / m >= tiny, m >= the block's final relative mass; so whenever that mass is at
    least 1 / M (a final scaled mass of at least 1) the block loses no state the normalised filter
    keeps, and its mass, far above tiny, carries no underflow error. Below that the row is redone
    stepwise. Unscaled, a state with a small belief vanished in a block of small mass, and a later token
    only it could emit made a possible sequence -inf."""
    scale, inverse = _block_scale(belief.dtype)
    unnormalised = belief * scale
    for token in tokens_KxB:
        unnormalised = _joint_next(process, unnormalised, token)
    mass = unnormalised.sum(axis=-1)
    # mass * inverse is exact (a power of two, and mass >= 1 where it is used); its log has full precision.
    fast = (unnormalised / jnp.where(mass > 0, mass, 1.0)[:, None], jnp.log(mass * inverse))
    redo = mass < 1.0

    def stepwise():
        exact = _filter_stepwise(process, belief, tokens_KxB)
        return jnp.where(redo[:, None], exact[0], fast[0]), jnp.where(redo, exact[1], fast[1])

    return jax.lax.cond(redo.any(), stepwise, lambda: fast)


def _filter_stepwise(process: _Recursion, belief, tokens_KxB):
    """The normalised recursion (`_update`) over a few tokens: (belief after them, sum of their log
    masses [B]). Rare (underflowing blocks, the tokens after the last whole block), so a loop, not
    unrolled: it costs one step's compilation. A row that meets an impossible token gets -inf and
    restarts from `initial`, so that later blocks stay on the fast path."""

    def step(carry, token):
        belief, alive, log_mass = carry
        belief, alive, mass = _update(process, belief, alive, token)
        return (belief, alive, log_mass + jnp.log(mass)), None

    start = (belief, jnp.ones(belief.shape[:1], bool), jnp.zeros(belief.shape[:1], belief.dtype))
    (belief, alive, log_mass), _ = jax.lax.scan(step, start, tokens_KxB)
    return jnp.where(alive[:, None], belief, process.initial), log_mass


def _inverse_cdf(cumulative_NxK, last_N, u_N):
    """Index k with cumulative[k-1] <= u * total < cumulative[k] in each row: one uniform per draw.

    A zero-probability entry has cumulative[k] = cumulative[k-1], so no u lands on it; `last_N` (each
    row's last positive entry) catches u * total rounding up to the row total. The leading axes
    broadcast (the parallel sampler draws from every row with each uniform)."""
    total_N = cumulative_NxK[..., -1]
    index_N = jnp.sum(cumulative_NxK <= (u_N * total_N)[..., None], axis=-1)
    return jnp.minimum(index_N, last_N)


def _last_positive(probs_NxK):
    return probs_NxK.shape[-1] - 1 - jnp.argmax(probs_NxK[:, ::-1] > 0, axis=-1)


# Above this many compare operations (L * B * S * V * S) the parallel sampler's all-states draws would
# hold too much memory; the scan is used instead (same tokens either way).
_PARALLEL_SAMPLE_LIMIT = 2**26


def _parallel_sampling(num_states: int, vocab: int, num_sequences: int, length: int) -> bool:
    """Sample in parallel over positions on accelerators (where a 64-step scan costs ~1 ms of loop
    overhead), one step at a time on CPU (where the scan is cheapest); both give the same tokens."""
    size = length * num_sequences * num_states * vocab * num_states
    return jax.default_backend() != "cpu" and 0 < size <= _PARALLEL_SAMPLE_LIMIT


@partial(jax.jit, static_argnames=("num_sequences", "length", "parallel"))
def _sample(transitions, initial, key, num_sequences: int, length: int, parallel: bool = False):
    vocab, num_states, _ = transitions.shape
    # joint[i, v * S + j] = P(emit v, go to j | i): one draw per token by inverse CDF, so each token
    # costs one uniform and a compare-and-count over V * S (a Gumbel draw would cost V * S uniforms).
    joint = jnp.transpose(transitions, (1, 0, 2)).reshape(num_states, vocab * num_states)
    cumulative, last = jnp.cumsum(joint, axis=-1), _last_positive(joint)
    start_key, step_key = jax.random.split(key)
    state0 = _inverse_cdf(jnp.cumsum(initial)[None], _last_positive(initial[None]),
                          jax.random.uniform(start_key, (num_sequences,), dtype=joint.dtype))
    uniforms_LxB = jax.random.uniform(step_key, (length, num_sequences), dtype=joint.dtype)
    if parallel and length > 0:
        return _sample_parallel(cumulative, last, state0, uniforms_LxB)

    def body(state, u_B):
        draw = _inverse_cdf(cumulative[state], last[state], u_B)
        return draw % num_states, draw // num_states

    _, tokens = jax.lax.scan(body, state0, uniforms_LxB)
    return tokens.T.astype(jnp.int32)


def _sample_parallel(cumulative_SxK, last_S, state0_B, uniforms_LxB):
    """The scan's tokens with log2(L) sequential steps instead of L.

    Step t maps every state i to the draw (token, next state) that uniform u_t picks from row i, so it
    is a function f_t on states. The state before step t is (f_{t-1} o ... o f_0)(s_0): prefix
    compositions, which `associative_scan` forms in parallel. The same uniforms pick the same rows'
    entries as the scan does, so the tokens are identical, not just equal in distribution."""
    num_states = cumulative_SxK.shape[0]
    draws_LxBxS = _inverse_cdf(cumulative_SxK, last_S, uniforms_LxB[..., None])
    moves_LxBxS = draws_LxBxS % num_states

    def then(earlier, later):  # (later o earlier)[i] = later[earlier[i]]
        return jnp.take_along_axis(later, earlier, axis=-1)

    prefix_LxBxS = jax.lax.associative_scan(then, moves_LxBxS, axis=0)
    after_LxB = prefix_LxBxS[:, jnp.arange(state0_B.shape[0]), state0_B]  # the state after step t
    states_LxB = jnp.concatenate([state0_B[None], after_LxB[:-1]], axis=0)
    draws_LxB = jnp.take_along_axis(draws_LxBxS, states_LxB[..., None], axis=-1)[..., 0]
    return (draws_LxB // num_states).T.astype(jnp.int32)
