"""The messages between flarebench's ServerApp and ClientApp (one ConfigRecord ``fb`` each, plus arrays).

    query.hello   server -> every node, once per node: {config (JSON), key, client-threads}
                  reply: {partition-id, num-partitions, committed}            (or {error})
    train.begin   server -> each selected client: {round, client, key, ack, [broadcast]} + ArrayRecord w [P] fp32
                  reply: {uplink (flarebench's bytes), train-loss, samples, committed, lost}
    train.phase   server -> clients still in the round, phases >= 1: {round, phase, client, key, [broadcast]}
                  reply: {uplink}

A client commits a round (``ClientSide.end``: its memory learns what the server decoded) only when the
server says it used that round: ``ack`` in the client's next ``train.begin`` is the last round the
server aggregated this client's bytes in. Until then the round stays pending in the node's context
state; a round the server did not use (reply too late, node dropped mid-round, server resumed from a
checkpoint) is discarded. ``committed`` is the round the client's state belongs to (-1: initial); a
``committed`` other than ``ack`` means the node lost its state (a restarted SuperNode).
"""

HELLO = "query.hello"
BEGIN = "train.begin"
PHASE = "train.phase"
RECORD = "fb"  # the ConfigRecord of every flarebench message
WEIGHTS = "w"  # the ArrayRecord of train.begin: {"w": [P] float32}

# context.state keys on a node
STATE_META = "fb.meta"  # ConfigRecord: config, key, client, committed
STATE_TENSORS = "fb.state"  # ArrayRecord: the client's persistent state (memory, optimizer buffers)
PENDING_META = "fb.pending"  # ConfigRecord: the round in progress (pending_to_records)
PENDING_TENSORS = "fb.pending.v"  # ArrayRecord: its v [P]

NONE_COMMITTED = -1
