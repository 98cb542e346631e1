"""SGD on flat parameter tensors, exactly torch.optim.SGD's update (dampening 0, no Nesterov).

Works on one client ``[P]`` or a stack ``[K, P]`` (every entry is independent), with an optional
row mask so clients that have finished their local steps stay put (momentum included).
The momentum buffer starts at zeros, which equals torch's "buf = grad on the first step".
"""

from __future__ import annotations

import torch


class FlatSGD:
    """``g += wd * p``; ``buf = mu * buf + g``; ``p -= lr * buf``. Stateless; buffers are passed in."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    @torch.no_grad()
    def step(self, theta: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, active: torch.Tensor | None = None) -> None:
        """Update ``theta`` (and ``buf``) in place. ``active``: bool ``[K]`` rows to update, or None (all)."""
        if self.weight_decay:
            grad = grad.add(theta, alpha=self.weight_decay)
        if self.momentum:
            new_buf = buf.mul(self.momentum).add_(grad)
            direction = new_buf
        else:
            new_buf, direction = None, grad
        if active is None:
            if new_buf is not None:
                buf.copy_(new_buf)
            theta.sub_(direction, alpha=self.lr)
            return
        m = active.view(-1, *([1] * (theta.dim() - 1)))
        if new_buf is not None:
            buf.copy_(torch.where(m, new_buf, buf))
        theta.sub_(torch.where(m, direction, torch.zeros((), dtype=theta.dtype, device=theta.device)), alpha=self.lr)
