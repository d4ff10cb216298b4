"""One process of a two-process `jax.distributed` training run on this machine (CPU, gloo collectives).

Launched twice by tests/test_training.py::test_two_processes_train_one_sharded_run:

    python tests/distributed_worker.py PORT PROCESS_ID NUM_PROCESSES DEVICES_PER_PROCESS OUT_DIR

Both processes run the same library call as a single-process run (`train` with an output directory),
with no code for several hosts; process 0 then writes the final stacked parameters (gathered from
both processes) and its metrics history to OUT_DIR/result.npz. The caller compares them with a
single-process run of the same config. The config lives in tests/training_configs.py so both sides
share it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(port: int, process_id: int, num_processes: int, devices_per_process: int, out_dir: str) -> None:
    jax.config.update("jax_num_cpu_devices", devices_per_process)
    jax.config.update("jax_enable_x64", True)  # as in the test session, so the data draws match
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id,
                               initialization_timeout=60)
    import numpy as np

    from training_configs import MODEL, process, train_config
    from toymodels.sharding import batch_sharding, fetch, global_batch, make_mesh
    from toymodels.training import train

    assert jax.process_count() == num_processes and jax.device_count() == num_processes * devices_per_process
    config = train_config(checkpoint_every=0)  # one (final) multi-process save: each costs barriers
    result = train(process(), MODEL, config, out_dir=Path(out_dir) / "run", quiet=True)
    params = fetch(result.state.params)  # a collective: every process calls it

    # Host-fed batches: each process passes only the slots its devices hold (here all of their rows).
    mesh = make_mesh(len(config.slots), config.batch_size)
    full = np.arange(len(config.slots) * config.batch_size * 3, dtype=np.int32).reshape(len(config.slots), config.batch_size, 3)
    held = batch_sharding(mesh).addressable_devices_indices_map(full.shape).values()
    local = full[min(i[0].start for i in held): max(i[0].stop for i in held)]
    batch_ok = bool(np.array_equal(fetch(global_batch(local, mesh, full.shape)), full))

    if jax.process_index() == 0:
        leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
        np.savez(Path(out_dir) / "result.npz", **leaves)
        (Path(out_dir) / "history.json").write_text(json.dumps({"history": result.history, "batch_ok": batch_ok}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    port, process_id, num_processes, devices, out_dir = sys.argv[1:]
    main(int(port), int(process_id), int(num_processes), int(devices), out_dir)
