"""Loops over a leading axis that stay fast for convolutional networks on CPU.

XLA on CPU runs a convolution inside a loop body several times slower than outside one
(jax-ml/jax#12868), even in a loop of a single iteration, so a loop of one row is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def scan(body: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any) -> tuple[Any, Any]:
    """``lax.scan(body, init, xs)``, or one plain call of ``body`` when ``xs`` has one row."""
    if jax.tree_util.tree_leaves(xs)[0].shape[0] == 1:
        carry, out = body(init, jax.tree_util.tree_map(lambda a: a[0], xs))
        return carry, jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.lax.scan(body, init, xs)
