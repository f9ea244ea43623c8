"""igrlib: the library behind the Implicit Gradient Regularization book.

Layers (nothing imports from a layer above it):

* pure maths: :mod:`losses`, :mod:`models`, :mod:`curvature`, :mod:`bea`, :mod:`robustness`
* data and loops: :mod:`data`, :mod:`train`
* orchestration and storage: :mod:`sweep`, :mod:`results`, :mod:`figures`
* experiments: :mod:`igrlib.experiments` (one module per paper experiment)
"""

__version__ = "0.1.0"
