"""Evaluation of a generator during training (``eval/...`` keys)."""
