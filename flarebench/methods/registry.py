"""Part registries: everything a run is built from, by kind and name, with its parameters.

Two families of kinds share this one mechanism:

- the METHOD kinds (:data:`KINDS`): ``regularizer`` | ``compressor`` | ``memory`` | ``aggregator``: small
  stateful objects built per run with a :class:`PartContext` (``cls(ctx, **params)``);
- the WORLD kinds (:data:`WORLD_KINDS`): ``model`` | ``dataset`` | ``partition``: stateless recipes built from
  their parameters alone (``cls(**params)``, base :class:`WorldPart`), whose methods build the run's model,
  load its data and split it into clients. Their contracts (shapes, units) are on their base classes:
  :class:`flarebench.models.base.ModelPart`, :class:`flarebench.data.base.DatasetPart`,
  :class:`flarebench.data.partitions.base.PartitionPart`.

A part declares, once, on its class:

- ``kind``: one of :data:`ALL_KINDS`;
- ``name``: the registry key (``--compressor NAME``, ``[compressor] name = "NAME"``);
- ``params``: a tuple of :class:`Param` (name, type, default, unit, one-line help, paper);
- ``summary`` and ``paper``: one line each, for ``flarebench methods``.

``@register`` puts a class in its kind's registry. Config validation, the TOML tables ``[KIND]`` (e.g.
``[compressor]``, ``[model]``), the ``-p KIND.PARAM=VALUE`` command-line option and ``flarebench methods`` /
``flarebench parts`` are all derived from these declarations; nothing lists parts by hand. Built-ins are one
file each in the part packages (:data:`PART_PACKAGES`), imported by :func:`load_parts`.

Every part is built with a :class:`PartContext` (model layout, number of clients, device, run seed,
the run's sparsity) and its resolved parameters as keyword arguments. Randomness is drawn from
generators derived from (seed, round, client) (:class:`RoundContext`), so runs are deterministic and
resumable without saved RNG state.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..engine.seeds import derive
from ..errors import ConfigError
from ..flat import Layout

KINDS = ("regularizer", "compressor", "memory", "aggregator")  # a method's parts (methods/presets.py)
WORLD_KINDS = ("model", "dataset", "partition")  # what the run's world is built from (world.py)
ALL_KINDS = KINDS + WORLD_KINDS
# packages whose every module is imported by load_parts(), so that their @register lines run
PART_PACKAGES = ("flarebench.methods.compressors", "flarebench.models", "flarebench.data", "flarebench.data.partitions")
_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a part.

    ``check``: optional predicate on the (typed) value; ``rule`` says in words what it requires
    (e.g. ``"> 0"``), for the error line and ``flarebench methods``. ``choices``: allowed values (str).
    """

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    paper: str = ""
    choices: tuple = ()
    check: Callable[[Any], bool] | None = None
    rule: str = ""

    def coerce(self, value: Any, where: str) -> Any:
        """``value`` as this parameter's type; ConfigError with one clear sentence otherwise."""
        t = self.type
        if value is None and self.default is None:
            return None
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif t is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and t is not str:  # from the command line: -p compressor.levels=4
            value = _parse_text(value, t, where)
        if not isinstance(value, t) or (t is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {_TYPES[t]}, got {value!r}")
        if t is float and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} must be one of: {', '.join(map(str, self.choices))}; got {value!r}")
        if self.check is not None and not self.check(value):
            raise ConfigError(f"{where} must be {self.rule}, got {value!r}")
        return value

    def describe(self) -> str:
        """``levels=16 (int, levels per sign; s in the paper)``-style text for listings."""
        unit = f", {self.unit}" if self.unit else ""
        rule = f", {self.rule}" if self.rule else ""
        choices = f", one of {'|'.join(map(str, self.choices))}" if self.choices else ""
        return f"{self.name}={self.default!r} ({_TYPES[self.type]}{unit}{rule}{choices}): {self.help}"


def _parse_text(text: str, t: type, where: str) -> Any:
    try:
        if t is bool:
            low = text.strip().lower()
            if low in {"true", "1", "yes", "on"}:
                return True
            if low in {"false", "0", "no", "off"}:
                return False
            raise ValueError
        return t(text)
    except ValueError:
        raise ConfigError(f"{where} must be {_TYPES[t]}, got {text!r}") from None


FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # smallest normal float32, about 1.2e-38
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # about 3.4e38; larger values become inf in float32 tensors
FLOAT32_RULE = f"in [{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}] (a positive normal float32)"


def positive(x) -> bool:
    return x > 0


def positive_float32(x) -> bool:
    """``x`` is a positive normal float32 (a value used in float32 arithmetic, e.g. a threshold or a step)."""
    return FLOAT32_TINY <= x <= FLOAT32_MAX


def float32_or_zero(x) -> bool:
    """``x`` is 0 (off) or a non-negative float32 (a clip bound that float32 arithmetic can hold)."""
    return 0 <= x <= FLOAT32_MAX


def non_negative(x) -> bool:
    return x >= 0


def in_unit_interval(x) -> bool:
    return 0 <= x < 1


@dataclass
class PartContext:
    """What every part is built with.

    ``layout``: the model's tensors (segments of the flat ``[P]`` vector); ``num_clients``: C;
    ``sparsity``: the run's ``--sparsity`` (fraction of entries NOT sent; sparsifiers use it);
    ``seed``: the run seed; ``device``: where state tensors live.
    """

    layout: Layout
    num_clients: int
    sparsity: float = 0.999
    seed: int = 0
    device: torch.device | str | None = None

    @property
    def num_params(self) -> int:
        return self.layout.num_params

    @property
    def density(self) -> float:
        """Fraction of entries sent (1 - sparsity)."""
        return 1.0 - self.sparsity


@dataclass
class RoundContext:
    """The round a part is called in: its 0-based index and the client id of each row ``[K]``."""

    round_idx: int
    ids: list[int]
    seed: int = 0

    def seed_for(self, row: int, purpose: str = "compress") -> int:
        """A 63-bit seed for client ``ids[row]`` in this round (see engine/seeds.py)."""
        return derive(self.seed, purpose, self.round_idx, self.ids[row])

    def generator(self, row: int, purpose: str = "compress", device=None) -> torch.Generator:
        """A generator on ``device`` (default CPU) for client ``ids[row]`` in this round: the same draws on every
        run on that device and on resume. Draws the server must repeat (shared positions) use the CPU one,
        the same on every device; a client's private draws use its update's device (no host round trip)."""
        return torch.Generator(device=device if device is not None else "cpu").manual_seed(self.seed_for(row, purpose))

    def server_generator(self, purpose: str = "server") -> torch.Generator:
        """A CPU generator for the server's draws in this round."""
        return torch.Generator().manual_seed(derive(self.seed, purpose, self.round_idx))


class Part:
    """Base of every part: declarations, construction from a context, empty state."""

    kind: str = ""
    name: str = ""
    params: tuple[Param, ...] = ()
    summary: str = ""
    paper: str = ""

    def __init__(self, ctx: PartContext, **params):
        self.ctx = ctx
        for p in self.params:
            setattr(self, p.name, params.get(p.name, p.default))

    @classmethod
    def check(cls, parts: "Any") -> str | None:
        """Why this part cannot work with the other ``parts``, or None. ``parts.regularizer`` etc. may be
        part classes or instances: a check reads class-level declarations only (so configs are checked
        before anything is built)."""
        return None

    @classmethod
    def check_run(cls, params: dict[str, Any], cfg: "Any") -> str | None:
        """Why this part, with its resolved ``params``, cannot run config ``cfg`` (what a value implies
        over the whole run: its rounds, the model's size), or None. Called when a config is validated,
        before anything is built or written; each parameter's own range is its Param's ``check``."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params}


class WorldPart(Part):
    """Base of the world kinds (model, dataset, partition): built from its parameters alone, ``cls(**params)``
    (each declared parameter becomes an attribute; missing ones take their defaults). No state: a run's
    world is rebuilt from its config (seeded), never from a checkpoint."""

    def __init__(self, **params):
        for p in self.params:
            setattr(self, p.name, params.get(p.name, p.default))


REGISTRY: dict[str, dict[str, type[Part]]] = {k: {} for k in ALL_KINDS}


def register(cls: type[Part]) -> type[Part]:
    """Class decorator: add ``cls`` to the registry of ``cls.kind`` under ``cls.name``."""
    if cls.kind not in REGISTRY:
        raise TypeError(f"{cls.__name__}.kind must be one of {ALL_KINDS}, got {cls.kind!r}")
    if not cls.name or ":" in cls.name:
        raise TypeError(f"{cls.__name__} needs a name without ':' (a ':' marks an import reference), got {cls.name!r}")
    if getattr(cls, "__abstractmethods__", None):
        raise TypeError(f"{cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    names = [p.name for p in cls.params]
    if len(set(names)) != len(names) or "name" in names:
        raise TypeError(f"{cls.__name__}: parameter names must be unique and not 'name'")
    if cls.kind == "compressor":  # payload tags unique across compressors (wire/frame.py)
        from ..wire.frame import claim_tag

        for tag in cls.wire_tags():
            claim_tag(tag, cls.name)
    REGISTRY[cls.kind][cls.name] = cls
    return cls


_LOADED = False


def load_parts() -> None:
    """Import every module of the part packages once, so that their ``@register`` lines have run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import aggregation, memory, regularizers  # noqa: F401

    for package in PART_PACKAGES:
        pkg = importlib.import_module(package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{package}.{mod.name}")
    from ..plugins import load_plugins

    load_plugins()  # installed plug-ins (entry points "flarebench.parts") after the built-ins


def part_class(kind: str, name: str) -> type[Part]:
    """The registered class, the class of an import reference (``MODULE:ATTR``, ``PATH.py:ATTR``: see
    references.py), or ConfigError naming the choices."""
    load_parts()
    if ":" in name:
        from ..references import reference_class

        return reference_class(kind, name)
    table = REGISTRY[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} '{name}' (choose from: {', '.join(sorted(table))})")
    return table[name]


def resolve_params(kind: str, name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults of part ``kind/name`` updated with ``given`` (typed and checked); unknown keys -> ConfigError."""
    cls = part_class(kind, name)
    declared = {p.name: p for p in cls.params}
    out = cls.defaults()
    for key, value in (given or {}).items():
        k = key.replace("-", "_")
        if k not in declared:
            import difflib

            close = difflib.get_close_matches(k, declared, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            have = ", ".join(declared) or "none"
            raise ConfigError(f"{kind} '{name}' has no parameter '{key}'{hint}; its parameters: {have}")
        out[k] = declared[k].coerce(value, f"{kind}.{k}")
    return out


def make_part(kind: str, name: str, given: dict[str, Any] | None = None) -> "WorldPart":
    """World part ``kind/name`` built with its resolved parameters (``given`` over the defaults, checked)."""
    return part_class(kind, name)(**resolve_params(kind, name, given))


__all__ = [
    "KINDS", "WORLD_KINDS", "ALL_KINDS", "PART_PACKAGES", "Param", "WorldPart", "Part", "PartContext", "RoundContext",
    "REGISTRY", "register", "load_parts", "part_class", "resolve_params", "make_part", "positive", "non_negative",
    "in_unit_interval", "positive_float32", "float32_or_zero", "FLOAT32_TINY", "FLOAT32_MAX", "FLOAT32_RULE",
]
