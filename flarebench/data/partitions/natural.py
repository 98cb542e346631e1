"""``natural``: the dataset's own owners (e.g. Shakespeare speakers, LEAF users): client i is natural client i,
cut to its first ``samples_per_client`` samples if that is given."""

from __future__ import annotations

from ...errors import ConfigError
from ...methods.registry import register
from .base import PartitionPart


@register
class Natural(PartitionPart):
    name = "natural"
    summary = "the dataset's own clients (speakers, users), the first C of them"
    needs_natural = True

    def split(self, labels, clients, seed, samples_per_client, natural):
        if natural is None:
            raise ConfigError("partition 'natural' needs a dataset with its own clients (e.g. shakespeare)")
        if clients > len(natural):
            raise ConfigError(f"the dataset has {len(natural)} natural clients, fewer than clients={clients}")
        chosen = natural[:clients]
        if samples_per_client is not None:
            chosen = [c[:samples_per_client] for c in chosen]
        return chosen
