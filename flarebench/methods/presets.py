"""Methods: each a named preset of orthogonal parts. This is the one place a method is defined.

A :class:`Preset` is one record: its regularizer, compressor, memory and aggregator (registry names,
see registry.py), parameters that differ from the parts' defaults, a description and the paper.
``--regularizer/--compressor/--memory/--aggregator`` replace a preset's part (its preset parameters
go with it); ``-p kind.param=value`` or a TOML table ``[kind]`` sets a part's parameters.
Compare's ordering and the plots' colours follow the order of the records below.

``ef21`` is honest EF21: only ``c_i = topk(d_i - g_i)`` travels and both sides keep ``g_i``. The
FLARE reference code instead sends ``c_i + g_i`` (dense), which costs a full model per client.
``fedprox-ef`` uses the FLARE reference's prox term ``tau_r * sum (w_i - w)^2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..flat import Layout
from .registry import KINDS, Part, PartContext, part_class, resolve_params


@dataclass(frozen=True)
class Preset:
    """A method: four parts by registry name, their non-default parameters, what it is and where from."""

    name: str
    description: str
    paper: str
    regularizer: str = "none"
    compressor: str = "identity"
    memory: str = "none"
    aggregator: str = "weighted-mean"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {param: value}

    def part(self, kind: str) -> str:
        return getattr(self, kind)


PRESETS: dict[str, Preset] = {}


def preset(name: str, description: str, paper: str, **parts) -> Preset:
    """Define a method (one record); its position here is its place in tables and its colour in plots."""
    PRESETS[name] = Preset(name, description, paper, **parts)
    return PRESETS[name]


# ------------------------------------------------------------------------------------------ the methods
preset("none", "FedAvg, no compression (dense fp32 updates)", "McMahan et al., AISTATS 2017")
preset("topk", "top-k per tensor, no error feedback", "Aji & Heafield, EMNLP 2017", compressor="topk")
preset("topk-ef", "top-k per tensor with error feedback (EC)", "Stich et al., NeurIPS 2018",
       compressor="topk", memory="residual")
preset("randk", "random-k per tensor from a shared seed, with error feedback", "Stich et al., NeurIPS 2018",
       compressor="randk", memory="residual")
preset("ef21", "EF21: top-k of (d_i - g_i), g_i kept by client and server, server applies mean g_i",
       "Richtarik et al., NeurIPS 2021", compressor="topk", memory="ef21", aggregator="ef21")
preset("fedprox-ef", "FedProx + EC: top-k EC + tau_r * ||w_i - w||^2 on all local steps", "Li et al., MLSys 2020",
       regularizer="prox", compressor="topk", memory="residual")
preset("flare", "FLARE: top-k EC + L1 pull toward w + accumulator on the first p local steps",
       "Greidi & Cohen 2023 (arXiv 2312.13795)", regularizer="flare", compressor="topk", memory="residual")
preset("threshold", "fixed threshold: send the entries with |v| > tau, with error feedback", "Strom, Interspeech 2015",
       compressor="threshold", memory="residual")
preset("dgc", "Deep Gradient Compression: factor masking, warm-up densities, sampled top-k threshold; momentum correction "
       "off (-p memory.momentum=0.9 is the paper's: on round updates after local momentum it diverges)",
       "Lin et al., ICLR 2018", compressor="dgc", memory="dgc", params={"memory": {"momentum": 0.0}})
preset("stc", "Sparse Ternary Compression: top-k, ternary +-mu, Golomb positions, error feedback on both sides, compressed downlink",
       "Sattler et al., IEEE TNNLS 2019", compressor="stc", memory="residual", aggregator="stc")
preset("qsgd", "QSGD: s levels per bucket, stochastic rounding against the bucket's l2 norm, Elias-coded levels; unbiased",
       "Alistarh et al., NeurIPS 2017", compressor="qsgd")
preset("terngrad", "TernGrad: stochastic ternary values with per-tensor scale max|v|; unbiased", "Wen et al., NeurIPS 2017",
       compressor="terngrad")
preset("natural", "natural compression: unbiased stochastic rounding to powers of two (sign + exponent)",
       "Horvath et al., 2019 (arXiv 1905.10988)", compressor="natural")
preset("signsgd", "signSGD: one bit per entry, server majority vote", "Bernstein et al., ICML 2018",
       compressor="sign", aggregator="majority-vote")
preset("signum", "signum: signSGD of the client's momentum, server majority vote", "Bernstein et al., ICML 2018",
       compressor="sign", memory="momentum", aggregator="majority-vote")
preset("ef-signsgd", "EF-signSGD: (||v||_1 / n) sign(v) per tensor with error feedback", "Karimireddy et al., ICML 2019",
       compressor="scaled-sign", memory="residual")
preset("onebit", "1-bit SGD: one bit per entry with error feedback, decoded as the per-tensor means of the positive and negative entries",
       "Seide et al., Interspeech 2014", compressor="onebit", memory="residual")
preset("powersgd", "PowerSGD: rank r per matrix in two phases (P up, P-hat down, Q up), Q warm-started, error feedback",
       "Vogels et al., NeurIPS 2019", compressor="powersgd", memory="residual")
preset("fetchsgd", "FetchSGD: count sketch of the update (5 rows, max(10 k, 0.077 P) columns: the authors' ratios), error "
       "accumulation in sketch space, top-k unsketched; server momentum off (-p aggregator.rho=0.9 is the paper's: "
       "on round updates after local momentum it diverges)",
       "Rothchild et al., ICML 2020", compressor="count-sketch", aggregator="fetchsgd", params={"aggregator": {"rho": 0.0}})


# ------------------------------------------------------------------------------------------ resolving
def method_names() -> list[str]:
    """Every preset, in definition order."""
    _load()
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    _load()
    if name not in PRESETS:
        raise ConfigError(f"unknown method '{name}' (choose from: {', '.join(PRESETS)}; see `flarebench methods`)")
    return PRESETS[name]


def resolve(method: str, overrides: dict[str, str | None], params: dict[str, dict] | None) -> tuple[dict[str, str], dict[str, dict]]:
    """The parts and full parameter sets a run uses: -> ({kind: part name}, {kind: {param: value}}).

    ``overrides[kind]``: a part replacing the preset's (None: keep it); ``params[kind]``: values set
    by the user, applied over the preset's own values: ``{param: value}`` for the part that runs
    (TOML ``[kind]``, ``-p kind.param=v``), and ``{PART: {param: value}}`` for part PART whenever it
    runs (TOML ``[kind.PART]``, ``-p kind.PART.param=v``: one config for a sweep over methods).
    """
    p = get_preset(method)
    names, resolved = {}, {}
    for kind in KINDS:
        name = overrides.get(kind) or p.part(kind)
        names[kind] = name
        resolved[kind] = resolve_kind(kind, name, (params or {}).get(kind), p.params.get(kind) if name == p.part(kind) else None)
    return names, resolved


def resolve_world(names: dict[str, str], params: dict[str, dict] | None) -> dict[str, dict]:
    """The full parameter sets of the world parts ``names`` (``{"model": "cnn", "dataset": ..., "partition": ...}``),
    from the user's ``params[kind]`` as in :func:`resolve`: -> ``{kind: {param: value}}``."""
    return {kind: resolve_kind(kind, name, (params or {}).get(kind)) for kind, name in names.items()}


def resolve_kind(kind: str, name: str, user: dict | None, base: dict | None = None) -> dict:
    """Every parameter of part ``kind/name``: its defaults <- ``base`` (a preset's values) <- the user's
    ``[kind.NAME]`` table <- the user's ``[kind]`` values. ``user``'s tables for other parts are checked too
    (a typo is an error even where that part does not run)."""
    part_class(kind, name)  # ConfigError for an unknown part
    user = user or {}
    tables = {k: v for k, v in user.items() if isinstance(v, dict)}  # [kind.PART]: for that part, if it runs
    for part, table in tables.items():
        resolve_params(kind, part, table)
    values = dict(base or {})
    values.update(tables.get(name, {}))
    values.update({k: v for k, v in user.items() if not isinstance(v, dict)})
    return resolve_params(kind, name, values)


@dataclass
class Parts:
    """The orthogonal parts a run is made of (each a small stateful object)."""

    regularizer: Part
    compressor: Part
    memory: Part
    aggregator: Part

    def items(self):
        return ((k, getattr(self, k)) for k in KINDS)

    def state_dict(self) -> dict:
        return {kind: part.state_dict() for kind, part in self.items()}

    def load_state_dict(self, state: dict) -> None:
        for kind, sub in state.items():
            getattr(self, kind).load_state_dict(sub)

    def check(self) -> None:
        """ConfigError (one line) for an impossible combination of parts."""
        for _, part in self.items():
            problem = type(part).check(self)
            if problem:
                raise ConfigError(problem)


def build_parts(cfg, layout: Layout, device=None) -> Parts:
    """The parts of ``cfg`` (a resolved RunConfig) for a model with ``layout``."""
    ctx = PartContext(layout, cfg.clients, cfg.sparsity, cfg.seed, device)
    names = {kind: getattr(cfg, kind) for kind in KINDS}
    if any(v is None for v in names.values()):  # not resolved (a hand-made RunConfig): resolve now
        names, params = resolve(cfg.method, names, cfg.params)
    else:
        params = {kind: resolve_params(kind, names[kind], cfg.params.get(kind)) for kind in KINDS}
    return assemble(names, params, ctx)


def assemble(names: dict[str, str], params: dict[str, dict], ctx: PartContext) -> Parts:
    """Build part ``names[kind]`` with resolved ``params[kind]`` for every kind; ConfigError for an impossible combination."""
    parts = Parts(**{kind: part_class(kind, names[kind])(ctx, **params[kind]) for kind in KINDS})
    parts.check()
    return parts


def check_combination(cfg) -> None:
    """ConfigError now if ``cfg``'s parts cannot work together (class-level declarations), or a part's
    values cannot run this config (``Part.check_run``: e.g. a schedule over its rounds); nothing built."""
    from types import SimpleNamespace

    classes = SimpleNamespace(**{kind: part_class(kind, getattr(cfg, kind)) for kind in KINDS})
    for kind in KINDS:
        problem = getattr(classes, kind).check(classes)
        if problem:
            raise ConfigError(problem)
    for kind in KINDS:  # what each part's values imply over this run (its rounds, the model's size)
        problem = getattr(classes, kind).check_run((cfg.params or {}).get(kind) or {}, cfg)
        if problem:
            raise ConfigError(problem)


def _compressor_of(run) -> str:
    """The compressor of a RunConfig, a config dict (config.json; older ones name only the method) or a method name."""
    if isinstance(run, str):
        return get_preset(run).compressor
    get = run.get if isinstance(run, dict) else lambda k, d=None: getattr(run, k, d)
    name = get("compressor")
    if name:
        return name
    method = get("method")
    return get_preset(method).compressor if method in method_names() else "identity"


def uses_sparsity(run) -> bool:
    """Whether the compressor of ``run`` (RunConfig, config dict or method name) sends k = R n entries
    set by --sparsity; runs whose compressor does not ignore their sparsity (names, tables, sweeps)."""
    name = _compressor_of(run)
    _load()
    from .registry import REGISTRY

    cls = REGISTRY["compressor"].get(name)
    return bool(cls and cls.uses_sparsity)


def method_label(run) -> str:
    """``flare``, or ``flare+stc`` (+ each part that replaces the preset's, in kind order) for a RunConfig or config dict."""
    get = run.get if isinstance(run, dict) else lambda k, d=None: getattr(run, k, d)
    method = get("method")
    if method not in method_names():
        return str(method)
    p = PRESETS[method]
    from ..references import short

    extra = [short(get(kind)) for kind in KINDS if get(kind) and get(kind) != p.part(kind)]
    return "+".join([method, *extra])


def is_uncompressed(run) -> bool:
    """Whether ``run`` sends dense fp32 updates (the uncompressed reference of compare's target)."""
    if _compressor_of(run) != "identity":
        return False
    params = run.get("params") if isinstance(run, dict) else getattr(run, "params", None)
    return ((params or {}).get("compressor") or {}).get("value_codec", "fp32") == "fp32"


def _load() -> None:
    from .registry import load_parts

    load_parts()


__all__ = ["Preset", "PRESETS", "preset", "Parts", "build_parts", "resolve", "resolve_world", "resolve_kind", "method_names", "get_preset",
           "uses_sparsity", "is_uncompressed", "method_label", "check_combination", "catalog", "parts_catalog", "part_entry"]


def part_entry(cls: type[Part], values: dict | None = None) -> dict:
    """One part for listings: kind, name, summary, paper, the plug-in it came from, and its parameters (name,
    type, value: ``values`` or the default, unit, rule, help, paper)."""
    values = values if values is not None else cls.defaults()
    return {"kind": cls.kind, "name": cls.name, "summary": cls.summary, "paper": cls.paper, "plugin": _plugin(cls.kind, cls.name),
            "params": [{"name": q.name, "type": q.type.__name__, "value": values[q.name], "unit": q.unit,
                        "rule": q.rule or ("one of " + "|".join(map(str, q.choices)) if q.choices else ""),
                        "help": q.help, "paper": q.paper} for q in cls.params]}


def parts_catalog(kind: str | None = None) -> list[dict]:
    """What ``flarebench parts`` prints: every registered part of ``kind`` (None: of every kind, in
    registry.ALL_KINDS order, built-ins before plug-ins), as :func:`part_entry`."""
    from .registry import ALL_KINDS, REGISTRY

    _load()
    if kind is not None and kind not in ALL_KINDS:
        raise ConfigError(f"unknown part kind '{kind}' (choose from: {', '.join(ALL_KINDS)})")
    return [part_entry(cls) for k in ([kind] if kind else ALL_KINDS) for cls in REGISTRY[k].values()]


def _plugin(kind: str, name: str) -> str | None:
    """``plug-in NAME (distribution version)`` for a part or preset a plug-in registered, else None."""
    from ..plugins import plugin_of

    o = plugin_of(kind, name)
    return f"{o['plugin']} ({o['distribution']} {o['version']})" if o else None


def catalog(method: str | None = None) -> list[dict]:
    """What ``flarebench methods`` prints: per preset its description, paper, and each part with its
    parameters (name, type, default, unit, rule, help, paper). ``method``: one preset only."""
    names = [get_preset(method).name] if method else method_names()
    out = []
    for name in names:
        p = PRESETS[name]
        parts = []
        for kind in KINDS:
            cls = part_class(kind, p.part(kind))
            parts.append(part_entry(cls, resolve_params(kind, cls.name, p.params.get(kind))))
        out.append({"method": name, "description": p.description, "paper": p.paper,
                    "uses_sparsity": part_class("compressor", p.compressor).uses_sparsity, "parts": parts,
                    "plugin": _plugin("method", name)})
    return out
