"""The one place a run's world is built: device, data, partition into clients, and the seeded model.

Every backend (the local loop, Flower's server and its nodes, Ray workers through the launcher) calls
:func:`build_world`, so they all build the same world in the same order from a config:

1. the device (``--device``);
2. the dataset part's data, loaded on the CPU and checked (:meth:`Dataset.validate`);
3. the partition part's client index tensors (from the CPU labels, seeded by the run seed), and, with
   ``validation_fraction`` > 0, each client's held-out validation rows (:func:`hold_out`);
4. the data moved to the device; the model part's module built under ``torch.manual_seed(derive(seed, "init"))``
   on that device, and checked by one tiny forward pass (its output must be ``[B, num_classes]``, or
   ``[B, T, num_classes]`` for per-position targets).

:func:`check_fits` checks what can be known before anything is read (the dataset's :class:`DataSpec`
against the model's and the partition's declarations, and a build on the ``meta`` device); it runs in
``make_config``, so a bad combination is one line before any file is written.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import torch
from torch import nn

from .data.base import Dataset, DataSpec
from .engine.seeds import derive
from .errors import ConfigError
from .methods.registry import make_part
from .references import check_sources, is_reference, sources_of

DEVICES = {"auto", "cpu", "cuda"} | {f"cuda:{i}" for i in range(16)}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; asking for cuda without one, or for another device
    (e.g. ``tpu``), is a ConfigError."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device '{name}' (choose from: auto, cpu, cuda, cuda:N)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


@dataclass
class World:
    """What a run trains on: ``clients[i]`` are client i's int64 row indices into ``data.x_train``;
    ``validation``: the held-out rows of every client (int64 ``[V]``, empty without a validation split)."""

    device: torch.device
    data: Dataset
    clients: list[torch.Tensor]
    model: nn.Module
    validation: torch.Tensor

    def validation_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the validation rows, on the data's device (empty tensors without a split)."""
        return validation_set(self.data, self.validation)


def validation_set(data: Dataset, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the training rows ``rows`` of ``data`` (on its device)."""
    rows = rows.to(data.x_train.device)
    return data.x_train[rows], data.y_train[rows]


def hold_out(clients: list[torch.Tensor], fraction: float, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each client's rows split into training and validation rows: ``floor(fraction * n_i)`` of client i's
    ``n_i`` rows, drawn with ``derive(seed, "validation", i)``, are held out (so a client keeps at least one
    row for ``fraction < 1``; a small client may hold out none). Both parts keep the rows' partition order.
    Returns (training rows per client, all validation rows, client by client); ``fraction == 0``: the clients
    as given and no rows. ConfigError if the validation set would be empty."""
    if fraction == 0:
        return clients, torch.zeros(0, dtype=torch.int64)
    train, held = [], []
    for i, rows in enumerate(clients):
        k = math.floor(fraction * len(rows))
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(derive(seed, "validation", i)))
        out = torch.zeros(len(rows), dtype=torch.bool)
        out[order[:k]] = True
        train.append(rows[~out])
        held.append(rows[out])
    validation = torch.cat(held)
    if len(validation) == 0:
        largest = max(len(r) for r in clients)
        raise ConfigError(f"validation-fraction {fraction:g} holds out no row (floor({fraction:g} x rows) per client; "
                          f"the largest client has {largest} rows): use a larger fraction")
    return train, validation


def _part(cfg, kind: str):
    return make_part(kind, getattr(cfg, kind), (cfg.params or {}).get(kind))


def build_world(cfg) -> World:
    """The device, the data (on it), every client's sample rows and the model with its seeded initial weights."""
    check_sources(cfg.sources, sources_of(cfg), warn=False)  # a Flower node or Ray worker sees the user parts the run started with
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    model_part, partition_part = _part(cfg, "model"), _part(cfg, "partition")
    data = _part(cfg, "dataset").load(cfg.data_root, cfg.download, cfg.seed).validate()
    _check_spec(cfg, data.spec)  # again, with what was loaded (a dataset may not know its spec before)
    clients = partition_part.split(data.y_train, cfg.clients, cfg.seed, cfg.samples_per_client, data.natural_clients)
    clients, validation = hold_out(clients, cfg.validation_fraction, cfg.seed)
    data = data.to(device)
    torch.manual_seed(derive(cfg.seed, "init"))
    model = build_model_checked(model_part, cfg.model, data.input_shape, data.num_classes).to(device)
    check_output(model, data, cfg.model)
    return World(device, data, clients, model, validation)


def build_model_checked(part, name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``part.build(...)``; a model that fails to build (a user factory that raises, returns no nn.Module)
    is a ConfigError naming it."""
    try:
        model = part.build(tuple(input_shape), num_classes)
    except ConfigError:
        raise
    except Exception as e:  # a user's factory: any exception is its own
        raise ConfigError(f"model {name} failed to build for inputs {list(input_shape)} and {num_classes} classes "
                          f"({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_output(model: nn.Module, data: Dataset, name: str) -> None:
    """One forward pass on two training samples (eval mode, no gradients, the global RNG untouched): the
    logits must be float ``[B, num_classes]`` (``[B, T, num_classes]`` for per-position targets)."""
    x = data.x_train[:2]
    want = [len(x), *data.y_train.shape[1:], data.num_classes]
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            out = model(x)
    except Exception as e:
        raise ConfigError(f"model {name} fails on a batch of {list(x.shape)} {x.dtype} inputs "
                          f"({type(e).__name__}: {_one_line(e)})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or list(out.shape) != want:
        got = f"{list(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {name} must map inputs {list(x.shape)} to float logits {want} (batch, "
                          f"{'positions, ' if len(want) == 3 else ''}num_classes={data.num_classes}), got {got}")


def check_fits(cfg) -> None:
    """ConfigError unless the model and partition can take the dataset, as far as is known before reading
    it: its spec against the model's ``inputs`` and the partition's ``needs_natural``, and the model built
    on the meta device (no memory) for its input shape."""
    _check_fits_cached(cfg.model, cfg.dataset, cfg.partition, json.dumps(cfg.params, sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _check_fits_cached(model: str, dataset: str, partition: str, params_json: str) -> None:
    from types import SimpleNamespace

    cfg = SimpleNamespace(model=model, dataset=dataset, partition=partition, params=json.loads(params_json))
    spec = _part(cfg, "dataset").spec()
    if spec is None:  # known once loaded: build_world checks then
        return
    _check_spec(cfg, spec)
    if not is_reference(model):  # a user's model may make tensors the meta device cannot hold: it is built at setup
        with torch.device("meta"):
            build_model_checked(_part(cfg, "model"), model, spec.input_shape, spec.num_classes)


def _check_spec(cfg, spec: DataSpec) -> None:
    from .methods.registry import REGISTRY, part_class

    model = part_class("model", cfg.model)
    if model.inputs and spec.inputs not in model.inputs:
        fits = ", ".join(sorted(n for n, c in REGISTRY["model"].items() if spec.inputs in c.inputs))
        what = f"token sequences [{spec.input_shape[0]}]" if spec.inputs == "tokens" else f"{spec.inputs} {list(spec.input_shape)}"
        raise ConfigError(f"model {cfg.model} cannot take dataset {cfg.dataset}'s {what}; models for it: {fits}")
    if part_class("partition", cfg.partition).needs_natural and not spec.natural:
        raise ConfigError(f"partition '{cfg.partition}' needs a dataset with its own clients (e.g. shakespeare); "
                          f"dataset {cfg.dataset} has none")


def num_params_for(cfg) -> int:
    """Trainable parameters of ``cfg``'s model on its dataset: from the dataset's spec, built on the meta
    device (no data read, no memory; a user's model on the CPU), or, for a dataset that only knows its shape
    once loaded, after loading."""
    from .flat import Layout

    spec = _part(cfg, "dataset").spec()
    if spec is None:
        spec = _part(cfg, "dataset").load(cfg.data_root, cfg.download, cfg.seed).validate().spec
    device = "cpu" if is_reference(cfg.model) else "meta"  # a user's model may need real tensors to build
    with torch.device(device):
        return Layout.of(build_model_checked(_part(cfg, "model"), cfg.model, spec.input_shape, spec.num_classes)).num_params


def _one_line(e: BaseException, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[: n - 3] + "..."


__all__ = ["World", "build_world", "hold_out", "validation_set", "check_fits", "check_output", "num_params_for", "resolve_device", "DEVICES"]
