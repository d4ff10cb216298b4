"""Boundary checks shared by the processes: concrete arrays in, clear ValueErrors out."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sum_tolerance(dtype) -> float:
    """How far from 1 a probability vector of this dtype may sum (rounding only, never a real error)."""
    return 1e-9 if np.dtype(dtype) == np.float64 else 1e-5


def as_probabilities(value, name: str, ndim: int) -> np.ndarray:
    """A concrete float array of probabilities: right rank, finite, non-negative."""
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name} must be a concrete array when the process is built, not a traced value")
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite entries; every entry must be a finite probability")
    if np.any(array < 0):
        raise ValueError(f"{name} holds negative entries (min {array.min()}); probabilities must be >= 0")
    return array


def device_dtype(array: np.ndarray):
    """float64 when the input is float64 and JAX's x64 mode is on, float32 otherwise."""
    return jnp.asarray(np.zeros((), array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64)).dtype


def check_sums_to_one(sums: np.ndarray, name: str, what: str, dtype) -> None:
    tolerance = sum_tolerance(dtype)
    worst = np.max(np.abs(sums - 1.0))
    if worst > tolerance:
        raise ValueError(
            f"{name}: {what} must sum to 1 (within {tolerance:g}), but one sums to "
            f"{sums.flat[np.argmax(np.abs(sums - 1.0))]:.12g}; normalise it before building the process"
        )
