"""A device mesh with a seed axis and a data axis, and the shardings a training run uses.

The mesh has axes ("seeds", "data"). Every leaf of a stacked train state has the seed-slot axis first
and is split over "seeds"; a batch [S, B, L] is split over both axes; metrics and the process (the
data-generating parameters) are replicated. The axis sizes are chosen so that they divide the number
of slots and the batch size: seeds = gcd(slots, devices), data = gcd(batch, devices / seeds). With
one device both are 1 and every sharding is trivial, so the same code runs on one CPU, fake CPU
devices, GPUs, a TPU slice or several hosts (`jax.distributed`: `jax.devices()` then lists the devices
of every process, and jit runs one program over all of them).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

SEEDS, DATA = "seeds", "data"


def mesh_shape(num_slots: int, batch_size: int, num_devices: int) -> tuple[int, int]:
    """(seeds, data) axis sizes: as many devices on the seed axis as divide the slots, then as many
    of the rest on the data axis as divide the batch. Their product may be below num_devices."""
    seeds = math.gcd(num_slots, num_devices)
    return seeds, math.gcd(batch_size, num_devices // seeds)


def make_mesh(num_slots: int, batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("seeds", "data") mesh over `devices` (default: every device of every process).

    Raises ValueError when the slots and batch size leave devices of another process out (each
    process of a multi-host run must own part of the mesh); on one host spare devices idle."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must not be empty")
    seeds, data = mesh_shape(num_slots, batch_size, len(devices))
    used = devices[: seeds * data]
    if jax.process_count() > 1 and {d.process_index for d in used} != set(range(jax.process_count())):
        raise ValueError(
            f"{num_slots} slots and batch size {batch_size} use a {seeds}x{data} mesh, which leaves out "
            f"some of the {jax.process_count()} processes; choose sizes divisible by the device count"
        )
    if len(used) == len(devices) and devices == list(jax.devices()):
        # Topology-aware order (TPU/GPU interconnect); on CPU this is the plain order.
        return jax.make_mesh((seeds, data), (SEEDS, DATA), axis_types=(AxisType.Auto, AxisType.Auto))
    return Mesh(np.array(used, dtype=object).reshape(seeds, data), (SEEDS, DATA),
                axis_types=(AxisType.Auto, AxisType.Auto))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (metrics, the process, held-out data)."""
    return NamedSharding(mesh, P())


def slot_sharding(mesh: Mesh) -> NamedSharding:
    """Leading seed-slot axis split over "seeds", the rest whole (every leaf of a stacked state)."""
    return NamedSharding(mesh, P(SEEDS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """A stacked batch [S, B, ...]: slots over "seeds", sequences over "data"."""
    return NamedSharding(mesh, P(SEEDS, DATA))


def state_shardings(mesh: Mesh, abstract_state):
    """A pytree of shardings matching `abstract_state` (a stacked state): slot axis over "seeds"."""
    return jax.tree.map(lambda _: slot_sharding(mesh), abstract_state)


def global_batch(local_tokens: np.ndarray, mesh: Mesh, global_shape: tuple[int, ...]) -> jax.Array:
    """A batch [S, B, ...] sharded like `batch_sharding`, built from each process's own rows.

    For data that come from the host (a file, another process): each process passes the rows of the
    global batch its devices hold (`jax.make_array_from_process_local_data`). The training loop does
    not need this: it draws its batches on device, inside the jitted step."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_tokens, global_shape)


def fetch(tree):
    """Host NumPy copies of a pytree of arrays. Leaves split across processes (a state sharded over
    several hosts) are first replicated by one jitted identity per mesh, a collective: every process
    must call this with the same tree."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    by_mesh: dict = {}
    for i in split:
        by_mesh.setdefault(leaves[i].sharding.mesh, []).append(i)
    for mesh, indices in by_mesh.items():
        gathered = jax.jit(lambda xs: xs, out_shardings=replicated(mesh))([leaves[i] for i in indices])
        for i, x in zip(indices, gathered):
            leaves[i] = x.addressable_data(0)
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
