"""flarebench's Flower ClientApp: one flarebench client per SuperNode, trained with flarebench's engine.

The node's partition comes from its node config (``partition-id``, ``num-partitions``; the simulation
engine sets them, a deployed SuperNode gets them with ``--node-config``). The client's persistent
state (error-feedback memory, optimizer buffers) lives in Flower's per-node ``context.state`` across
rounds, so a SuperNode that restarts has lost it (the server logs that). The uplink is flarebench's
encoded bytes, untouched. Message flow and the commit rule: protocol.py.
"""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ...errors import FlarebenchError
from . import protocol
from .node import ClientCache, config_from_json, config_key
from .records import pending_from_records, pending_to_records, record_to_tensors, tensors_to_record

app = ClientApp()
_cache = ClientCache()


def _reply(msg: Message, **values) -> Message:
    return Message(RecordDict({protocol.RECORD: ConfigRecord(values)}), reply_to=msg)


def _partition(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node config; FlarebenchError if absent or malformed."""
    nc = context.node_config
    try:
        pid, n = int(nc["partition-id"]), int(nc["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise FlarebenchError(
            "this SuperNode has no flarebench partition: start it with --node-config 'partition-id=I num-partitions=C'"
        ) from None
    if not 0 <= pid < n:
        raise FlarebenchError(f"partition-id {pid} is outside 0..{n - 1}")
    return pid, n


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Learn the run's config; say which flarebench client this node is and what state it holds."""
    fb = msg.content[protocol.RECORD]
    try:
        text, key = str(fb["config"]), str(fb["key"])
        if config_key(text) != key:
            raise FlarebenchError("config does not match its key")
        cfg = config_from_json(text)
        pid, n = _partition(context)
        if n != cfg.clients:
            raise FlarebenchError(f"node has num-partitions={n} but the run has {cfg.clients} clients")
    except FlarebenchError as e:
        return _reply(msg, error=str(e))
    old = context.state.config_records.get(protocol.STATE_META)
    same_run = old is not None and old["key"] == key  # a server that resumed greets its nodes again
    committed = int(old["committed"]) if same_run else protocol.NONE_COMMITTED
    if not same_run:  # another run's config (or none yet): start from the initial state
        for k in (protocol.STATE_TENSORS, protocol.PENDING_META, protocol.PENDING_TENSORS):
            if k in context.state:
                del context.state[k]
    context.state[protocol.STATE_META] = ConfigRecord(
        {"config": text, "key": key, "client": pid, "committed": committed, "threads": int(fb["client-threads"])}
    )
    return _reply(msg, **{"partition-id": pid, "num-partitions": n, "committed": committed})


def _setup(fb: ConfigRecord, context: Context):
    """(meta, cfg, ClientSide) for a train message; FlarebenchError if this node has not been told the config."""
    meta = context.state.config_records.get(protocol.STATE_META)
    if meta is None or meta["key"] != fb["key"]:
        raise FlarebenchError("this node does not know the run's config (restarted?): it needs a hello first")
    if int(fb["client"]) != int(meta["client"]):
        raise FlarebenchError(f"message for client {int(fb['client'])} reached client {int(meta['client'])}")
    if int(meta["threads"]) > 0 and torch.get_num_threads() != int(meta["threads"]):
        torch.set_num_threads(int(meta["threads"]))
    cfg = config_from_json(str(meta["config"]))
    return meta, cfg, _cache.client(str(meta["key"]), cfg, int(meta["client"]))


def _commit_or_drop(context: Context, meta: ConfigRecord, side, ack: int) -> int:
    """Settle the pending round: commit it if the server used it (round == ack), else drop it. -> committed round."""
    committed = int(meta["committed"])
    if protocol.PENDING_META in context.state.config_records:
        rnd, _ = pending_from_records(context.state[protocol.PENDING_TENSORS], context.state[protocol.PENDING_META],
                                      side.parts.compressor, side.device)
        if rnd.round_idx == ack:
            tensors = record_to_tensors(context.state[protocol.PENDING_TENSORS])
            rows = {k[len("state."):]: v.unsqueeze(0).to(side.device) for k, v in tensors.items() if k.startswith("state.")}
            side.end(rnd, rows)
            context.state[protocol.STATE_TENSORS] = tensors_to_record({k: v[0] for k, v in rows.items()})
            committed = ack
        del context.state[protocol.PENDING_META]
        del context.state[protocol.PENDING_TENSORS]
    meta["committed"] = committed
    return committed


def _save_pending(context: Context, rnd, raw: list, rows: dict | None) -> None:
    arrays, config = pending_to_records(rnd, raw)
    if rows is not None:  # the state as the round left it (begin may update optimizer buffers)
        for k, v in rows.items():
            arrays[f"state.{k}"] = tensors_to_record({k: v[0]})[k]
    else:  # a later phase: keep the state saved by begin
        for k, v in context.state[protocol.PENDING_TENSORS].items():
            if k.startswith("state."):
                arrays[k] = v
    context.state[protocol.PENDING_TENSORS] = arrays
    context.state[protocol.PENDING_META] = config


@app.train("begin")
def begin(msg: Message, context: Context) -> Message:
    """Settle the last round, train from the global weights, reply with the phase-0 bytes."""
    fb = msg.content[protocol.RECORD]
    try:
        meta, cfg, side = _setup(fb, context)
    except FlarebenchError as e:
        return _reply(msg, error=str(e))
    ack, r, cid = int(fb["ack"]), int(fb["round"]), int(meta["client"])
    committed = _commit_or_drop(context, meta, side, ack)
    if protocol.STATE_TENSORS in context.state.array_records:
        state = record_to_tensors(context.state[protocol.STATE_TENSORS])
    else:
        state = side.initial_state()
    rows = {k: v.unsqueeze(0).to(side.device) for k, v in state.items()}
    w = record_to_tensors(msg.content[protocol.WEIGHTS])["w"].to(side.device)
    broadcast = fb.get("broadcast")
    rnd = side.begin(w, r, [cid], rows, None if broadcast is None else bytes(broadcast))
    _save_pending(context, rnd, [None if broadcast is None else bytes(broadcast)], rows)
    loss_sum, samples = rnd.loss_sums[0] if rnd.loss_sums else (float(rnd.train_loss), 1)
    return _reply(msg, uplink=rnd.uplink[0][0], **{"train-loss-sum": float(loss_sum), "samples": int(samples),
                                                   "committed": committed, "lost": committed != ack})


@app.train("phase")
def phase(msg: Message, context: Context) -> Message:
    """A later phase of a multi-phase compressor: reply with this phase's bytes, given the server's broadcast."""
    fb = msg.content[protocol.RECORD]
    try:
        meta, cfg, side = _setup(fb, context)
        if protocol.PENDING_META not in context.state.config_records:
            raise FlarebenchError(f"no round in progress for phase {int(fb['phase'])}")
        rnd, raw = pending_from_records(context.state[protocol.PENDING_TENSORS], context.state[protocol.PENDING_META],
                                        side.parts.compressor, side.device)
        if rnd.round_idx != int(fb["round"]) or len(rnd.uplink) != int(fb["phase"]):
            raise FlarebenchError(f"phase {int(fb['phase'])} of round {int(fb['round'])} does not follow this node's round")
    except FlarebenchError as e:
        return _reply(msg, error=str(e))
    broadcast = bytes(fb["broadcast"]) if "broadcast" in fb else None
    up = side.respond(rnd, int(fb["phase"]), broadcast)
    _save_pending(context, rnd, [*raw, broadcast], None)
    return _reply(msg, uplink=up[0])


__all__ = ["app"]
