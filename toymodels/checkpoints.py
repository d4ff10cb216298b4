"""Orbax checkpoints of a whole train state, so an interrupted run resumes where it stopped.

A checkpoint holds every leaf of the state (parameters, optimizer moments and counts, the step, the
seeds and learning rates), saved exactly; restoring it into the shardings of the current mesh and
running the same jitted step from there gives bit-identical parameters to an uninterrupted run,
because every batch depends only on (seed, step) (see data.py). Orbax writes each checkpoint to a
temporary directory and renames it when complete, so a run killed mid-save leaves the previous
checkpoint as the latest. In a multi-host run every process calls save and restore (orbax
synchronises them); the directory must be shared.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def abstract_like(abstract_state, shardings):
    """ShapeDtypeStructs of `abstract_state` carrying `shardings` (a matching pytree or one sharding):
    the restore target that places each leaf straight onto its devices."""
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shardings), abstract_state)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)


def _host_copy(state):
    """NumPy copies of the leaves this process holds whole (all of them on one host): orbax writes
    those without slicing each shard on device (a small compilation per shard shape), and the copy
    finishes before `save` returns, so the next step may donate the arrays. Leaves split across
    processes stay jax.Arrays, and each process writes its own shards."""
    return jax.tree.map(lambda x: np.asarray(x) if getattr(x, "is_fully_addressable", True) else x, state)


class Checkpointer:
    """Save a train state every `every` steps (0: only when forced) and at the end; restore the latest.

    Saving is asynchronous: `save` returns once the arrays are copied off the devices (so the next
    step may donate them) and writes in the background; `close` waits for the last write.
    """

    def __init__(self, directory: str | os.PathLike, every: int, keep: int = 2, asynchronous: bool = True):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be an int >= 0, got {every!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def restore(self, target, step: int | None = None):
        """The state saved at `step` (default: the latest), laid out as `target` (see abstract_like)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def due(self, step: int) -> bool:
        """Whether `save(step, state)` (without force) would save."""
        return self.every > 0 and step % self.every == 0 and step != self.latest_step()

    def save(self, step: int, state, force: bool = False) -> bool:
        """Save `state` as step `step` if `every` divides it or `force`; True if a save started."""
        if not (self.due(step) or (force and step != self.latest_step())):
            return False  # not due, or already saved (a resumed run that ends where the last one saved)
        return self._manager.save(step, args=ocp.args.StandardSave(_host_copy(state)), force=True)

    def close(self) -> None:
        """Wait for pending writes and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_latest(directory: str | os.PathLike, target):
    """The latest state saved under `directory`, laid out as `target`; FileNotFoundError if none."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {os.fspath(directory)!r}")
    with Checkpointer(directory, every=0) as checkpointer:
        return checkpointer.restore(target)
