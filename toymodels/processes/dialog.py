"""A dialog of two agents with independent latent types (C11), and its coupled variant.

Agents A and B alternate turns of exactly L = `turn_length` tokens over one shared vocabulary, A first,
for ever (see `_turns` for the turn-taking construction). Their types a ~ prior_a and b ~ prior_b are
drawn independently once per document.

    dialog          each token depends only on its speaker's type and the previous token:
                    A speaks with types_a[a], B with types_b[b]. Then P(x | a, b) = f_a(x) g_b(x), so
                    the posterior over (a, b) is the product of its two marginals at every prefix.
    coupled_dialog  each speaker's policy may depend on both types (policies_a[a, b], policies_b[a, b]):
                    the types are still independent a priori, but the posterior need not factorise.

Latents: "types" (the pair; labels "a0,b1", index a * Kb + b), "type_a", "type_b" and "speaker" (who
speaks the next token, "A" or "B"). Info: token_labels, turn_length, first_speaker ("A"), A_tokens,
B_tokens (support only), coupled.
"""

from __future__ import annotations

import numpy as np

from toymodels.processes import _turns
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family


def _dialog(policies_a, policies_b, prior_a, prior_b, turn_length, family, coupled, **options):
    """Both constructors meet here with policies of shape [Ka, Kb, V, V]."""
    num_a, num_b, vocab, _ = policies_a.shape
    prior_a = _turns.distribution(prior_a, "prior_a", 1, (num_a,))
    prior_b = _turns.distribution(prior_b, "prior_b", 1, (num_b,))
    start = _turns.start_distribution(options.get("start"), vocab)
    labels_a = _turns.labels(options.get("labels_a"), num_a, "a", "labels_a")
    labels_b = _turns.labels(options.get("labels_b"), num_b, "b", "labels_b")

    # Combination c = a * Kb + b; independent types a priori.
    policies = np.stack([policies_a, policies_b], axis=2).reshape(num_a * num_b, 2, vocab, vocab)
    prior = (prior_a[:, None] * prior_b[None]).reshape(-1)
    transitions, initial, pair_of, speaker_of, info = _turns.turn_taking(
        policies, prior, start, turn_length, ("A", "B"), options.get("token_labels")
    )
    return HMMProcess(
        transitions,
        initial,
        latents={
            "types": (tuple(f"{la},{lb}" for la in labels_a for lb in labels_b), pair_of),
            "type_a": (labels_a, pair_of // num_b),
            "type_b": (labels_b, pair_of % num_b),
            "speaker": (("A", "B"), speaker_of),
        },
        info={"family": family, "coupled": coupled, **info},
    )


_EXAMPLE = dict(
    types_a=[[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [0.4, 0.6]]],
    types_b=[[[0.7, 0.3], [0.3, 0.7]], [[0.5, 0.5], [0.1, 0.9]]],
    prior_a=[0.5, 0.5],
    prior_b=[0.4, 0.6],
    turn_length=2,
)


@register_family("dialog", example=_EXAMPLE)
def dialog(
    types_a,
    types_b,
    prior_a,
    prior_b,
    turn_length: int,
    start=None,
    labels_a=None,
    labels_b=None,
    token_labels=None,
) -> HMMProcess:
    """The factorised dialog of the module docstring.

    Args:
        types_a: [Ka, V, V], types_a[a, u, v] = P(A emits v | previous token u, A's type a).
        types_b: [Kb, V, V], likewise for B.
        prior_a, prior_b: [Ka], [Kb], the independent priors over the two types.
        turn_length: tokens per turn (>= 1).
        start: [V], the distribution of the unobserved token before the document (default uniform).
        labels_a, labels_b, token_labels: names (default "a0", ..., "b0", ..., "t0", ...).
    """
    types_a = _turns.distribution(types_a, "types_a", 3)
    types_b = _turns.distribution(types_b, "types_b", 3)
    vocab = types_a.shape[1]
    if types_a.shape[1:] != (vocab, vocab) or types_b.shape[1:] != (vocab, vocab):
        raise ValueError(
            "types_a and types_b must have shapes [Ka, V, V] and [Kb, V, V] with one V, "
            f"got {types_a.shape} and {types_b.shape}"
        )
    shape = (types_a.shape[0], types_b.shape[0], vocab, vocab)
    policies_a, policies_b = (
        np.broadcast_to(types_a[:, None], shape),
        np.broadcast_to(types_b[None], shape),
    )
    options = dict(start=start, labels_a=labels_a, labels_b=labels_b, token_labels=token_labels)
    return _dialog(
        policies_a, policies_b, prior_a, prior_b, turn_length, "dialog", False, **options
    )


# A's first token says only whether a == b (0 with probability 0.9 if so, 0.1 if not); B is uniform.
_AGREE, _DIFFER, _HALF = [[0.9, 0.1]] * 2, [[0.1, 0.9]] * 2, [[0.5, 0.5]] * 2
_COUPLED_EXAMPLE = dict(
    policies_a=[[_AGREE, _DIFFER], [_DIFFER, _AGREE]],
    policies_b=[[_HALF, _HALF], [_HALF, _HALF]],
    prior_a=[0.5, 0.5],
    prior_b=[0.5, 0.5],
    turn_length=1,
)


@register_family("coupled_dialog", example=_COUPLED_EXAMPLE)
def coupled_dialog(
    policies_a,
    policies_b,
    prior_a,
    prior_b,
    turn_length: int,
    start=None,
    labels_a=None,
    labels_b=None,
    token_labels=None,
) -> HMMProcess:
    """The coupled dialog of the module docstring: policies_a[a, b, u, v] = P(A emits v | previous
    token u, types (a, b)), policies_b [Ka, Kb, V, V] likewise; other arguments as in `dialog`."""
    policies_a = _turns.distribution(policies_a, "policies_a", 4)
    policies_b = _turns.distribution(policies_b, "policies_b", 4)
    num_a, num_b, vocab = policies_a.shape[:3]
    if policies_a.shape != (num_a, num_b, vocab, vocab) or policies_b.shape != policies_a.shape:
        raise ValueError(
            "policies_a and policies_b must both have shape [Ka, Kb, V, V], "
            f"got {policies_a.shape} and {policies_b.shape}"
        )
    options = dict(start=start, labels_a=labels_a, labels_b=labels_b, token_labels=token_labels)
    return _dialog(
        policies_a, policies_b, prior_a, prior_b, turn_length, "coupled_dialog", True, **options
    )


@register_family(
    "random_dialog", example=dict(num_types_a=2, num_types_b=2, vocab_size=2, turn_length=2, seed=0)
)
def random_dialog(
    num_types_a: int,
    num_types_b: int,
    vocab_size: int,
    turn_length: int,
    seed: int = 0,
    coupled: bool = False,
) -> HMMProcess:
    """A random dialog with uniform type priors and Dirichlet(1) policy rows: one policy per type of each
    agent (the posterior factorises), or with coupled=True one per agent and pair of types (it
    generically does not). start is uniform. Deterministic in `seed`."""
    num_a = _turns.size(num_types_a, "num_types_a")
    num_b = _turns.size(num_types_b, "num_types_b")
    vocab = _turns.size(vocab_size, "vocab_size")
    if not isinstance(coupled, (bool, np.bool_)):
        raise ValueError(f"coupled must be True or False, got {coupled!r}")
    rng = np.random.default_rng(_turns.size(seed, "seed", 0))
    shape, columns = (num_a, num_b, vocab, vocab), np.arange(vocab)
    if coupled:
        policies_a = _turns.random_rows(rng, shape[:3], vocab, columns)
        policies_b = _turns.random_rows(rng, shape[:3], vocab, columns)
    else:
        policies_a = np.broadcast_to(
            _turns.random_rows(rng, (num_a, vocab), vocab, columns)[:, None], shape
        )
        policies_b = np.broadcast_to(
            _turns.random_rows(rng, (num_b, vocab), vocab, columns)[None], shape
        )
    priors = np.full(num_a, 1.0 / num_a), np.full(num_b, 1.0 / num_b)
    return _dialog(policies_a, policies_b, *priors, turn_length, "random_dialog", bool(coupled))
