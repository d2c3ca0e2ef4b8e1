"""The one training loop: accumulation, clipping, schedule, eval cadence, checkpoints, metrics."""
