"""``synthetic``: Synthetic(alpha, beta) of FedProx (Li et al., MLSys 2020, section 5.1 and appendix C).

A heterogeneous federated benchmark generated in memory (no download): 60 features, 10 classes,
``users`` clients. For client k (as in the paper and the authors' ``generate_synthetic.py``,
github.com/litian96/FedProx, data/synthetic_*):

- its model: ``u_k ~ N(0, alpha)``; ``W_k ~ N(u_k, 1)`` ``[60, 10]`` and ``b_k ~ N(u_k, 1)`` ``[10]`` (one
  ``u_k`` for both, as the authors' code: ``mean_b = mean_W``): alpha = how much local models differ (alpha and
  beta are standard deviations, as in the authors' numpy calls; 1 either way for Synthetic(1,1));
- its features: ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` ``[60]``; ``x ~ N(v_k, Sigma)`` with Sigma diagonal,
  ``Sigma_jj = j^-1.2`` (j = 1..60): beta = how much local data differ;
- labels ``y = argmax(softmax(W_k^T x + b_k))`` (= argmax of the logits);
- sizes: ``n_k = floor(lognormal(mean 4, sigma 2)) + 50`` samples (the authors' power law);
- split: each client's first ``floor(0.9 n_k)`` samples train, the rest test (the authors shuffle, then
  cut 90/10; the samples are i.i.d. draws, so the cut is the same in distribution). The run's test set is
  the union of the clients' test samples: its accuracy is the sample-weighted mean of the per-client test
  accuracies the authors report.
- ``iid``: the authors' Synthetic-IID (data/synthetic_iid): one ``W``, ``b`` ~ N(0, 1) for all clients and
  ``x ~ N(0, Sigma)``. Here ``x ~ N(B_k 1, Sigma)`` with ``B_k ~ N(0, beta)``: theirs at ``beta = 0`` (an
  extension for ``beta > 0``: shifted features, one labelling model); ``alpha`` is unused.

``natural_clients`` are the generated users (client i of partition ``natural`` is user i), so
``--partition natural --clients 30`` is the paper's setup (alpha = beta = 1: their Synthetic(1,1)).

Seed: the dataset's own ``seed`` parameter (default 0), not the run's ``--seed``: runs with seeds 0, 1, 2
repeat training on one benchmark, as the authors' fixed JSON files do; ``seed = -1`` draws it from the run's
seed instead (a new benchmark per run seed). Same seed, same data, on every machine (numpy's PCG64).

Deviations: numpy's seeded PCG64 generator (the authors' script uses the unseeded global RNG, so their JSON
files are one draw, which this does not reproduce bit for bit); Gaussian features are drawn as
``v_k + sqrt(diag Sigma) * z`` (the same distribution as their ``multivariate_normal`` with a diagonal
covariance). The authors train multinomial logistic regression on it: model ``logreg``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..methods.registry import Param, non_negative, positive, register
from .base import Dataset, DatasetPart, DataSpec

FEATURES = 60
CLASSES = 10
TRAIN_FRACTION = 0.9


def generate_synthetic(alpha: float = 1.0, beta: float = 1.0, users: int = 30, iid: bool = False, seed: int = 0) -> Dataset:
    """The Synthetic(alpha, beta) Dataset: float32 ``x`` ``[N, 60]``, int64 ``y`` ``[N]`` in 0..9, one natural client per user."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4.0, 2.0, users).astype(np.int64) + 50
    scale = np.arange(1, FEATURES + 1, dtype=np.float64) ** -0.6  # sqrt(Sigma_jj) = (j^-1.2)^(1/2)
    u = rng.normal(0.0, alpha, users)
    B = rng.normal(0.0, beta, users)
    means = np.repeat(B[:, None], FEATURES, axis=1) if iid else rng.normal(B[:, None], 1.0, (users, FEATURES))
    if iid:
        W_all, b_all = rng.normal(0.0, 1.0, (FEATURES, CLASSES)), rng.normal(0.0, 1.0, CLASSES)
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for k in range(users):
        if iid:
            W, b = W_all, b_all
        else:
            W, b = rng.normal(u[k], 1.0, (FEATURES, CLASSES)), rng.normal(u[k], 1.0, CLASSES)
        x = means[k] + scale * rng.standard_normal((int(sizes[k]), FEATURES))
        y = np.argmax(x @ W + b, axis=1)
        cut = int(TRAIN_FRACTION * len(x))
        xs_tr.append(x[:cut]), ys_tr.append(y[:cut]), xs_te.append(x[cut:]), ys_te.append(y[cut:])
    bounds = np.cumsum([0] + [len(y) for y in ys_tr])
    natural = [torch.arange(int(a), int(b_)) for a, b_ in zip(bounds[:-1], bounds[1:])]

    def cat(parts, dtype):
        return torch.from_numpy(np.concatenate(parts)).to(dtype)

    return Dataset(
        "synthetic", cat(xs_tr, torch.float32), cat(ys_tr, torch.int64), cat(xs_te, torch.float32), cat(ys_te, torch.int64),
        CLASSES, natural,
    )


@register
class Synthetic(DatasetPart):
    """FedProx's Synthetic(alpha, beta), generated in memory (module docstring)."""

    name = "synthetic"
    summary = "FedProx's Synthetic(alpha, beta): 60 features, 10 classes, per-user models and feature means, lognormal sizes"
    paper = "Li et al., MLSys 2020 (FedProx), section 5.1 and appendix C"
    params = (
        Param("alpha", float, 1.0, "std of u_k, the mean of user k's W_k and b_k: how much local models differ",
              check=non_negative, rule=">= 0", paper="alpha"),
        Param("beta", float, 1.0, "std of B_k, the mean of user k's feature means v_k: how much local data differ",
              check=non_negative, rule=">= 0", paper="beta"),
        Param("users", int, 30, "users generated (the natural clients)", check=positive, rule="> 0", paper="30 devices"),
        Param("iid", bool, False, "Synthetic-IID: one W, b for all users, x ~ N(B_k 1, Sigma) (the authors': beta = 0)"),
        Param("seed", int, 0, "the data's seed (fixed across run seeds); -1 = the run's --seed",
              check=lambda s: s >= -1, rule=">= -1"),
    )
    data_spec = DataSpec((FEATURES,), CLASSES, "vectors", natural=True)

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        return generate_synthetic(self.alpha, self.beta, self.users, self.iid, seed if self.seed == -1 else self.seed)


__all__ = ["Synthetic", "generate_synthetic", "FEATURES", "CLASSES"]
