"""The unrolled GAN's look-ahead critic (ganexp.parts.unrolled): its k steps are the optimizer's
own k steps, G's gradient flows through them, and D itself is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import compose_config
from torch import nn

from ganexp.config import validate
from ganexp.engine.distributed import World
from ganexp.parts.losses import BCELoss
from ganexp.parts.unrolled import look_ahead
from ganexp.session.run import build_trainer
from ganexp.tasks import task_of


class Critic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).flatten()


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999), weight_decay=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_look_ahead_is_the_optimizers_own_steps(name: str) -> None:
    torch.manual_seed(0)
    critic, loss = Critic(), BCELoss()
    optimizer = OPTIMIZERS[name](critic.parameters())
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    for _ in range(2):  # a state to start from: moments and a step count
        optimizer.zero_grad()
        loss.d_loss(critic(real), critic(fake + 1)).backward()
        optimizer.step()
    before = copy.deepcopy(critic.state_dict())
    state_before = copy.deepcopy(optimizer.state_dict())
    stepped = copy.deepcopy(critic)
    stepped_opt = OPTIMIZERS[name](stepped.parameters())
    stepped_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # not its tensors
    for _ in range(3):
        stepped_opt.zero_grad()
        loss.d_loss(stepped(real), stepped(fake)).backward()
        stepped_opt.step()
    ahead = look_ahead(critic, optimizer, loss, 3, lambda: (real, None, fake, None))
    probe = torch.randn(32, 2)
    torch.testing.assert_close(ahead(probe, None), stepped(probe), rtol=1e-5, atol=1e-6)
    for key, value in critic.state_dict().items():  # D itself did not move
        assert torch.equal(value, before[key]), key
    state_after = optimizer.state_dict()  # nor did its optimizer's state
    assert state_after["param_groups"] == state_before["param_groups"]
    for index, slots in state_before["state"].items():
        for key, value in slots.items():
            assert torch.equal(state_after["state"][index][key], value), (index, key)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_a_parameter_with_no_gradient_leaves_gs_gradient_finite(name: str) -> None:
    """A dead ReLU unit on the first step (no optimizer state yet): its parameters' gradient
    and running mean square are exactly 0, where sqrt's slope is infinite."""
    torch.manual_seed(0)
    critic = Critic()
    critic.net[1] = nn.ReLU()
    with torch.no_grad():
        critic.net[0].bias[0] = -100.0  # unit 0 never fires
    loss = BCELoss("minimax")
    optimizer = {  # no weight decay: it would make every gradient non-zero
        "adam": lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999)),
        "rmsprop": OPTIMIZERS["rmsprop"],
    }[name](critic.parameters())
    shift = torch.zeros(2, requires_grad=True)
    noise, real = torch.randn(16, 2), torch.randn(16, 2)
    fake = noise + shift
    d = look_ahead(critic, optimizer, loss, 3, lambda: (real, None, fake, None))
    (g,) = torch.autograd.grad(loss.g_loss(d(fake, None)), shift)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_gs_gradient_flows_through_the_look_ahead() -> None:
    torch.manual_seed(0)
    critic, loss = Critic(), BCELoss("minimax")
    optimizer = torch.optim.Adam(critic.parameters(), lr=0.05)
    shift = torch.zeros(2, requires_grad=True)  # a "generator": fakes = noise + shift
    noise, real = torch.randn(16, 2), torch.randn(16, 2)

    def grad(steps: int, detach: bool = False) -> torch.Tensor:
        fake = noise + shift
        seen = fake.detach() if detach else fake  # what the look-ahead steps train on
        d = look_ahead(critic, optimizer, loss, steps, lambda: (real, None, seen, None))
        (g,) = torch.autograd.grad(loss.g_loss(d(fake, None)), shift)
        return g

    plain, unrolled, through_d_only = grad(0), grad(3), grad(3, detach=True)
    assert plain.abs().sum() > 0 and unrolled.abs().sum() > 0
    assert not torch.allclose(plain, unrolled)
    # the look-ahead's dependence on G counts: not only that D moved
    assert not torch.allclose(unrolled, through_d_only)


def test_an_unrolled_run_steps_with_a_finite_gradient_that_k0_does_not_give() -> None:
    """Through the trainer: k = 5 gives G a finite gradient other than k = 0's (k = 0, the
    plain step, is what the golden test pins)."""
    grads = {}
    for k in (0, 5):
        cfg = validate(
            compose_config(
                "experiment=unrolled_ring",
                f"loss.unrolled_steps={k}",
                "logger=none",
                "trainer.batch_size=64",
                "trainer.z_dim=8",
            )
        )
        torch.manual_seed(0)
        trainer = build_trainer(cfg, task_of(cfg), torch.device("cpu"), World())
        trainer.run_step()
        grads[k] = torch.cat([p.grad.flatten() for p in trainer.generator.parameters()])
    assert torch.isfinite(grads[5]).all()
    assert not torch.allclose(grads[0], grads[5])
