"""``ganexp-sample checkpoint=PATH``: a grid, N single images, or a latent interpolation.

ganexp-sample checkpoint=RUN_DIR                      # 64-image grid -> RUN_DIR/generated/
ganexp-sample checkpoint=PATH mode=images n=500       # 500 PNGs
ganexp-sample checkpoint=PATH mode=interpolate seed=0 seed2=1 n=10 [label=3]
ganexp-sample checkpoint=PATH mode=translate input=DIR   # translation: each image of DIR
                                                      # translated -> RUN_DIR/translated/
ganexp-sample checkpoint=PATH mode=translate input=DIR direction=ba   # unpaired: B -> A

checkpoint=PATH  a checkpoint file or a run folder (its newest checkpoint)
mode=            grid (default), images, interpolate, translate
n=, seed=, seed2=, label=   how many images, the noise seeds, a cGAN's class (-1: each in turn)
out=DIR          where the images go (default: the run folder's generated/ or translated/)
input=, direction=   translate: the folder of inputs; ab or ba for an unpaired run
Any other KEY=VALUE overrides the checkpoint's config (device=cpu, for example).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganexp.cli.restore import Restored, parse_args, report_errors, restore
from ganexp.config import INT_MAX, RunConfig
from ganexp.engine.runfolder import writable_file_error, write_whole
from ganexp.errors import ConfigError
from ganexp.tasks import task_of
from ganexp.tracking.logger import save_points_plot, to_uint8_grid

MODES = ("grid", "images", "interpolate", "translate")
DEFAULTS = {"mode": "grid", "n": 64, "seed": 0, "seed2": 1, "label": -1, "out": ""}
DEFAULTS |= {"input": "", "direction": "ab"}
DIRECTIONS = ("ab", "ba")
# the most images one command makes: a grid of 64 x 64, a walk of 1024, 1e6 single files
MAX_N = {"grid": 4096, "interpolate": 1024, "images": 1_000_000, "translate": 1_000_000}
CHUNK = 256  # images generated at once in mode=images


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
    if label < -1:
        raise ConfigError("label", label, "a class number, or -1 for every class")
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


def check_args(args: dict[str, Any]) -> None:
    """The command's own keys, before the checkpoint is read."""
    if args["mode"] not in MODES:
        raise ConfigError("mode", args["mode"], "allowed: " + ", ".join(MODES))
    most = MAX_N[args["mode"]]
    if not 1 <= args["n"] <= most:
        raise ConfigError(
            "n", args["n"], f"must be an integer in [1, {most}] for mode={args['mode']}"
        )
    for key in ("seed", "seed2"):
        if not 0 <= args[key] <= INT_MAX:
            raise ConfigError(key, args[key], "must be an integer in [0, 2**63 - 1]")
    if args["mode"] == "translate" and not args["input"]:
        raise ConfigError("input", None, "mode=translate reads the images of input=DIR")
    if args["direction"] not in DIRECTIONS:
        raise ConfigError("direction", args["direction"], "allowed: ab (A -> B), ba (B -> A)")


def main(argv: list[str] | None = None) -> None:
    target, args, overrides = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS)
    check_args(args)
    translating = args["mode"] == "translate"
    restored = restore(target, overrides)
    task = task_of(restored.cfg)
    if task.translates != translating:
        allowed = "a translation checkpoint takes mode=translate input=DIR"
        allowed += "" if task.translates else "; this one generates (grid, images, interpolate)"
        raise ConfigError("mode", args["mode"], allowed)
    if translating:
        G = task.translator(restored.generator, args["direction"])
        out = _out(args, restored.path, "translated")
        print(translate_folder(G, restored.cfg, Path(args["input"]), out))
        return
    out = _out(args, restored.path, "generated")
    z_dim, n = restored.cfg.trainer.z_dim, args["n"]
    if args["mode"] == "interpolate":
        ends = [_noise(args["seed"], 1, z_dim)[0], _noise(args["seed2"], 1, z_dim)[0]]
        z = slerp(*ends, n)
        name = f"interpolate_{args['seed']}_{args['seed2']}.png"
    else:
        z = _noise(args["seed"], n, z_dim)
        name = f"grid_seed{args['seed']}.png"
    labels = _labels(restored, n, args["label"])
    if args["mode"] == "images" and restored.spec.kind != "points":
        for start in range(0, n, CHUNK):  # n may be large: generated and written in chunks
            part = None if labels is None else labels[start : start + CHUNK]
            for i, image in enumerate(generate_images(restored, z[start : start + CHUNK], part)):
                path = out / f"seed{args['seed']}_{start + i:05d}.png"
                save_png(to_uint8_grid(image[None], 1).squeeze(-1).numpy(), path)
        print(out)
        return
    images = generate_images(restored, z, labels)
    target = out / name
    if restored.spec.kind == "points":
        write_whole(target, lambda f: save_points_plot(images, None, f))
    else:
        nrow = n if args["mode"] == "interpolate" else max(1, math.isqrt(n))
        save_png(to_uint8_grid(images, nrow).squeeze(-1).numpy(), target)
    print(target)


def save_png(pixels: np.ndarray, path: Path) -> None:
    """``pixels`` as a PNG file written whole or not at all; one error line if the disk
    refuses."""
    write_whole(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))


def _out(args: dict, checkpoint: Path, default: str) -> Path:
    """``out=DIR``, else ``default`` in the checkpoint's run folder (beside the checkpoint when
    it is not in a run's ``checkpoints/``); ConfigError if it cannot be written."""
    if args["out"]:
        key, out = "out", Path(args["out"]).expanduser()
    else:
        folder = checkpoint.parent
        run_dir = folder.parent if folder.name == "checkpoints" else folder
        key, out = "checkpoint", run_dir / default
    reason = writable_file_error(out / ".ganexp-sample")
    if reason:
        raise ConfigError(
            key,
            args["out"] or str(checkpoint),
            f"cannot write into {out} ({reason}); choose out=DIR",
        )
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
        save_png(to_uint8_grid(translated, 1).squeeze(-1).numpy(), out / f"{name}.png")
    return out


def cli() -> None:
    report_errors("ganexp-sample", main, __doc__)


if __name__ == "__main__":
    cli()
