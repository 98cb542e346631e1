"""Methods: each a named preset of orthogonal parts. This is the one place a method is defined.

| method   | regularizer | compressor | memory            | aggregation   |
|----------|-------------|------------|-------------------|---------------|
| none     | none        | identity   | none              | weighted mean |  (FedAvg, uncompressed)
| topk     | none        | top-k      | none              | weighted mean |
| topk-ef  | none        | top-k      | residual (EC)     | weighted mean |
| randk    | none        | random-k   | residual (--no-ef: none) | weighted mean |
| flare    | flare       | top-k      | residual (EC)     | weighted mean |
| ef21     | none        | top-k      | ef21 (g_i)        | ef21 (server g_i, weighted mean) |
| fedprox-ef | prox (all steps) | top-k | residual (EC)     | weighted mean |

``ef21`` is honest EF21: only ``c_i = topk(d_i - g_i)`` travels and both sides keep ``g_i``. The
FLARE reference code instead sends ``c_i + g_i`` (dense), which costs a full model per client.
``fedprox-ef`` uses the FLARE reference's prox term ``tau_r * sum (w_i - w)^2`` with
``tau_r = prox_tau0 / prox_decay^(r+1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import RunConfig
from ..errors import ConfigError
from ..flat import Layout
from .aggregation import EF21Aggregator, WeightedMean
from .compressors import Compressor, Identity, RandK, TopK
from .memory import EF21Memory, Memory, ResidualMemory
from .regularizers import FlareRegularizer, ProxRegularizer, Regularizer


@dataclass
class Parts:
    """The orthogonal parts a method is made of (each a small stateful object)."""

    regularizer: Regularizer
    compressor: Compressor
    memory: Memory
    aggregator: WeightedMean  # or a subclass (EF21Aggregator)

    def state_dict(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in ("regularizer", "compressor", "memory", "aggregator")}

    def load_state_dict(self, state: dict) -> None:
        for name, sub in state.items():
            getattr(self, name).load_state_dict(sub)


def _ef(cfg: RunConfig, layout: Layout, device, required: bool) -> Memory:
    if not cfg.ef:
        if required:
            raise ConfigError(f"method {cfg.method} is defined with error feedback; --no-ef applies to randk only")
        return Memory()
    return ResidualMemory(cfg.clients, layout.num_params, device)


def _flare_reg(cfg: RunConfig, layout: Layout) -> Regularizer:
    return FlareRegularizer(layout, cfg.flare_tau0, cfg.flare_decay, cfg.flare_steps, cfg.flare_percentile)


def _ef21_memory(cfg: RunConfig, layout: Layout, device) -> Memory:
    if not cfg.ef:
        raise ConfigError("method ef21 is defined with its own error feedback; --no-ef applies to randk only")
    return EF21Memory(cfg.clients, layout.num_params, device)


# Methods whose error feedback is part of their definition: config key ``ef`` is resolved to this
# value, and asking for the other is a ConfigError. ``randk`` lets ``ef`` choose; for ``none``
# (no compression) a residual memory would stay zero, so ``ef`` changes nothing.
FIXED_EF = {"topk": False, "topk-ef": True, "flare": True, "fedprox-ef": True, "ef21": True}

PartsBuilder = Callable[[RunConfig, Layout, object], Parts]

PRESETS: dict[str, PartsBuilder] = {
    "none": lambda cfg, layout, dev: Parts(Regularizer(), Identity(layout), Memory(), WeightedMean()),
    "topk": lambda cfg, layout, dev: Parts(
        Regularizer(), TopK(layout, cfg.density, cfg.topk_rounding), Memory(), WeightedMean()
    ),
    "topk-ef": lambda cfg, layout, dev: Parts(
        Regularizer(), TopK(layout, cfg.density, cfg.topk_rounding), _ef(cfg, layout, dev, True), WeightedMean()
    ),
    "randk": lambda cfg, layout, dev: Parts(
        Regularizer(), RandK(layout, cfg.density, cfg.topk_rounding), _ef(cfg, layout, dev, False), WeightedMean()
    ),
    "flare": lambda cfg, layout, dev: Parts(
        _flare_reg(cfg, layout), TopK(layout, cfg.density, cfg.topk_rounding), _ef(cfg, layout, dev, True), WeightedMean()
    ),
    "ef21": lambda cfg, layout, dev: Parts(
        Regularizer(),
        TopK(layout, cfg.density, cfg.topk_rounding),
        _ef21_memory(cfg, layout, dev),
        EF21Aggregator(cfg.clients, layout.num_params, dev),
    ),
    "fedprox-ef": lambda cfg, layout, dev: Parts(
        ProxRegularizer(cfg.prox_tau0, cfg.prox_decay),
        TopK(layout, cfg.density, cfg.topk_rounding),
        _ef(cfg, layout, dev, True),
        WeightedMean(),
    ),
}

DESCRIPTIONS = {
    "none": "FedAvg, no compression (dense fp32 updates)",
    "topk": "top-k per tensor, no error feedback",
    "topk-ef": "top-k per tensor with error feedback (EC)",
    "randk": "random-k per tensor from a shared seed; error feedback unless ef = false (--no-ef)",
    "flare": "FLARE: top-k EC + L1 pull toward w + accumulator on the first p local steps",
    "ef21": "EF21: top-k of (d_i - g_i), g_i kept by client and server, server applies mean g_i",
    "fedprox-ef": "FedProx + EC: top-k EC + tau_r * ||w_i - w||^2 on all local steps",
}


def build_parts(cfg: RunConfig, layout: Layout, device=None) -> Parts:
    """The parts of ``cfg.method`` for a model with ``layout``."""
    if cfg.method not in PRESETS:
        raise ConfigError(f"unknown method '{cfg.method}' (choose from: {', '.join(sorted(PRESETS))})")
    return PRESETS[cfg.method](cfg, layout, device)


__all__ = ["Parts", "PRESETS", "FIXED_EF", "DESCRIPTIONS", "build_parts", "ProxRegularizer"]
