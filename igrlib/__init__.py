"""igrlib: the library behind the Implicit Gradient Regularization book.

Layers, each importing only from the ones above it in this list:

* :mod:`igrlib.config`: profiles, :class:`~igrlib.config.ConfigError` and input validators;
* :mod:`igrlib.maths`: pure functions, no I/O: losses and the implicit regularizer, models,
  curvature (HVP, Lanczos, Hutchinson), backward error analysis, robustness, landscape, statistics;
* :mod:`igrlib.io`: data sets (checksums), the results store, figure export, paths;
* :mod:`igrlib.training`: update rules (optax transforms), the training program, probes along
  the trajectory, monitors of a run's status;
* :mod:`igrlib.measurement`: measurements of a trained network at its selected checkpoint;
* :mod:`igrlib.sweep` (orchestration) and :mod:`igrlib.plots`;
* :mod:`igrlib.experiments`: one module per question, its grid per profile and its findings.
"""

__version__ = "0.1.0"
