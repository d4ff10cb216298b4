"""Training and held-out data drawn on device from any Process, with keys that depend only on seeds.

Every random number of a run comes from its seed through `jax.random.fold_in`, one named stream per
use, and per step through `fold_in(stream_key, step)`: the batch of step t of seed s is the same
array whether the run was interrupted, sharded over any number of devices, or stacked with other
seeds under `jax.vmap` (JAX's threefry keys are partitionable, so a sharded draw equals an unsharded
one). Slots of a learning-rate sweep that share a seed share their data stream.

Shape legend (with transformer.py): S seed slots, B sequences, L sequence length, V vocabulary.
"""

from __future__ import annotations

import jax
from jaxtyping import Array, Int

INIT_STREAM = 0  # the key that draws the initial parameters
DATA_STREAM = 1  # the keys of the training batches, one per step
EVAL_STREAM = 2  # the key of the held-out evaluation batch (rooted at EvalConfig.seed, not a run seed)


def stream_key(seed: int | Array, stream: int) -> Array:
    """The root key of one stream of a seed: fold_in(key(seed), stream). `seed` may be traced."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def init_key(seed: int | Array) -> Array:
    """The key that initialises the parameters of the run with this seed."""
    return stream_key(seed, INIT_STREAM)


def batch_key(seed: int | Array, step: int | Array) -> Array:
    """The key of the training batch of step `step` (0-based: the batch that step `step` + 1 trains on)."""
    return jax.random.fold_in(stream_key(seed, DATA_STREAM), step)


def draw_batch(process, seed: int | Array, step: int | Array, batch_size: int, length: int) -> Int[Array, "B L"]:
    """The training batch of (seed, step): `process.sample(batch_key(seed, step), batch_size, length)`.

    Traceable (seed and step may be traced, sizes are static); vmap over seeds for a seed axis."""
    return process.sample(batch_key(seed, step), batch_size, length)


def heldout_batch(process, seed: int, num_sequences: int, length: int) -> Int[Array, "B L"]:
    """The held-out evaluation batch: sampled with the EVAL_STREAM key of `seed` (an evaluation seed),
    a key no training batch uses, so it is fresh data for every run and the same data for all of them."""
    return process.sample(stream_key(seed, EVAL_STREAM), num_sequences, length)
