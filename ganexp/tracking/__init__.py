"""Where a run's numbers and pictures go: W&B, metrics.jsonl and the sample grids."""
