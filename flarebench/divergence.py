"""Divergence: when a run's losses or weights have blown up, and what the run does then.

A run has diverged at the first round where any of these holds (checked after every metrics row):

- the test loss (evaluated rounds) is not finite, or above ``FACTOR`` x the first evaluated test loss
  (round 0: the initial model);
- the mean local training loss is not finite, or above ``FACTOR`` x round 1's;
- the global weights ``[P]`` are not all finite, or their L2 norm is above ``FACTOR`` x the initial
  norm (``max(norm_0, 1)``, so a zero-initialised model has a floor).

``FACTOR`` = 100 is the same test-loss rule the figures use to mark a diverged run (plots.py). A
healthy run stays far below it: a classifier's initial test loss is about ln(classes), and training
lowers it; a method whose unbiased estimator is not scaled back (random-k with ``scale=true`` and no
error feedback) multiplies the update's variance by 1/density and lands at losses of 10^4 and more.

``--on-divergence``: ``continue`` (default) keeps the run going, with a warning, so that a diverged
method is compared over the same rounds and bits as its peers and results match earlier versions;
``stop`` ends the run after the round that diverged (the sweep-time saver). Either way config.json
records ``diverged = {round, reason, policy}`` and ``list``/``compare`` mark the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FACTOR = 100.0  # a loss or weight norm above this multiple of its first value: diverged
POLICIES = ("continue", "stop")


@dataclass
class Divergence:
    """Where and why a run diverged (config.json's ``diverged``)."""

    round: int
    reason: str
    policy: str

    def to_dict(self) -> dict:
        return {"round": self.round, "reason": self.reason, "policy": self.policy}

    def describe(self) -> str:
        then = "the run stopped there (--on-divergence stop)" if self.policy == "stop" else "the run goes on (--on-divergence continue)"
        return f"diverged at round {self.round}: {self.reason}; {then}"


def _bad(value: float | None, first: float | None) -> bool:
    return value is not None and (not math.isfinite(value) or (first is not None and value > FACTOR * first))


class DivergenceCheck:
    """Watches a run's rows and weights; :meth:`check` returns the first :class:`Divergence`, then None."""

    def __init__(self, policy: str = "continue"):
        if policy not in POLICIES:
            raise ValueError(f"on_divergence must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.first_test: float | None = None
        self.first_train: float | None = None
        self.first_norm: float | None = None
        self.found: Divergence | None = None

    @property
    def stopping(self) -> bool:
        """Whether the run ends after this round (diverged, policy stop)."""
        return self.found is not None and self.policy == "stop"

    def start(self, rows: list[dict], w0_norm: float) -> None:
        """Reference values: the first evaluated test loss and round 1's training loss among ``rows`` (a
        resumed run's rows so far), and the initial weights' norm."""
        self.first_norm = max(w0_norm, 1.0)
        for row in rows:
            self.check(int(row["round"]), row.get("train_loss"), watched_loss(row))
        self.found = None

    def check(self, rnd: int, train_loss: float | None = None, test_loss: float | None = None,
              w: torch.Tensor | None = None) -> Divergence | None:
        """The divergence found at round ``rnd`` from what is given (once per run), else None."""
        if self.found is not None:
            return None
        reason = None
        if _bad(test_loss, self.first_test):
            reason = f"test loss {test_loss:.4g} (first evaluation: {self.first_test:.4g}; limit {FACTOR:g}x)"
        elif _bad(train_loss, self.first_train):
            reason = f"training loss {train_loss:.4g} (round 1: {self.first_train:.4g}; limit {FACTOR:g}x)"
        elif w is not None:
            norm = float(torch.linalg.vector_norm(w.detach().float()))
            if _bad(norm, self.first_norm):
                reason = f"weights' L2 norm {norm:.4g} (initial: {self.first_norm:.4g}; limit {FACTOR:g}x)"
        if self.first_test is None and test_loss is not None and math.isfinite(test_loss):
            self.first_test = test_loss
        if self.first_train is None and train_loss is not None and math.isfinite(train_loss) and rnd >= 1:
            self.first_train = train_loss
        if reason is not None:
            self.found = Divergence(rnd, reason, self.policy)
        return self.found


def watched_loss(row: dict) -> float | None:
    """The evaluation loss of a metrics row that divergence is watched on: the test loss, or the validation
    loss where the test set is not evaluated (``evaluate_test = false``)."""
    return row.get("test_loss") if row.get("test_loss") is not None else row.get("val_loss")


def marked(status: str, meta: dict) -> str:
    """A run's status as ``list`` and ``compare`` show it: ``status`` plus ``, DIVERGED at round R`` (and
    ``(stopped)``) when its config.json records a divergence."""
    d = meta.get("diverged")
    if not isinstance(d, dict) or not isinstance(d.get("round"), int):
        return status
    return f"{status}, DIVERGED at round {d['round']}" + (" (stopped)" if d.get("policy") == "stop" else "")


__all__ = ["Divergence", "DivergenceCheck", "FACTOR", "POLICIES", "marked"]
