"""The federated data sets (leaf, synthetic, tensors) and the one validation every data set goes through."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from flarebench.data.datasets import Dataset
from flarebench.data.leaf import LEAF_LETTERS, load_leaf
from flarebench.data.synthetic import generate_synthetic
from flarebench.data.tensors import load_tensors
from flarebench.data.validate import validate
from flarebench import load_run
from flarebench.errors import DataError

from conftest import cli
from test_bad_input import refused


# ----------------------------------------------------------------------------------------------- fixtures
def leaf_doc(users: dict[str, tuple[list, list]]) -> dict:
    """LEAF's JSON layout for ``{user: (x, y)}``."""
    return {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }


def write_leaf(root, train_files: list[dict], test_files: list[dict]):
    """LEAF's directory layout: ``root/train/*.json``, ``root/test/*.json`` (one file per dict, in order)."""
    for split, docs in (("train", train_files), ("test", test_files)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, doc in enumerate(docs):
            (root / split / f"all_data_{i}_niid_0_keep_0_{split}_9.json").write_text(json.dumps(doc))
    return root


def femnist_like(root, rng=None):
    """3 writers over 2 train files (7 train samples), 784 grey levels per image, labels in 0..61."""
    rng = rng or np.random.default_rng(0)

    def user(n, label):
        return rng.random((n, 784)).round(3).tolist(), [label] * n

    train = [leaf_doc({"f0001_12": user(2, 3), "f0002_40": user(3, 61)}), leaf_doc({"f0003_07": user(2, 9)})]
    test = [leaf_doc({"f0001_12": user(1, 3), "f0003_07": user(1, 9)})]
    return write_leaf(root, train, test)


def shakespeare_like(root):
    """2 roles; 80-character snippets with the next character as target (LEAF's Shakespeare)."""
    text = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer\nThe slings"
    snippets = [(text[i : i + 80], text[i + 80]) for i in range(6)]
    train = [leaf_doc({"THE_TRAGEDY_OF_HAMLET_HAMLET": ([s for s, _ in snippets[:4]], [c for _, c in snippets[:4]]),
                       "THE_TRAGEDY_OF_HAMLET_OPHELIA": ([snippets[4][0]], [snippets[4][1]])})]
    test = [leaf_doc({"THE_TRAGEDY_OF_HAMLET_HAMLET": ([snippets[5][0]], [snippets[5][1]])})]
    return write_leaf(root, train, test), snippets


# ----------------------------------------------------------------------------------------------- leaf
def test_leaf_images_users_are_the_natural_clients(tmp_path):
    data = load_leaf(str(femnist_like(tmp_path)))
    validate(data)
    assert data.x_train.shape == (7, 1, 28, 28) and data.x_train.dtype == torch.float32
    assert data.x_test.shape == (2, 1, 28, 28)
    assert data.num_classes == 62  # the largest label (61) + 1
    # users in file order, then in each file's order: f0001_12, f0002_40 (file 0), f0003_07 (file 1)
    assert [c.tolist() for c in data.natural_clients] == [[0, 1], [2, 3, 4], [5, 6]]
    assert [data.y_train[c].tolist() for c in data.natural_clients] == [[3, 3], [61, 61, 61], [9, 9]]
    raw = json.loads((tmp_path / "train" / "all_data_0_niid_0_keep_0_train_9.json").read_text())
    first = torch.tensor(raw["user_data"]["f0001_12"]["x"][0], dtype=torch.float32)
    assert torch.equal(data.x_train[0].reshape(-1), first)  # values as stored, no normalisation


def test_leaf_text_uses_leafs_80_letters(tmp_path):
    root, snippets = shakespeare_like(tmp_path)
    assert len(LEAF_LETTERS) == 80 and LEAF_LETTERS.index("a") == 53 and LEAF_LETTERS[0] == "\n"
    data = load_leaf(str(root))
    validate(data)
    assert data.x_train.shape == (5, 80) and data.x_train.dtype == torch.int64 and data.num_classes == 80
    assert "".join(LEAF_LETTERS[i] for i in data.x_train[0].tolist()) == snippets[0][0]
    assert [LEAF_LETTERS[i] for i in data.y_train.tolist()] == [c for _, c in snippets[:5]]
    assert [len(c) for c in data.natural_clients] == [4, 1]
    seq = load_leaf(str(root), targets="sequence")
    validate(seq)
    assert seq.y_train.shape == (5, 80)
    assert torch.equal(seq.y_train[:, :-1], seq.x_train[:, 1:]) and torch.equal(seq.y_train[:, -1], data.y_train)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("user_data"), "expected an object with keys users, num_samples, user_data"),
    (lambda d: d["num_samples"].__setitem__(0, 5), "user 'f0001_12' has num_samples 5 but 2 samples"),
    (lambda d: d["user_data"]["f0002_40"]["y"].pop(), "user 'f0002_40' has 3 x but 2 y"),
    (lambda d: d["users"].append("ghost") or d["num_samples"].append(1), "user 'ghost' has no user_data entry"),
    (lambda d: d["user_data"]["f0002_40"]["x"][1].pop(), "x samples are not numbers of one shape"),
    (lambda d: d["user_data"]["f0002_40"].__setitem__("x", [[0.5] * 100] * 3), "users' samples have different shapes [[1, 10, 10], [1, 28, 28]]"),
])
def test_leaf_malformed_is_one_line(tmp_path, mutate, message):
    femnist_like(tmp_path)
    f = tmp_path / "train" / "all_data_0_niid_0_keep_0_train_9.json"
    doc = json.loads(f.read_text())
    mutate(doc)
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=re.escape(message)):
        load_leaf(str(tmp_path))


def test_leaf_not_json_and_missing_dirs(tmp_path):
    femnist_like(tmp_path)
    (tmp_path / "test" / "all_data_0_niid_0_keep_0_test_9.json").write_text('{"users": [')
    with pytest.raises(DataError, match="not readable JSON"):
        load_leaf(str(tmp_path))
    with pytest.raises(DataError, match="is not a directory"):
        load_leaf(str(tmp_path / "nowhere"))


def test_leaf_text_outside_vocabulary(tmp_path):
    write_leaf(tmp_path, [leaf_doc({"u": (["caf\u00e9" * 20], ["x"])})], [leaf_doc({"u": (["abcd" * 20], ["x"])})])
    with pytest.raises(DataError, match="character '\u00e9' is not in LEAF's 80-character vocabulary"):
        load_leaf(str(tmp_path))


# ----------------------------------------------------------------------------------------------- synthetic
def label_skew(data: Dataset) -> float:
    """Mean total-variation distance between the clients' label distributions (0: identical)."""
    h = np.stack([np.bincount(data.y_train[c].numpy(), minlength=data.num_classes) / len(c) for c in data.natural_clients])
    return float(np.mean([0.5 * np.abs(h[i] - h[j]).sum() for i in range(len(h)) for j in range(i + 1, len(h))]))


def test_synthetic_1_1_is_heterogeneous_and_deterministic():
    data = generate_synthetic(1.0, 1.0, users=30)
    validate(data)
    assert data.x_train.shape[1:] == (60,) and data.num_classes == 10 and len(data.natural_clients) == 30
    sizes = np.array([len(c) for c in data.natural_clients])
    assert sizes.min() >= 45 and sizes.sum() == len(data.x_train)  # >= floor(0.9 * 50) each; lognormal tail
    assert sizes.max() > 3 * np.median(sizes)  # power-law sizes
    assert label_skew(data) > 0.6  # measured 0.88: most clients are dominated by one or two classes
    assert label_skew(generate_synthetic(0.0, 0.0, users=30, iid=True)) < 0.3  # measured 0.14 (sampling noise)
    again = generate_synthetic(1.0, 1.0, users=30)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    assert not torch.equal(generate_synthetic(1.0, 1.0, users=30, seed=1).y_train[:40], data.y_train[:40])


# ----------------------------------------------------------------------------------------------- tensors
def test_tensors_npz_and_pt_with_client_ids(tmp_path):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(6, 3)), y_train=np.array([0, 1, 2, 0, 1, 2], dtype=np.int32),
                  x_test=rng.normal(size=(2, 3)), y_test=np.array([1, 2]), client_ids=np.array(["b", "a", "b", "c", "a", "b"]))
    np.savez(tmp_path / "d.npz", **arrays)
    torch.save({k: torch.as_tensor(v) for k, v in arrays.items() if k != "client_ids"} | {"client_ids": torch.tensor([1, 0, 1, 2, 0, 1])},
               tmp_path / "d.pt")
    for name in ("d.npz", "d.pt"):
        data = load_tensors(str(tmp_path / name))
        validate(data)
        assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64 and data.num_classes == 3
        assert torch.allclose(data.x_train, torch.as_tensor(arrays["x_train"], dtype=torch.float32))
        assert [c.tolist() for c in data.natural_clients] == [[1, 4], [0, 2, 5], [3]]  # ids a|0, b|1, c|2


def base(**change) -> Dataset:
    x = torch.randn(8, 4)
    fields = dict(name="d", x_train=x, y_train=torch.arange(8) % 3, x_test=x[:2], y_test=torch.tensor([0, 2]), num_classes=3)
    fields.update(change)
    return Dataset(**fields)


@pytest.mark.parametrize("change, message", [
    (dict(x_train=torch.randn(8, 4).double()), "x_train must be float32 (features) or int64 (token ids), got float64"),
    (dict(y_train=(torch.arange(8) % 3).float()), "y_train must be int64 class ids, got float32"),
    (dict(x_train=torch.randn(8)), "x_train must be [N, ...] with at least one feature dimension, got shape [8]"),
    (dict(x_test=torch.randn(2, 5)), "x_test samples are float32 [5] but x_train's are float32 [4]"),
    (dict(x_train=torch.randn(8, 4).index_put((torch.tensor([5]),), torch.tensor(float("nan")))),
     "x_train has NaN or infinite values in 1 samples (first: sample 5)"),
    (dict(y_test=torch.tensor([0, 3])), "y_test has labels outside [0, 3): min 0, max 3"),
    (dict(y_train=torch.arange(7) % 3), "x_train has 8 samples but y_train has 7"),
    (dict(natural_clients=[torch.arange(4), torch.arange(0)]), "natural client 1 has no training samples"),
    (dict(x_test=torch.randn(0, 4), y_test=torch.zeros(0, dtype=torch.int64)), "the test split is empty"),
    (dict(num_classes=1), "num_classes must be an integer >= 2, got 1"),
])
def test_validate_names_the_problem(change, message):
    with pytest.raises(DataError) as exc:
        validate(base(**change))
    assert str(exc.value) == f"dataset d: {message}"


def test_leaf_unsupported_samples_are_one_line(tmp_path):
    write_leaf(tmp_path / "celeba", [leaf_doc({"u": (["000001.jpg"], [1])})], [leaf_doc({"u": (["000002.jpg"], [0])})])
    with pytest.raises(DataError, match="image file names"):
        load_leaf(str(tmp_path / "celeba"))
    tweet = ["1467810369", "Mon Apr 06 22:19:45 PDT 2009", "NO_QUERY", "user", "is upset"]
    write_leaf(tmp_path / "sent140", [leaf_doc({"u": ([tweet], [0])})], [leaf_doc({"u": ([tweet], [1])})])
    with pytest.raises(DataError, match="cannot tell the sample kind"):
        load_leaf(str(tmp_path / "sent140"))


# ----------------------------------------------------------------------------------------------- runs
SYNTHETIC_RUN = ("--dataset", "synthetic", "--model", "logreg", "--partition", "natural", "--clients", "30", "--sparsity", "0.9",
                 "--rounds", "10", "--lr", "0.05", "--momentum", "0", "--batch-size", "50", "--eval-every", "5",
                 "--device", "cpu", "--engine", "sequential", "-q")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["none", "topk-ef"])
def test_synthetic_1_1_fedavg_and_topk_ef_learn(capsys, tmp_path, method):
    """Synthetic(1, 1), its 30 users as clients, FedProx's logistic regression, 10 rounds of one local epoch:
    measured 0.0743 -> 0.6757 (none) and 0.6739 (topk-ef, sparsity 0.9); the most frequent test label is 22.8%."""
    code, _, err = cli(capsys, "run", *SYNTHETIC_RUN, "--method", method, "--out", tmp_path, "--name", method)
    assert code == 0, err
    run = load_run(tmp_path / method)
    acc = run.metrics["test_accuracy"].dropna()
    assert acc.iloc[0] < 0.15 and acc.iloc[-1] > 0.62, acc.tolist()
    assert run.meta["config"]["params"]["dataset"] == {"alpha": 1.0, "beta": 1.0, "users": 30, "iid": False, "seed": 0}


@pytest.mark.usefixtures("one_torch_thread")
def test_a_leaf_fixture_runs_with_its_users_as_clients(capsys, tmp_path):
    root = femnist_like(tmp_path / "femnist")
    code, _, err = cli(capsys, "run", "--dataset", "leaf", "-p", f"dataset.path={root}", "--partition", "natural", "--clients", "3",
                       "--rounds", "2", "--batch-size", "2", "--device", "cpu", "--eval-every", "1", "--out", tmp_path / "r", "--name", "leaf", "-q")
    assert code == 0, err
    m = load_run(tmp_path / "r" / "leaf").metrics
    assert m["clients"].iloc[1:].tolist() == [3, 3] and m["test_accuracy"].notna().all()


def bad_tensors(tmp_path, **change):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(12, 5)).astype(np.float32), y_train=np.arange(12) % 3,
                  x_test=rng.normal(size=(4, 5)).astype(np.float32), y_test=np.arange(4) % 3, client_ids=np.arange(12) % 4)
    arrays.update(change)
    path = tmp_path / "d.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


NAN_X = np.where(np.arange(60).reshape(12, 5) == 17, np.nan, 1.0).astype(np.float32)


@pytest.mark.parametrize("change, fragment", [
    (dict(y_train=(np.arange(12) % 3).astype(np.float32)), "y_train must hold integer class ids, got float32"),
    (dict(x_train=np.zeros((12, 5), np.uint8)), "x_train is uint8; store float32 inputs"),
    (dict(x_test=np.zeros((4, 6), np.float32)), "x_test samples are float32 [6] but x_train's are float32 [5]"),
    (dict(x_train=NAN_X), "dataset tensors: x_train has NaN or infinite values in 1 samples (first: sample 3)"),
    (dict(y_test=np.array([0, 1, 2, 7])), "dataset tensors: y_test has labels outside [0, 3): min 0, max 7"),
    (dict(y_train=np.arange(11) % 3), "dataset tensors: x_train has 12 samples but y_train has 11"),
    (dict(client_ids=np.arange(11)), "client_ids has 11 entries for 12 training samples"),
    (dict(y_test=None), "missing y_test (has: client_ids, x_test, x_train, y_train)"),
])
def test_bad_tensors_are_one_line_exit_2_nothing_written(capsys, tmp_path, change, fragment):
    path = bad_tensors(tmp_path, **change)
    line = refused(capsys, fragment, "run", "--dataset", "tensors", "-p", f"dataset.path={path}", "-p", "dataset.num_classes=3",
                   "--partition", "natural", "--clients", "4", "--rounds", "1", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists(), line


def test_bad_leaf_is_one_line_exit_2_nothing_written(capsys, tmp_path):
    femnist_like(tmp_path / "ok")
    f = tmp_path / "ok" / "train" / "all_data_1_niid_0_keep_0_train_9.json"
    f.write_text(f.read_text()[:-3])
    refused(capsys, f"leaf: {f}: not readable JSON", "run", "--dataset", "leaf", "-p", f"dataset.path={tmp_path / 'ok'}",
            "--out", tmp_path / "out")
    write_leaf(tmp_path / "empty", [leaf_doc({"a": ([[0.5] * 784], [1]), "b": ([], [])})], [leaf_doc({"a": ([[0.5] * 784], [0])})])
    refused(capsys, "user 'b' has no training samples", "run", "--dataset", "leaf", "-p", f"dataset.path={tmp_path / 'empty'}",
            "--out", tmp_path / "out")
    refused(capsys, "dataset leaf needs its directory: -p dataset.path=DIR", "run", "--dataset", "leaf", "--out", tmp_path / "out")
    refused(capsys, "dataset.kind must be one of: auto, image, vector, text; got 'pixels'", "run", "--dataset", "leaf",
            "-p", "dataset.kind=pixels", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()

