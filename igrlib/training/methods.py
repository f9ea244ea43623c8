"""Update rules as first-class objects: each a :class:`Method` in the registry :data:`METHODS`.

A method names an update rule θ ← θ − h·(something), declares its hyperparameters (numeric ones
with defaults and ranges, static options with their allowed values), which batches it accepts,
and builds the optax transform that performs it. Units: the learning rate h is in parameter units
per loss-gradient unit; E is the mean loss of the batch the program passes (a mini-batch for
``batch="mini"``, the whole training set for ``batch="full"``).

How the training program calls a transform. ``tx.update(grads, state, params,
**update_args(loss_on, batch))`` (:func:`update_args`), that is with the extra arguments

* ``value_fn(p) = E(p)`` and ``grad_fn(p) = ∇E(p)``, the mean loss of the step's batch and its
  gradient, with ``grads = ∇E(θ)``;
* ``loss_on(p, x, y)``: the mean loss of p on any examples (x, y), and ``batch = (x_B, y_B)``,
  the step's batch itself: the interface of a rule that works on parts of the batch (micro-batch
  rules such as ``var_penalty``, :mod:`igrlib.training.micro`);

all in training mode with the batch-norm state fixed at its current value. Plain rules ignore the
extra arguments (optax's extra-arguments convention); EGR reads ``value_fn``; SAM and the
gradient-norm penalty read ``grad_fn``; ``var_penalty`` reads ``loss_on`` and ``batch``. Any
batch-norm state update from the extra passes is discarded by construction (the functions return
gradients or values only), so the running statistics move once per step, from the program's own
pass at θ.

Why every numeric hyperparameter goes through :func:`optax.inject_hyperparams`: the values then
live in the optimizer STATE, not in the closure. The program initialises one state per run
under ``jax.vmap`` with per-run values, builds ONE transform with placeholder values, and its
``update`` reads the real values from each run's state; so every numeric hyperparameter is
vmappable (:attr:`Method.vmappable`), and runs differing only in those share one compiled
program. Options (strings, or integers such as a micro-batch size) change the traced computation
and must be equal within a program.

Stability. :meth:`Method.stability` returns the dimensionless quantity s(h, λ) whose value 2 is
the linear-stability edge of the rule on the quadratic E = λθ²/2 (λ the top Hessian eigenvalue);
each rule's derivation is in the docstring of its ``_edge_*`` function.

Batch sizes. :meth:`Method.check_batch` raises a ConfigError for a batch the rule cannot use (a
micro-batch rule needs at least two micro-batches); the config checks it where it knows the batch
size and the program where it knows the training-set size (full batch).

Adding a rule: one small factory ``(learning_rate, **numbers, **options) -> optax transform``, one
entry in :data:`METHODS`, and a reference test against its textbook recursion.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from igrlib.config import ConfigError
from igrlib.maths import losses
from igrlib.training.egr import egr_transform
from igrlib.training.micro import variance_penalty

Params = Any
BATCHES = ("mini", "full", "any")


class Range(NamedTuple):
    """The interval of allowed values: ``[low, high)``, or ``(low, high)`` with ``low_open``;
    values must also be finite."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: object) -> bool:
        x = float(value)  # type: ignore[arg-type]
        return math.isfinite(x) and (x > self.low if self.low_open else x >= self.low) and x < self.high

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g})"


POSITIVE = Range(0.0, low_open=True)
NONNEGATIVE = Range(0.0)
UNIT = Range(0.0, 1.0)  # [0, 1): momentum and moment decay rates
LEARNING_RATE = POSITIVE
#: Micro-batch sizes b of ``var_penalty`` (the first is the default: the SGD batch it stands for).
MICRO_BATCHES = (32, 4, 8, 16, 64, 128)


def _is_traced(value: Any) -> bool:
    """A JAX or numpy array (e.g. a per-run value under ``jax.vmap``): accepted unchecked, since
    a traced value cannot be inspected."""
    return isinstance(value, (jax.Array, np.ndarray))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _option(method: str, name: str, value: Any, allowed: tuple) -> Any:
    """``value`` if it is one of ``allowed`` and of their kind (strings, or integers that are not
    bools): nothing is coerced, so ``"32"`` is not the micro-batch size 32, nor ``True`` the 1."""
    kind_ok = _is_int(value) if _is_int(allowed[0]) else isinstance(value, str)
    if not kind_ok or value not in allowed:
        raise ConfigError(f"{name} of method {method!r} must be one of {list(allowed)}, got {value!r}")
    return int(value) if _is_int(value) else value


def _number(name: str, value: Any, allowed: Range) -> float:
    """``value`` as a float if it is a real number (not a bool, not a string) inside ``allowed``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if float(value) not in allowed:
        raise ConfigError(f"{name} must be in {allowed}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Method:
    """One update rule: its registry name, formula, hyperparameters and optax transform.

    ``defaults`` are the numeric hyperparameters other than ``learning_rate`` (with ``ranges``
    their allowed intervals); ``options`` the static choices (all strings, or all integers),
    first value the default;
    ``vmappable`` the numeric hyperparameters (with ``learning_rate``) that may differ between
    runs of one compiled program; ``batch`` which batch the rule takes (``"mini"``, ``"full"``
    or ``"any"``). ``build(learning_rate, **numbers, **options)`` returns the inner transform
    (wrapped by :meth:`transform`); ``edge(h, λ, **hyperparams)`` the stability quantity, or
    ``None`` when the rule has no edge expressible in h and λ alone.
    """

    name: str
    rule: str
    defaults: Mapping[str, float]
    vmappable: tuple[str, ...]
    options: Mapping[str, tuple]
    batch: str
    build: Callable[..., optax.GradientTransformation] = field(repr=False, compare=False)
    ranges: Mapping[str, Range] = field(default_factory=dict, repr=False)
    edge: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    #: Requirements between hyperparameters: ``check(hyperparams)`` raises a ConfigError.
    check: Callable[[Mapping[str, Any]], None] | None = field(default=None, repr=False, compare=False)
    #: Requirement on the batch: ``batch_check(batch_size, hyperparams)`` raises a ConfigError.
    batch_check: Callable[[int, Mapping[str, Any]], None] | None = field(default=None, repr=False,
                                                                         compare=False)

    def __post_init__(self) -> None:
        if self.batch not in BATCHES:
            raise ConfigError(f"method {self.name}: batch must be one of {BATCHES}, got {self.batch!r}")
        if set(self.ranges) != set(self.defaults):
            raise ConfigError(f"method {self.name}: every numeric hyperparameter needs a range")
        numeric = {"learning_rate", *self.defaults}
        if not set(self.vmappable) <= numeric:
            raise ConfigError(f"method {self.name}: vmappable names must be numeric hyperparameters")
        if set(self.options) & numeric or any(not values for values in self.options.values()):
            raise ConfigError(f"method {self.name}: options must be non-empty and not numeric")
        for name, values in self.options.items():
            if not (all(isinstance(v, str) for v in values) or all(_is_int(v) for v in values)):
                raise ConfigError(f"method {self.name}: option {name} must list strings or integers, "
                                  f"got {values!r}")

    def __hash__(self) -> int:  # the mappings are unhashable; the name identifies the rule
        return hash(self.name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every hyperparameter name :meth:`hyperparams` accepts (not ``learning_rate``)."""
        return (*self.defaults, *self.options)

    def _complete(self, given: Mapping[str, Any], *, allow_arrays: bool) -> dict[str, Any]:
        if "learning_rate" in given:
            raise ConfigError(f"{self.name}: learning_rate is passed to transform()/stability() "
                              f"on its own, not among the hyperparameters {list(self.names)}")
        unknown = sorted(set(given) - set(self.names))
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown} for method {self.name!r}; "
                              f"valid names are {list(self.names)}")
        out: dict[str, Any] = {}
        for name, default in self.defaults.items():
            value = given.get(name, default)
            out[name] = value if allow_arrays and _is_traced(value) else _number(
                name, value, self.ranges[name])
        for name, allowed in self.options.items():
            out[name] = _option(self.name, name, given.get(name, allowed[0]), allowed)
        if self.check is not None:
            self.check(out)
        return out

    def hyperparams(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``given`` and fill in defaults: numbers as float, options as given.

        Unknown names, numbers given as strings or bools, values outside their range and options
        outside their allowed values raise :class:`ConfigError` (nothing is coerced).
        """
        return self._complete(given, allow_arrays=False)

    def check_batch(self, batch_size: int, hyperparams: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` if the rule cannot take batches of ``batch_size`` examples
        with ``hyperparams`` (validated first)."""
        if self.batch_check is not None:
            self.batch_check(batch_size, self.hyperparams(hyperparams))

    def transform(self, learning_rate: Any, **hyperparams: Any) -> optax.GradientTransformationExtraArgs:
        """The optax transform of this rule at ``learning_rate`` h and ``hyperparams``.

        Numeric values may be Python numbers (validated as in :meth:`hyperparams`) or arrays,
        e.g. per-run values traced under ``jax.vmap`` (accepted unchecked); missing ones take
        their defaults. Every numeric value is stored in the state by
        :func:`optax.inject_hyperparams`, so ``update`` uses the values of the state it is given,
        whatever values this transform was built with.
        """
        if not _is_traced(learning_rate):
            learning_rate = _number("learning_rate", learning_rate, LEARNING_RATE)
        values = self._complete(hyperparams, allow_arrays=True)
        factory = optax.inject_hyperparams(self.build, static_args=tuple(self.options))
        return factory(learning_rate=learning_rate, **values)

    def stability(self, learning_rate: Any, lambda_max: Any, **hyperparams: Any) -> Any:
        """s(h, λ): the value 2 is the rule's linear-stability edge on E = λθ²/2, or ``None``.

        Arithmetic only, so h, λ and the numeric hyperparameters may be floats or arrays (e.g.
        traced inside a jitted probe); missing hyperparameters take their defaults.
        """
        if self.edge is None:
            return None
        return self.edge(learning_rate, lambda_max, **self._complete(hyperparams, allow_arrays=True))


# --------------------------------------------------------------------------------------------
# Stability quantities on E = λθ²/2 (write a = hλ; the iteration is linear, x ← M x, and is
# stable iff every eigenvalue of M lies in the unit disc; for 2×2 M with characteristic
# polynomial p(z) = z² − tr(M) z + det(M), the Jury conditions are |det M| < 1, p(1) > 0, p(−1) > 0).


def _edge_gd(h: Any, lam: Any, **_: Any) -> Any:
    """GD/SGD: θ ← (1 − a)θ is stable iff |1 − a| < 1, i.e. ``s = hλ < 2``."""
    return h * lam


def _edge_heavy_ball(h: Any, lam: Any, *, beta: Any, **_: Any) -> Any:
    """Heavy ball (v ← βv + ∇E, θ ← θ − hv). With u = hv: u' = βu + aθ, θ' = (1 − a)θ − βu, so
    tr M = 1 − a + β, det M = β; p(1) = a > 0 and |det M| = β < 1 always, and
    p(−1) = 2(1 + β) − a > 0 iff a < 2(1 + β): ``s = hλ/(1 + β)``."""
    return h * lam / (1 + beta)


def _edge_nesterov(h: Any, lam: Any, *, beta: Any, **_: Any) -> Any:
    """Nesterov in optax's form (v ← βv + ∇E, θ ← θ − h(∇E + βv)). With u = hv:
    u' = βu + aθ, θ' = (1 − a(1 + β))θ − β²u, so tr M = 1 + β − a(1 + β), det M = β(1 − a);
    p(1) = a > 0; p(−1) = 2(1 + β) − a(1 + 2β) > 0 iff a < 2(1 + β)/(1 + 2β), and there
    |det M| = β|1 − a| < 1 (a ≤ 2). Hence ``s = hλ(1 + 2β)/(1 + β)`` (hλ at β = 0)."""
    return h * lam * (1 + 2 * beta) / (1 + beta)


def _edge_egr(h: Any, lam: Any, *, mu: Any, **_: Any) -> Any:
    """EGR: ∇(E + μ‖∇E‖²) = λ(1 + 2μλ)θ, so GD on it has ``s = hλ(1 + 2μλ)``."""
    return h * lam * (1 + 2 * mu * lam)


def _edge_sam(h: Any, lam: Any, *, rho: Any, ascent: str, **_: Any) -> Any:
    """SAM. Unnormalised ascent θ + ρ∇E: ∇E(θ + ρλθ) = λ(1 + ρλ)θ, so ``s = hλ(1 + ρλ)``.

    Normalised ascent θ + ρ∇E/‖∇E‖ (Foret et al.): θ' = (1 − a)θ − aρ·sign θ in 1-D, not linear.
    We return ``s = hλ``, its edge of boundedness: for a < 2 the iterates stay within
    max(|θ₀|, aρ/(2 − a)) + aρ (they settle on a 2-cycle of amplitude aρ/(2 − a) instead of
    converging, since the ascent step has length ρ however small ∇E is), and for a > 2,
    |θ'| = (a − 1)|θ| + aρ grows geometrically. In n dimensions the ascent adds a forcing term of
    norm ≤ hρλ_max to GD, which a stable linear map keeps bounded, so the edge is again hλ_max = 2.
    The local linearisation along the trajectory (Long & Bartlett's SAM edge), hλ(1 + ρλ/‖∇E‖),
    needs ‖∇E‖, which is not a property of (h, λ, ρ); probes wanting it must compute it.
    """
    return h * lam * (1 + rho * lam) if ascent == "unnormalized" else h * lam


def _edge_gnp(h: Any, lam: Any, **_: Any) -> Any:
    """Gradient-norm penalty: on E = λθ²/2 the step is θ' = (1 − a)θ − aαr·sign θ, normalised
    SAM with ρ = αr; its edge of boundedness is ``s = hλ`` (see :func:`_edge_sam`)."""
    return h * lam


# --------------------------------------------------------------------------------------------
# The rules (inner factories; numeric arguments may be traced arrays)


def _sgd(learning_rate: Any) -> optax.GradientTransformation:
    return optax.sgd(learning_rate)


def _momentum(learning_rate: Any, beta: Any) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=beta)


def _nesterov(learning_rate: Any, beta: Any) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=beta, nesterov=True)


def _egr(learning_rate: Any, mu: Any, fd_radius: Any, penalty_method: str) -> optax.GradientTransformation:
    """E + μ‖∇E‖² by :func:`igrlib.training.egr.egr_transform` (reads ``value_fn``), then SGD.

    ``fd_radius`` (ε, parameter units) is a numeric hyperparameter rather than an option so that
    it can be vmapped like μ; it acts only with ``penalty_method="finite_difference"``.
    """
    return optax.chain(egr_transform(mu, penalty_method, fd_radius=fd_radius), optax.sgd(learning_rate))


def _check_egr(values: Mapping[str, Any]) -> None:
    """fd_radius only acts in the finite-difference product: a value other than the default with
    an exact product is a mistake (the default passes, so completed hyperparameters round-trip)."""
    radius = values["fd_radius"]
    if (values["penalty_method"] != "finite_difference" and not _is_traced(radius)
            and radius != losses.FD_RADIUS):
        raise ConfigError("fd_radius is only used with penalty_method='finite_difference', "
                          f"not {values['penalty_method']!r}")


def _unit_direction(tree: Params) -> Params:
    """``g/‖g‖`` over the whole tree, and 0 where g = 0 (no NaN at a stationary point)."""
    norm = jnp.sqrt(losses.sq_norm(tree))
    scale = jnp.where(norm > 0, 1 / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jax.tree_util.tree_map(lambda g: g * scale, tree)


def _normalize() -> optax.GradientTransformation:
    return optax.stateless(lambda updates, params=None: _unit_direction(updates))


def _sam(learning_rate: Any, rho: Any, ascent: str) -> optax.GradientTransformationExtraArgs:
    """SAM: θ ← θ − h·∇E(θ + ρ·d), d = ∇E/‖∇E‖ (``"normalized"``) or ∇E (``"unnormalized"``).

    :func:`optax.contrib.sam` in opaque mode (sync period 2: one ascent step, then the outer SGD
    step from θ with the gradient at the ascent point), so each call to ``update`` is one whole
    SAM step and the program sees only the descent. The ascent gradient comes from the program's
    ``grad_fn``: same batch, batch-norm statistics of that batch, its state update discarded, as
    in Foret et al.'s implementation where the second pass does not update the running
    statistics. The normalisation returns 0 at ∇E = 0 (then the step is plain GD).
    """
    ascent_dir = _normalize() if ascent == "normalized" else optax.identity()
    inner = optax.contrib.sam(optax.sgd(learning_rate), optax.chain(ascent_dir, optax.sgd(rho)),
                              sync_period=2, opaque_mode=True)

    def update(updates: Params, state: Any, params: Params | None = None, *,
               grad_fn: Callable[[Params], Params], **extra: Any):
        del extra  # value_fn and anything else the program passes
        return inner.update(updates, state, params, grad_fn=lambda p, _: grad_fn(p))

    return optax.GradientTransformationExtraArgs(inner.init, update)


def _gnp(learning_rate: Any, alpha: Any, r: Any) -> optax.GradientTransformationExtraArgs:
    """Gradient-norm penalty (Zhao, Zhang & Hu, ICML 2022): descent on E + λ‖∇E‖ with the
    finite-difference gradient ∇E + λH∇E/‖∇E‖ ≈ (1 − α)∇E(θ) + α∇E(θ + r∇E/‖∇E‖), α = λ/r.

    The paper's formula with the raw ∇E(θ) in the mix (their released code, by default, mixes
    the normalised ∇E(θ)/‖∇E‖ instead). α = 1, r = ρ is normalised SAM. Defaults α = 0.8,
    r = 0.1: the settings of the authors' CIFAR-10 ResNet recipe.
    """
    sgd = optax.sgd(learning_rate)

    def update(updates: Params, state: Any, params: Params | None = None, *,
               grad_fn: Callable[[Params], Params], **extra: Any):
        del extra
        ahead = grad_fn(jax.tree_util.tree_map(lambda p, d: p + r * d, params, _unit_direction(updates)))
        mixed = jax.tree_util.tree_map(lambda g, ga: (1 - alpha) * g + alpha * ga, updates, ahead)
        return sgd.update(mixed, state, params)

    return optax.GradientTransformationExtraArgs(sgd.init, update)


def _check_micro_batches(batch_size: int, values: Mapping[str, Any]) -> None:
    """At least two micro-batches (K = ⌊|B|/b⌋ ≥ 2): with one, P is identically 0."""
    b = values["micro_batch"]
    if batch_size < 2 * b:
        raise ConfigError(f"var_penalty with micro_batch={b} needs a batch of at least {2 * b} "
                          f"examples (two micro-batches), got {batch_size}")


def update_args(loss_on: Callable[[Params, Any, Any], jax.Array], batch: tuple[Any, Any]) -> dict[str, Any]:
    """The extra arguments of every rule's ``update`` (module docstring) from ``loss_on(p, x, y)``,
    the mean loss of p on (x, y), and the step's ``batch = (x, y)``."""
    def value_fn(p: Params) -> jax.Array:
        return loss_on(p, *batch)

    return dict(value_fn=value_fn, grad_fn=jax.grad(value_fn), loss_on=loss_on, batch=batch)


def _adam(learning_rate: Any, b1: Any, b2: Any, eps: Any) -> optax.GradientTransformation:
    """Adam (Kingma & Ba, Algorithm 1; ε outside the square root, as optax). No stability
    quantity: on a quadratic the step is preconditioned by 1/(√v̂ + ε), so its edge is set by
    the preconditioned sharpness λ_max(diag(√v̂ + ε)⁻¹ H), not by h and λ_max alone."""
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


# --------------------------------------------------------------------------------------------
# The registry


def _method(name: str, rule: str, build: Callable[..., Any], *, batch: str = "any",
            defaults: Mapping[str, tuple[float, Range]] | None = None,
            options: Mapping[str, tuple] | None = None, **kwargs: Any) -> Method:
    """A :class:`Method` whose numeric hyperparameters are all vmappable (they live in the state)."""
    defaults = defaults or {}
    return Method(name=name, rule=rule, build=build, batch=batch,
                  defaults={k: v for k, (v, _) in defaults.items()},
                  ranges={k: r for k, (_, r) in defaults.items()},
                  vmappable=("learning_rate", *defaults), options=options or {}, **kwargs)


METHODS: dict[str, Method] = {m.name: m for m in (
    _method("sgd", "θ ← θ − h·∇E_B(θ)   (E_B: loss of a mini-batch B)", _sgd, batch="mini",
            edge=_edge_gd),
    _method("gd", "θ ← θ − h·∇E(θ)   (E: loss of the whole training set)", _sgd, batch="full",
            edge=_edge_gd),
    _method("momentum", "v ← β·v + ∇E;  θ ← θ − h·v", _momentum,
            defaults={"beta": (0.9, UNIT)}, edge=_edge_heavy_ball),
    _method("nesterov", "v ← β·v + ∇E;  θ ← θ − h·(∇E + β·v)", _nesterov,
            defaults={"beta": (0.9, UNIT)}, edge=_edge_nesterov),
    _method("egr", "θ ← θ − h·(∇E + 2μ·H∇E)   (gradient descent on E + μ‖∇E‖²)", _egr,
            defaults={"mu": (0.01, NONNEGATIVE), "fd_radius": (losses.FD_RADIUS, POSITIVE)},
            options={"penalty_method": losses.PENALTY_METHODS}, edge=_edge_egr, check=_check_egr),
    _method("sam", "θ ← θ − h·∇E(θ + ρ·∇E/‖∇E‖)   (ascent='unnormalized': θ + ρ·∇E)", _sam,
            defaults={"rho": (0.05, POSITIVE)}, options={"ascent": ("normalized", "unnormalized")},
            edge=_edge_sam),
    _method("gnp", "θ ← θ − h·[(1 − α)·∇E(θ) + α·∇E(θ + r·∇E/‖∇E‖)]   (≈ descent on E + αr·‖∇E‖)",
            _gnp, defaults={"alpha": (0.8, NONNEGATIVE), "r": (0.1, POSITIVE)}, edge=_edge_gnp),
    _method("var_penalty", "θ ← θ − h·∇[E + (λ/4)·(1/K)Σ_k‖∇Ê_k − ∇Ē‖²]   (Ê_k: K = ⌊|B|/b⌋ "
            "micro-batches of size b of the step's batch, re-drawn every step)", variance_penalty,
            defaults={"lam": (0.1, NONNEGATIVE)}, options={"micro_batch": MICRO_BATCHES},
            batch_check=_check_micro_batches),
    _method("adam", "m ← β₁m + (1 − β₁)∇E;  v ← β₂v + (1 − β₂)∇E²;  θ ← θ − h·m̂/(√v̂ + ε)   "
            "(m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ))", _adam,
            defaults={"b1": (0.9, UNIT), "b2": (0.999, UNIT), "eps": (1e-8, POSITIVE)}),
)}


def get(name: str) -> Method:
    """The method registered as ``name``; :class:`ConfigError` listing the valid names otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
