"""Parts from the user: a part name with a ``:`` is an import reference, for every kind.

``MODULE:ATTR`` imports ``MODULE`` from ``sys.path`` (``my_pkg.nets:ResNet8``); ``PATH.py:ATTR`` (a name ending in
``.py`` or holding a ``/``) loads that file (``examples/custom_model.py:Net``; ``make_config`` makes the path
absolute, so resume, Flower nodes and Ray workers find it from any directory). ``ATTR`` may be:

- for any kind, a subclass of that kind's base (``Compressor``, ``Memory``, ``Aggregator``, ``Regularizer``,
  ``ModelPart``, ``DatasetPart``, ``PartitionPart``): used as it is, with its declared ``params``;
- ``model``: an ``nn.Module`` subclass or a factory ``(input_shape, num_classes, **params) -> nn.Module``
  (a class receives ``input_shape`` / ``num_classes`` where its ``__init__`` names them);
- ``dataset``: a function ``(**params) -> Dataset``, or train/test arrays, or two torch Datasets
  (:func:`flarebench.data.base.as_dataset` converts them once); it also receives ``root``, ``download``
  and ``seed`` where it names them;
- ``partition``: a function ``(labels, clients, seed, **params) -> list of index tensors`` (it also receives
  ``samples_per_client`` and ``natural`` where it names them).

Parameters: a class may declare ``params`` (a tuple of :class:`~flarebench.methods.registry.Param`);
otherwise its keyword arguments are its parameters, each with a default, typed by its annotation or its
default (int, float, str, bool; ``X | None``): ``-p model.width=64``, TOML ``[model] width = 64``.

A reference that cannot be used is one ConfigError line naming it: module or file not found, attribute
missing, ``:`` with no attribute, an object that is no part of that kind, an import that raises, a
parameter without a default or of another type. :func:`source_of` is what config.json records of a user
part (``sources``): the reference, a file's absolute path and sha256, or a module's distribution and version.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import typing
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, DataError

SEP = ":"
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_CACHE: dict[tuple, type] = {}  # (kind, name, file sha256 or None) -> part class


def is_reference(name: str) -> bool:
    """Whether part name ``name`` is an import reference (``MODULE:ATTR`` or ``PATH.py:ATTR``)."""
    return isinstance(name, str) and SEP in name


def split(kind: str, name: str) -> tuple[str, str]:
    """``(target, attr)`` of a reference; ConfigError for a missing side."""
    target, _, attr = name.rpartition(SEP)
    if not attr.strip() or not target.strip():
        raise ConfigError(f"{kind} '{name}': an import reference is MODULE:NAME or PATH.py:NAME; "
                          f"{'nothing follows' if not attr.strip() else 'nothing precedes'} the ':'")
    return target.strip(), attr.strip()


def is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def absolute(name: str) -> str:
    """``name`` with a file reference's path made absolute (other names as they are)."""
    if not is_reference(name):
        return name
    target, _, attr = name.rpartition(SEP)
    if target and is_file(target):
        return f"{Path(target).expanduser().resolve()}{SEP}{attr}"
    return name


def short(name: str) -> str:
    """A part name for run names and labels: a reference's attribute (``Net``), other names as they are."""
    return name.rpartition(SEP)[2] if is_reference(name) else name


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def reference_class(kind: str, name: str) -> type:
    """The part class of reference ``name`` for ``kind`` (cached; a changed file is loaded again)."""
    target, attr = split(kind, name)
    digest = None
    if is_file(target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"{kind} '{name}': file {path} not found")
        digest = file_sha256(path)
    key = (kind, name, digest)
    if key not in _CACHE:
        obj = _load(kind, name, target, attr, digest)
        _CACHE[key] = _as_part(kind, name, obj)
    return _CACHE[key]


def _load(kind: str, name: str, target: str, attr: str, digest: str | None) -> Any:
    where = f"{kind} '{name}'"
    if digest is not None:
        path = Path(target).expanduser().resolve()
        module_name = f"flarebench_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{digest[:12]}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"{where}: {path} cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses, pickling and Ray need the module registered
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[module_name]
                raise ConfigError(f"{where}: importing {path} failed ({_one_line(e)})") from None
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name and target.startswith(e.name):
                raise ConfigError(f"{where}: module {e.name} not found (is it installed, or on PYTHONPATH?)") from None
            raise ConfigError(f"{where}: importing {target} failed ({_one_line(e)})") from None
        except Exception as e:
            raise ConfigError(f"{where}: importing {target} failed ({_one_line(e)})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{where}: {target} has no attribute '{attr}'") from None


def _as_part(kind: str, name: str, obj: Any) -> type:
    """A Part subclass for ``obj`` named ``name`` (the user's class is subclassed, never changed)."""
    from .methods.registry import Part

    where = f"{kind} '{name}'"
    if isinstance(obj, type) and issubclass(obj, Part):
        if obj.kind != kind:
            raise ConfigError(f"{where} is a {obj.kind or 'kindless'} part, not a {kind}")
        from .methods.registry import KINDS

        missing = sorted(getattr(obj, "__abstractmethods__", ()))
        if missing:  # e.g. a compressor without nnz: say which, before anything is built
            raise ConfigError(f"{where}: {obj.__name__} does not implement {', '.join(missing)}")
        own_init = "__init__" in vars(obj)  # keyword arguments after (self, ctx) for a method part, (self) for a world part
        declared = obj.params or (_from_signature(obj.__init__, where, skip=2 if kind in KINDS else 1, kind=kind) if own_init else ())
        return type(obj.__name__, (obj,), {"name": name, "params": tuple(declared), "__module__": obj.__module__})
    wrap = {"model": _model, "dataset": _dataset, "partition": _partition}.get(kind)
    if wrap is None or not callable(obj):
        base = {"compressor": "methods.compressors.base.Compressor", "memory": "methods.memory.Memory",
                "aggregator": "methods.aggregation.Aggregator", "regularizer": "methods.regularizers.Regularizer"}.get(kind)
        what = f"a subclass of flarebench.{base}" if base else f"a {kind} part or a function"
        raise ConfigError(f"{where} must be {what}, got {type(obj).__name__}")
    return wrap(name, obj, where)


def _declared_or_signature(obj: Any, where: str, skip: int, kind: str) -> tuple:
    from .methods.registry import Param

    declared = getattr(obj, "params", None)
    if isinstance(declared, tuple) and declared and all(isinstance(p, Param) for p in declared):
        return declared
    return _from_signature(obj.__init__ if isinstance(obj, type) else obj, where, skip=skip, kind=kind,
                           also=("input_shape", "num_classes", "root", "download", "seed", "samples_per_client", "natural"))


def _model(name: str, obj: Any, where: str) -> type:
    import torch.nn as nn

    from .models.base import ModelPart

    is_module = isinstance(obj, type) and issubclass(obj, nn.Module)
    params = _declared_or_signature(obj, where, skip=1 if is_module else 2, kind="model")
    passed = _named(obj.__init__ if is_module else obj)

    def build(self, input_shape, num_classes):
        values = {p.name: getattr(self, p.name) for p in self.params}
        if is_module:
            given = {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)) if k in passed}
            return obj(**given, **values)
        return obj(tuple(input_shape), num_classes, **values)

    return type(getattr(obj, "__name__", "UserModel"), (ModelPart,), {
        "name": name, "params": params, "inputs": (), "build": build, "summary": _summary(obj), "__module__": __name__})


def _dataset(name: str, obj: Any, where: str) -> type:
    from .data.base import DatasetPart, as_dataset

    params = _declared_or_signature(obj, where, skip=0, kind="dataset")
    passed = _named(obj)

    def load(self, root, download, seed):
        run = {k: v for k, v in (("root", root), ("download", download), ("seed", seed)) if k in passed}
        try:
            result = obj(**run, **{p.name: getattr(self, p.name) for p in self.params})
        except (ConfigError, DataError):
            raise
        except Exception as e:
            raise ConfigError(f"dataset '{name}' failed ({_one_line(e)})") from None
        return as_dataset(result, short(name))

    return type(getattr(obj, "__name__", "UserDataset"), (DatasetPart,), {
        "name": name, "params": params, "load": load, "summary": _summary(obj), "__module__": __name__})


def _partition(name: str, obj: Any, where: str) -> type:
    from .data.partitions.base import PartitionPart

    params = _declared_or_signature(obj, where, skip=3, kind="partition")
    passed = _named(obj)

    def split_(self, labels, clients, seed, samples_per_client, natural):
        extra = {k: v for k, v in (("samples_per_client", samples_per_client), ("natural", natural)) if k in passed}
        try:
            out = obj(labels, clients, seed, **extra, **{p.name: getattr(self, p.name) for p in self.params})
        except (ConfigError, DataError):
            raise
        except Exception as e:
            raise ConfigError(f"partition '{name}' failed ({_one_line(e)})") from None
        return _check_split(name, out, clients, len(labels))

    return type(getattr(obj, "__name__", "UserPartition"), (PartitionPart,), {
        "name": name, "params": params, "split": split_, "summary": _summary(obj), "__module__": __name__})


def _check_split(name: str, out: Any, clients: int, n: int) -> list:
    import torch

    try:
        parts = [torch.as_tensor(i, dtype=torch.int64).reshape(-1).sort().values for i in out]
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"partition '{name}' must return index tensors, one per client ({_one_line(e)})") from None
    if len(parts) != clients:
        raise ConfigError(f"partition '{name}' returned {len(parts)} clients, the run has {clients}")
    for i, idx in enumerate(parts):
        if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
            raise ConfigError(f"partition '{name}': client {i}'s indices must be non-empty rows of the {n} training samples")
    return parts


def _from_signature(fn: Callable, where: str, skip: int, kind: str, also: tuple = ()) -> tuple:
    """Params from ``fn``'s keyword arguments after the first ``skip`` positional ones (and not in ``also``,
    which the caller passes itself)."""
    from .methods.registry import Param

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    out = []
    for i, p in enumerate(q for q in sig.parameters.values() if q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)):
        if i < skip or p.name in also:
            continue
        if p.default is p.empty:
            raise ConfigError(f"{where}: its argument '{p.name}' needs a default (its value comes from -p {kind}.{p.name}=V)")
        t = _param_type(hints.get(p.name, p.annotation), p.default)
        if t is None:
            raise ConfigError(f"{where}: its argument '{p.name}' must be int, float, str or bool (annotate it), "
                              f"got default {p.default!r}")
        out.append(Param(p.name, t, p.default, f"keyword argument of {getattr(fn, '__qualname__', fn)}"))
    return tuple(out)


def _param_type(annotation: Any, default: Any) -> type | None:
    if isinstance(annotation, str):  # unresolved: "int", "int | None"
        names = [a.strip() for a in annotation.split("|") if a.strip() != "None"]
        annotation = _TYPES.get(names[0]) if len(names) == 1 else None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:  # Optional[X], X | None
        annotation = args[0] if len(args) == 1 else None
    if annotation in (int, float, str, bool):
        return annotation
    if default is not None and type(default) in (int, float, str, bool):
        return type(default)
    return None


def _named(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else f"user part {getattr(obj, '__qualname__', obj)}"


def _one_line(e: BaseException, n: int = 200) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= n else text[: n - 3] + "..."


# ---------------------------------------------------------------------------------------- provenance
def source_of(kind: str, name: str) -> dict | None:
    """What config.json records of a user part: ``{"reference", "file", "sha256"}`` for a file,
    ``{"reference", "module", "distribution", "version"}`` for a module, ``{"name", "plugin", "distribution",
    "version"}`` for a part an installed plug-in registered; None for a built-in."""
    if is_reference(name):
        target, attr = split(kind, name)
        if is_file(target):
            path = Path(target).expanduser().resolve()
            return {"reference": name, "file": str(path), "sha256": file_sha256(path)}
        dist, version = distribution_of(target)
        return {"reference": name, "module": target, "distribution": dist, "version": version}
    from .plugins import plugin_of

    origin = plugin_of(kind, name)
    return {"name": name, **origin} if origin else None


def sources_of(cfg) -> dict:
    """:func:`source_of` of every user part of ``cfg`` (its seven parts, and its method if a plug-in's preset)."""
    from .methods.registry import ALL_KINDS

    found = {kind: source_of(kind, getattr(cfg, kind)) for kind in ALL_KINDS if getattr(cfg, kind, None)}
    found["method"] = source_of("method", cfg.method)
    return {k: v for k, v in found.items() if v}


def distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution providing top-level package of ``module``, and its version (or Nones)."""
    import importlib.metadata as md

    top = module.split(".")[0]
    dists = md.packages_distributions().get(top) or []
    if not dists:
        return None, None
    try:
        return dists[0], md.version(dists[0])
    except md.PackageNotFoundError:
        return dists[0], None


def check_sources(recorded: dict, current: dict, warn: bool = True) -> dict:
    """``recorded`` (a config's ``sources``) against the parts as they are now (``current``): ConfigError
    (one line naming the part) if a file changed since the run started; a logged warning if a module's or
    plug-in's version changed (``warn``). Returns what the config keeps: ``recorded`` where it was given."""
    import logging

    for kind, was in (recorded or {}).items():
        now = current.get(kind)
        if not isinstance(was, dict) or now is None:
            continue
        label = was.get("reference") or was.get("name")
        if was.get("sha256") and now.get("sha256") != was["sha256"]:
            raise ConfigError(f"{kind} {label}: {was.get('file')} changed since the run started "
                              f"(sha256 {was['sha256'][:12]}... then, {str(now.get('sha256'))[:12]}... now)")
        if warn and was.get("version") != now.get("version"):
            logging.getLogger("flarebench").warning(
                "%s %s: %s %s now, %s when the run started", kind, label, now.get("distribution"), now.get("version"), was.get("version"))
    return {**current, **{k: v for k, v in (recorded or {}).items() if k in current}}


__all__ = ["is_reference", "reference_class", "absolute", "short", "source_of", "sources_of", "check_sources", "distribution_of", "file_sha256"]
