"""Models of the paper, and the only module that imports Haiku.

Every network is returned as a :class:`Model`: a pair of pure functions

* ``init(key, x) -> (params, state)``
* ``apply(params, state, x, is_training) -> (logits, new_state)``

so training code treats the stateless MLP and the batch-normalised ResNet alike (the MLP's
``state`` is an empty dict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from igrlib.config import ConfigError, check_choice, check_int

Params = Any
State = Any

MODELS: tuple[str, ...] = ("mlp", "resnet18")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}


class Model(NamedTuple):
    """A network as two pure functions (see the module docstring)."""

    name: str
    init: Callable[[jax.Array, jax.Array], tuple[Params, State]]
    apply: Callable[[Params, State, jax.Array, bool], tuple[jax.Array, State]]


def _as_model(name: str, forward: Callable[[jax.Array, bool], jax.Array]) -> Model:
    transformed = hk.without_apply_rng(hk.transform_with_state(forward))

    def init(key: jax.Array, x: jax.Array) -> tuple[Params, State]:
        return transformed.init(key, x, True)

    def apply(params: Params, state: State, x: jax.Array, is_training: bool) -> tuple[jax.Array, State]:
        return transformed.apply(params, state, x, is_training)

    return Model(name, init, apply)


def mlp(width: int, depth: int = 5, num_classes: int = 10, activation: str = "relu") -> Model:
    """The paper's MLP: ``depth`` hidden layers of ``width`` units and a linear read-out.

    We read the paper's "5-layer MLP" as 5 hidden layers (so 6 weight matrices); ``depth`` makes
    the other reading (4 hidden layers) one argument away. Inputs are flattened. The paper does
    not give its initialisation; we use He initialisation for ReLU (truncated normal with
    variance 2/fan_in, so activations keep their scale through the depth) and LeCun (1/fan_in)
    for the smooth activations; biases start at zero.
    """
    check_int(width, "width")
    check_int(depth, "depth", low=0)
    check_int(num_classes, "num_classes")
    check_choice(activation, ACTIVATIONS, "activation")
    act = ACTIVATIONS[activation]
    gain = 2.0 if activation == "relu" else 1.0

    def forward(x: jax.Array, is_training: bool) -> jax.Array:
        del is_training  # no dropout or batch norm in the paper's MLP
        h = x.reshape(x.shape[0], -1)
        init = hk.initializers.VarianceScaling(gain, "fan_in", "truncated_normal")
        for i in range(depth):
            h = act(hk.Linear(width, w_init=init, name=f"hidden_{i}")(h))
        return hk.Linear(num_classes, name="readout")(h)

    return _as_model(f"mlp{depth}x{width}", forward)


class _BasicBlock(hk.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm, identity or 1x1 projection skip."""

    def __init__(self, channels: int, stride: int, bn_decay: float, name: str | None = None):
        super().__init__(name=name)
        self.channels, self.stride, self.bn_decay = channels, stride, bn_decay

    def _bn(self, name: str) -> hk.BatchNorm:
        return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=self.bn_decay, name=name)

    def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
        conv = lambda stride, name: hk.Conv2D(  # noqa: E731
            self.channels, 3, stride=stride, with_bias=False, name=name
        )
        out = jax.nn.relu(self._bn("bn_1")(conv(self.stride, "conv_1")(x), is_training))
        out = self._bn("bn_2")(conv(1, "conv_2")(out), is_training)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = hk.Conv2D(self.channels, 1, stride=self.stride, with_bias=False, name="proj")(x)
            x = self._bn("proj_bn")(x, is_training)
        return jax.nn.relu(out + x)


def resnet18(width_multiplier: float = 1.0, num_classes: int = 10, bn_decay: float = 0.9) -> Model:
    """ResNet-18 for 32x32 images (He et al. 2016, CIFAR variant).

    A 3x3 stride-1 stem with no max-pool, four stages of two basic blocks with
    ``round(64·w), round(128·w), round(256·w), round(512·w)`` channels (strides 1, 2, 2, 2),
    batch norm after every convolution, global average pooling and a linear read-out. At
    ``width_multiplier=1`` it has 11,173,962 parameters; batch-norm running statistics live in
    ``state``.
    """
    if not (isinstance(width_multiplier, (int, float)) and 0 < width_multiplier <= 8):
        raise ConfigError(f"width_multiplier must be in (0, 8], got {width_multiplier!r}")
    check_int(num_classes, "num_classes")
    if not 0 < bn_decay < 1:
        raise ConfigError(f"bn_decay must be in (0, 1), got {bn_decay!r}")
    widths = [max(1, round(c * width_multiplier)) for c in (64, 128, 256, 512)]

    def forward(x: jax.Array, is_training: bool) -> jax.Array:
        h = hk.Conv2D(widths[0], 3, stride=1, with_bias=False, name="stem")(x)
        h = hk.BatchNorm(True, True, decay_rate=bn_decay, name="stem_bn")(h, is_training)
        h = jax.nn.relu(h)
        for stage, (channels, stride) in enumerate(zip(widths, (1, 2, 2, 2))):
            for block in range(2):
                h = _BasicBlock(
                    channels, stride if block == 0 else 1, bn_decay, name=f"stage{stage}_block{block}"
                )(h, is_training)
        h = jnp.mean(h, axis=(1, 2))
        return hk.Linear(num_classes, name="readout")(h)

    return _as_model(f"resnet18x{width_multiplier:g}", forward)


def build(name: str, **kwargs: Any) -> Model:
    """Build a model by name (``"mlp"`` or ``"resnet18"``) with its keyword arguments."""
    check_choice(name, MODELS, "model")
    factory = {"mlp": mlp, "resnet18": resnet18}[name]
    try:
        return factory(**kwargs)
    except TypeError as err:  # an unknown keyword: say which model takes which keys
        raise ConfigError(f"bad arguments for model {name!r}: {err}") from None


def num_params(params: Params) -> int:
    """m, the number of scalar trainable parameters in a pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def two_param_loss(theta: jax.Array, x: float, y: float) -> jax.Array:
    """The paper's two-parameter model: ``E(a, b) = ½ (y − a·b·x)²`` with ``theta = (a, b)``."""
    a, b = theta[0], theta[1]
    return 0.5 * (y - a * b * x) ** 2
