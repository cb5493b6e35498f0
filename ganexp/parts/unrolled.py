"""The unrolled GAN's look-ahead critic (Metz, Poole, Pfau and Sohl-Dickstein 2017).

G's loss is taken against D after k steps of D's own optimizer on the step's batch, each step
taken differentiably (``torch.autograd.grad(create_graph=True)`` and ``torch.func.
functional_call``), so G's gradient flows through how D would answer G's move. The steps are the
optimizer's own update rule, from its current state (Adam's moments and step count, RMSprop's
mean square, or none for SGD), as the reference notebook (poolio/unrolled_gan) unrolls Keras'
Adam. D's real parameters, buffers and optimizer state are left untouched: the look-ahead works
on copies, and D itself then takes its ordinary step. Only D's adversarial loss is unrolled (no
penalty terms, no weight clipping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ganexp.parts.losses import GANLoss

Critic = Callable[[Tensor, Tensor | None], Tensor]


def _sqrt(v: Tensor) -> Tensor:
    """``v.sqrt()`` with a finite derivative at 0: where a parameter's gradient and running
    mean square are both 0 (the first step, a dead unit), sqrt's infinite slope times 0 would
    make G's gradient NaN. Values are sqrt's own."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, 1.0).sqrt(), 0.0)


def _update(optimizer: torch.optim.Optimizer, param: Tensor, grad: Tensor, slots: dict) -> Tensor:
    """One differentiable step of ``optimizer``'s rule for ``param``; ``slots`` carries the
    rule's running state between steps."""
    group = optimizer.param_groups[0]
    lr, decay = group["lr"], group.get("weight_decay", 0.0)
    if decay:
        grad = grad + decay * param
    if isinstance(optimizer, torch.optim.Adam):
        beta1, beta2 = group["betas"]
        slots["step"] += 1
        slots["m"] = beta1 * slots["m"] + (1 - beta1) * grad
        slots["v"] = beta2 * slots["v"] + (1 - beta2) * grad * grad
        m_hat = slots["m"] / (1 - beta1 ** slots["step"])
        v_hat = slots["v"] / (1 - beta2 ** slots["step"])
        return param - lr * m_hat / (_sqrt(v_hat) + group["eps"])
    if isinstance(optimizer, torch.optim.RMSprop):
        alpha = group["alpha"]
        slots["v"] = alpha * slots["v"] + (1 - alpha) * grad * grad
        return param - lr * grad / (_sqrt(slots["v"]) + group["eps"])
    return param - lr * grad  # SGD without momentum


def _slots(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict:
    """The optimizer's running state of ``param``, as plain tensors the look-ahead may replace."""
    state = optimizer.state.get(param, {})
    zeros = torch.zeros_like(param)
    step = state.get("step", 0)
    return {
        "step": float(step.item() if torch.is_tensor(step) else step),
        "m": state.get("exp_avg", zeros).detach(),
        "v": state.get("exp_avg_sq", state.get("square_avg", zeros)).detach(),
    }


def look_ahead(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: GANLoss,
    steps: int,
    d_inputs: Callable[[], tuple[Tensor, Tensor | None, Tensor, Tensor | None]],
) -> Critic:
    """D after ``steps`` differentiable steps of ``optimizer`` on D's loss, as a function of
    (inputs, labels). ``d_inputs()`` gives each step's (real, labels, fake, fake labels): the
    step's batch, the fakes with their graph to G (noised afresh when instance noise is on)."""
    names = [name for name, _ in critic.named_parameters()]
    originals = [param for _, param in critic.named_parameters()]
    params = [param.detach().requires_grad_(True) for param in originals]
    buffers = {name: buffer.clone() for name, buffer in critic.named_buffers()}
    slots = [_slots(optimizer, param) for param in originals]
    for _ in range(steps):
        state = dict(zip(names, params, strict=True)) | buffers
        real, labels, fake, fake_labels = d_inputs()
        real_out = functional_call(critic, state, (real, labels)).float()
        fake_out = functional_call(critic, state, (fake, fake_labels)).float()
        grads = torch.autograd.grad(loss.d_loss(real_out, fake_out), params, create_graph=True)
        params = [
            _update(optimizer, param, grad, slot)
            for param, grad, slot in zip(params, grads, slots, strict=True)
        ]
    final = dict(zip(names, params, strict=True)) | buffers
    return lambda inputs, labels: functional_call(critic, final, (inputs, labels))
