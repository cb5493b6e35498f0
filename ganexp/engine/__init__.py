"""The training loop (n_critic critic steps, one generator step, the terms, the hooks),
stacked replicas, checkpoints, processes and devices."""
