"""``leaf``: data in the JSON that LEAF's preprocessing writes (Caldas et al. 2018, github.com/TalwalkarLab/leaf).

``path`` is a directory with ``train/`` and ``test/`` subdirectories (LEAF's ``data/<dataset>/data``), each
holding one or more ``.json`` files (read in name order) of the form::

    {"users": [u, ...], "num_samples": [n, ...], "user_data": {u: {"x": [...], "y": [...]}, ...}}

LEAF's users are the natural clients: client i of partition ``natural`` is the i-th user of the training
files (files in name order, users in each file's ``users`` order); the test set is every test user's samples
(LEAF's own evaluation is per user, weighted by samples: the same accuracy).

Sample kinds (``kind``; ``auto`` looks at the first training sample):

- ``image``: FEMNIST-style ``x`` = 784 numbers -> float32 ``[1, 28, 28]`` (any square length s^2 -> ``[1, s, s]``),
  values as stored (LEAF's FEMNIST: grey levels in [0, 1], 1 = white background; no normalisation);
  ``y`` = int class ids. ``auto`` picks it for 784 numbers.
- ``vector``: any other list of numbers (e.g. LEAF's synthetic data) -> float32 ``[D]``.
- ``text``: Shakespeare-style ``x`` = an 80-character string, ``y`` = the next character. Characters are ids
  into LEAF's 80-character ``ALL_LETTERS`` (``LEAF_LETTERS`` below; id = position, as LEAF's
  ``word_to_indices``/``letter_to_vec`` in models/utils/language_utils.py), so x is int64 ``[N, 80]`` and
  there are 80 classes. ``targets``: ``next`` (LEAF's task: ``y`` int64 ``[N]``, the one next character;
  accuracy = next-character accuracy; needs a model mapping ``[B, 80]`` ids to ``[B, 80]`` logits, like
  LEAF's stacked LSTM) or ``sequence`` (``y`` ``[N, 80]``: the target at each position is the following
  character, ``x[1:] + y``; the form flarebench's character models ``gru``/``gru-small`` train on; accuracy
  is over all 80 positions). Deviation: LEAF maps a character outside ``ALL_LETTERS`` to -1
  (``str.find``); here that is a DataError naming it.

``num_classes``: 0 = the largest label in train and test + 1 (text: 80). Anything malformed (not JSON, keys
missing, a user's ``num_samples`` or ``x``/``y`` lengths that disagree, samples of mixed shapes) is one
DataError naming the file and the user.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..methods.registry import Param, non_negative, register
from .base import Dataset, DatasetPart

LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
KINDS = ("auto", "image", "vector", "text")
TARGETS = ("next", "sequence")
FEMNIST_PIXELS = 784


def read_file(f: Path) -> list[tuple[str, list, list]]:
    """``[(user, x, y)]`` of one LEAF ``.json`` file, in its ``users`` order; DataError naming the file and user."""
    try:
        doc = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"leaf: {f}: not readable JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("users", "num_samples", "user_data")):
        raise DataError(f"leaf: {f}: expected an object with keys users, num_samples, user_data")
    names, counts, data = doc["users"], doc["num_samples"], doc["user_data"]
    if not isinstance(names, list) or not isinstance(counts, list) or not isinstance(data, dict) or len(names) != len(counts):
        raise DataError(f"leaf: {f}: users and num_samples must be lists of one length and user_data an object")
    users = []
    for name, count in zip(names, counts):
        entry = data.get(name) if isinstance(name, str) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("x"), list) or not isinstance(entry.get("y"), list):
            raise DataError(f"leaf: {f}: user {name!r} has no user_data entry with lists x and y")
        x, y = entry["x"], entry["y"]
        if len(x) != len(y):
            raise DataError(f"leaf: {f}: user {name!r} has {len(x)} x but {len(y)} y")
        if count != len(y):
            raise DataError(f"leaf: {f}: user {name!r} has num_samples {count!r} but {len(y)} samples")
        users.append((name, x, y))
    return users


def read_split(directory: Path, kind: str, targets: str) -> tuple[str, list[str], list[int], torch.Tensor, torch.Tensor]:
    """Every ``.json`` file in ``directory`` (name order; users in file order), converted file by file (the parsed
    JSON of one file at a time is held): ``(kind, user names, samples per user, x [N, ...], y)``."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DataError(f"leaf: no .json files in {directory}")
    names, sizes, xs, ys = [], [], [], []
    for f in files:
        users = read_file(f)
        first = next((x[0] for _, x, _ in users if x), None)
        if kind == "auto" and first is not None:
            kind = detect_kind(first, str(f))
        for name, x, y in users:
            names.append(name)
            sizes.append(len(y))
            if y:
                tx, ty = to_tensors(x, y, kind, targets, f"{f}: user {name!r}")
                xs.append(tx)
                ys.append(ty)
        del users
    if not xs:
        raise DataError(f"leaf: {directory}: no samples")
    shapes = sorted({tuple(t.shape[1:]) for t in xs})
    if len(shapes) > 1:
        raise DataError(f"leaf: {directory}: users' samples have different shapes {[list(s) for s in shapes[:3]]}")
    return kind, names, sizes, torch.cat(xs), torch.cat(ys)


def detect_kind(first, where: str) -> str:
    """``text`` | ``image`` | ``vector`` from the first sample ``x`` (see the module docstring)."""
    if isinstance(first, str):
        if first.lower().endswith((".jpg", ".jpeg", ".png")):
            raise DataError(f"leaf: {where}: samples are image file names (LEAF's CelebA); only pixel lists (FEMNIST) are read")
        return "text"
    if isinstance(first, list) and first and all(isinstance(v, (int, float)) for v in first[:8]):
        return "image" if len(first) == FEMNIST_PIXELS else "vector"
    raise DataError(f"leaf: {where}: cannot tell the sample kind of x = {str(first)[:40]!r}; pass kind=image|vector|text")


_LETTER_ID = {c: i for i, c in enumerate(LEAF_LETTERS)}


def encode_text(strings: list, where: str) -> torch.Tensor:
    """Strings (one length) -> int64 ids into ``LEAF_LETTERS`` ``[N, len]``; DataError on other characters."""
    if not all(isinstance(s, str) for s in strings):
        raise DataError(f"leaf: {where}: text samples must be strings")
    lengths = {len(s) for s in strings}
    if len(lengths) > 1:
        raise DataError(f"leaf: {where}: text samples have different lengths {sorted(lengths)[:4]}")
    try:
        ids = [[_LETTER_ID[c] for c in s] for s in strings]
    except KeyError as e:
        raise DataError(f"leaf: {where}: character {e.args[0]!r} is not in LEAF's 80-character vocabulary") from None
    return torch.tensor(ids, dtype=torch.int64).reshape(len(strings), -1)


def _numbers(x: list, where: str, role: str) -> torch.Tensor:
    """Nested number lists -> float32 (``x``) or int64 (``y``: integer labels, also when JSON wrote them as 3.0)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"leaf: {where}: {role} samples are not numbers of one shape") from None
    if role == "x":
        return torch.from_numpy(arr.astype(np.float32))
    if arr.ndim != 1 or not np.all(arr == np.round(arr)):
        raise DataError(f"leaf: {where}: y must be one integer label per sample")
    return torch.from_numpy(arr.astype(np.int64))


def to_tensors(x: list, y: list, kind: str, targets: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One user's samples: ``x`` ``[n, ...]``, ``y`` ``[n]`` (text with ``sequence`` targets: ``[n, T]``)."""
    if kind == "text":
        tx = encode_text(x, where)
        ty = encode_text(y, where)
        if ty.shape[1] != 1:
            raise DataError(f"leaf: {where}: text targets must be single characters")
        return (tx, torch.cat([tx[:, 1:], ty], dim=1)) if targets == "sequence" else (tx, ty[:, 0])
    tx = _numbers(x, where, "x").reshape(len(x), -1)
    if kind == "image":
        side = math.isqrt(tx.shape[1])
        if side * side != tx.shape[1]:
            raise DataError(f"leaf: {where}: image samples have {tx.shape[1]} numbers, not a square")
        tx = tx.reshape(len(x), 1, side, side)
    return tx, _numbers(y, where, "y")


def load_leaf(path: str, kind: str = "auto", targets: str = "next", num_classes: int = 0) -> Dataset:
    """The LEAF data set under ``path`` (``train/``, ``test/``) as a Dataset with one natural client per training user."""
    root = Path(path).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"leaf: {root / split} is not a directory (path must hold LEAF's train/ and test/)")
    kind, names, sizes, x_tr, y_tr = read_split(root / "train", kind, targets)
    empty = [name for name, n in zip(names, sizes) if n == 0]
    if empty:
        raise DataError(f"leaf: {root / 'train'}: user {empty[0]!r} has no training samples")
    _, _, _, x_te, y_te = read_split(root / "test", kind, targets)
    if num_classes == 0:
        num_classes = len(LEAF_LETTERS) if kind == "text" else int(max(y_tr.max(), y_te.max())) + 1
    bounds = np.cumsum([0] + sizes)
    natural = [torch.arange(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return Dataset("leaf", x_tr, y_tr, x_te, y_te, num_classes, natural)


@register
class Leaf(DatasetPart):
    """LEAF's JSON (module docstring); users are the natural clients; shape known once loaded."""

    name = "leaf"
    summary = "LEAF's preprocessed JSON (train/, test/): FEMNIST-style images, Shakespeare-style text; users = natural clients"
    paper = "Caldas et al., LEAF: A Benchmark for Federated Settings, 2018"
    params = (
        Param("path", str, "", "the directory holding LEAF's train/ and test/ (e.g. leaf/data/femnist/data)"),
        Param("kind", str, "auto", "sample kind; auto: text for strings, image for 784 numbers, else vector", choices=KINDS),
        Param("targets", str, "next", "text: next = LEAF's one next character [N]; sequence = the next character "
              "at every position [N, 80] (for gru, gru-small)", choices=TARGETS),
        Param("num_classes", int, 0, "classes; 0 = the largest label + 1 (text: 80)", check=non_negative, rule=">= 0"),
    )

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        if not self.path:
            raise DataError("dataset leaf needs its directory: -p dataset.path=DIR (holding LEAF's train/ and test/)")
        return load_leaf(self.path, self.kind, self.targets, self.num_classes)


__all__ = ["Leaf", "load_leaf", "LEAF_LETTERS", "KINDS", "TARGETS"]
