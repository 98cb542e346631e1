"""The shakespeare dataset: roles as clients, next-character samples, non-IID, and a GRU that learns."""

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch

from flarebench import ConfigError, make_config, run, setup
from flarebench.data import load_dataset, partition
from flarebench.data.datasets import dataset_shape
from flarebench.data.shakespeare import ASSET_MD5, MIN_SEQUENCES, SEQ_LEN, VOCAB, read_text, role_names, split_roles


@pytest.fixture(scope="module")
def data():
    return load_dataset("shakespeare", "unused")


def test_shipped_text_and_vocabulary():
    raw = (resources.files("flarebench.data") / "assets" / "tinyshakespeare" / "input.txt").read_bytes()
    assert hashlib.md5(raw).hexdigest() == ASSET_MD5 == "6fb458f1232090904fb40fe944165e91"
    assert VOCAB == "".join(sorted(set(read_text())))
    assert dataset_shape("shakespeare") == ((SEQ_LEN,), len(VOCAB)) == ((100,), 65)


def test_split_roles_by_speaker_lines():
    text = "First Citizen:\nBefore we proceed:\nhear me.\n\nAll:\nSpeak.\n\nFirst Citizen:\nYou are all resolved.\n"
    roles = split_roles(text)
    # a line ending in ':' inside a speech is text, not a speaker; same name -> same role
    assert roles == {"First Citizen": "Before we proceed:\nhear me.\nYou are all resolved.", "All": "Speak."}


def test_more_than_100_clients_and_consistent_tensors(data):
    clients = data.natural_clients
    assert len(clients) > 100
    assert data.x_train.dtype == data.y_train.dtype == torch.int64
    assert data.x_train.shape[1:] == data.y_train.shape[1:] == (SEQ_LEN,)
    # y is x shifted by one character: next-character prediction at every position
    assert torch.equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert torch.equal(data.y_test[:, :-1], data.x_test[:, 1:])
    # the clients partition the training set, largest first, each above the threshold
    allidx = torch.cat(clients)
    assert torch.equal(allidx.sort().values, torch.arange(len(data.y_train)))
    sizes = [len(c) for c in clients]
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes) >= 1 and sizes[0] > 200
    assert len(role_names()) == len(clients) and role_names()[0] == "GLOUCESTER"
    assert int(data.y_train.max()) < data.num_classes == 65
    assert len(data.y_test) > 0.15 * (len(data.y_train) + len(data.y_test))  # per-role 80/20 split
    assert MIN_SEQUENCES >= 2


def test_next_char_distributions_are_non_iid(data):
    """Mean total-variation distance between a client's next-char histogram and the pooled one is far
    above what the same client sizes give when the samples are shuffled among clients."""
    clients = data.natural_clients[:60]
    y = data.y_train
    V = data.num_classes

    def mean_tv(assign):
        pooled = torch.bincount(y[torch.cat(assign)].reshape(-1), minlength=V).double()
        pooled /= pooled.sum()
        tvs = []
        for idx in assign:
            h = torch.bincount(y[idx].reshape(-1), minlength=V).double()
            tvs.append(0.5 * (h / h.sum() - pooled).abs().sum().item())
        return float(np.mean(tvs))

    real = mean_tv(clients)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    sizes = np.cumsum([0] + [len(c) for c in clients])
    shuffled = [perm[a:b] for a, b in zip(sizes[:-1], sizes[1:])]
    iid = mean_tv(shuffled)
    assert real > 1.5 * iid, (real, iid)


def test_natural_partition(data):
    parts = partition(data.y_train, "natural", 10, 0, 16, natural=data.natural_clients)
    assert len(parts) == 10 and all(len(p) == 16 for p in parts)
    with pytest.raises(ConfigError, match="natural clients"):
        partition(data.y_train, "natural", len(data.natural_clients) + 1, 0, natural=data.natural_clients)


def test_gru_two_rounds_lower_the_loss(tmp_path, one_torch_thread):
    cfg = make_config(
        dataset="shakespeare", model="gru-small", partition="natural", method="none", clients=4,
        samples_per_client=8, batch_size=8, lr=0.6, momentum=0.0, rounds=2, eval_every=1,
        eval_batch_size=1000, device="cpu", engine="sequential", out=str(tmp_path), name="gru",
    )
    s = setup(cfg)
    fed = s.federation
    fed.x_test, fed.y_test = fed.x_test[:300], fed.y_test[:300]  # a slice of the test set: fast on 2 busy cores
    result = run(cfg, prepared=s)
    losses = [r["test_loss"] for r in result.rows]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]
    assert losses[0] == pytest.approx(np.log(65), abs=0.2)  # untrained: about uniform over 65 characters
