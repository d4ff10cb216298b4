"""Turn-taking conversations as HMMs: the construction shared by `personas` (C9) and `dialog` (C11).

Two speakers alternate turns of exactly L = `turn_length` tokens over one shared vocabulary of V tokens,
speaker 0 first (fixed-length turns: who speaks is a function of the position alone, so no turn-end
token is needed, and the conversation is endless, so it is defined at every length without an
end-of-document token). Every speaker is a Markov policy policy[u, v] = P(next token v | previous token
u), where u is the previous token of the shared history, whoever spoke it (a speaker may react to the
other's last token). The token before the document, x_0, is unobserved and drawn from `start`; it lets
the first token follow a policy row like every other token. With C latent combinations c ~ prior,

    P(x | c) = sum_u start(u) prod_t policies[c, s(t)][x_{t-1}, x_t],   s(t) = floor((t - 1) / L) mod 2.

Hidden state (c, phase, previous token), phase in 0..2L-1 the position of the *next* token in the cycle
of two turns: S = C * 2L * V, T dense [V, S, S]. Every state is entered by one token only, so the HMM
has the cheap move-then-emit structure. These are for small stages: once the first token is seen the
belief sits on C states (the phase follows from the position, the previous token is observed).
"""

from __future__ import annotations

import numpy as np

from toymodels.processes._validation import as_probabilities, device_dtype, sum_tolerance


def distribution(value, name: str, ndim: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Probability vectors along the last axis, each summing to 1 within the rounding of the dtype given.
    Returned in float64 with that rounding removed (a float32 row off by 1e-8 would otherwise fail the
    float64 check of the HMM built from it); an error beyond rounding raises."""
    array = as_probabilities(value, name, ndim)
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    sums = array.sum(axis=-1)
    tolerance = sum_tolerance(device_dtype(array))
    if np.any(np.abs(sums - 1.0) > tolerance):
        worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
        what = "the distribution" if ndim == 1 else "each row (over the next token)"
        raise ValueError(
            f"{name}: {what} must sum to 1 (within {tolerance:g}), one sums to {worst:.12g}"
        )
    array = array.astype(np.float64)
    return array / array.sum(axis=-1, keepdims=True)


def size(value, name: str, minimum: int = 1) -> int:
    whole = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def labels(given, count: int, default_prefix: str, name: str) -> tuple[str, ...]:
    if given is None:
        return tuple(f"{default_prefix}{i}" for i in range(count))
    given = tuple(str(x) for x in given)
    if len(given) != count or len(set(given)) != count:
        raise ValueError(f"{name} must hold {count} distinct labels, got {given}")
    return given


def start_distribution(start, vocab: int) -> np.ndarray:
    """`start` validated, or uniform over the V tokens when None."""
    return (
        np.full(vocab, 1.0 / vocab) if start is None else distribution(start, "start", 1, (vocab,))
    )


def random_rows(
    rng: np.random.Generator, shape: tuple[int, ...], vocab: int, columns
) -> np.ndarray:
    """Dirichlet(1) rows over `columns` of a V-token vocabulary, zero elsewhere."""
    out = np.zeros(shape + (vocab,))
    out[..., columns] = rng.dirichlet(np.ones(len(columns)), size=shape)
    return out


def turn_taking(policies, prior, start, turn_length, speakers: tuple[str, str], token_labels):
    """The HMM arrays of the module docstring for policies [C, 2, V, V] and prior [C].

    Returns (T [V, S, S], initial [S], combination c of each state [S], speaker of the next token of
    each state [S], info) with state (c, p, u) at index (c * 2L + p) * V + u. `info` holds the
    structural facts: token_labels, turn_length, first_speaker, and "<speaker>_tokens", the ids to which
    that speaker's policy gives positive probability after some previous token (support only)."""
    if isinstance(turn_length, bool) or int(turn_length) != turn_length or turn_length < 1:
        raise ValueError(f"turn_length must be a positive int (tokens per turn), got {turn_length}")
    turn_length = int(turn_length)
    num, _, vocab, _ = policies.shape
    cycle = 2 * turn_length
    num_states = num * cycle * vocab
    speaker_at = (np.arange(cycle) >= turn_length).astype(np.int64)
    c, p, u, v = np.meshgrid(*(np.arange(n) for n in (num, cycle, vocab, vocab)), indexing="ij")
    # Every (state, token) pair has exactly one successor, so this scatter has no collisions.
    transitions = np.zeros((vocab, num_states, num_states))
    source, target = (c * cycle + p) * vocab + u, (c * cycle + (p + 1) % cycle) * vocab + v
    transitions[v, source, target] = policies[c, speaker_at[p], u, v]
    initial = np.zeros(num_states)
    initial[(np.arange(num)[:, None] * cycle) * vocab + np.arange(vocab)] = prior[:, None] * start
    states = np.arange(num_states)
    emits = [
        tuple(int(x) for x in np.flatnonzero(policies[:, s].sum(axis=(0, 1)) > 0)) for s in (0, 1)
    ]
    info = {
        "token_labels": labels(token_labels, vocab, "t", "token_labels"),
        "turn_length": turn_length,
        "first_speaker": speakers[0],
        f"{speakers[0]}_tokens": emits[0],
        f"{speakers[1]}_tokens": emits[1],
    }
    combination, speaker = states // (cycle * vocab), speaker_at[(states // vocab) % cycle]
    return transitions, initial, combination, speaker, info
