"""CycleGAN's terms against hand values, and the image pool's behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganexp.tasks.unpaired_translation import ImagePool, cycle_loss, identity_loss


def test_the_cycle_term_is_lambda_times_both_mean_l1_distances() -> None:
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    rec_a = torch.full_like(a, 0.5)  # off by 0.5 everywhere
    rec_b = b.clone()
    rec_b[0, 0, 0, 0] = 0.0  # off by 1 in one of 8 pixels
    assert float(cycle_loss(a, rec_a, b, rec_b, 10.0)) == pytest.approx(10 * (0.5 + 1 / 8))


class Shift(nn.Module):
    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def forward(self, z: None, x: torch.Tensor) -> torch.Tensor:
        return x + self.by


def test_the_identity_term_is_weight_times_how_far_each_generator_moves_its_own_domain() -> None:
    a, b = torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4)
    loss = identity_loss(Shift(0.25), Shift(-1.0), a, b, weight=5.0)
    assert float(loss) == pytest.approx(5.0 * (0.25 + 1.0))
    assert float(identity_loss(Shift(0.0), Shift(0.0), a, b, 5.0)) == 0.0


def test_the_pool_passes_images_through_while_it_fills_then_mixes_in_old_ones() -> None:
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the new images themselves
    new = torch.arange(10.0, 110.0).view(100, 1, 1, 1)
    shown = pool.query(new).flatten()
    swapped = shown != new.flatten()
    assert 30 < int(swapped.sum()) < 70  # about half are stored images
    # a stored image is one shown before: the first four, or an earlier new one
    assert (shown[swapped] < new.flatten()[swapped]).all()
    assert len(pool.images) == 4


def test_a_pool_of_size_zero_is_no_pool_and_a_pool_resumes_exactly() -> None:
    x = torch.randn(5, 1, 2, 2)
    assert torch.equal(ImagePool(0).query(x), x)
    torch.manual_seed(1)
    pool = ImagePool(3)
    pool.query(torch.randn(6, 1, 2, 2))
    saved, rng = pool.state_dict(), torch.get_rng_state()
    later = pool.query(x)
    resumed = ImagePool(0)
    resumed.load_state_dict(saved, torch.device("cpu"))
    torch.set_rng_state(rng)
    assert torch.equal(resumed.query(x), later)
