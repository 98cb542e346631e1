"""flarebench's objects in Flower's records, and the size of a Flower message on the wire.

- flarebench's encoded bytes travel untouched as a ConfigRecord ``bytes`` value: the payload bits
  stay ``8 * len(bytes)``, counted by the server side exactly as on the local backend;
- tensors (the global weights ``[P]`` fp32, a client's state ``{name: [P]}``) travel and persist as
  ArrayRecords (NumPy arrays, as Flower serializes them);
- :func:`transport_bits`: 8 x the bytes of every object Flower serializes for a message (the message
  with its metadata, its RecordDict, each record, each array and array chunk, each once), i.e. what a
  SuperLink stores and a SuperNode pulls or pushes for it; gRPC/HTTP/TLS framing is not included.
"""

from __future__ import annotations

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from ...engine.client import ClientRound


def transport_bits(message: Message) -> int:
    """Bits of ``message`` as Flower serializes it: 8 x the summed deflated size of its object tree."""
    seen: dict[str, int] = {}

    def walk(obj) -> None:
        for child in (obj.children or {}).values():
            walk(child)
        seen[obj.object_id] = len(obj.deflate())

    walk(message)
    return 8 * sum(seen.values())


def tensors_to_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    """``{name: tensor}`` -> ArrayRecord (CPU copies; dtype and shape kept)."""
    return ArrayRecord({k: Array(v.detach().cpu().contiguous().numpy()) for k, v in tensors.items()})


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> ``{name: tensor}`` (writable CPU tensors)."""
    return {k: torch.from_numpy(a.numpy().copy()) for k, a in record.items()}


def pending_to_records(rnd: ClientRound, raw_broadcasts: list[bytes | None]) -> tuple[ArrayRecord, ConfigRecord]:
    """One client's round in progress (K = 1), to be kept in its context state between messages.

    ``raw_broadcasts[p]``: the server's broadcast bytes before phase p (None: none); the decoded ones
    are rebuilt from them, so what the client decodes is the same after a restore.
    """
    config: dict = {"round": rnd.round_idx, "client": rnd.ids[0], "phases": len(rnd.uplink), "train-loss": rnd.train_loss}
    for p, up in enumerate(rnd.uplink):
        config[f"uplink.{p}"] = up[0]
    for p, b in enumerate(raw_broadcasts):
        if b is not None:
            config[f"broadcast.{p}"] = b
    return tensors_to_record({"v": rnd.v}), ConfigRecord(config)


def pending_from_records(arrays: ArrayRecord, config: ConfigRecord, compressor, device) -> tuple[ClientRound, list[bytes | None]]:
    """The inverse of :func:`pending_to_records`: the ClientRound and the raw broadcast bytes."""
    phases = int(config["phases"])
    raw = [config.get(f"broadcast.{p}") for p in range(phases)]
    rnd = ClientRound(int(config["round"]), [int(config["client"])], record_to_tensors(arrays)["v"].to(device),
                      train_loss=float(config["train-loss"]))
    rnd.uplink = [[bytes(config[f"uplink.{p}"])] for p in range(phases)]
    rnd.broadcasts = [None if b is None else compressor.decode(b) for b in raw]
    return rnd, raw


__all__ = ["transport_bits", "tensors_to_record", "record_to_tensors", "pending_to_records", "pending_from_records"]
