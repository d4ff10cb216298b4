"""Personas on a stage (C9): a prior over personas, each a policy that speaks in the assistant's turns.

A persona k ~ prior is drawn once per document; then the user and the assistant alternate turns of
exactly L = `turn_length` tokens over one shared vocabulary of V tokens, user first, for ever (see
`_turns` for the turn-taking construction). Every speaker is a Markov policy over the previous token of
the shared history; the user's policy is the same whatever the persona. With x_0 ~ start the unobserved
token before the document and s(t) the speaker of position t,

    P(x) = sum_k prior_k P_k(x),   P_k(x) = sum_u start(u) prod_t policy_{s(t), k}[x_{t-1}, x_t],

policy_{user, k} = user and policy_{assistant, k} = personas[k]. So the stage is the prior-weighted
mixture of its single-persona stages, and fine-tuning data drawn from a persona subset in proportion to
the prior is exactly the stage with `restrict_prior(prior, subset)`.

Latents: "persona" (who is on stage) and "speaker" (who speaks the next token: "user" or "assistant").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from toymodels.processes import _turns
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family

_EXAMPLE = dict(
    personas=[
        [[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.5, 0.25, 0.25]],
        [[0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.25, 0.25, 0.5]],
    ],
    prior=[0.7, 0.3],
    user=[[0.2, 0.6, 0.2], [0.2, 0.6, 0.2], [0.3, 0.4, 0.3]],
    turn_length=2,
)


@register_family("persona_stage", example=_EXAMPLE)
def persona_stage(
    personas,
    prior,
    user,
    turn_length: int,
    start=None,
    persona_labels: Sequence[str] | None = None,
    token_labels: Sequence[str] | None = None,
) -> HMMProcess:
    """The stage of the module docstring.

    Args:
        personas: [K, V, V], personas[k, u, v] = P(assistant emits v | previous token u, persona k).
        prior: [K], the prior over personas (zeros allowed: a persona that never takes the stage).
        user: [V, V], the user's policy, the same whatever the persona.
        turn_length: tokens per turn (>= 1).
        start: [V], the distribution of the unobserved token before the document (default uniform).
        persona_labels: K names (default "persona0", ...); token_labels: V names (default "t0", ...).

    Latents: "persona" and "speaker". Info: token_labels, turn_length, first_speaker ("user"),
    user_tokens and assistant_tokens (the ids to which each side's policy gives positive probability
    after some previous token; disjoint when the vocabularies are split).
    """
    return _stage(personas, prior, user, turn_length, start, persona_labels, token_labels)


def _stage(
    personas, prior, user, turn_length, start, persona_labels, token_labels, family="persona_stage"
):
    personas = _turns.distribution(personas, "personas", 3)
    num, vocab = personas.shape[0], personas.shape[1]
    if personas.shape != (num, vocab, vocab):
        raise ValueError(
            f"personas must have shape [K, V, V] (next token given previous), got {personas.shape}"
        )
    prior = _turns.distribution(prior, "prior", 1)
    if prior.shape != (num,):
        raise ValueError(
            f"prior has {prior.shape[0]} entries but there are {num} personas; give one each"
        )
    user = _turns.distribution(user, "user", 2)
    if user.shape != (vocab, vocab):
        raise ValueError(
            f"user must have shape {(vocab, vocab)} (the personas' vocabulary), got {user.shape}"
        )
    start = _turns.start_distribution(start, vocab)
    names = _turns.labels(persona_labels, num, "persona", "persona_labels")

    policies = np.stack([np.broadcast_to(user, personas.shape), personas], axis=1)  # [K, 2, V, V]
    speakers = ("user", "assistant")
    transitions, initial, persona_of, speaker_of, info = _turns.turn_taking(
        policies, prior, start, turn_length, speakers, token_labels
    )
    return HMMProcess(
        transitions,
        initial,
        latents={"persona": (names, persona_of), "speaker": (speakers, speaker_of)},
        info={"family": family, **info},
    )


def restrict_prior(prior, subset: Sequence[int]) -> np.ndarray:
    """The prior restricted to the personas in `subset` and renormalised: pi_k / pi(subset) on the
    subset, 0 elsewhere. Fine-tuning data drawn from a persona subset in proportion to the prior is
    exactly the stage with this prior (C9)."""
    prior = _turns.distribution(prior, "prior", 1)
    subset = np.asarray(subset)
    if subset.ndim != 1 or subset.size == 0 or not np.issubdtype(subset.dtype, np.integer):
        raise ValueError(f"subset must be a non-empty sequence of persona indices, got {subset}")
    if subset.min() < 0 or subset.max() >= prior.shape[0] or np.unique(subset).size != subset.size:
        raise ValueError(
            f"subset must hold distinct persona indices in 0..{prior.shape[0] - 1}, got {subset}"
        )
    mass = prior[subset].sum()
    if mass <= 0:
        raise ValueError(
            f"subset {subset.tolist()} has prior mass 0; there is nothing to renormalise"
        )
    out = np.zeros_like(prior)
    out[subset] = prior[subset] / mass
    return out


@register_family(
    "random_persona_stage",
    example=dict(num_personas=2, vocab_size=3, turn_length=2, closeness=0.5, seed=0),
)
def random_persona_stage(
    num_personas: int,
    vocab_size: int,
    turn_length: int,
    closeness: float = 0.0,
    seed: int = 0,
    user_vocab_size: int = 0,
    prior=None,
) -> HMMProcess:
    """A random stage. The user's rows and a base persona's rows ~ Dirichlet(1); persona k's policy is
    closeness * base + (1 - closeness) * own_k with own_k ~ Dirichlet(1) (closeness 1: identical
    personas; 0: independent ones). prior: default uniform (e.g. restrict_prior(...) for a fine-tuning
    subset). user_vocab_size = 0: one shared vocabulary; otherwise the user speaks only the tokens
    0..user_vocab_size-1 and the personas only the rest. start is uniform. Deterministic in `seed`."""
    num = _turns.size(num_personas, "num_personas")
    vocab = _turns.size(vocab_size, "vocab_size")
    split = _turns.size(user_vocab_size, "user_vocab_size", minimum=0)
    if split >= vocab:
        raise ValueError(
            f"user_vocab_size must be 0 (shared) or below vocab_size={vocab}, got {split}"
        )
    closeness = float(closeness)
    if not 0.0 <= closeness <= 1.0:
        raise ValueError(f"closeness must lie in [0, 1], got {closeness}")
    rng = np.random.default_rng(seed)
    user_columns = np.arange(split) if split else np.arange(vocab)
    persona_columns = np.arange(split, vocab)
    user = _turns.random_rows(rng, (vocab,), vocab, user_columns)
    base = _turns.random_rows(rng, (vocab,), vocab, persona_columns)
    own = _turns.random_rows(rng, (num, vocab), vocab, persona_columns)
    personas = closeness * base[None] + (1.0 - closeness) * own
    # Rounding only: each row is a convex combination of two rows that sum to 1.
    personas /= personas.sum(axis=-1, keepdims=True)
    prior = np.full(num, 1.0 / num) if prior is None else prior
    return _stage(personas, prior, user, turn_length, None, None, None, "random_persona_stage")
