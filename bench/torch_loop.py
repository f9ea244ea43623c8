"""The hand-written PyTorch loop igrlib is compared with: same MLP, SGD, mini-batches.

The network is ``depth`` hidden ReLU layers of ``width`` units and a linear read-out. A plain
step minimises the mean cross-entropy ``E``; a penalised step minimises ``E + c‖∇E‖²`` by double
backpropagation (``torch.autograd.grad(..., create_graph=True)``, then ``backward`` through the
gradient), the usual PyTorch way to implement a gradient-norm penalty.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.timing import Case


def set_threads(n: int) -> None:
    """Give PyTorch's intra-op pool ``n`` threads (XLA's CPU client uses one per core)."""
    torch.set_num_threads(n)


def mlp(width: int, depth: int = 5, in_dim: int = 784, num_classes: int = 10) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units and a linear read-out."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width if depth else in_dim, num_classes))
    return nn.Sequential(*layers)


def torch_loop(width: int, x: np.ndarray, y: np.ndarray, *, depth: int = 5, batch_size: int = 512,
               learning_rate: float = 0.01, penalty: float | None = None, seed: int = 0,
               name: str = "torch") -> Case:
    """One call trains one epoch of ``len(x) // batch_size`` SGD steps, each on a mini-batch
    from a fresh ``torch.randperm``; ``penalty=c`` adds ``c‖∇E‖²`` by double backprop."""
    torch.manual_seed(seed)
    model = mlp(width, depth, x.shape[1])
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=learning_rate)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    steps = len(x) // batch_size

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        if penalty is not None:
            grads = torch.autograd.grad(loss, params, create_graph=True)
            loss = loss + penalty * sum((g * g).sum() for g in grads)
        loss.backward()
        opt.step()

    def call() -> None:
        perm = torch.randperm(len(x))
        for k in range(steps):
            idx = perm[k * batch_size:(k + 1) * batch_size]
            step(xt[idx], yt[idx])

    return Case(name, call, steps)
