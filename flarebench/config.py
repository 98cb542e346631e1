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

DEFAULT_DATA_ROOT = "~/.cache/flarebench"


@dataclass
class RunConfig:
    """The fully resolved configuration of one run (written to config.json)."""

    # what is compared
    method: str = "flare"
    sparsity: float = 0.999
    topk_rounding: str = "round"  # round: k=max(1,round(R*n)); reference: k=round(R*n)+1 (authors' code)
    ef: bool = True  # error feedback: randk's choice (--no-ef); fixed by the other methods (presets.FIXED_EF)
    encoding: str = "auto"  # position codec, or auto = smallest applicable per message
    value_codec: str = "fp32"
    downlink: str = "dense"  # dense: fp32 model to each participant | sparse: encoded update to every client
    # data and model
    dataset: str = "mnist-embedded"
    data_root: str = DEFAULT_DATA_ROOT
    download: bool = False
    model: str = "mlp"
    fc_linear: bool = False  # reference FC quirk: no activations
    cnn_double_softmax: bool = False  # reference CNN quirk: softmax applied twice before the loss
    vgg11_reference_relu: bool = False  # reference VGG-11 quirk: no ReLU after the 1st conv of its 256/512 blocks
    partition: str = "contiguous"
    dirichlet_alpha: float = 0.5
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
    # FLARE regularizer (reference defaults)
    flare_tau0: float = 0.05
    flare_decay: float = 1.1
    flare_steps: int = 1
    flare_percentile: float = 50.0
    # FedProx regularizer (same schedule as FLARE in the reference)
    prox_tau0: float = 0.05
    prox_decay: float = 1.1
    # bookkeeping
    eval_every: int = 10
    eval_batch_size: int = 2000
    seed: int = 0
    device: str = "auto"
    engine: str = "auto"  # auto | sequential | vectorized (engine/select.py)
    client_chunk: int | None = None  # vectorized engine: clients per vmapped batch (None: auto)
    out: str = "results"
    name: str | None = None

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
TOML_SECTIONS_IGNORED_BY_RUN = {"sweep", "meta"}


def _norm_key(key: str) -> str:
    return key.replace("-", "_")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config into ``{field: value}`` (keys may use dashes); unknown keys -> ConfigError.

    Top-level keys are RunConfig fields. Tables named in TOML_SECTIONS_IGNORED_BY_RUN (``[sweep]``,
    ``[meta]``) are for other commands and are returned under their own name.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
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
        if k not in FIELD_NAMES:
            raise ConfigError(f"unknown key '{key}' in {p}{_did_you_mean(k)}")
        out[k] = value
    return out


def make_config(toml_path: str | Path | None = None, **overrides) -> RunConfig:
    """Defaults <- TOML file <- overrides (None values in overrides mean 'not given'); validated."""
    values: dict[str, Any] = {}
    if toml_path is not None:
        values.update({k: v for k, v in load_toml(toml_path).items() if k in FIELD_NAMES})
    for k, v in overrides.items():
        k = _norm_key(k)
        if k not in FIELD_NAMES:
            raise ConfigError(f"unknown option '{k}'{_did_you_mean(k)}")
        if v is not None:
            values[k] = v
    cfg = RunConfig()
    for f in fields(RunConfig):
        if f.name in values:
            setattr(cfg, f.name, _coerce(f, values[f.name]))
    validate(cfg)
    _resolve_ef(cfg, given="ef" in values)
    return cfg


def _resolve_ef(cfg: RunConfig, given: bool) -> None:
    """Set ``cfg.ef`` to what the method really does; ConfigError if the user asked for the other."""
    from .methods.presets import FIXED_EF

    fixed = FIXED_EF.get(cfg.method)
    if fixed is None:
        return
    if given and cfg.ef != fixed:
        hint = "use topk-ef" if cfg.method == "topk" else "use topk for top-k without it, or randk --no-ef"
        raise ConfigError(f"method {cfg.method} is defined {'with' if fixed else 'without'} error feedback; {hint}")
    cfg.ef = fixed


def _did_you_mean(key: str) -> str:
    """``" (did you mean 'lr'?)"`` for the closest config key, or ``""``; keys shown with dashes, as in TOML."""
    import difflib

    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.6)
    return f" (did you mean '{close[0].replace('_', '-')}'?)" if close else ""


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


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
    from .data.datasets import DATASETS
    from .data.partition import PARTITIONS
    from .methods.presets import PRESETS
    from .models import MODELS
    from .wire.codecs import POSITION_CODECS, VALUE_CODECS

    def one_of(name: str, value: str, allowed) -> None:
        if value not in allowed:
            raise ConfigError(f"unknown {name} '{value}' (choose from: {', '.join(sorted(allowed))})")

    one_of("method", cfg.method, PRESETS)
    one_of("dataset", cfg.dataset, DATASETS)
    one_of("model", cfg.model, MODELS)
    one_of("partition", cfg.partition, PARTITIONS)
    one_of("encoding", cfg.encoding, set(POSITION_CODECS) | {"auto"})
    one_of("value codec", cfg.value_codec, VALUE_CODECS)
    one_of("downlink", cfg.downlink, {"dense", "sparse"})
    one_of("topk rounding", cfg.topk_rounding, {"round", "reference"})
    one_of("device", cfg.device, {"auto", "cpu", "cuda"} | {f"cuda:{i}" for i in range(16)})
    one_of("engine", cfg.engine, {"auto", "sequential", "vectorized"})
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
    for name in ["momentum", "weight_decay", "flare_tau0", "prox_tau0"]:
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {v}")
    if cfg.momentum >= 1:
        raise ConfigError(f"momentum must be < 1, got {cfg.momentum}")
    for name in ["flare_decay", "prox_decay"]:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    if cfg.flare_steps < 0:
        raise ConfigError(f"flare-steps must be >= 0, got {cfg.flare_steps}")
    if not 0 <= cfg.flare_percentile <= 100:
        raise ConfigError(f"flare-percentile must be in [0, 100], got {cfg.flare_percentile}")
    if not cfg.dirichlet_alpha > 0:
        raise ConfigError(f"dirichlet-alpha must be > 0, got {cfg.dirichlet_alpha}")
    if cfg.name is not None and (not cfg.name or "/" in cfg.name or cfg.name in {".", ".."}):
        raise ConfigError(f"name must be a plain directory name, got {cfg.name!r}")


def default_name(cfg: RunConfig, stamp: str) -> str:
    """``{method}-s{sparsity}-{dataset}-{model}-{stamp}``, e.g. ``flare-s0.999-mnist-embedded-cnn-20261125-101500``;
    no sparsity for ``none`` (nothing is sparsified)."""
    sparsity = "" if cfg.method == "none" else f"-s{cfg.sparsity:g}"
    return f"{cfg.method}{sparsity}-{cfg.dataset}-{cfg.model}-{stamp}"


__all__ = ["RunConfig", "make_config", "load_toml", "validate", "default_name"]
