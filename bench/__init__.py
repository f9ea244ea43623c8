"""Benchmarks of igrlib against what a researcher would use instead, and against the machine.

``python -m bench.run`` (or ``make bench``) runs every section, prints a table of the targets
(met or not) and saves ``bench/results/<machine>.json``, which the book's Performance
page plots. Sections, one module each:

* :mod:`bench.step`: igrlib's training step vs a hand-written PyTorch loop and a plain
  Haiku+optax loop;
* :mod:`bench.penalty`: the cost of the gradient-norm penalty step per method, and the error of
  the finite-difference method;
* :mod:`bench.grid`: a learning-rate × seed grid as one vmapped program vs one run at a time;
* :mod:`bench.eigen`: Hessian-vector products for the top eigenvalue, Lanczos vs power iteration;
* :mod:`bench.roofline`: achieved FLOP/s of the width-800 step vs a dense matmul;
* :mod:`bench.conv`: the ResNet-18 step on CPU in igrlib's program vs a Python loop and ``lax.scan``;
* :mod:`bench.probes`: the cost of the trajectory probes at the ``cpu`` profile's defaults;
* :mod:`bench.book`: the book's execution time per chapter, read from its execution cache.

Every timing is a median over repeats after a warm-up (compilation excluded), and every ratio
compares cases measured interleaved in the same process (see :mod:`bench.timing`).
"""
