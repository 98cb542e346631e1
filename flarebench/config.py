"""RunConfig: every knob of one federated run, its defaults, TOML loading and validation.

Units: ``sparsity`` is the fraction of entries NOT sent (density = 1 - sparsity);
learning rates are per SGD step; ``rounds`` counts communication rounds.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .methods.registry import ALL_KINDS, KINDS
from .methods.registry import WORLD_KINDS as REGISTRY_WORLD_KINDS

DEFAULT_DATA_ROOT = "~/.cache/flarebench"


@dataclass
class RunConfig:
    """The fully resolved configuration of one run (written to config.json)."""

    # what is compared: a method (a preset of parts), parts replacing the preset's, part parameters
    method: str = "flare"
    sparsity: float = 0.999  # fraction of entries NOT sent, for the compressors that send k = R n entries
    regularizer: str | None = None  # None: the method's (resolved and recorded by make_config)
    compressor: str | None = None
    memory: str | None = None
    aggregator: str | None = None
    params: dict = dataclasses.field(default_factory=dict)  # {kind: {param: value}}, all 7 kinds; resolved: every declared param
    downlink: str = "dense"  # dense: fp32 model to each participant | sparse: encoded update to every client
    # data and model
    dataset: str = "mnist-embedded"
    data_root: str = DEFAULT_DATA_ROOT
    download: bool = False
    # a registered part name or an import reference (pkg.mod:Name, path/file.py:Name); parameters in params
    model: str = "mlp"
    partition: str = "contiguous"
    samples_per_client: int | None = None
    # federation
    clients: int = 10
    clients_per_round: int | None = None  # None: all clients every round
    rounds: int = 200
    local_epochs: int = 1
    batch_size: int = 50
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    keep_optimizer_state: bool = False  # reference: fresh optimizer each round
    shuffle: bool = True  # reshuffle each client's data every local epoch
    server_lr: float = 1.0
    # bookkeeping
    eval_every: int = 10
    eval_batch_size: int = 2000
    # a seeded fraction of each client's training rows held out (floor(fraction * rows) per client): the
    # validation set, evaluated like the test set (metrics val_loss, val_accuracy); 0: none, today's runs
    validation_fraction: float = 0.0
    evaluate_test: bool = True  # False: never evaluate the test set (a sweep's --tune runs; test columns empty)
    seed: int = 0
    device: str = "auto"
    engine: str = "auto"  # auto | sequential | vectorized (engine/select.py)
    client_chunk: int | None = None  # vectorized engine: clients per vmapped batch (None: auto)
    backend: str = "local"  # local: the in-process loop | flower: Flower's simulation engine (backends/flower)
    # what each user part (import reference or plug-in part) was when the run started: {kind: {reference, file,
    # sha256 | module/plugin, distribution, version}} (references.source_of); filled by make_config, checked when given
    sources: dict = dataclasses.field(default_factory=dict)
    out: str = "results"
    name: str | None = None
    # set by `flarebench sweep --tune` on the runs of a pick: {"keys": {key: {"value", "grid"}}, "criterion", "score",
    # "tuning_runs"} (sweep.py); not a knob of the run (compare.NOT_EXPERIMENT_KEYS)
    tuned: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def density(self) -> float:
        """Fraction of entries sent per tensor (1 - sparsity)."""
        return 1.0 - self.sparsity

    def participants(self) -> int:
        """Clients taking part in each round."""
        return self.clients if self.clients_per_round is None else self.clients_per_round

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


FIELD_NAMES = {f.name for f in fields(RunConfig)}
PART_KINDS, METHOD_KINDS, WORLD_KINDS = ALL_KINDS, KINDS, REGISTRY_WORLD_KINDS  # the registry's, one place
# RunConfig fields of earlier versions that are a part's parameter now: (kind, part, param). They still read
# (TOML, make_config, config.json), as that part's parameter whenever it runs: [kind.PART] param = value.
LEGACY_PART_KEYS = {
    "fc_linear": ("model", "fc", "linear"),
    "cnn_double_softmax": ("model", "cnn", "double_softmax"),
    "vgg11_reference_relu": ("model", "vgg11", "reference_relu"),
    "dirichlet_alpha": ("partition", "dirichlet", "alpha"),
}
TOML_SECTIONS_IGNORED_BY_RUN = {"sweep", "meta"}
# keys of earlier versions, now part parameters: one line says where they went
MOVED = {
    "ef": "error feedback is a part now: --memory residual | none (TOML: [memory] name = ...)",
    "topk_rounding": "it is a compressor parameter now: -p compressor.rounding=... (TOML: [compressor] rounding = ...)",
    "encoding": "it is a compressor parameter now: -p compressor.position_codec=... (TOML: [compressor] position_codec = ...)",
    "value_codec": "it is a compressor parameter now: -p compressor.value_codec=... (TOML: [compressor] value_codec = ...)",
    **{f"flare_{k}": f"it is a regularizer parameter now: -p regularizer.{k}=... (TOML: [regularizer] {k} = ...)"
       for k in ("tau0", "decay", "steps", "percentile")},
    **{f"prox_{k}": f"it is a regularizer parameter now: -p regularizer.{k}=... (TOML: [regularizer] {k} = ...)"
       for k in ("tau0", "decay")},
}


def _norm_key(key: str) -> str:
    return key.replace("-", "_")


def _unknown(key: str, where: str, written: str | None = None) -> ConfigError:
    """The error for an unknown key ``key`` (normalised), shown as the user ``written`` it."""
    shown = written if written is not None else key.replace("_", "-")
    if key in MOVED:
        return ConfigError(f"'{shown}'{where} is gone: {MOVED[key]}")
    return ConfigError(f"unknown key '{shown}'{where}{_did_you_mean(key)}")


def check_config_path(path: str | Path) -> None:
    """ConfigError saying what ``path`` is, unless it is a regular file (``--config`` / a sweep config):
    missing, a directory, or another kind of file such as ``/dev/null`` (a character device)."""
    import stat

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"config file {p} is a directory, not a TOML file")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ConfigError(f"config file {p} is {kind}, not a TOML file")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config into ``{field: value}`` (keys may use dashes); unknown keys -> ConfigError.

    Top-level keys are RunConfig fields. Part tables ``[regularizer]``, ``[compressor]``, ``[memory]``,
    ``[aggregator]``, ``[model]``, ``[dataset]``, ``[partition]`` hold an optional ``name`` (the part) and that
    part's parameters (returned under ``params``); keys of earlier versions in LEGACY_PART_KEYS read as the
    parameter of their part (``fc-linear = true`` is ``[model.fc] linear = true``). Tables named in TOML_SECTIONS_IGNORED_BY_RUN (``[sweep]``,
    ``[meta]``) are for other commands and are returned under their own name.
    """
    p = Path(path)
    check_config_path(p)
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"malformed TOML in {p}: {e}") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = _norm_key(key)
        if k in TOML_SECTIONS_IGNORED_BY_RUN and isinstance(value, dict):
            out[k] = value
            continue
        if k in PART_KINDS and isinstance(value, dict):
            table = {_norm_key(a): ({_norm_key(c): d for c, d in b.items()} if isinstance(b, dict) else b) for a, b in value.items()}
            if "name" in table:
                out[k] = table.pop("name")
            out.setdefault("params", {})[k] = table
            continue
        if k in LEGACY_PART_KEYS:
            _merge(out.setdefault("params", {}), _legacy_param(k, value))
            continue
        if k not in FIELD_NAMES or k == "params":
            raise _unknown(k, f" in {p}", key)
        out[k] = value
    return out


def parse_param_options(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["compressor.levels=4", "regularizer.flare.tau0=0.1", "tau0=0.1"]`` ->
    ``{"compressor": {"levels": "4"}, "regularizer": {"flare": {"tau0": "0.1"}}, "*": {"tau0": "0.1"}}``.

    ``KIND.PART.PARAM``: for part PART whenever it runs; ``*``: a parameter named without its kind
    (:func:`make_config` finds the one part that declares it). Values stay text; each part's
    declaration types them.
    """
    out: dict[str, dict] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        path = [_norm_key(x.strip()) for x in key.split(".")]
        if not sep or not all(path) or len(path) > 3:
            raise ConfigError(f"-p takes KIND.PARAM=VALUE, KIND.PART.PARAM=VALUE or PARAM=VALUE (e.g. -p compressor.levels=4), got {item!r}")
        if len(path) > 1 and path[0] not in PART_KINDS:
            raise ConfigError(f"-p {item}: '{path[0]}' is not a part kind (choose from: {', '.join(PART_KINDS)})")
        table = out.setdefault(path[0] if len(path) > 1 else "*", {})
        if len(path) == 3:
            table = table.setdefault(path[1], {})
        table[path[-1]] = value.strip()
    return out


def _legacy_param(key: str, value: Any) -> dict:
    """``{kind: {part: {param: value}}}`` for an earlier version's RunConfig field ``key`` (LEGACY_PART_KEYS)."""
    kind, part, param = LEGACY_PART_KEYS[key]
    return {kind: {part: {param: value}}}


def _merge(into: dict, new: dict) -> None:
    """``into.update(new)``, merging nested tables (a part's parameters) instead of replacing them."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def make_config(toml_path: str | Path | None = None, **overrides) -> RunConfig:
    """Defaults <- TOML file <- overrides (None values in overrides mean 'not given'); validated, and the
    method's parts resolved: ``cfg.regularizer`` ... ``cfg.aggregator`` name the parts that run and
    ``cfg.params`` holds every one of their parameters (defaults filled in), as config.json records them.

    ``params`` (override): ``{kind: {param: value}}`` merged over the TOML tables; kind ``*`` (from
    ``-p PARAM=VALUE``) means the one part of this run that declares PARAM.
    """
    values: dict[str, Any] = {}
    params: dict[str, dict] = {}
    if toml_path is not None:
        loaded = load_toml(toml_path)
        _merge(params, loaded.pop("params", {}))
        values.update({k: v for k, v in loaded.items() if k in FIELD_NAMES})
    for k, v in overrides.items():
        k = _norm_key(k)
        if k in LEGACY_PART_KEYS:
            if v is not None:
                _merge(params, _legacy_param(k, v))
            continue
        if k not in FIELD_NAMES:
            raise _unknown(k, "")
        if k == "params":
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"params must be a table of part parameters, got {v!r}")
            for kind, table in (v or {}).items():
                if not isinstance(table, dict):
                    raise ConfigError(f"params.{kind} must be a table of parameters, got {table!r}")
            _merge(params, v or {})
        elif v is not None:
            values[k] = v
    cfg = RunConfig()
    for f in fields(RunConfig):
        if f.name in values:
            setattr(cfg, f.name, _coerce(f, values[f.name]))
    validate(cfg)
    from .references import absolute, check_sources, sources_of

    for kind in PART_KINDS:  # a file reference's path, absolute: resume, Flower nodes and Ray workers find it anywhere
        if getattr(cfg, kind):
            setattr(cfg, kind, absolute(getattr(cfg, kind)))
    _resolve_parts(cfg, params)
    cfg.sources = check_sources(cfg.sources, sources_of(cfg))  # a user part's file changed since the run started: error
    from .world import check_fits

    check_fits(cfg)  # before anything is loaded or created: e.g. mlp takes images, not tokens
    return cfg


def _resolve_parts(cfg: RunConfig, params: dict[str, dict]) -> None:
    """Fill ``cfg``'s part names and full parameter sets: the method's parts from its preset
    (methods/presets.py), the world's (model, dataset, partition) from their fields."""
    from .methods.presets import check_combination, resolve, resolve_world
    from .methods.registry import part_class

    unknown = set(params) - set(PART_KINDS) - {"*"}
    if unknown:
        raise ConfigError(f"unknown part kind '{sorted(unknown)[0]}' in params (choose from: {', '.join(PART_KINDS)})")
    chosen = {kind: getattr(cfg, kind) for kind in METHOD_KINDS}
    names, _ = resolve(cfg.method, chosen, {})
    names.update({kind: getattr(cfg, kind) for kind in WORLD_KINDS})
    for name, value in params.pop("*", {}).items():  # -p PARAM=VALUE: the one part that declares PARAM
        owners = [k for k in PART_KINDS if any(p.name == _norm_key(name) for p in part_class(k, names[k]).params)]
        if len(owners) != 1:
            why = "no part of this run declares it" if not owners else f"declared by {' and '.join(owners)}: say which"
            raise ConfigError(f"-p {name}: {why} (use -p KIND.{name}=VALUE; `flarebench parts` lists parameters)")
        params.setdefault(owners[0], {})[name] = value
    names, resolved = resolve(cfg.method, chosen, params)
    for kind in METHOD_KINDS:
        setattr(cfg, kind, names[kind])
    resolved.update(resolve_world({kind: getattr(cfg, kind) for kind in WORLD_KINDS}, params))
    cfg.params = resolved
    check_combination(cfg)


def upgrade_config(config: dict) -> dict:
    """A config.json ``config`` of an earlier version in this version's form: method parts named with their
    parameters under ``params`` (versions with flat ``ef``, ``flare_tau0``, ``value_codec``, ...), and the
    world parts' parameters under ``params.model`` / ``.dataset`` / ``.partition`` (versions with RunConfig
    fields ``fc_linear``, ``dirichlet_alpha``, ...: LEGACY_PART_KEYS). Others: as they are. A method or
    value this version cannot resolve is left as it is (the caller reports what it needs)."""
    return _upgrade_world(_upgrade_methods(config))


def _upgrade_world(config: dict) -> dict:
    """``config`` with ``params`` for the world kinds, from the LEGACY_PART_KEYS it has (dropped)."""
    params = config.get("params")
    if not isinstance(params, dict) or all(kind in params for kind in WORLD_KINDS):
        return config
    from .methods.presets import resolve_world

    legacy: dict = {}
    for key, value in config.items():
        if _norm_key(key) in LEGACY_PART_KEYS:
            _merge(legacy, _legacy_param(_norm_key(key), value))
    names = {kind: config.get(kind, getattr(RunConfig, kind)) for kind in WORLD_KINDS}
    try:
        world = resolve_world(names, legacy)
    except (ConfigError, TypeError):
        return config
    out = {k: v for k, v in config.items() if _norm_key(k) not in LEGACY_PART_KEYS}
    return {**out, "params": {**params, **{k: v for k, v in world.items() if k not in params}}}


def _upgrade_methods(config: dict) -> dict:
    """``config`` with its method's parts named and their parameters under ``params`` (no-op if it has them)."""
    if "params" in config or not isinstance(config.get("method"), str):
        return config
    from .methods.presets import method_names, resolve

    if config["method"] not in method_names():
        return config
    out = {k: v for k, v in config.items() if _norm_key(k) not in MOVED}
    legacy = {_norm_key(k): v for k, v in config.items() if _norm_key(k) in MOVED}
    params: dict[str, dict] = {"regularizer": {}, "compressor": {}}
    for old, new in (("topk_rounding", "rounding"), ("encoding", "position_codec"), ("value_codec", "value_codec")):
        if old in legacy:
            params["compressor"][new] = legacy[old]
    for part, keys in (("flare", ("tau0", "decay", "steps", "percentile")), ("prox", ("tau0", "decay"))):
        table = {k: legacy[f"{part}_{k}"] for k in keys if f"{part}_{k}" in legacy}
        if table:
            params["regularizer"][part] = table
    overrides = {"memory": "none"} if config["method"] == "randk" and legacy.get("ef") is False else {}
    from .methods.registry import part_class

    try:
        names, _ = resolve(config["method"], overrides, {})
        declared = {q.name for q in part_class("compressor", names["compressor"]).params}
        params["compressor"] = {k: v for k, v in params["compressor"].items() if k in declared}
        names, resolved = resolve(config["method"], overrides, params)
    except ConfigError:
        return config
    out.setdefault("backend", "local")  # the only backend before parts existed
    return {**out, **names, "params": resolved}


def _did_you_mean(key: str) -> str:
    """``" (did you mean 'lr'?)"`` for the closest config key, or ``""``; keys shown with dashes, as in TOML."""
    import difflib

    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.6)
    return f" (did you mean '{close[0].replace('_', '-')}'?)" if close else ""


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Check a value against the field's declared type (ints are accepted for floats)."""
    name = f.name.replace("_", "-")
    optional = f.type.endswith("| None")
    want = _TYPES[f.type.replace("| None", "").strip()]
    if value is None and optional:
        return None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {want.__name__}, got {value!r}")
    return value


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError with one clear sentence for the first invalid value."""
    from .methods.presets import method_names

    def one_of(name: str, value: str, allowed) -> None:
        if value not in allowed:
            raise ConfigError(f"unknown {name} '{value}' (choose from: {', '.join(sorted(allowed))})")

    from .engine.select import ENGINES
    from .launch import BACKENDS
    from .wire.downlink import DOWNLINKS
    from .world import DEVICES

    one_of("method", cfg.method, method_names())
    one_of("downlink", cfg.downlink, DOWNLINKS)
    one_of("device", cfg.device, DEVICES)
    one_of("engine", cfg.engine, ENGINES)
    one_of("backend", cfg.backend, BACKENDS)
    for kind in PART_KINDS:  # "" would silently run the method's own part
        if isinstance(getattr(cfg, kind), str) and not getattr(cfg, kind).strip():
            raise ConfigError(f"{kind} name is empty: name a part (`flarebench methods` lists them) or leave it out")
    for f in fields(RunConfig):  # inf and nan pass many range checks below (inf > 0): refuse them first
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{f.name.replace('_', '-')} must be a finite number, got {v}")
    if cfg.client_chunk is not None and cfg.client_chunk < 1:
        raise ConfigError(f"client-chunk must be >= 1, got {cfg.client_chunk}")
    if not (isinstance(cfg.sparsity, float) and 0.0 < cfg.sparsity < 1.0):
        raise ConfigError(f"sparsity must be in (0, 1) (fraction of entries NOT sent), got {cfg.sparsity}")
    positive = ["rounds", "clients", "local_epochs", "batch_size", "eval_every", "eval_batch_size"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.clients_per_round is not None and not 1 <= cfg.clients_per_round <= cfg.clients:
        raise ConfigError(
            f"clients-per-round must be between 1 and clients ({cfg.clients}), got {cfg.clients_per_round}"
        )
    if cfg.samples_per_client is not None and cfg.samples_per_client < 1:
        raise ConfigError(f"samples-per-client must be >= 1, got {cfg.samples_per_client}")
    for name in ["lr", "server_lr"]:
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {v}")
    for name in ["momentum", "weight_decay"]:
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {v}")
    if cfg.momentum >= 1:
        raise ConfigError(f"momentum must be < 1, got {cfg.momentum}")
    if not 0 <= cfg.validation_fraction < 1:
        raise ConfigError(f"validation-fraction must be in [0, 1) (fraction of each client's rows held out), got {cfg.validation_fraction}")
    if not cfg.evaluate_test and cfg.validation_fraction == 0:
        raise ConfigError("evaluate-test false needs a validation set (validation-fraction > 0): the run would evaluate nothing")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2^63), got {cfg.seed}")
    if cfg.name is not None:
        from .rundir import check_run_name

        check_run_name(cfg.name)


def default_name(cfg: RunConfig, stamp: str) -> str:
    """``{method}-s{sparsity}-{dataset}-{model}-{stamp}``, e.g. ``flare-s0.999-mnist-embedded-cnn-20261125-101500``;
    no sparsity where the compressor does not use it (none, qsgd, ...); replaced parts are named
    (``flare+stc-s0.999-...``)."""
    from .methods.presets import method_label, uses_sparsity

    from .references import short

    sparsity = f"-s{cfg.sparsity:g}" if uses_sparsity(cfg) else ""
    return f"{method_label(cfg)}{sparsity}-{short(cfg.dataset)}-{short(cfg.model)}-{stamp}"


__all__ = ["RunConfig", "make_config", "load_toml", "check_config_path", "validate", "default_name", "upgrade_config", "parse_param_options"]
