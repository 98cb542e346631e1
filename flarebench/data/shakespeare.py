"""``shakespeare``: tiny Shakespeare split by speaking role, LEAF-style next-character prediction.

Built offline from the copy of Karpathy's tiny Shakespeare shipped in the package
(``assets/tinyshakespeare/input.txt``, 1,115,394 characters, md5-checked).

- Roles: a speaker line is a line ending in ``:`` that follows a blank line (or opens the file);
  the lines after it, up to the next blank line, are that role's speech. A role's speeches are
  joined with newlines in text order.
- Samples: each role's text is cut into non-overlapping chunks of ``SEQ_LEN + 1`` = 101 characters
  (the remainder is dropped, so there is no padding); ``x`` = the first 100 characters, ``y`` = the
  last 100 (the next character at every position), both int64 ``[N, 100]``. Accuracy is
  next-character accuracy over all positions.
- Vocabulary: the corpus' own characters (65), sorted; class id = index in ``VOCAB``.
- Clients: roles with at least ``MIN_SEQUENCES`` samples (141 roles); each role's samples are split
  80/20 into train/test by a fixed seed (at least one test sample). ``natural_clients`` lists the
  roles' train indices, largest role first (so partition ``natural`` with ``clients = 10`` takes the
  ten largest roles, as the reference keeps only clients with many batches). The central test set
  is the union of all kept roles' test samples.

How it differs from LEAF's Shakespeare (which the reference uses through TFF): LEAF takes the full
Complete Works (1,129 roles, keyed by play *and* role, ~4.2M samples of 80 characters with one
target character, sliding by one); tiny Shakespeare is a ~1 MB excerpt without play titles, so a
role is keyed by name only (e.g. all "First Citizen"s merge) and there are far fewer, smaller roles:
only 6 have the reference's "more than 30 batches of 8". The reference (TFF tutorial) also uses
100-character windows with shifted targets, but an 86-character vocabulary plus padding/OOV tokens
and pads short snippets; here there is no padding.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import torch

from ..errors import DataError
from ..methods.registry import register
from .base import Dataset, DatasetPart, DataSpec

ASSET_MD5 = "6fb458f1232090904fb40fe944165e91"
SEQ_LEN = 100  # characters per sample (input and target)
MIN_SEQUENCES = 10  # roles with fewer samples (train + test) are dropped
TEST_FRACTION = 0.2
SPLIT_SEED = 20231221  # fixed: the split never depends on the run's seed
VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def read_text() -> str:
    """The shipped tiny Shakespeare text (md5-checked)."""
    try:
        raw = (resources.files("flarebench.data") / "assets" / "tinyshakespeare" / "input.txt").read_bytes()
    except FileNotFoundError:
        raise DataError("the shipped tiny Shakespeare text is missing from the package; reinstall flarebench") from None
    if hashlib.md5(raw).hexdigest() != ASSET_MD5:
        raise DataError("the shipped tiny Shakespeare text fails its md5 check; reinstall flarebench")
    return raw.decode("utf-8")


def split_roles(text: str) -> dict[str, str]:
    """``{role: its speeches joined by newlines}`` in order of first appearance."""
    roles: dict[str, list[str]] = {}
    current: list[str] | None = None
    prev_blank = True
    for line in text.split("\n"):
        if not line.strip():
            current, prev_blank = None, True
            continue
        if prev_blank and line.endswith(":"):
            current = roles.setdefault(line[:-1], [])
        elif current is not None:
            current.append(line)
        prev_blank = False
    return {name: "\n".join(lines) for name, lines in roles.items() if lines}


def encode(text: str) -> np.ndarray:
    """Characters -> int64 ids into ``VOCAB``; DataError on a character outside it."""
    table = np.full(256, -1, dtype=np.int64)
    table[np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(VOCAB))
    try:
        ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    except UnicodeEncodeError:
        raise DataError("shakespeare text has non-ASCII characters") from None
    if (ids < 0).any():
        raise DataError("shakespeare text has characters outside the vocabulary")
    return ids


def build_clients(min_sequences: int = MIN_SEQUENCES) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per kept role, largest first: ``(name, train chunks [n_tr, 101], test chunks [n_te, 101])``."""
    rng = np.random.default_rng(SPLIT_SEED)
    kept = []
    for name, speech in split_roles(read_text()).items():
        ids = encode(speech)
        n = len(ids) // (SEQ_LEN + 1)
        if n < max(min_sequences, 2):
            continue
        chunks = ids[: n * (SEQ_LEN + 1)].reshape(n, SEQ_LEN + 1)
        n_test = max(1, int(round(TEST_FRACTION * n)))
        perm = rng.permutation(n)
        kept.append((name, chunks[np.sort(perm[n_test:])], chunks[np.sort(perm[:n_test])]))
    kept.sort(key=lambda c: (-len(c[1]), c[0]))
    return kept


@register
class Shakespeare(DatasetPart):
    """Tiny Shakespeare by speaking role (shipped, offline): next-character prediction, one natural client per role."""

    name = "shakespeare"
    summary = "tiny Shakespeare by speaking role: int64 [N, 100] characters, next-character targets, 141 natural clients"
    paper = "LEAF (Caldas et al. 2018), built from Karpathy's tiny Shakespeare"
    data_spec = DataSpec((SEQ_LEN,), len(VOCAB), "tokens", natural=True)

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        return load_shakespeare()


def load_shakespeare() -> Dataset:
    """The ``shakespeare`` Dataset: int64 ``x``/``y`` ``[N, 100]``, 65 classes, one natural client per role."""
    clients = build_clients()
    train = np.concatenate([c[1] for c in clients])
    test = np.concatenate([c[2] for c in clients])
    sizes = np.cumsum([0] + [len(c[1]) for c in clients])
    natural = [torch.arange(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:])]
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return Dataset(
        "shakespeare", tr[:, :-1].contiguous(), tr[:, 1:].contiguous(), te[:, :-1].contiguous(), te[:, 1:].contiguous(),
        len(VOCAB), natural,
    )


def role_names() -> list[str]:
    """Names of the kept roles in client order (client i of partition ``natural`` is ``role_names()[i]``)."""
    return [c[0] for c in build_clients()]
