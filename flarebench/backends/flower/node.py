"""What a Flower node builds from a run's config: the data, its partition, the model and the parts.

Every node (the ServerApp and each ClientApp) builds them itself from the shared config and seed,
with the local backend's own ``world.build_world``, so the partition a
node trains on and the initial weights are the local backend's. The config travels as the JSON of
``RunConfig.to_dict()`` and is rebuilt with ``make_config`` (as ``--resume`` does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from ...config import RunConfig, make_config
from ...engine.client import ClientSide
from ...errors import ConfigError
from ...flat import Layout
from ...methods.presets import build_parts


def config_json(cfg: RunConfig) -> str:
    """The resolved config as the JSON text that travels to the nodes."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def config_key(text: str) -> str:
    """A short fingerprint of a config's JSON (16 hex digits): every message names the config it belongs to."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_from_json(text: str) -> RunConfig:
    """A RunConfig from :func:`config_json`'s text; ConfigError if it is not one."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"flarebench config is not JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError("flarebench config must be a JSON object of run options")
    return make_config(**values)


def client_engine_config(cfg: RunConfig) -> RunConfig:
    """The config a node trains with: ``engine auto`` is the sequential engine (a node trains one client)."""
    return cfg.replace(engine="sequential") if cfg.engine == "auto" else cfg


@dataclass
class NodeSetup:
    """A node's view of the run: device, data (on the device), every client's rows, model, layout, validation rows."""

    cfg: RunConfig
    device: torch.device
    data: object
    client_indices: list[torch.Tensor]
    model: torch.nn.Module
    layout: Layout
    validation: torch.Tensor  # rows held out of the clients' training data (world.hold_out), evaluated on the server

    @property
    def client_sizes(self) -> torch.Tensor:
        """float32 ``[C]``: samples per client (the aggregation weights)."""
        return torch.tensor([len(i) for i in self.client_indices], dtype=torch.float32)


def node_setup(cfg: RunConfig) -> NodeSetup:
    """Data, partition, model (initial weights seeded as the local backend seeds them) for ``cfg``."""
    from ...world import build_world

    w = build_world(cfg)
    return NodeSetup(cfg, w.device, w.data, w.clients, w.model, Layout.of(w.model), w.validation)


class ClientCache:
    """Per process: the node setup of each config seen, and one ClientSide per (config, client).

    A Flower simulation runs many clients in a few long-lived processes; a deployed SuperNode starts a
    process per message, so there the cache only saves work within one message.
    """

    def __init__(self):
        self.setups: dict[str, NodeSetup] = {}
        self.clients: dict[tuple[str, int], ClientSide] = {}

    def client(self, key: str, cfg: RunConfig, cid: int) -> ClientSide:
        """The client half for client ``cid`` (its own partition only), built once per process."""
        if (key, cid) not in self.clients:
            if key not in self.setups:
                self.setups = {key: node_setup(client_engine_config(cfg))}  # one config at a time
                self.clients = {}
            s = self.setups[key]
            parts = build_parts(s.cfg, s.layout, s.device)
            self.clients[(key, cid)] = ClientSide(s.cfg, s.model, s.layout, parts, s.data.x_train, s.data.y_train,
                                                  {cid: s.client_indices[cid]}, s.device)
        return self.clients[(key, cid)]


__all__ = ["config_json", "config_key", "config_from_json", "client_engine_config", "NodeSetup", "node_setup", "ClientCache"]
