"""Models: parameter counts, bad arguments, and batch-norm state in a penalised step.

Parameter counts use ``jax.eval_shape`` (shapes only, nothing compiled or computed). The ResNet
tests that compile a real step are marked slow: compiling a ResNet-18 gradient takes tens of
seconds on a loaded 2-core CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igrlib.maths import losses, models
from igrlib.maths import objectives
from igrlib.training import program
from igrlib.training.config import TrainConfig
from igrlib.config import ConfigError

RESNET18_PARAMS = 11_173_962  # He et al.'s CIFAR ResNet-18 with a 10-class read-out


def _shapes(model: models.Model, x_shape: tuple[int, ...]):
    """(params, state) as ShapeDtypeStructs for a batch of shape ``x_shape``."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x_shape, jnp.float32))


@pytest.mark.parametrize("width", [1, 50, 200, 800])
def test_mlp_parameter_count_is_the_formula(width):
    params, state = _shapes(models.mlp(width, depth=5), (2, 28, 28, 1))
    w = width
    assert models.num_params(params) == 784 * w + w + 4 * (w * w + w) + 10 * w + 10
    assert state == {}


def test_mlp_depth_counts_hidden_layers():
    params, _ = _shapes(models.mlp(7, depth=4), (2, 784))
    assert models.num_params(params) == 784 * 7 + 7 + 3 * (49 + 7) + 70 + 10
    assert len(params) == 5  # 4 hidden layers and the read-out
    params, _ = _shapes(models.mlp(7, depth=0), (2, 784))
    assert models.num_params(params) == 7850  # depth 0: multinomial logistic regression


def test_mlp_forward_shape_and_activation_choice():
    x = np.random.default_rng(0).standard_normal((3, 28, 28, 1)).astype(np.float32)
    outs = {}
    for act in ("relu", "tanh"):
        model = models.mlp(8, depth=1, activation=act)
        params, state = jax.jit(model.init)(jax.random.key(0), x)
        logits, new_state = jax.jit(model.apply, static_argnums=3)(params, state, x, True)
        assert logits.shape == (3, 10) and new_state == {}
        outs[act] = np.asarray(logits)
    assert not np.allclose(outs["relu"], outs["tanh"])


def test_resnet18_full_width_has_the_papers_parameter_count():
    params, state = _shapes(models.resnet18(1.0), (2, 32, 32, 3))
    assert models.num_params(params) == RESNET18_PARAMS
    stats = jax.tree_util.tree_leaves(state)
    assert stats, "batch norm must keep running statistics in the state"
    assert any("mean_ema" in k for k in state) and any("var_ema" in k for k in state)


def test_resnet18_width_multiplier_shrinks_it():
    quarter, _ = _shapes(models.resnet18(0.25), (2, 32, 32, 3))
    eighth, _ = _shapes(models.resnet18(0.125), (2, 32, 32, 3))
    assert models.num_params(eighth) < models.num_params(quarter) < RESNET18_PARAMS
    # conv weights scale as w², so a quarter width is close to 1/16 of the parameters
    assert models.num_params(quarter) == pytest.approx(RESNET18_PARAMS / 16, rel=0.05)


def test_build_by_name():
    assert models.build("mlp", width=5, depth=1).name == "mlp1x5"
    assert models.build("resnet18", width_multiplier=0.5).name == "resnet18x0.5"


@pytest.mark.parametrize("name,kwargs,match", [
    ("nope", {}, "model"),
    ("mlp", {"width": 0}, "width"),
    ("mlp", {"width": 2.5}, "width"),
    ("mlp", {"width": 10, "activation": "sigmoidish"}, "activation"),
    ("mlp", {"width": 10, "dropout": 0.1}, "dropout"),
    ("resnet18", {"width_multiplier": 0}, "width_multiplier"),
    ("resnet18", {"width": 64}, "width"),
])
def test_bad_model_arguments_are_config_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        models.build(name, **kwargs)


# ------------------------------------------------------------------ batch-norm state, penalised


def _bn_loss(params, state, x, y):
    """A hand-made batch-normalised layer: E and aux (new_state, logits), like objectives.loss_fn.

    The running mean moves by ``0.1·(batch mean − running mean)``; it depends on θ, so a look-ahead
    pass at θ + εg would report a different state.
    """
    pre = x @ params["w"]
    mean = pre.mean(axis=0)
    logits = (pre - mean) / jnp.sqrt(pre.var(axis=0) + 1e-5) * params["scale"]
    new_state = {"mean": 0.9 * state["mean"] + 0.1 * mean, "count": state["count"] + 1}
    return losses.cross_entropy(logits, y), (new_state, logits)


@pytest.mark.parametrize("method", losses.PENALTY_METHODS)
def test_penalised_step_updates_state_once_with_the_forward_pass_at_theta(method):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        params = {"w": rng.standard_normal((6, 4)), "scale": np.ones(4)}
        state = {"mean": rng.standard_normal(4), "count": np.int64(0)}
        x, y = rng.standard_normal((8, 6)) + 2.0, rng.integers(0, 4, 8)
        once = _bn_loss(params, state, x, y)[1][0]
        twice = _bn_loss(params, once, x, y)[1][0]
        (value, (new_state, _)), _, total = jax.jit(
            losses.penalized_value_and_grad(_bn_loss, 0.5, method, fd_radius=0.1))(
            params, state, x, y)
        np.testing.assert_allclose(new_state["mean"], once["mean"], rtol=1e-13, atol=0)
        assert int(new_state["count"]) == 1
        assert np.abs(np.asarray(twice["mean"]) - np.asarray(once["mean"])).min() > 1e-3
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(total))


@pytest.fixture(scope="module")
def small_resnet():
    """A ResNet-18 at width multiplier 1/8 (channels 8-64), initialised on one batch of random
    images, and another batch of 6 images and labels to take a step on."""
    model = models.resnet18(0.125)
    rng = np.random.default_rng(4)
    x_init = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    x = (rng.standard_normal((6, 32, 32, 3)) + 0.5).astype(np.float32)
    y = rng.integers(0, 10, 6).astype(np.int32)
    params, state = jax.jit(model.init)(jax.random.key(0), x_init)
    return model, params, state, x, y


@pytest.mark.slow
def test_resnet_penalised_step_updates_batch_norm_state_exactly_once(small_resnet):
    model, params, state, x, y = small_resnet
    forward = jax.jit(lambda p, s, xb: model.apply(p, s, xb, True)[1])
    once = forward(params, state, x)
    twice = forward(params, once, x)
    # Haiku's EMA counts its updates: the counters tell one update from two
    for key in state:
        assert int(once[key]["counter"]) == int(state[key]["counter"]) + 1
        assert int(twice[key]["counter"]) == int(state[key]["counter"]) + 2
    mean_key = "stem_bn/~/mean_ema"
    assert not np.allclose(once[mean_key]["hidden"], twice[mean_key]["hidden"], rtol=1e-2)
    loss_fn = objectives.loss_fn(model)
    totals = {}
    for method in losses.PENALTY_METHODS:
        (value, (new_state, logits)), grad, total = jax.jit(
            losses.penalized_value_and_grad(loss_fn, 0.05, method))(params, state, x, y)
        for key in once:  # every batch-norm layer's EMA of mean and variance
            for leaf in once[key]:
                np.testing.assert_allclose(new_state[key][leaf], once[key][leaf], rtol=1e-5,
                                           atol=1e-7, err_msg=f"{method}: {key}/{leaf}")
        assert logits.shape == (6, 10) and np.isfinite(float(value))
        # an EGR step on the ResNet gives a finite, non-zero gradient
        totals[method] = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(total)])
        assert np.isfinite(totals[method]).all() and np.abs(totals[method]).max() > 0
    # the exact methods agree to float32 rounding. The finite-difference look-ahead is NOT compared:
    # a ReLU network's gradient jumps where a unit switches, so the secant does not converge to
    # the almost-everywhere H∇E (measured here: its error grows like ε^(-1/2), in float64 too)
    ref = totals["hvp"]
    assert np.linalg.norm(totals["double_backprop"] - ref) < 1e-4 * np.linalg.norm(ref)
