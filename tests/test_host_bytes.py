"""Where compressors compute: the bytes that leave the update's device in one compress + encode.

The update ``v`` is tagged as living on "the device"; every tensor computed from a tagged tensor is
tagged too (a TorchFunctionMode follows every torch call, views and in-place ops included, and any
tensor made with an explicit ``device=``). A tagged tensor that reaches the host -- ``.cpu()``,
``.to('cpu')``, ``.numpy()``, ``.tolist()``, ``.item()``, ``bool()``/``int()``/``float()``,
``np.asarray`` -- counts its bytes (numel * element size) and what comes back is a host tensor. This
counts on a CPU-only machine exactly what a GPU run would copy to the host (on a CPU ``.cpu()`` is a
no-op, so a wrapper that looked at devices would see nothing). Each compressor's
``host_bytes_bound(payload)`` (docs/wire.md, "Where compressors compute") must hold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from flarebench.flat import Layout
from flarebench import jit
from flarebench.methods.registry import REGISTRY, PartContext, RoundContext, load_parts
from rounds import one_round

CROSSING = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__array__,
            torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}
TAG = "_flarebench_on_device"


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


def on_device(t: torch.Tensor) -> bool:
    return getattr(t, TAG, False)


def tag(t: torch.Tensor) -> torch.Tensor:
    setattr(t, TAG, True)
    return t


class HostBytes(TorchFunctionMode):
    """Counts the bytes of tagged tensors that reach the host (``self.bytes``; ``self.log``: (what, bytes))."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.log: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        src = [t for t in _tensors((args, kwargs)) if on_device(t)]
        to_host = func in CROSSING or (func is torch.Tensor.to and self._to_cpu(args, kwargs))
        if to_host and src:
            nbytes = src[0].numel() * src[0].element_size()
            self.bytes += nbytes
            self.log.append((getattr(func, "__name__", str(func)), nbytes))
        out = func(*args, **kwargs)
        if to_host and isinstance(out, torch.Tensor) and any(out is t for t in src):
            out = out.view_as(out)  # on a CPU .cpu() returns the tensor itself: the host copy is a new (untagged) object
        if func is torch.Tensor.__iter__:  # rows of a tagged tensor are tagged
            out = list(out)
            for t in out:
                if src:
                    tag(t)
            return iter(out)
        if not to_host and (src or kwargs.get("device") is not None):
            for t in _tensors(out):
                tag(t)
        return out

    @staticmethod
    def _to_cpu(args, kwargs) -> bool:
        device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        return device is not None and torch.device(device).type == "cpu"


def test_the_counter_sees_every_way_to_the_host():
    v = tag(torch.randn(2, 100))
    with HostBytes() as hb:
        w = (v * 2)[:, 10:20]  # derived views stay on the device
        w.cpu()
        assert hb.bytes == 2 * 10 * 4
        w.to("cpu").numpy()  # .to('cpu') counts; numpy of its (host) result does not
        assert hb.bytes == 2 * 2 * 10 * 4
        w.to(torch.float64)  # a dtype change stays on the device
        (v > 0).numpy()
        v.sum().item()
        bool(v[0, 0] > 0)
        np.asarray(v[0])
        [row.tolist() for row in v]
        host = torch.zeros(3)
        host.numpy()
        out = torch.zeros(4, device=v.device)  # made for the device: tagged
        out.index_add_(0, torch.tensor([0, 1]), host[:2]).tolist()
    assert hb.bytes == 160 + 200 + 4 + 1 + 400 + 800 + 16


def small_layout() -> Layout:
    return Layout.from_shapes([(64, 3, 3, 3), (64,), (128, 64, 3, 3), (128,), (10, 2048), (10,)])


SETTINGS = {  # compressor -> (parameters, round): the settings whose cost differs (DGC's warm-up, threshold's tau)
    "dgc": [({}, 0), ({}, 9), ({"exact": True}, 9)],
    "threshold": [({"tau": 1.5}, 0), ({"tau": 1.5, "values": "exact"}, 0)],
    "randk": [({"scale": True}, 0)],
    "qsgd": [({}, 0), ({"coder": "ans"}, 0), ({"coder": "elias"}, 0), ({"levels": 30000}, 0)],
    "terngrad": [({}, 0), ({"coder": "fixed"}, 0)],
    "natural": [({}, 0), ({"coder": "fixed"}, 0)],
}


def cases():
    load_parts()
    for name in sorted(REGISTRY["compressor"]):
        for params, round_idx in SETTINGS.get(name, [({}, 0)]):
            yield pytest.param(name, params, round_idx, id=f"{name}-{params}-r{round_idx}")


@pytest.mark.parametrize("name,params,round_idx", list(cases()))
def test_host_bytes_within_the_stated_bound(name, params, round_idx, monkeypatch):
    """One round of two clients at sparsity 0.99 (DGC's warm-up round 0: density 0.4): the bytes that cross
    from the update's device to the host are at most the sum of the payloads' host_bytes_bound."""
    monkeypatch.setattr(jit, "HOST_KERNELS", False)  # the path a GPU takes (on a CPU, numpy is the device)
    layout = small_layout()
    comp = REGISTRY["compressor"][name](PartContext(layout, 2, sparsity=0.99, seed=3), **params)
    v = tag(torch.randn(2, layout.num_params, generator=torch.Generator().manual_seed(1)))
    ctx = RoundContext(round_idx, [4, 7], seed=3)
    with HostBytes() as hb:
        sent = one_round(comp, v, ctx)[0]
    bound = sum(comp.host_bytes_bound(p) for p in sent)
    assert hb.bytes <= bound, f"{name}: {hb.bytes} bytes reached the host, bound {bound}: {hb.log}"


def test_a_compressor_that_copies_the_update_to_the_host_fails_its_bound():
    """The check has teeth: top-k computed on a host copy of the update crosses 4 P bytes, far above its bound."""
    load_parts()
    topk = REGISTRY["compressor"]["topk"]

    class HostTopK(topk):
        def compress(self, v, ctx):
            return super().compress(v.cpu(), ctx)

    layout = small_layout()
    comp = HostTopK(PartContext(layout, 1, sparsity=0.99))
    v = tag(torch.randn(1, layout.num_params))
    with HostBytes() as hb:
        (msg,) = one_round(comp, v, RoundContext(0, [0]))[0]
    assert hb.bytes >= 4 * layout.num_params > 10 * comp.host_bytes_bound(msg)
