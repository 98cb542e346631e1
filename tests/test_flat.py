import torch

from flarebench.flat import Layout
from flarebench.models import build_model


def test_layout_roundtrip_and_counts():
    model = build_model("cnn", (1, 28, 28), 10)
    layout = Layout.of(model)
    assert layout.num_params == 582_026  # the paper's CNN
    assert layout.sizes == [800, 32, 51200, 64, 524288, 512, 5120, 10]
    flat = layout.flatten(model)
    views = layout.unflatten(flat)
    for name, p in model.named_parameters():
        assert torch.equal(views[name], p.detach())
    ids = layout.segment_ids()
    assert ids.shape == (582_026,) and ids[0] == 0 and ids[-1] == 7 and (ids == 2).sum() == 51200


def test_fc_sizes():
    layout = Layout.of(build_model("fc", (1, 28, 28), 10))
    assert layout.num_params == 784 * 4069 + 4069 + 2 * (4069 * 4069 + 4069) + 4069 * 10 + 10
