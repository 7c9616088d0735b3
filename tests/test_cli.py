"""glmix-viz end to end on a temporary folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glmix_viz import cli
from glmix_viz.capture import SlotCapture
from glmix_viz.images import Preprocess, load_image, preprocess

from .conftest import load_fixture


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (90, 90), dtype=np.uint8)).save(folder / "b.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder


@pytest.fixture
def tiny_ckpt(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": load_fixture("tiny_stl")["state_dict"], "epoch": 1}, path)
    return path


def test_cli_end_to_end(images, tiny_ckpt, tmp_path, caplog):
    out = tmp_path / "out"
    argv = [str(images), "--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--out", str(out),
            "--block", "2", "--block", "4", "--input-size", "96", "--save-maps", "-q"]
    code = cli.main(argv)
    assert code == 1  # broken.jpg skipped -> non-zero
    assert "broken.jpg" in caplog.text
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{s}_b{b:02d}_{kind}.png" for s in ("a", "b") for b in (2, 4) for kind in ("slots", "groups")]
        + ["a.npz", "b.npz"]
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    groups = np.asarray(Image.open(out / "a_b02_groups.png"))
    assert groups.shape == (96, 96, 3)

    # --save-maps holds exactly what the capture API gives
    import timm

    model = timm.create_model("test_glnet")
    model.load_state_dict(load_fixture("tiny_stl")["state_dict"])
    x, view = preprocess(load_image(images / "a.jpg"), Preprocess(input_size=96))
    with torch.no_grad(), SlotCapture(model.eval(), [2, 4]) as cap:
        model(x[None])
    saved = np.load(out / "a.npz")
    assert list(saved["blocks"]) == ["2:stages.1.blocks.0", "4:stages.2.blocks.1"]
    np.testing.assert_allclose(saved["b04_logits"], cap[4].logits[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["b02_dispatch"], cap[2].dispatch_maps()[0].numpy(), atol=1e-6)
    assert tuple(saved["b04_grid"]) == cap[4].grid == (6, 6)
    np.testing.assert_array_equal(saved["image"], view)


def test_cli_all_clean_images_exit_zero(tmp_path, tiny_ckpt):
    img = tmp_path / "one.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(img)
    code = cli.main([str(img), "--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--out",
                     str(tmp_path / "o"), "--block", "all", "--resize", "whole", "--input-size", "64", "-q"])
    assert code == 0
    assert len(list((tmp_path / "o").glob("one_b0?_slots.png"))) == 4


def test_cli_block_out_of_range_lists_valid(tmp_path, tiny_ckpt, capsys):
    code = cli.main([str(tmp_path), "--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--block", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "valid ordinals are 1..4" in err


def test_cli_missing_checkpoint_and_bad_model(tmp_path, capsys):
    assert cli.main(["x.jpg", "--model", "test_glnet", "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth" in capsys.readouterr().err
    assert cli.main(["x.jpg", "--model", "resnet50"]) == 2
    assert "is not a GLNet" in capsys.readouterr().err


def test_cli_demo_runs_without_downloads(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert cli.main(["--demo", "--out", str(tmp_path / "d"), "-q"]) == 0
    assert (tmp_path / "d" / "demo_cat_b04_slots.png").is_file()
    assert "UNTRAINED" in caplog.text
