"""Training: update rules, the training program, probes along the trajectory and monitors."""
