"""The server half of a run over Flower: flarebench's ServerSide, with Flower messages as the transport.

:class:`FlowerFederation` is what ``runner.execute`` drives (``run_round``, ``evaluate``, ``state_dict``),
so a Flower run writes the same run directory, checkpoints and resumes as a local one. A round is the
local backend's round with messages in between:

    ids = server.sample_clients(r)              seeded, over all C clients, as on the local backend
    b = server.begin(r, reachable ids)          reachable: the selected clients whose node is known
    train.begin -> clients, replies: bytes      the round goes on with the replies that arrive
    b = server.receive(0, ids that replied, bytes)   (train.phase for multi-phase compressors)
    stats = server.finish()

Faults: a phase waits for replies until all have arrived, ``reply_timeout`` seconds have passed, or
(``straggler_timeout`` > 0) ``min_clients`` have answered and no reply came for that long; the round
goes on with the clients that answered (``clients`` in metrics.csv counts them). If fewer than
``min_clients`` answered, the run stops (status failed; ``--resume`` redoes the round). Nodes that
join or come back get a hello; a client whose node lost its state is logged (``flower-events.log``
in the run directory, and a warning). Flower-level bits: ``uplink_transport_bits`` (every reply
received) and ``downlink_transport_bits`` (every message sent), records.transport_bits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from ...engine.round import RoundStats
from ...engine.select import EngineChoice
from ...engine.sequential import evaluate, mean_loss
from ...world import validation_set
from ...engine.server import ServerSide
from ...errors import ConfigError, FlarebenchError
from ...methods.presets import build_parts
from . import protocol
from .node import NodeSetup, config_json, config_key
from .records import tensors_to_record, transport_bits

log = logging.getLogger("flarebench.flower")

TRANSPORT_COLUMNS = ["uplink_transport_bits", "downlink_transport_bits"]  # bits of Flower's serialized messages


class FederationError(FlarebenchError):
    """The federation cannot go on (too few clients answered): the run stops, resumable."""


@dataclass
class FlowerOptions:
    """How the server side waits for a federation (run-config keys in parentheses)."""

    reply_timeout: float = 600.0  # (reply-timeout) s a phase waits for its replies
    straggler_timeout: float = 0.0  # (straggler-timeout) once min-clients answered, s without a new reply that end the phase; 0: off
    min_clients: int = 1  # (min-clients) fewer answers in a round stop the run
    node_timeout: float = 120.0  # (node-timeout) s the first round waits for a node of every client
    client_threads: int = 0  # (client-threads) torch threads per client; 0: torch's default on the node
    poll_s: float = 0.05  # s between two pulls of replies

    KEYS = {"reply-timeout": "reply_timeout", "straggler-timeout": "straggler_timeout", "min-clients": "min_clients",
            "node-timeout": "node_timeout", "client-threads": "client_threads"}

    @classmethod
    def from_run_config(cls, rc) -> "FlowerOptions":
        """From a Flower run config (keys as in :attr:`KEYS`; missing keys keep their defaults)."""
        opts = cls(**{attr: type(getattr(cls, attr))(rc[key]) for key, attr in cls.KEYS.items() if key in rc})
        opts.check()
        return opts

    def check(self) -> None:
        if not self.reply_timeout > 0:
            raise ConfigError(f"reply-timeout must be > 0 seconds, got {self.reply_timeout}")
        if self.straggler_timeout < 0:
            raise ConfigError(f"straggler-timeout must be >= 0 seconds (0: off), got {self.straggler_timeout}")
        if self.min_clients < 1:
            raise ConfigError(f"min-clients must be >= 1, got {self.min_clients}")
        if self.node_timeout < 0:
            raise ConfigError(f"node-timeout must be >= 0 seconds, got {self.node_timeout}")
        if self.client_threads < 0:
            raise ConfigError(f"client-threads must be >= 0, got {self.client_threads}")


@dataclass
class FlowerRoundStats(RoundStats):
    """A round's stats plus the Flower transport columns (``extra``: column -> value)."""

    extra: dict = field(default_factory=dict)


@dataclass
class _Reply:
    client: int
    uplink: bytes
    record: ConfigRecord


class FlowerFederation:
    """The server side of a run whose clients are Flower nodes reached through ``grid``."""

    extra_columns = TRANSPORT_COLUMNS

    def __init__(self, node: NodeSetup, grid, options: FlowerOptions, events_path: Path | None = None):
        cfg = node.cfg
        self.cfg, self.model, self.layout, self.device = cfg, node.model, node.layout, node.device
        self.x_test, self.y_test = node.data.x_test, node.data.y_test
        self.x_val, self.y_val = validation_set(node.data, node.validation)  # evaluated here, as the local backend does
        self.parts = build_parts(cfg, node.layout, node.device)
        self.server = ServerSide(cfg, node.layout, self.parts, node.layout.flatten(node.model), node.client_sizes, node.device)
        self.client_sizes = self.server.client_sizes
        # whether clients keep state across rounds (memory, optimizer buffers): losing it is worth a log line
        self.stateful = bool(self.parts.memory.init_state(1)) or bool(cfg.keep_optimizer_state and cfg.momentum)
        requested = cfg.engine
        engine = "sequential" if requested == "auto" else requested
        self.engine_choice = EngineChoice(requested, engine, "flower backend: each node trains its one client"
                                          if requested == "auto" else "as requested, on every node")
        self.grid, self.opts, self.events_path = grid, options, events_path
        self.config_text = config_json(cfg)
        self.key = config_key(self.config_text)
        self.node_of: dict[int, int] = {}  # flarebench client -> Flower node id
        self.known: set[int] = set()  # nodes that got a hello (whatever they answered)
        self.accepted = torch.full((cfg.clients,), protocol.NONE_COMMITTED, dtype=torch.int64)  # last round each client's bytes were used
        self._down = self._up = 0
        self._errors: list[str] = []  # the round's error replies (first lines), for the line that stops the run

    @property
    def w(self) -> torch.Tensor:
        return self.server.w

    # ------------------------------------------------------------------ the round
    def run_round(self, round_idx: int) -> FlowerRoundStats:
        """Round ``round_idx`` (0-based) over Flower; see the module docstring."""
        self._down = self._up = 0
        self._errors = []
        self._refresh_nodes(round_idx, wait_all=(round_idx == 0 or not self.node_of))
        server, phases = self.server, self.parts.compressor.phases
        selected = server.sample_clients(round_idx)
        reachable = [c for c in selected if c in self.node_of]
        if len(reachable) < len(selected):
            self._event(round_idx, f"clients {_ids(set(selected) - set(reachable))} have no node; the round goes on without them")
        broadcast = server.begin(round_idx, reachable)
        w = tensors_to_record({"w": server.w.to(torch.float32)})
        replies = self._exchange(round_idx, {c: self._begin_message(round_idx, c, w, broadcast) for c in reachable}, "begin")
        self._check_states(round_idx, replies)
        ids = [c for c in reachable if c in replies]
        broadcast = server.receive(0, ids, [replies[c].uplink for c in ids])
        losses = {c: (float(replies[c].record["train-loss-sum"]), int(replies[c].record["samples"])) for c in ids}
        for phase in range(1, phases):
            ids = list(server.round.ids)
            more = self._exchange(round_idx, {c: self._phase_message(round_idx, phase, c, broadcast) for c in ids}, f"phase {phase}")
            got = [c for c in ids if c in more]
            broadcast = server.receive(phase, got, [more[c].uplink for c in got])
        done = list(server.round.ids)
        if len(done) < self.opts.min_clients:
            errors = (f", {len(self._errors)} replied with an error (the first: {self._errors[0]})" if self._errors else "")
            raise FederationError(
                f"round {round_idx + 1}: {len(done)} of {len(selected)} clients answered within {self.opts.reply_timeout:g} s"
                f"{errors} (min-clients {self.opts.min_clients}); the run stops here, resume it when "
                + ("the error is fixed" if self._errors else "the nodes are back")
            )
        stats = server.finish()
        self.accepted[stats.ids] = round_idx
        train_loss = mean_loss([losses[c] for c in stats.ids])  # the local backend's expression, same order
        return FlowerRoundStats(
            round=round_idx + 1, clients=stats.ids, train_loss=train_loss, nnz=stats.nnz, uplink_bits=stats.uplink_bits,
            downlink_bits=stats.downlink_bits, uplink_bound_bits=stats.uplink_bound_bits, codecs=stats.codecs,
            extra={"uplink_transport_bits": self._up, "downlink_transport_bits": self._down},
        )

    def evaluate(self) -> tuple[float, float]:
        """(test loss, test accuracy) of the global model on the central test set (on the server)."""
        return evaluate(self.model, self.layout, self.server.w, self.x_test, self.y_test, self.cfg.eval_batch_size)

    # ------------------------------------------------------------------ messages
    def _message(self, client: int, kind: str, round_idx: int, values: dict, arrays: ArrayRecord | None = None) -> Message:
        content = RecordDict({protocol.RECORD: ConfigRecord(values)})
        if arrays is not None:
            content[protocol.WEIGHTS] = arrays
        ttl = self.opts.reply_timeout + 60.0  # a message nobody answered in time expires instead of waiting on the SuperLink
        return Message(content, self.node_of[client], kind, group_id=str(round_idx + 1), ttl=ttl)

    def _begin_message(self, round_idx: int, client: int, w: ArrayRecord, broadcast: bytes | None) -> Message:
        values = {"round": round_idx, "client": client, "key": self.key, "ack": int(self.accepted[client])}
        if broadcast is not None:
            values["broadcast"] = broadcast
        return self._message(client, protocol.BEGIN, round_idx, values, w)

    def _phase_message(self, round_idx: int, phase: int, client: int, broadcast: bytes | None) -> Message:
        values = {"round": round_idx, "phase": phase, "client": client, "key": self.key}
        if broadcast is not None:
            values["broadcast"] = broadcast
        return self._message(client, protocol.PHASE, round_idx, values)

    def _send(self, messages: list[Message]) -> tuple[list[str], dict[str, Message]]:
        """Push, then pull until every message has a reply, ``reply_timeout`` passed, or (with a straggler
        timeout) min-clients answered and no reply came for ``straggler_timeout`` s. -> (ids, replies by id)."""
        ids = list(self.grid.push_messages(messages))
        self._down += sum(transport_bits(m) for m in messages)
        pending, replies, answered = set(ids), {}, 0
        start = last = time.monotonic()
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                mid = reply.metadata.reply_to_message_id
                if mid in pending:
                    pending.discard(mid)
                    replies[mid] = reply
                    if reply.has_content():
                        self._up += transport_bits(reply)
                        answered, last = answered + 1, time.monotonic()
            now = time.monotonic()
            if not pending or now - start >= self.opts.reply_timeout:
                break
            s = self.opts.straggler_timeout
            if s > 0 and answered >= self.opts.min_clients and now - last >= s:
                break
            time.sleep(self.opts.poll_s)
        return ids, replies

    def _exchange(self, round_idx: int, messages: dict[int, Message], what: str) -> dict[int, _Reply]:
        """Send ``{client: message}``; -> ``{client: reply}`` for the well-formed replies; the rest are logged."""
        if not messages:
            return {}
        clients = list(messages)
        ids, replies = self._send([messages[c] for c in clients])
        out, silent = {}, []
        for c, mid in zip(clients, ids):
            reply = replies.get(mid)
            if reply is None:
                silent.append(c)
            elif reply.has_error():
                self._client_error(round_idx, f"client {c} ({what}): {reply.error.reason or 'error'} (code {reply.error.code})")
            elif "error" in reply.content[protocol.RECORD]:
                self._client_error(round_idx, f"client {c} ({what}): {reply.content[protocol.RECORD]['error']}")
                if "hello" in str(reply.content[protocol.RECORD]["error"]):
                    self.known.discard(self.node_of[c])  # a node that forgot the config gets a hello next round
            else:
                out[c] = _Reply(c, bytes(reply.content[protocol.RECORD]["uplink"]), reply.content[protocol.RECORD])
        if silent:
            self._event(round_idx, f"clients {_ids(silent)} did not answer {what} within {self.opts.reply_timeout:g} s; "
                                   "the round goes on without them")
        return out

    def _client_error(self, round_idx: int, line: str) -> None:
        """Log a client's error reply and keep its first line for the round's verdict."""
        self._event(round_idx, line)
        self._errors.append(next((part for part in line.splitlines() if part.strip()), line)[:300])

    # ------------------------------------------------------------------ nodes
    def _refresh_nodes(self, round_idx: int, wait_all: bool) -> None:
        """Hello every node not seen yet; forget nodes Flower no longer lists. ``wait_all``: wait (up to
        ``node_timeout``) until every client has a node."""
        deadline = time.monotonic() + (self.opts.node_timeout if wait_all else 0.0)
        while True:
            nodes = set(self.grid.get_node_ids())
            for c, n in list(self.node_of.items()):
                if n not in nodes:
                    del self.node_of[c]
            self.known &= nodes
            new = sorted(nodes - self.known)
            if new:
                self._hello(round_idx, new)
            if len(self.node_of) == self.cfg.clients or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if wait_all and len(self.node_of) < self.cfg.clients:
            missing = sorted(set(range(self.cfg.clients)) - set(self.node_of))
            self._event(round_idx, f"after {self.opts.node_timeout:g} s, clients {_ids(missing)} have no node; going on without them")

    def _hello(self, round_idx: int, nodes: list[int]) -> None:
        values = {"config": self.config_text, "key": self.key, "client-threads": self.opts.client_threads}
        ttl = self.opts.reply_timeout + 60.0
        messages = [Message(RecordDict({protocol.RECORD: ConfigRecord(values)}), n, protocol.HELLO, ttl=ttl) for n in nodes]
        ids, replies = self._send(messages)
        for n, mid in zip(nodes, ids):
            self.known.add(n)
            reply = replies.get(mid)
            if reply is None or reply.has_error():
                self.known.discard(n)  # try again next round
                continue
            fb = reply.content[protocol.RECORD]
            if "error" in fb:
                self._event(round_idx, f"node {n}: {fb['error']}")
                continue
            c = int(fb["partition-id"])
            if c in self.node_of and self.node_of[c] != n:
                self._event(round_idx, f"client {c} is now on node {n} (was node {self.node_of[c]})")
            self.node_of[c] = n

    def _check_states(self, round_idx: int, replies: dict[int, _Reply]) -> None:
        """Log every client whose node does not hold the state the server expects (a restarted SuperNode)."""
        for c, r in replies.items():
            if self.stateful and bool(r.record["lost"]) and int(self.accepted[c]) != protocol.NONE_COMMITTED:
                self._event(round_idx, f"client {c} lost its state (its SuperNode restarted?): it holds round "
                                       f"{int(r.record['committed']) + 1}'s state, not round {int(self.accepted[c]) + 1}'s; "
                                       "it goes on from there (error-feedback memory reset)")

    def _event(self, round_idx: int, text: str) -> None:
        line = f"round {round_idx + 1}: {text}"
        log.warning("flower: %s", line)
        if self.events_path is not None and self.events_path.parent.is_dir():
            with open(self.events_path, "a") as f:
                f.write(line + "\n")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The server side's state and the round each client was last used in (clients keep their own state)."""
        return {"server": self.server.state_dict(), "accepted": self.accepted.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.server.load_state_dict(state["server"])
        self.accepted.copy_(state["accepted"])


def _ids(clients) -> str:
    return ",".join(str(c) for c in sorted(clients))


__all__ = ["FlowerFederation", "FlowerOptions", "FlowerRoundStats", "FederationError", "TRANSPORT_COLUMNS"]
