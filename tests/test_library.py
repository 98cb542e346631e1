"""docs/api.md's "A compressor in your own code" runs as written, and gives what STC and top-k EF define."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from flarebench.errors import ConfigError
from flarebench.library import build

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def page_blocks(heading: str) -> list[str]:
    """The ```python blocks of docs/api.md's section ``heading`` (up to the next heading), in order."""
    text = API_PAGE.read_text()
    start = text.index(f"\n{heading}\n")
    end = re.search(r"\n#{2,3} ", text[start + 1 :])
    section = text[start : start + 1 + end.start()] if end else text[start:]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def stc_dense(v: torch.Tensor, sizes: list[int], density: float) -> torch.Tensor:
    """STC by hand: per tensor, the k = round(density n) largest |v| sent as sign * mean |top-k|, the rest 0."""
    out, start = torch.zeros_like(v), 0
    for n in sizes:
        block = v[start : start + n]
        k = max(1, round(density * n))
        idx = block.abs().topk(k).indices
        out[start + idx] = torch.sign(block[idx]) * block[idx].abs().double().mean().float()
        start += n
    return out


def test_api_page_snippets_run_and_mean_what_they_say():
    blocks = page_blocks("## A compressor in your own code")
    assert len(blocks) == 2
    ns: dict = {}
    exec(compile(blocks[0], "docs/api.md (block 1)", "exec"), ns)
    stc, updates, blobs, bits, received, update = (ns[k] for k in ("stc", "updates", "blobs", "bits", "received", "update"))
    sizes = [784 * 100, 100, 1000, 10]
    assert stc.ctx.layout.sizes == sizes and updates.shape == (4, sum(sizes))
    assert bits == 8 * sum(len(b) for b in blobs)
    by_hand = [stc_dense(row, sizes, 0.01) for row in updates]
    for k, row in enumerate(by_hand):
        assert torch.allclose(stc.decompress(received[k][0]), row, rtol=0, atol=1e-6)
    assert torch.allclose(update, torch.stack(by_hand).mean(0), rtol=1e-6, atol=1e-7)
    # STC's wire: Golomb positions + 1 sign bit per entry + one fp32 per tensor: far below 1 bit per entry
    assert sum(stc.bound_bits(p[0]) for p in received) <= bits < 0.15 * len(blobs) * sum(sizes)

    exec(compile(blocks[1], "docs/api.md (block 2)", "exec"), ns)
    m, v, sent, state, update = (ns[k] for k in ("m", "v", "sent", "state", "update"))
    assert (m.compressor.name, m.memory.name, m.aggregator.name) == ("topk", "residual", "weighted-mean")
    assert torch.equal(v, updates)  # the residual starts at zero
    dense = torch.stack([m.compressor.decompress(p) for p in sent])
    for k in range(4):
        start = 0
        for n in sizes:  # top-k sends the k largest entries' own values
            block, got = v[k, start : start + n], dense[k, start : start + n]
            idx = block.abs().topk(max(1, round(0.01 * n))).indices
            assert torch.equal(got[idx], block[idx]) and int((got != 0).sum()) == len(idx)
            start += n
    assert torch.equal(state["acc"], v - dense)
    assert torch.allclose(update, dense.mean(0), atol=1e-7)


def test_build_checks_parameters_like_the_command_line():
    with pytest.raises(ConfigError, match="compressor 'qsgd' has no parameter 'level'"):
        build("compressor", "qsgd", [10], level=4)
    with pytest.raises(ConfigError, match="unknown compressor 'stcc'"):
        build("compressor", "stcc", [10])
    q = build("compressor", "qsgd", [(3, 4), 5], levels="4")
    assert q.levels == 4 and q.ctx.num_params == 17


def test_build_makes_world_parts_from_their_parameters():
    data = build("dataset", "synthetic", users=5, seed=3).load("", False, 0)
    assert len(data.natural_clients) == 5 and data.x_train.shape[1:] == (60,)
    model = build("model", "logreg").build((60,), 10)
    assert sum(p.numel() for p in model.parameters()) == 610  # 60 x 10 weights + 10 biases
    clients = build("partition", "dirichlet", alpha=0.1).split(data.y_train, 3, 0, None, None)
    assert len(clients) == 3 and sum(len(c) for c in clients) <= len(data.y_train)
