"""C7: generated text in the training data. Data = (1 - beta) H + beta M.

H is the human process; M is an earlier, imperfect model of H whose samples made it into the data.
Each document is either human-written (probability 1 - beta) or model-generated (beta), and the
latent "generated" says which ("human" or "model"). The exact posterior pi_t = P(M | x_<=t) is Bayes
on the two sequence probabilities (a MixtureProcess).

What the tests check exactly (by enumeration), writing E_Q for an expectation over length-t prefixes
drawn from Q and Var_D for the variance under the data D = (1 - beta) H + beta M:

    E_D[pi_t] = beta                            (pi_t is a martingale under exact Bayes generation)
    E_H[pi_t] = beta - Var_D(pi_t) / (1 - beta)  <= beta   (H's own rollouts look human)
    E_M[pi_t] = beta + Var_D(pi_t) / beta        >= beta   (M's rollouts look model-made)

The last two follow from P_M = P_D pi / beta and P_H = P_D (1 - pi) / (1 - beta). For 0 < beta < 1
the inequalities are strict exactly when H and M differ at length t (pi_t is then not constant), and
because a martingale's variance never decreases, E_H[pi_t] never rises and E_M[pi_t] never falls with t.
"""

from __future__ import annotations

import numpy as np

from toymodels.predictors import check_predictor, with_temperature
from toymodels.processes.mixture import MixtureProcess
from toymodels.processes.registry import register_family
from toymodels.processes.standard import random_hmm

LABELS = ("human", "model")


def generated_text_mixture(human, model, beta: float) -> MixtureProcess:
    """The data process (1 - beta) H + beta M with the latent "generated" in ("human", "model").

    Args:
        human: H, a Process (it must sample and score its own documents).
        model: M, any Predictor over the same vocabulary (e.g. `with_temperature(human, tau)`).
        beta: the fraction of generated documents, in [0, 1].
    """
    check_predictor(human, "human")
    if not (callable(getattr(human, "sample", None)) and callable(getattr(human, "log_prob", None))):
        raise ValueError("human must be a Process (with sample and log_prob), not only a Predictor")
    check_predictor(model, "model")
    if model.vocab_size != human.vocab_size:
        raise ValueError(
            f"model.vocab_size={model.vocab_size} must equal human.vocab_size={human.vocab_size}: "
            "the model imitates the human process over the same tokens"
        )
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a probability in [0, 1], got {beta!r}") from None
    if not (np.isfinite(beta) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must lie in [0, 1] (the fraction of generated documents), got {beta}")
    return MixtureProcess(
        (human, model),
        np.array([1.0 - beta, beta]),
        names=LABELS,
        latent="generated",
        info={"family": "generated_text"},
    )


@register_family("human_and_model", example=dict(vocab_size=3, num_states=3, beta=0.3, model_temperature=1.5, seed=0))
def human_and_model(
    vocab_size: int = 3,
    num_states: int = 3,
    beta: float = 0.3,
    model_temperature: float = 1.5,
    seed: int = 0,
) -> MixtureProcess:
    """C7 with numbers only: H = random_hmm(vocab_size, num_states, seed=seed) (Dirichlet(1) rows), and
    M = H at temperature `model_temperature` (its conditionals raised to 1 / tau, renormalised; tau > 1
    flattens them, tau < 1 sharpens them, tau = 1 gives M = H)."""
    try:
        tau = float(model_temperature)
    except (TypeError, ValueError):
        raise ValueError(f"model_temperature must be a positive number, got {model_temperature!r}") from None
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"model_temperature must be positive and finite, got {tau}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    human = random_hmm(vocab_size, num_states, concentration=1.0, seed=seed)
    return generated_text_mixture(human, with_temperature(human, tau), beta)
