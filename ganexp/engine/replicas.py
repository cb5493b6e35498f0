"""``trainer.replicas=K``: K independent runs (seeds ``seed .. seed+K-1``) trained as one stacked
model in one process: what makes several seeds cost little more than one when small networks
leave the hardware idle.

Each replica is a whole run of its own, built by :func:`ganexp.session.run.setup` in
``replica_k/``: its
networks, data order, fixed noise, hooks, checkpoints, metrics.jsonl and W&B run. Training does
not call their steps one by one. Their weights, buffers (batch norm statistics, spectral norm's
power-iteration vectors) and optimizer states are stacked along a leading replica axis
(``torch.func.stack_module_state``), each replica's networks are left holding *views* of its
slice (so its hooks, samples, evaluations and checkpoints see its current weights at no cost),
and one step runs every replica's forward passes as one ``torch.func.vmap`` of
``functional_call``. The losses are vmapped too, so each replica's loss is its own batch mean,
and the sum over replicas is differentiated: each slice of the stacked gradient is its own
replica's gradient. Adam and RMSprop are elementwise, so one optimizer over the stacked weights
is K optimizers. Every random draw (noise, the gradient penalty's interpolation) comes from the
replica's own global torch stream, swapped in around its draws and its hooks: replica k draws
exactly what a separate run with seed ``seed + k`` draws.

Where a network convolves on the CPU, vmap's grouped convolutions are slower than K plain ones,
so there the replicas take their own steps in turn instead (:func:`vectorize`): the separate
runs' arithmetic, in one process. What cannot be vectorized is refused with K > 1 before
training (:func:`ganexp.config.validate`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ganexp.engine.trainer import StepStrategy, Trainer
from ganexp.errors import StopRequested
from ganexp.models.common import pack_of
from ganexp.parts.terms import LossPenalty

# a replica's global random streams: the CPU generator's state, and the current CUDA device's
Stream = tuple[torch.Tensor, torch.Tensor | None]


def get_stream() -> Stream:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def set_stream(stream: Stream) -> None:
    torch.set_rng_state(stream[0])
    if stream[1] is not None:
        torch.cuda.set_rng_state(stream[1])


class Stacked:
    """K copies of one network as stacked leaf tensors, run as one vmapped call. Each copy's
    module is re-pointed to views of its slice, so it always holds its replica's values."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.params, self.buffers = stack_module_state(modules)
        self.template = copy.deepcopy(modules[0]).to("meta")
        for k, module in enumerate(modules):
            for name, value in self.params.items():
                _set(module, name, nn.Parameter(value.detach()[k]))
            for name, value in self.buffers.items():
                _set(module, name, value[k])
        self.modules = modules

        def call(params: dict, buffers: dict, *args: torch.Tensor | None) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), args)

        self._call = call

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        dims = tuple(None if a is None else 0 for a in args)
        return vmap(self._call, in_dims=(0, 0, *dims))(self.params, self.buffers, *args)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def share_grads(self) -> None:
        """Each replica's modules see their slice of the stacked gradients (grad_norm logs)."""
        for name, value in self.params.items():
            for k, module in enumerate(self.modules):
                grad = None if value.grad is None else value.grad[k]
                _get(module, name).grad = grad


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def _get(module: nn.Module, name: str) -> torch.Tensor:
    owner, leaf = _owner(module, name)
    return getattr(owner, leaf)


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, leaf = _owner(module, name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = value
    else:
        owner._buffers[leaf] = value


class OptimizerSlice:
    """One replica's view of the stacked optimizer: what a run's checkpoint holds and loads
    (``opt_g`` / ``opt_d``), in a separate run's format, so a replica's checkpoint is a run's."""

    def __init__(self, stacked: torch.optim.Optimizer, k: int) -> None:
        self.stacked, self.k = stacked, k

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.stacked.param_groups  # the learning rates: the same for every replica

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.stacked.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        full = self.stacked.state_dict()
        params = self._params()
        state = {
            i: {key: _slice(value, params[i], self.k) for key, value in entry.items()}
            for i, entry in full["state"].items()
        }
        return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = self._params()
        for i, entry in state["state"].items():
            param = params[int(i)]
            own = self.stacked.state.setdefault(param, {})
            for key, value in entry.items():
                if torch.is_tensor(value) and value.shape == param.shape[1:]:
                    if key not in own:
                        own[key] = torch.zeros_like(param)
                    own[key][self.k].copy_(value)
                else:  # the step count: the same for every replica
                    own[key] = value.clone() if torch.is_tensor(value) else value


def _like(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s type and settings over ``params``."""
    return type(optimizer)(params, **optimizer.defaults)


def _slice(value: Any, param: torch.Tensor, k: int) -> Any:
    if torch.is_tensor(value) and value.shape == param.shape:
        return value[k].clone()
    return value.clone() if torch.is_tensor(value) else value


class ReplicaGroup(StepStrategy):
    """The step strategy of K trainers (one per replica, each with its own hooks): one stacked
    step, or, not ``vectorized``, each trainer's own step in turn (in its own stream: the
    separate runs' arithmetic, bit for bit, in one process). The first trainer's
    :meth:`~ganexp.engine.trainer.Trainer.train` drives them; a replica whose hooks fail stops
    alone."""

    isolated = True

    def __init__(self, trainers: list[Trainer], rng: list[Stream], vectorized: bool) -> None:
        """``rng``: each replica's global torch streams, as its setup left them."""
        self.trainers = self.runs = trainers
        self.replicas = len(trainers)
        self.rng = list(rng)
        self.step = trainers[0].step
        self.vectorized = vectorized
        self.failed: dict[int, str] = {}
        if vectorized:
            self._stack()
        trainers[0].strategy = self

    def _stack(self) -> None:
        """Stack the replicas' networks, and their optimizers' states into one optimizer that
        each trainer sees its slice of."""
        trainers, first = self.trainers, self.trainers[0]
        saved_g = [t.opt_g.state_dict() for t in trainers]
        saved_d = [t.opt_d.state_dict() for t in trainers]
        self.G = Stacked([t.generator for t in trainers])
        self.D = Stacked([t.discriminator for t in trainers])
        self.opt_g = _like(first.opt_g, self.G.parameters())
        self.opt_d = _like(first.opt_d, self.D.parameters())
        for k, trainer in enumerate(trainers):
            trainer.opt_g = OptimizerSlice(self.opt_g, k)
            trainer.opt_d = OptimizerSlice(self.opt_d, k)
            trainer.opt_g.load_state_dict(saved_g[k])
            trainer.opt_d.load_state_dict(saved_d[k])

    @contextmanager
    def own_stream(self, k: int) -> Iterator[None]:
        """Replica k's global torch stream swapped in, and saved back after."""
        set_stream(self.rng[k])
        try:
            yield
        finally:
            self.rng[k] = get_stream()

    def hook_context(self, k: int) -> AbstractContextManager:
        return self.own_stream(k)

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Each replica's batch, noise and (WGAN-GP) interpolation weights, in the order a
        separate run draws them, from its own data source and stream."""
        reals, labels, noise, eps = [], [], [], []
        first = self.trainers[0]
        penalty = any(isinstance(term, LossPenalty) for term in first.d_terms)
        pack = pack_of(first.discriminator)
        for k, trainer in enumerate(self.trainers):
            with self.own_stream(k):
                real, label = trainer.data.next_batch()
                reals.append(real)
                labels.append(label)
                noise.append(trainer.noise(real.shape[0]))
                if penalty:
                    eps.append(torch.rand(real.shape[0] // pack, device=real.device))
        stacked_labels = torch.stack(labels) if labels[0] is not None else None
        stacked_eps = torch.stack(eps) if eps else None
        return torch.stack(reals), stacked_labels, torch.stack(noise), stacked_eps

    def run_step(self) -> None:
        """Trainer.run_step for every replica (its docstring says what a step is).

        A stop signal abandons the step as in a separate run (StopRequested, every replica
        back at its last completed step) only while no replica has finished it: between the
        stacked step's critic iterations, or in the first replica's turn. In a later turn the
        signal reaches the other replicas after the step (:meth:`train`), so that all of them
        stop at the same step."""
        if not self.vectorized:
            for k in self.live:
                trainer = self.trainers[k]
                with self.own_stream(k):
                    try:
                        trainer.run_step()
                    except StopRequested:  # the first turn only: the signal's receiver
                        trainer.rewind_step()
                        raise
            return
        first = self.trainers[0]
        loss, conditional = first.loss, first.conditional
        G, D = self.G, self.D
        before = self._step_state() if first.n_critic > 1 else None
        for i in range(first.n_critic):
            if i:
                self._abandon_if_stopping(before)
            real, labels, z, eps = self._draw()
            fake_labels = labels if conditional else None
            last = i == first.n_critic - 1
            with torch.set_grad_enabled(last):
                fake = G(z, fake_labels)
            real_out, fake_out = D(real, labels).float(), D(fake.detach(), fake_labels).float()
            d_losses = vmap(loss.d_loss)(real_out, fake_out)
            penalties = None if eps is None else self._penalty(real, fake, labels, eps)
            total = d_losses if penalties is None else d_losses + penalties
            self.opt_d.zero_grad(set_to_none=True)
            total.sum().backward()
            self.opt_d.step()
            loss.after_d_step(D)  # weight clipping, elementwise on the stacked weights
        self._abandon_if_stopping(before)
        D.share_grads()
        for value in D.params.values():
            value.requires_grad_(False)
        g_losses = vmap(loss.g_loss)(D(fake, fake_labels).float())
        self.opt_g.zero_grad(set_to_none=True)
        g_losses.sum().backward()
        self.opt_g.step()
        for value in D.params.values():
            value.requires_grad_(True)
        G.share_grads()
        with torch.no_grad():
            zero = torch.zeros(self.replicas, device=first.device)
            kept = {
                "loss/d": d_losses.detach(),
                "loss/g": g_losses.detach(),
                "d/real": vmap(loss.report)(real_out),
                "d/fake": vmap(loss.report)(fake_out),
                "loss/gp": zero if penalties is None else penalties.detach(),
            }  # the other statistics are of terms replicas refuse
        for k, trainer in enumerate(self.trainers):
            if trainer.ema is not None:
                trainer.ema.update_parameters(trainer.generator)
            with torch.no_grad():
                own = {key: value[k] for key, value in kept.items()}
                trainer.record(own, real_out[k], fake_out[k])

    def _step_state(self) -> dict[str, Any]:
        """What a stacked step changes before its generator update, copied: the critics'
        weights, buffers and optimizer, the generators' buffers (batch norm statistics move with
        the critic steps' fakes), and each replica's data position and random stream."""
        return {
            "discriminator": [t.detach().clone() for t in self._critic_tensors()],
            "generator_buffers": [b.clone() for b in self.G.buffers.values()],
            "opt_d": copy.deepcopy(self.opt_d.state_dict()),
            "data": [copy.deepcopy(t.data.state_dict()) for t in self.trainers],
            "rng": list(self.rng),
        }

    def _critic_tensors(self) -> list[torch.Tensor]:
        return [*self.D.params.values(), *self.D.buffers.values()]

    def _abandon_if_stopping(self, before: dict[str, Any] | None) -> None:
        """With several critic steps, on a stop signal: put back the state from ``before`` the
        step, and abandon it (StopRequested), as Trainer.run_step does."""
        if before is None or not self.trainers[0].stop_requested():
            return
        with torch.no_grad():
            for tensor, saved in zip(self._critic_tensors(), before["discriminator"], strict=True):
                tensor.copy_(saved)
            for buffer, saved in zip(
                self.G.buffers.values(), before["generator_buffers"], strict=True
            ):
                buffer.copy_(saved)
        self.opt_d.load_state_dict(before["opt_d"])
        self.opt_d.zero_grad(set_to_none=True)
        for trainer, data in zip(self.trainers, before["data"], strict=True):
            trainer.data.load_state_dict(data)
        self.rng = before["rng"]
        raise StopRequested

    def _penalty(self, real, fake, labels, eps) -> torch.Tensor:
        """WGAN-GP's penalty for each replica: GradientPenaltyLoss.regularizer on its slice."""
        pack = pack_of(self.trainers[0].discriminator)
        weight = self.trainers[0].loss.gp_weight
        eps = eps.repeat_interleave(pack, dim=1).view(eps.shape[0], -1, *[1] * (real.dim() - 2))
        mixed = (eps * real + (1 - eps) * fake.detach()).detach().requires_grad_(True)
        out = self.D(mixed, labels).float()
        (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
        norms = grad.reshape(out.shape[0], out.shape[1], -1).norm(2, dim=2)
        return weight * ((norms - 1) ** 2).mean(dim=1)


def vectorize(networks: tuple[nn.Module, nn.Module], device: torch.device) -> bool:
    """Whether replicas of these networks train as one stacked model: not where a network
    convolves on the CPU, where vmap's grouped convolutions run slower than K plain ones (0.83x
    for DCGAN-32, ``make bench`` section 5); those replicas take their own steps in turn."""
    convolves = any(isinstance(m, nn.modules.conv._ConvNd) for n in networks for m in n.modules())
    return device.type != "cpu" or not convolves
