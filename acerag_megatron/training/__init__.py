"""Training: arguments, batch collation, loss weighting, schedules, checkpoints, the loop."""
