"""The training engine: one loop, checkpoints, signals and metrics for every task."""
