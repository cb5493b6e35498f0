"""``ganexp-sample checkpoint=PATH``: a grid, N single images, or a latent interpolation.

ganexp-sample checkpoint=RUN_DIR                      # 64-image grid -> RUN_DIR/generated/
ganexp-sample checkpoint=PATH mode=images n=500       # 500 PNGs
ganexp-sample checkpoint=PATH mode=interpolate seed=0 seed2=1 n=10 [label=3]
ganexp-sample checkpoint=PATH mode=translate input=DIR   # translation: each image of DIR
                                                      # translated -> RUN_DIR/translated/
ganexp-sample checkpoint=PATH mode=translate input=DIR direction=ba   # unpaired: B -> A
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from PIL import Image

from ganexp.config import TRANSLATION_DATA, RunConfig
from ganexp.errors import ConfigError
from ganexp.restore import Restored, parse_args, report_errors, restore
from ganexp.tracking import save_points_plot, to_uint8_grid

MODES = ("grid", "images", "interpolate", "translate")
DEFAULTS = {"mode": "grid", "n": 64, "seed": 0, "seed2": 1, "label": -1, "out": ""}
DEFAULTS |= {"input": "", "direction": "ab"}
DIRECTIONS = ("ab", "ba")


def _noise(seed: int, n: int, z_dim: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation between latent vectors a and b (DCGAN's latent walks)."""
    t = torch.linspace(0, 1, steps)[:, None]
    omega = torch.arccos((a / a.norm() * (b / b.norm())).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _labels(restored: Restored, n: int, label: int) -> torch.Tensor | None:
    classes = restored.spec.num_classes if restored.cfg.conditional else 0
    if not classes:
        if label >= 0:
            raise ConfigError("label", label, "the generator is not conditional; use label=-1")
        return None
    if label >= classes:
        raise ConfigError("label", label, f"allowed: 0..{classes - 1} (or -1 for every class)")
    if label >= 0:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) % classes


@torch.no_grad()
def generate_images(restored: Restored, z: torch.Tensor, labels: torch.Tensor | None):
    device = restored.device
    return restored.generator(z.to(device), None if labels is None else labels.to(device)).cpu()


def main(argv: list[str] | None = None) -> None:
    path, args, overrides = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS)
    if args["mode"] not in MODES:
        raise ConfigError("mode", args["mode"], "allowed: " + ", ".join(MODES))
    if args["n"] < 1:
        raise ConfigError("n", args["n"], "must be an integer >= 1")
    translating = args["mode"] == "translate"
    if translating and not args["input"]:
        raise ConfigError("input", None, "mode=translate reads the images of input=DIR")
    if args["direction"] not in DIRECTIONS:
        raise ConfigError("direction", args["direction"], "allowed: ab (A -> B), ba (B -> A)")
    restored = restore(path, overrides)
    task = restored.cfg.task.name
    translator = task in TRANSLATION_DATA
    if translator != translating:
        allowed = "a translation checkpoint takes mode=translate input=DIR"
        allowed += "" if translator else "; this one generates (grid, images, interpolate)"
        raise ConfigError("mode", args["mode"], allowed)
    if translating:
        G = restored.generator
        if task == "unpaired_translation":
            G = G.g_ab if args["direction"] == "ab" else G.g_ba
        elif args["direction"] != "ab":
            raise ConfigError("direction", args["direction"], "paired translation has one: ab")
        out = _out(args, path, "translated")
        print(translate_folder(G, restored.cfg, Path(args["input"]), out))
        return
    out = _out(args, path, "generated")
    z_dim, n = restored.cfg.trainer.z_dim, args["n"]
    if args["mode"] == "interpolate":
        ends = [_noise(args["seed"], 1, z_dim)[0], _noise(args["seed2"], 1, z_dim)[0]]
        z = slerp(*ends, n)
        name = f"interpolate_{args['seed']}_{args['seed2']}.png"
    else:
        z = _noise(args["seed"], n, z_dim)
        name = f"grid_seed{args['seed']}.png"
    images = generate_images(restored, z, _labels(restored, n, args["label"]))
    if restored.spec.kind == "points":
        target = out / name
        save_points_plot(images, None, target)
    elif args["mode"] == "images":
        for i, image in enumerate(images):
            Image.fromarray(to_uint8_grid(image[None], 1).squeeze(-1).numpy()).save(
                out / f"seed{args['seed']}_{i:05d}.png"
            )
        target = out
    else:
        nrow = n if args["mode"] == "interpolate" else max(1, math.isqrt(n))
        target = out / name
        Image.fromarray(to_uint8_grid(images, nrow).squeeze(-1).numpy()).save(target)
    print(target)


def _out(args: dict, checkpoint: Path, default: str) -> Path:
    out = Path(args["out"]) if args["out"] else checkpoint.parent.parent / default
    out.mkdir(parents=True, exist_ok=True)
    return out


@torch.no_grad()
def translate_folder(G: torch.nn.Module, cfg: RunConfig, folder: Path, out: Path) -> Path:
    """Each image of ``folder`` fitted to the run's size and channels, translated by ``G`` (in
    eval mode, on its device), saved as ``out/<name>.png``."""
    from ganexp.data.images import fit, to_signed_unit
    from ganexp.data.translation import read_images

    names, images = read_images(folder, cfg.data.channels)
    device = next(G.parameters()).device
    z = torch.zeros(1, cfg.trainer.z_dim, device=device)  # the translators' noise is dropout
    for name, image in zip(names, images, strict=True):
        x = to_signed_unit(fit(image, cfg.data.image_size)[None]).to(device)
        translated = G(z, x).cpu()
        Image.fromarray(to_uint8_grid(translated, 1).squeeze(-1).numpy()).save(out / f"{name}.png")
    return out


def cli() -> None:
    report_errors("ganexp-sample", main)


if __name__ == "__main__":
    cli()
