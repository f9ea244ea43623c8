"""Section 2: the cost of a gradient-norm-penalty step, and the error of its finite-difference form.

The step minimises ``E + μ‖∇E‖²`` (EGR; IGR's modified loss is the case ``μ = h/4``), whose
gradient is ``∇E + 2μ·H∇E``. Per width, timed interleaved: igrlib's plain SGD step (method
``"sgd"``), igrlib's penalised step (method ``"egr"``) with each
:data:`igrlib.maths.losses.PENALTY_METHODS`, and PyTorch's plain and
double-backprop steps. Reported: each penalised/plain time ratio, and
``t_igrlib,hvp / t_torch,double-backprop`` (target ≤ 1).

The finite-difference look-ahead approximates ``H∇E`` with error ``O(ε)`` plus float rounding
``O(u‖∇E‖/ε)`` where ``∇E`` is smooth. A ReLU network's gradient jumps wherever a unit's
pre-activation crosses zero, and a look-ahead step that crosses such kinks picks up those jumps,
which the exact (almost-everywhere) Hessian does not see; :func:`fd_error` therefore measures the
error on the benchmarked ReLU MLP and, as a control at the widest width, on the same MLP with
tanh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from bench import jax_loops, timing, torch_loop
from igrlib.maths import losses, models, objectives

METHODS = losses.PENALTY_METHODS


def fd_error(width: int, batch_size: int, mu: float, activation: str = "relu") -> dict[str, float]:
    """Relative errors of the finite-difference method (float32, at initialisation, one random
    batch), against forward-over-reverse:

    * ``hg``: ``‖(H∇E)_fd − H∇E‖ / ‖H∇E‖``;
    * ``penalised_gradient``: ``‖G_fd − G‖ / ‖G‖`` with ``G = ∇E + 2μ·H∇E``.
    """
    model = models.mlp(width, activation=activation)
    loss_fn = objectives.loss_fn(model)
    x, y = jax_loops.random_data(batch_size, seed=width)
    params, state = model.init(jax.random.key(width), jnp.asarray(x[:2]))

    @jax.jit
    def both(params, x, y):
        def flat(method):
            out = losses.penalized_value_and_grad(loss_fn, mu, method)(params, state, x, y)
            return ravel_pytree(out[1])[0], ravel_pytree(out[2])[0]

        (grad, exact), (_, approx) = flat("hvp"), flat("finite_difference")
        diff = jnp.linalg.norm(approx - exact)
        return diff / jnp.linalg.norm(exact - grad), diff / jnp.linalg.norm(exact)

    hg, penalised = both(params, jnp.asarray(x), jnp.asarray(y))
    return {"hg": float(hg), "penalised_gradient": float(penalised)}


def measure(width: int, steps: int, repeats: int, batch_size: int, mu: float,
            methods: Sequence[str] = METHODS, control: bool = False) -> dict[str, Any]:
    """One width: plain and penalised steps timed interleaved, ``steps`` steps per call; the
    finite-difference error on the ReLU MLP, and with ``control`` on the tanh MLP too."""
    x, y = jax_loops.random_data(steps * batch_size, seed=width)
    plain = jax_loops.igrlib_config(width, len(x), batch_size=batch_size)

    def igrlib(method: str | None):
        if method is None:
            return jax_loops.igrlib_loop(plain, x, y, name="plain")
        cfg = jax_loops.igrlib_config(width, len(x), batch_size=batch_size, mu=mu,
                                      penalty_method=method)
        return jax_loops.igrlib_loop(cfg, x, y, name=method)

    cases = [igrlib(None), *(igrlib(m) for m in methods),
             torch_loop.torch_loop(width, x, y, batch_size=batch_size),
             torch_loop.torch_loop(width, x, y, batch_size=batch_size, penalty=mu,
                                   name="torch_double_backprop")]
    times = timing.interleaved(cases, repeats)
    return {
        "width": width,
        "cases": times.summary(),
        "over_plain": {**{m: times.ratio(m, "plain") for m in methods},
                       "torch_double_backprop": times.ratio("torch_double_backprop", "torch")},
        "hvp_over_torch_double_backprop": times.ratio("hvp", "torch_double_backprop"),
        "fd_error": {act: fd_error(width, batch_size, mu, act)
                     for act in (("relu", "tanh") if control else ("relu",))},
    }


def run(widths: Sequence[int], steps: Mapping[int, int], repeats: int, batch_size: int = 512,
        mu: float = 0.01, methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """Every width; ``steps[width]`` steps per timed call. ``methods`` must include ``"hvp"`` and
    ``"finite_difference"``, which the targets compare."""
    missing = {"hvp", "finite_difference"} - set(methods)
    if missing:
        raise ValueError(f"methods must include {sorted(missing)}")
    return {
        "settings": {"widths": list(widths), "depth": 5, "batch_size": batch_size, "mu": mu,
                     "fd_radius": losses.FD_RADIUS, "methods": list(methods),
                     "steps_per_call": {str(w): steps[w] for w in widths}, "repeats": repeats},
        "rows": [measure(w, steps[w], repeats, batch_size, mu, methods, control=w == max(widths))
                 for w in widths],
    }
