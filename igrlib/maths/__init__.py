"""Pure functions, no I/O: losses, models, curvature, backward error analysis, robustness,
landscape and statistics."""
