"""The paper's models: VGG-11/16/19 (CIFAR) and the character GRU (Shakespeare)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from flarebench import ConfigError, make_config
from flarebench.flat import Layout
from flarebench.models import build_model
from flarebench.models.gru import CharGRU
from flarebench.models.vgg import VGG_BLOCKS
from flarebench.world import num_params_for


def vgg_params(variant: str, in_ch: int = 3, classes: int = 10, hw: int = 32) -> int:
    """Closed formula: sum over 3x3 convs of (9*c_in + 1)*c_out, then flat->4096->4096->classes dense layers."""
    total, c = 0, in_ch
    for block in VGG_BLOCKS[variant]:
        for width in block:
            total += (9 * c + 1) * width
            c = width
    flat = c * (hw // 32) ** 2
    return total + (flat + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * classes


def count(model: nn.Module) -> int:
    return Layout.of(model).num_params


def meta_model(name, shape, classes, opts=None):
    with torch.device("meta"):
        return build_model(name, shape, classes, opts)


def test_vgg11_parameter_count_matches_the_closed_formula():
    assert vgg_params("vgg11") == 28_144_010  # the formula, worked out by hand once
    assert count(meta_model("vgg11", (3, 32, 32), 10)) == vgg_params("vgg11")
    assert count(meta_model("vgg11", (3, 32, 32), 100)) == vgg_params("vgg11", classes=100)


@pytest.mark.parametrize("variant,convs", [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_shapes(variant, convs):
    m = meta_model(variant, (3, 32, 32), 100)
    assert count(m) == vgg_params(variant, classes=100)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == convs
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 5
    assert not any(isinstance(x, nn.modules.batchnorm._NormBase) for x in m.modules())
    assert all(x.kernel_size == (3, 3) and x.padding == (1, 1) for x in m.modules() if isinstance(x, nn.Conv2d))
    drop = [x for x in m.modules() if isinstance(x, nn.Dropout)]
    assert len(drop) == 2 and all(d.p == 0.5 for d in drop)
    # functional-friendly: nothing in place
    assert not any(getattr(x, "inplace", False) for x in m.modules())


def test_vgg11_reference_quirk_drops_three_relus():
    default = meta_model("vgg11", (3, 32, 32), 10)
    quirk = meta_model("vgg11", (3, 32, 32), 10, {"reference_relu": True})
    relus = lambda m: sum(isinstance(x, nn.ReLU) for x in m.modules())  # noqa: E731
    assert relus(default) == 8 + 2 and relus(quirk) == 8 + 2 - 3
    # layer order in the 256 block: conv, conv, relu
    mods = list(quirk)
    i = next(k for k, x in enumerate(mods) if isinstance(x, nn.Conv2d) and x.out_channels == 256)
    assert [type(x) for x in mods[i : i + 3]] == [nn.Conv2d, nn.Conv2d, nn.ReLU]
    # the switch is VGG-11's only; the legacy config key still reads, as VGG-11's parameter
    with pytest.raises(ConfigError, match="model 'vgg16' has no parameter 'reference_relu'"):
        meta_model("vgg16", (3, 32, 32), 10, {"reference_relu": True})
    assert make_config(model="vgg16", dataset="cifar10", vgg11_reference_relu=True).params["model"] == {}
    assert make_config(model="vgg11", dataset="cifar10", vgg11_reference_relu=True).params["model"] == {"reference_relu": True}


def test_vgg_forward_and_too_small_images():
    torch.manual_seed(0)
    m = build_model("vgg11", (3, 32, 32), 10).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="32x32"):
        build_model("vgg16", (1, 28, 28), 10)


def test_gru_parameter_counts():
    def formula(v, e, h):
        return v * e + 3 * h * (e + h) + 2 * 3 * h + (h + 1) * v

    assert count(meta_model("gru", (100,), 65)) == formula(65, 256, 1024) == 4_021_569
    assert count(meta_model("gru-small", (100,), 65)) == formula(65, 32, 128) == 72_673
    assert not any(isinstance(x, nn.RNNBase) for x in meta_model("gru", (100,), 65).modules())
    with pytest.raises(ConfigError, match="token sequences"):
        build_model("gru", (1, 28, 28), 10)


def test_hand_written_gru_cell_equals_nn_gru():
    torch.manual_seed(0)
    m = CharGRU(vocab=11, embedding=5, hidden=7)
    ref = nn.GRU(5, 7, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(m, name))
    x = torch.randint(0, 11, (3, 9))
    out, _ = ref(m.embed(x))
    torch.testing.assert_close(m(x), m.out(out), rtol=1e-5, atol=1e-6)
    assert m(x).shape == (3, 9, 11)


def test_gru_vmaps_over_parameter_sets():
    """The vectorized engine vmaps the loss over clients' weights: the GRU must support it."""
    torch.manual_seed(0)
    m = build_model("gru-small", (20,), 13)
    params = {k: v.detach() for k, v in m.named_parameters()}
    stacked = {k: torch.stack([v, v + 0.01 * torch.randn_like(v)]) for k, v in params.items()}
    x = torch.randint(0, 13, (4, 20))
    batched = vmap(lambda p: functional_call(m, p, (x,)))(stacked)
    for i in range(2):
        one = functional_call(m, {k: v[i] for k, v in stacked.items()}, (x,))
        torch.testing.assert_close(batched[i], one, rtol=1e-5, atol=1e-5)


def test_num_params_for_needs_no_data(tmp_path):
    cfg = make_config(model="vgg11", dataset="cifar10", data_root=str(tmp_path / "nothing-here"))
    assert num_params_for(cfg) == 28_144_010
    assert num_params_for(make_config(model="gru", dataset="shakespeare")) == 4_021_569
    assert num_params_for(make_config(model="cnn", dataset="mnist")) == 582_026


def test_cnn_double_softmax_quirk_is_the_reference_loss():
    """Same weights: the quirk's loss is -log softmax(softmax(z))_y, its gradient much smaller; argmax unchanged."""
    torch.manual_seed(0)
    sound = build_model("cnn", (1, 28, 28), 10)
    quirk = build_model("cnn", (1, 28, 28), 10, {"double_softmax": True})
    quirk.load_state_dict(sound.state_dict())
    assert count(quirk) == count(sound) == 582_026
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    z = sound(x)
    p = torch.softmax(z, -1)
    expected = -torch.log_softmax(p, -1)[torch.arange(8), y].mean()
    loss = nn.functional.cross_entropy(quirk(x), y)
    assert torch.allclose(loss, expected)
    assert torch.equal(quirk(x).argmax(-1), z.argmax(-1))
    g_sound = torch.autograd.grad(nn.functional.cross_entropy(z, y), sound[-1].bias)[0]
    g_quirk = torch.autograd.grad(loss, quirk[-2].bias)[0]
    assert g_quirk.norm() < 0.5 * g_sound.norm()
