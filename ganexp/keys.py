"""What the logged metric keys mean for whoever reads them (DESIGN's logged keys): which way
is better. The W&B summaries (``ganexp.tracking``) and the sweep's rankings
(``ganexp.analysis``) both read it here, so a dashboard and a summary never disagree."""

from __future__ import annotations

# eval/ scores that count or measure a fraction: higher is better, and never below 0
SCORES = (
    "eval/is_",
    "eval/precision",
    "eval/recall",
    "eval/density",
    "eval/coverage",
    "eval/classes_covered",
    "eval/modes",
    "eval/high_quality",
)
# eval/ keys where a larger value is better: those scores, the semi-supervised accuracies,
# translation's PSNR, SSIM and transfer accuracy; every other key is a distance, a divergence or
# an error, lower is better
HIGHER_IS_BETTER = (*SCORES, "eval/ssl_", "eval/psnr", "eval/ssim", "eval/transfer_accuracy")


def maximize(key: str) -> bool:
    """Whether a larger value of metric ``key`` is better."""
    return key.startswith(HIGHER_IS_BETTER)


# eval/ keys that cannot go below 0 (the scores, distances, divergences, errors, accuracies): a
# plotted interval is cut there, where a t interval over a few seeds would cross it
NON_NEGATIVE = (
    *SCORES,
    "eval/class_kl",
    "eval/reverse_kl",
    "eval/fd_",
    "eval/fid",
    "eval/sliced_wasserstein",
    "eval/distance",  # the Dirac-GAN's distance to (0, 0)
    "eval/l1",
    "eval/cycle_l1",
    "eval/psnr",
    "eval/ssl_accuracy",
    "eval/ssl_baseline_accuracy",
    "eval/transfer_accuracy",
)


def lower_bound(key: str) -> float | None:
    """The least value metric ``key`` can take, where it has one."""
    return 0.0 if key.startswith(NON_NEGATIVE) else None
