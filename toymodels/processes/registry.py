"""Process families by name, for command lines, sweep grids and generic tests.

A family module registers its public constructor with one small example instance:

    @register_family("waluigi", example=dict(prior_w=0.2, reveal_prob=0.1))
    def waluigi(prior_w, reveal_prob, ...): ...

`make_process("waluigi", prior_w=0.3)` builds any family from keyword arguments, and `catalog()` gives
one small instance of every family, so a property can run over all processes at once.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

_FAMILIES: dict[str, Callable[..., Any]] = {}
_EXAMPLES: dict[str, dict[str, Any]] = {}


def register_family(name: str, example: dict[str, Any] | None = None):
    """Decorator: register `constructor` under `name`, with keyword arguments of a small instance."""

    def decorate(constructor):
        if name in _FAMILIES and _FAMILIES[name] is not constructor:
            raise ValueError(f"process family {name!r} is registered twice")
        _FAMILIES[name] = constructor
        _EXAMPLES[name] = dict(example or {})
        return constructor

    return decorate


def families() -> tuple[str, ...]:
    """The names of every registered family, sorted."""
    return tuple(sorted(_FAMILIES))


def make_process(name: str, **kwargs):
    """Build the family `name` with keyword arguments (e.g. from a command line or a sweep grid)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown process family {name!r}; known: {', '.join(families())}")
    constructor = _FAMILIES[name]
    parameters = inspect.signature(constructor).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in kwargs if k not in parameters and not takes_any]
    if unknown:
        raise ValueError(f"{name} takes no argument(s) {unknown}; it takes {list(parameters)}")
    missing = [k for k, p in parameters.items() if p.default is inspect.Parameter.empty and k not in kwargs
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise ValueError(f"{name} needs argument(s) {missing}; it takes {list(parameters)}")
    return constructor(**kwargs)


def catalog() -> dict:
    """One small instance of every registered family, by name."""
    return {name: make_process(name, **_EXAMPLES[name]) for name in families()}
