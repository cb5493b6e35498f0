"""A job from a validated config: the checks before anything runs, the objects it builds,
the run and its job.json, a sweep's summary."""
