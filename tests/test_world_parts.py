"""Models, datasets and partitions as parts: declared parameters, TOML tables, the earlier RunConfig fields
(still read: TOML keys, make_config, config.json upgraded on read), checks before any data is read."""

from __future__ import annotations

import pytest
import torch

from flarebench import ConfigError, make_config
from flarebench.config import upgrade_config
from flarebench.data import partition
from flarebench.methods.registry import REGISTRY, load_parts


def test_every_builtin_is_one_registered_part():
    load_parts()
    assert {"mlp", "cnn", "fc", "vgg11", "vgg16", "vgg19", "gru", "gru-small"} <= set(REGISTRY["model"])
    assert {"mnist-embedded", "mnist", "fashion-mnist", "cifar10", "cifar100", "shakespeare"} <= set(REGISTRY["dataset"])
    assert {"contiguous", "iid", "dirichlet", "shards", "natural"} <= set(REGISTRY["partition"])


def test_part_tables_and_p_options(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nname = "gru-small"\nhidden = 64\n[dataset]\nname = "shakespeare"\n'
                    '[partition]\nname = "natural"\n')
    cfg = make_config(toml, params={"model": {"embedding": "8"}})
    assert (cfg.model, cfg.dataset, cfg.partition) == ("gru-small", "shakespeare", "natural")
    assert cfg.params["model"] == {"embedding": 8, "hidden": 64} and cfg.params["partition"] == {}
    cfg = make_config(partition="shards", params={"*": {"shards_per_client": "3"}})  # -p PARAM=V finds its one part
    assert cfg.params["partition"] == {"shards_per_client": 3}
    with pytest.raises(ConfigError, match="partition.alpha must be > 0, got -1.0"):
        make_config(partition="dirichlet", params={"partition": {"alpha": "-1"}})
    with pytest.raises(ConfigError, match="model 'mlp' has no parameter 'hiden' \\(did you mean 'hidden'\\?\\)"):
        make_config(params={"model": {"hiden": 3}})


def test_earlier_fields_read_as_their_parts_parameters(tmp_path):
    toml = tmp_path / "old.toml"
    toml.write_text('model = "fc"\nfc-linear = true\npartition = "dirichlet"\ndirichlet-alpha = 0.1\ncnn-double-softmax = true\n')
    cfg = make_config(toml)
    assert cfg.params["model"] == {"linear": True} and cfg.params["partition"] == {"alpha": 0.1}
    assert make_config(model="cnn", cnn_double_softmax=True).params["model"] == {"double_softmax": True}
    assert "fc_linear" not in cfg.to_dict() and "dirichlet_alpha" not in cfg.to_dict()


def test_an_old_config_json_upgrades_to_what_this_version_writes():
    new = make_config(model="cnn", partition="dirichlet", dirichlet_alpha=0.3, cnn_double_softmax=True).to_dict()
    old = {k: v for k, v in new.items() if k != "sources"}
    old["params"] = {k: v for k, v in new["params"].items() if k not in ("model", "dataset", "partition")}
    old.update(fc_linear=False, cnn_double_softmax=True, vgg11_reference_relu=False, dirichlet_alpha=0.3)
    up = upgrade_config(old)
    assert up["params"] == new["params"]
    assert {k: v for k, v in up.items() if k != "params"} == {k: v for k, v in new.items() if k not in ("params", "sources")}


def test_what_is_known_before_loading_is_checked_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="partition 'natural' needs a dataset with its own clients"):
        make_config(partition="natural", data_root=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="model fc cannot take dataset shakespeare's token sequences \\[100\\]"):
        make_config(model="fc", dataset="shakespeare")


def test_partitions_split_as_before():
    """The partitions' draws are those of the functions they replace (same numpy calls, same seed): the numbers
    below are what flarebench/data/partition.py of commit 262e4a0 gave."""
    labels = torch.arange(100) % 10
    assert [len(c) for c in partition(labels, "dirichlet", 4, 0, 20, params={"alpha": 0.5})] == [15, 28, 17, 20]
    assert partition(labels, "iid", 4, 0, 20)[0][:5].tolist() == [5, 8, 9, 10, 11]
    shards = partition(labels, "shards", 5, 1, 20, params={"shards_per_client": 2})
    assert shards[0].tolist()[:6] == [4, 8, 14, 18, 24, 28]
    assert sorted(torch.cat(shards).tolist()) == list(range(100)) and all(len(s) == 20 for s in shards)
    assert [c.tolist()[:3] for c in partition(labels, "contiguous", 2, 0, 3)] == [[0, 1, 2], [3, 4, 5]]
