"""The grid of a sweep: a base config and axes expand to runs with stable ids; runs group into programs.

A sweep is a base config (a frozen dataclass, usually toymodels.runs.RunConfig) and axes
{dotted field path: values}; its configs are the product of the axes' values. A config whose `train`
field has slots (TrainConfig: seeds x learning rates) is split into one run per slot, so a run is one
trained model: its config has one seed and one peak learning rate (also written as the optimizer's
learning rate, which the slot overrides anyway, so equal computations get equal configs).

A run's id hashes its canonical config (every field except those that only say where and how loudly
to run, IGNORED_FIELDS) together with the run function's name: the same computation gets the same id
in every sweep, process and order of the axes, and a different function a different id.

Runs that differ only in seed and learning rate train in one vmapped program. `group_runs` partitions
runs deterministically: runs with equal configs up to SLOT_FIELDS form a family; in a family, the
seeds that have the same set of learning rates form one rectangle seeds x rates (the engine always
trains the full product of its seeds and rates), cut into pieces of at most `max_group_size` slots.
A group's id hashes its config, so a resumed sweep regroups identically and finds its work directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections import defaultdict
from typing import Any, NamedTuple

from toymodels.results import _plain

IGNORED_FIELDS = ("out", "quiet")  # top-level fields that do not change what a run computes
SLOT_FIELDS = ("train.seeds", "train.learning_rates", "train.optimizer.learning_rate")
ID_LENGTH = 16  # hex digits of sha256 kept in run and group ids (64 bits)


class Run(NamedTuple):
    """One cell of the grid: one trained model (one slot) or one call of a slot-free run function."""

    run_id: str  # hash of the canonical config and the run function's name
    name: str  # readable: the axis values (and seed, learning rate) that made it
    config: Any  # the run's own config (a single slot if the config has slots)
    seed: int | None  # the slot's seed (None: the config has no slots)
    learning_rate: float | None  # the slot's peak learning rate (None: no slots)


class Group(NamedTuple):
    """Runs computed by one call of the run function, e.g. one vmapped training program."""

    group_id: str  # hash of the group's config and the run function's name
    config: Any  # the config the run function gets: seeds x learning rates of its runs
    runs: tuple[Run, ...]  # in the order of config.train.slots (seed-major), or the single run


# --------------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------------


def get_field(config: Any, path: str) -> Any:
    """The value at a dotted field path, e.g. get_field(run_config, "model.num_layers")."""
    value = config
    for part in path.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            names = sorted(f.name for f in dataclasses.fields(value)) if dataclasses.is_dataclass(value) else []
            raise ValueError(f"axis path {path!r}: no field {part!r} in {type(value).__name__} (fields: {names})")
        value = getattr(value, part)
    return value


def _coerce(current: Any, value: Any) -> Any:
    # Values arrive from JSON: lists for tuples, a bare seed for a one-seed tuple, a dict for a nested
    # dataclass (replacing some of its fields) or for a JSON-string field such as process_kwargs.
    if dataclasses.is_dataclass(current) and isinstance(value, dict):
        return dataclasses.replace(current, **value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, tuple) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    if isinstance(current, str) and isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    # JSON writes 0.0 as 0: a float field keeps floats, so weight_decay=0 and 0.0 are one run id.
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def set_field(config: Any, path: str, value: Any) -> Any:
    """A copy of `config` with the field at a dotted path replaced (validated by each dataclass)."""
    head, _, rest = path.partition(".")
    current = get_field(config, head)
    new = set_field(current, rest, value) if rest else _coerce(current, value)
    return dataclasses.replace(config, **{head: new})


def has_slots(config: Any) -> bool:
    """Whether the config trains slots: a `train` field with seeds, learning_rates and optimizer."""
    train = getattr(config, "train", None)
    return dataclasses.is_dataclass(train) and all(hasattr(train, f) for f in ("seeds", "learning_rates", "optimizer", "slots"))


def with_slots(config: Any, seeds, learning_rates) -> Any:
    """`config` training the slots seeds x learning_rates (the optimizer's rate set to the first)."""
    train = config.train
    optimizer = dataclasses.replace(train.optimizer, learning_rate=float(learning_rates[0]))
    train = dataclasses.replace(train, seeds=tuple(int(s) for s in seeds),
                                learning_rates=tuple(float(lr) for lr in learning_rates), optimizer=optimizer)
    return dataclasses.replace(config, train=train)


# --------------------------------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------------------------------


JSON_TEXT_FIELDS = ("process_kwargs",)  # string fields holding a JSON object: compared as data, not as text


def _parsed_json_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json.loads(v) if k in JSON_TEXT_FIELDS and isinstance(v, str) and v.strip() else _parsed_json_fields(v)
                for k, v in value.items()}
    return [_parsed_json_fields(v) for v in value] if isinstance(value, list) else value


def canonical(config: Any) -> dict:
    """The config as plain JSON data (tuples as lists), without IGNORED_FIELDS."""
    record = {k: v for k, v in dataclasses.asdict(config).items() if k not in IGNORED_FIELDS}
    return json.loads(json.dumps(_plain(record), sort_keys=True))


# Fields added after run ids were first recorded, with their defaults: left out of the id at that value,
# so a run computed before the field existed keeps its id (and is not computed again).
ADDED_FIELDS = {"model.dtype": "float32", "model.attention": "einsum"}


def identity(config: Any) -> dict:
    """What ids hash: `canonical(config)` with JSON_TEXT_FIELDS parsed, so '{"x": 1, "y": 2}' and
    '{"y":2,"x":1}' are one computation, and ADDED_FIELDS at their defaults left out."""
    record = _parsed_json_fields(canonical(config))
    defaults = [path for path, value in ADDED_FIELDS.items() if _at(record, path) == value]
    return _without(record, defaults)


def _at(record: dict, path: str):
    for part in path.split("."):
        if not isinstance(record, dict) or part not in record:
            return None
        record = record[part]
    return record


def config_hash(config: Any, fn_name: str, kind: str = "run") -> str:
    """sha256 (first ID_LENGTH hex digits) of `identity(config)`, the run function's name and
    `kind` ("run" or "group"), as sorted-key JSON: independent of dict order, Python's hash seed and
    the process. The config's class is left out: its module name differs between a script run as
    __main__ and the same module imported."""
    payload = {"kind": kind, "fn": fn_name, "config": identity(config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def _without(record: dict, paths) -> dict:
    record = json.loads(json.dumps(record))
    for path in paths:
        *parents, last = path.split(".")
        node = record
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return record


# --------------------------------------------------------------------------------------------------
# Expansion and grouping
# --------------------------------------------------------------------------------------------------


def split_slots(config: Any, fn_name: str, label: str = "") -> list[Run]:
    """The runs of one config: one per slot (seed, learning rate) if it has slots, else itself."""
    if not has_slots(config):
        return [Run(config_hash(config, fn_name), label or "run", config, None, None)]
    runs = []
    for seed, lr in config.train.slots:
        single = with_slots(config, (seed,), (lr,))
        name = ",".join(part for part in (label, f"seed={seed}", f"lr={lr:g}") if part)
        runs.append(Run(config_hash(single, fn_name), name, single, seed, lr))
    return runs


def expand(base: Any, axes: dict[str, list] | tuple, fn_name: str) -> list[Run]:
    """Every run of the grid base x axes, in product order (the first axis slowest), without repeats.

    Axis values replace fields with `set_field` (JSON lists become tuples, a bare number a one-element
    tuple); the slot axes train.seeds and train.learning_rates may hold single values or lists."""
    items = list(axes.items()) if isinstance(axes, dict) else [tuple(item) for item in axes]
    runs, seen = [], set()
    for values in itertools.product(*(list(v) for _, v in items)):
        config = base
        for (path, _), value in zip(items, values):
            try:
                config = set_field(config, path, value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"axis {path}={value!r}: {error}") from None
        label = ",".join(f"{path}={_label(value)}" for (path, _), value in zip(items, values) if path not in SLOT_FIELDS)
        for run in split_slots(config, fn_name, label):
            if run.run_id not in seen:
                seen.add(run.run_id)
                runs.append(run)
    return runs


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(_plain(value), sort_keys=True)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] if size else [items]


def group_runs(runs: list[Run], fn_name: str, max_group_size: int = 0, group: bool = True) -> list[Group]:
    """Partition runs into groups, sorted by group id; the same set of runs always gives the same groups.

    With `group` and slots: families (equal configs up to SLOT_FIELDS), then rectangles (seeds with
    equal sets of learning rates), cut into at most `max_group_size` slots (0: no limit). Otherwise
    (or for configs without slots) every run is its own group."""
    if isinstance(max_group_size, bool) or not isinstance(max_group_size, int) or max_group_size < 0:
        raise ValueError(f"max_group_size must be an int >= 0 (0: no limit), got {max_group_size!r}")
    groups: list[Group] = []
    families: dict[str, dict[tuple[int, float], Run]] = defaultdict(dict)
    for run in runs:
        if group and run.seed is not None:
            family = json.dumps(_without(identity(run.config), SLOT_FIELDS), sort_keys=True)
            families[family][(run.seed, run.learning_rate)] = run
        else:
            groups.append(Group(config_hash(run.config, fn_name, "group"), run.config, (run,)))
    for cells in families.values():
        rates_of: dict[int, set[float]] = defaultdict(set)
        for seed, lr in cells:
            rates_of[seed].add(lr)
        rectangles: dict[tuple[float, ...], list[int]] = defaultdict(list)
        for seed in sorted(rates_of):
            rectangles[tuple(sorted(rates_of[seed]))].append(seed)
        for rates, seeds in sorted(rectangles.items()):
            for rate_chunk in _chunks(list(rates), max_group_size):
                seeds_per_group = max(1, max_group_size // len(rate_chunk)) if max_group_size else 0
                for seed_chunk in _chunks(seeds, seeds_per_group):
                    any_run = cells[(seed_chunk[0], rate_chunk[0])]
                    config = with_slots(any_run.config, seed_chunk, rate_chunk)
                    members = tuple(cells[(seed, lr)] for seed, lr in config.train.slots)
                    groups.append(Group(config_hash(config, fn_name, "group"), config, members))
    groups.sort(key=lambda g: g.group_id)
    return groups


def assign(groups: list[Group], index: int, count: int) -> list[Group]:
    """The groups of shard `index` of `count`: round-robin over the groups sorted by id."""
    return sorted(groups, key=lambda g: g.group_id)[index::count]
