"""glmix-viz end to end on a temporary folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glmix_viz import cli
from glmix_viz.analysis import select_representatives
from glmix_viz.capture import SlotCapture
from glmix_viz.figures import render_fig4
from glmix_viz.images import Preprocess, load_image, preprocess
from glmix_viz.untrusted import load_npz

from .conftest import interrupt_after_first_output, load_fixture


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
    expected = [f"{s}_b{b:02d}_fig4.png" for s in ("a", "b") for b in (2, 4)] + ["a.npz", "b.npz"]
    assert names == sorted(expected)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    fig4 = np.asarray(Image.open(out / "a_b02_fig4.png"))
    # --scale 2 panels, caption and title lines
    assert 2 * 96 < fig4.shape[0] < 2 * 96 + 80 and fig4.shape[2] == 3

    # --save-maps holds exactly what the capture API gives
    import timm

    model = timm.create_model("test_glnet")
    model.load_state_dict(load_fixture("tiny_stl")["state_dict"])
    x, view = preprocess(load_image(images / "a.jpg"), Preprocess(input_size=96))
    with torch.no_grad(), SlotCapture(model.eval(), [2, 4]) as cap:
        model(x[None])
    saved = load_npz(out / "a.npz")  # every array, without pickle: the tool writes no object arrays
    assert list(saved["blocks"]) == ["2:stages.1.blocks.0", "4:stages.2.blocks.1"]
    np.testing.assert_allclose(saved["b04_logits"], cap[4].logits[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["b02_dispatch"], cap[2].dispatch_maps()[0].numpy(), atol=1e-6)
    assert tuple(saved["b04_grid"]) == cap[4].grid == (6, 6)
    np.testing.assert_array_equal(saved["image"], view)
    # ... plus the representatives, as select_representatives gives them (default 4, seed 0)
    for b in (2, 4):
        expected = select_representatives(cap[b].dispatch_maps()[0].numpy(), 4, seed=0)
        np.testing.assert_array_equal(saved[f"b{b:02d}_representatives"], expected)
    # the PNG is exactly render_fig4 of the saved arrays, captioned and titled, at twice the input's height
    title = f"a | test_glnet ({tiny_ckpt}) | block 2 (stages.1.blocks.0)"
    np.testing.assert_array_equal(fig4, render_fig4(saved["image"], saved["b02_dispatch"],
                                                    saved["b02_representatives"], captions=True, title=title,
                                                    height=192, font_size=16))


def test_cli_all_clean_images_exit_zero(tmp_path, tiny_ckpt):
    img = tmp_path / "one.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(img)
    code = cli.main([str(img), "--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--out",
                     str(tmp_path / "o"), "--block", "all", "--resize", "whole", "--input-size", "64", "-q"])
    assert code == 0
    assert len(list((tmp_path / "o").glob("one_b0?_fig4.png"))) == 4


def test_cli_block_out_of_range_lists_valid(tmp_path, tiny_ckpt, capsys):
    code = cli.main([str(tmp_path), "--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--block", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "valid ordinals are 1..4" in err


def test_cli_missing_checkpoint_and_bad_model(tmp_path, capsys):
    assert cli.main(["x.jpg", "--model", "test_glnet", "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err
    assert f"no such file: {tmp_path / 'nope.pth'}" in err and "Download" not in err
    assert cli.main(["x.jpg", "--model", "resnet50"]) == 2
    assert "is not a GLNet" in capsys.readouterr().err


def test_cli_demo_runs_without_downloads(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert cli.main(["--demo", "--out", str(tmp_path / "d"), "-q"]) == 0
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["demo_cat_b10_fig4.png"]  # the demo's last block
    assert "no weights for glnet_stl" in caplog.text  # the unnamed default gave way, and says so
    assert "the bundled demo model glnet_demo" in caplog.text and "not a paper model" in caplog.text
    with Image.open(tmp_path / "d" / "demo_cat_b10_fig4.png") as png:
        assert png.text["model"] == "glnet_demo" and png.text["checkpoint"] == "bundled demo model"


def _tiny_argv(tiny_ckpt, *extra):
    return ["--model", "test_glnet", "--checkpoint", str(tiny_ckpt), "--input-size", "96", "-q", *extra]


@pytest.fixture
def one_image(tmp_path):
    img = tmp_path / "one.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(img)
    return img


def test_cli_depths_default_blocks(one_image, tiny_ckpt, tmp_path):
    out = tmp_path / "o"
    code = cli.main([str(one_image), "--figure", "depths", "--save-maps", "--out", str(out),
                     *_tiny_argv(tiny_ckpt)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.npz", "one_depths.png"]
    saved = np.load(out / "one.npz")
    # test_glnet has 4 GLMix blocks: default_depth_blocks(4) = [1, 2, 4]
    assert [b.split(":")[0] for b in saved["blocks"]] == ["1", "2", "4"]
    fig = np.asarray(Image.open(out / "one_depths.png"))
    from glmix_viz.figures import render_depths, render_label

    # three labelled rows of 2 x 96 px (--scale 2), 8 px apart, captions over the first, a title over all
    title = (f"one | test_glnet ({tiny_ckpt}) | blocks 1 (stages.0.blocks.0), 2 (stages.1.blocks.0), "
             "4 (stages.2.blocks.1)")
    lines = render_label(title, size=18).shape[0] + 8 + render_label("input", size=16).shape[0]
    assert fig.shape[0] == lines + 3 * 192 + 2 * 8
    expected = render_depths(
        saved["image"], [saved[f"b{b:02d}_dispatch"] for b in (1, 2, 4)],
        [saved[f"b{b:02d}_representatives"] for b in (1, 2, 4)], ["block 1", "block 2", "block 4"],
        captions=True, title=title, height=192, font_size=16,
    )
    np.testing.assert_array_equal(fig, expected)


def test_cli_depths_given_blocks(one_image, tiny_ckpt, tmp_path):
    out = tmp_path / "o"
    assert cli.main([str(one_image), "--figure", "depths", "--block", "3", "--block", "1", "--save-maps",
                     "--out", str(out), *_tiny_argv(tiny_ckpt)]) == 0
    assert [b.split(":")[0] for b in np.load(out / "one.npz")["blocks"]] == ["1", "3"]


@pytest.mark.parametrize("figure, name", [("fig4", "one_b04_fig4.pdf"), ("hard", "one_b04_groups.pdf"),
                                          ("depths", "one_depths.pdf")])
def test_cli_pdf(one_image, tiny_ckpt, tmp_path, figure, name):
    import matplotlib.pyplot as plt

    out = tmp_path / "o"
    assert cli.main([str(one_image), "--figure", figure, "--format", "pdf", "--out", str(out),
                     *_tiny_argv(tiny_ckpt)]) == 0
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_bytes().startswith(b"%PDF")
    assert plt.get_fignums() == []


def test_cli_hard_png_is_the_hard_grouping(one_image, tiny_ckpt, tmp_path):
    from glmix_viz.figures import render_hard_grouping

    out = tmp_path / "o"
    assert cli.main([str(one_image), "--figure", "hard", "--block", "2", "--seed", "3", "--save-maps",
                     "--out", str(out), *_tiny_argv(tiny_ckpt)]) == 0
    saved = np.load(out / "one.npz")
    png = np.asarray(Image.open(out / "one_b02_groups.png"))
    groups = render_hard_grouping(saved["image"], saved["b02_dispatch"], seed=3)
    # the grouping, enlarged by --scale 2 (nearest: each pixel a 2 x 2 block), right of the input, under its
    # caption
    from glmix_viz.figures import render_label

    enlarged = groups.repeat(2, axis=0).repeat(2, axis=1)
    h, w = enlarged.shape[:2]
    caption = render_label(f"each pixel's most likely of {saved['b02_dispatch'].shape[0]} slots", size=16)
    column = max(caption.shape[1], w)
    x0 = max(render_label("input", size=16).shape[1], w) + 8 + (column - w) // 2
    np.testing.assert_array_equal(png[-h:, x0 : x0 + w], enlarged)


def test_cli_num_repr_and_seed(one_image, tiny_ckpt, tmp_path):
    out = tmp_path / "o"
    assert cli.main([str(one_image), "--num-repr", "3", "--seed", "5", "--block", "all", "--save-maps",
                     "--out", str(out), *_tiny_argv(tiny_ckpt)]) == 0
    saved = np.load(out / "one.npz")
    for b in (1, 2, 3, 4):
        reps = saved[f"b{b:02d}_representatives"]
        np.testing.assert_array_equal(reps, select_representatives(saved[f"b{b:02d}_dispatch"], 3, seed=5))
        assert len(reps) == 3
    assert cli.main([str(one_image), "--num-repr", "100", "--save-maps", "--out", str(out),
                     *_tiny_argv(tiny_ckpt)]) == 0
    np.testing.assert_array_equal(np.load(out / "one.npz")["b04_representatives"], np.arange(64))


def test_cli_rejects_bad_num_repr_and_figure(one_image, tiny_ckpt, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main([str(one_image), "--num-repr", "0", *_tiny_argv(tiny_ckpt)])
    assert err.value.code == 2
    assert "--num-repr must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(one_image), "--figure", "fig5", *_tiny_argv(tiny_ckpt)])
    assert "invalid choice: 'fig5'" in capsys.readouterr().err


def test_cli_figure_failure_counts_as_failed(images, tiny_ckpt, tmp_path, monkeypatch, caplog):
    from glmix_viz import _render

    real = _render.render_fig4

    def flaky(image, maps, reps, **kw):  # the first image (a.jpg) fails, the next renders
        if flaky.calls == 0:
            flaky.calls += 1
            raise ValueError("boom")
        return real(image, maps, reps, **kw)

    flaky.calls = 0
    monkeypatch.setattr(_render, "render_fig4", flaky)
    out = tmp_path / "o"
    code = cli.main([str(images), "--out", str(out), "--batch-size", "2", *_tiny_argv(tiny_ckpt)])
    assert code == 1
    assert "a.jpg: boom" in caplog.text  # the failing image, by name
    assert "broken.jpg" in caplog.text
    # the summary, shown even with -q
    assert "1 figure written for 1 image (1 skipped, 1 failed)" in caplog.text
    assert [p.name for p in out.iterdir()] == ["b_b04_fig4.png"]


def test_cli_named_model_without_weights_is_an_error(one_image, tmp_path, monkeypatch, capsys):
    """An explicitly named model is never replaced by another: no weights -> exit 2 naming the file
    expected."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    out = tmp_path / "o"
    assert cli.main([str(one_image), "--model", "glnet_4g", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "glnet_4g.pth"
    assert f"expected {expected}" in err and "--checkpoint" in err and "--model glnet_demo" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_cli_named_model_from_the_hub_cache_and_provenance(one_image, tiny_ckpt, tmp_path, monkeypatch):
    """--model NAME reads <hub>/checkpoints/NAME.pth; every output records model, checkpoint and block."""
    from PIL import Image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub_file = tmp_path / "torch" / "hub" / "checkpoints" / "test_glnet.pth"
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(tiny_ckpt.read_bytes())
    out = tmp_path / "o"
    argv = [str(one_image), "--model", "test_glnet", "--input-size", "96", "--block", "4", "--out", str(out),
            "-q"]
    assert cli.main([*argv, "--save-maps"]) == 0
    with Image.open(out / "one_b04_fig4.png") as png:
        assert png.text["model"] == "test_glnet" and png.text["checkpoint"] == str(hub_file)
        assert png.text["block"] == "4:stages.2.blocks.1" and png.text["image"] == "one"
    saved = load_npz(out / "one.npz")
    assert str(saved["model"]) == "test_glnet" and str(saved["checkpoint"]) == str(hub_file)
    assert cli.main([*argv, "--format", "pdf"]) == 0
    pdf = (out / "one_b04_fig4.pdf").read_bytes()
    assert b"model=test_glnet; checkpoint=" in pdf and b"block=4:stages.2.blocks.1" in pdf


def test_cli_bad_out_is_refused_before_any_work(one_image, tmp_path, capsys):
    """--out that is a file or cannot be created: exit 2, one line naming it, before the model is loaded."""
    afile = tmp_path / "taken.txt"
    afile.write_text("x")
    missing_ckpt = str(tmp_path / "nope.pth")  # would be the error if the model were loaded first
    for out, why in ((afile, "exists and is not a folder"), (afile / "sub", "cannot be created")):
        assert cli.main([str(one_image), "--model", "test_glnet", "--checkpoint", missing_ckpt,
                         "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"glmix-viz: error: --out {out} {why}") and len(err.splitlines()) == 1, err


def test_cli_refuses_images_smaller_than_the_stride(tmp_path, tiny_ckpt, caplog):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    assert cli.main([str(tiny), *_tiny_argv(tiny_ckpt), "--out", str(tmp_path / "o")]) == 1
    assert "tiny.png: 1x1 pixels is too small; at least 32 px on each side are needed" in caplog.text


@pytest.mark.slow
def test_cli_ctrl_c_stops_cleanly(tmp_path, tiny_ckpt):
    """SIGINT mid-run: one line, exit 130, no traceback, every file written is complete, no temporary file."""
    import sys

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    out = tmp_path / "o"
    code, err = interrupt_after_first_output([sys.executable, "-m", "glmix_viz.cli", str(folder),
                                              *_tiny_argv(tiny_ckpt), "--batch-size", "1",
                                              "--out", str(out)], out)
    assert code == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("glmix-viz: interrupted after ")
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < 60 and not [p for p in out.iterdir() if p.name.startswith(".")]
    for p in written:
        with Image.open(p) as im:
            im.load()  # complete files only


@pytest.mark.parametrize("tool,argv", [("glmix_viz.cli", ["--version"]), ("glmix_viz.cli", ["--help"]),
                                       ("wsss.cli", ["--version"]), ("wsss.cli", ["--help"])])
def test_version_and_help_import_no_torch(tool, argv):
    """--version and --help answer without torch, timm or matplotlib (seconds of imports): the start-up
    budget."""
    import subprocess
    import sys

    code = (f"import sys; from {tool} import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'matplotlib', 'sklearn', 'skimage') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


def test_importing_the_package_still_registers_the_models_with_timm():
    """The light package import keeps its promise: ``import glmix_viz, timm`` (either order) knows the
    GLNets."""
    import subprocess
    import sys

    for first, second in (("glmix_viz", "timm"), ("timm", "glmix_viz")):
        code = (f"import {first}, {second}\n"
                "print(timm.create_model('test_glnet').__class__.__name__, "
                "'glnet_stl' in timm.list_models('glnet*'))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0 and proc.stdout.split() == ["GLNet", "True"], proc.stderr[-1000:]
    proc = subprocess.run([sys.executable, "-c", "import glmix_viz, sys; print('torch' in sys.modules, "
                           "glmix_viz.GLNet.__name__, 'timm' in sys.modules)"],
                          capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.split() == ["False", "GLNet", "True"]  # light import; a name loads the models on use


def test_cli_scale_and_hard_figure_with_input(one_image, tiny_ckpt, tmp_path, caplog):
    """--scale sets the PNG panels' height; --figure hard shows the input beside the grouping; the summary
    counts figures, not only images."""
    import logging

    caplog.set_level(logging.INFO)
    out = tmp_path / "o"
    assert cli.main([str(one_image), *_tiny_argv(tiny_ckpt), "--block", "2,4", "--scale", "1",
                     "--out", str(out)]) == 0
    small = np.asarray(Image.open(out / "one_b02_fig4.png"))
    assert "2 figures written for 1 image" in caplog.text
    assert cli.main([str(one_image), *_tiny_argv(tiny_ckpt), "--block", "2", "--scale", "3",
                     "--out", str(out)]) == 0
    big = np.asarray(Image.open(out / "one_b02_fig4.png"))
    # panels 1x and 3x the 96-row input
    assert 96 < small.shape[0] < 96 + 60 and 288 < big.shape[0] < 288 + 100
    assert cli.main([str(one_image), *_tiny_argv(tiny_ckpt), "--block", "2", "--figure", "hard",
                     "--scale", "1", "--out", str(out)]) == 0
    hard = np.asarray(Image.open(out / "one_b02_groups.png"))
    x, view = preprocess(load_image(one_image), Preprocess(input_size=96))
    top = hard.shape[0] - view.shape[0]
    np.testing.assert_array_equal(hard[top:, : view.shape[1]], view)  # the input, left, under its caption
    assert hard.shape[1] > 2 * view.shape[1]


def test_checkpoint_without_model_loads_the_architecture_it_fits(one_image, tmp_path):
    """--checkpoint alone: the file's architecture is found (the loader glmix-wsss uses too)."""
    from glmix_viz.models import DEMO_WEIGHTS

    out = tmp_path / "o"
    assert cli.main([str(one_image), "--checkpoint", str(DEMO_WEIGHTS), "--input-size", "96", "--scale", "1",
                     "--out", str(out), "-q"]) == 0
    with Image.open(out / "one_b10_fig4.png") as png:  # glnet_demo's last of 10 blocks
        assert png.text["model"] == "glnet_demo" and png.text["checkpoint"] == str(DEMO_WEIGHTS)


def test_device_resolution_is_shared_and_errors_name_the_flag(one_image, tmp_path, capsys):
    from glmix_viz.devices import resolve_device
    from wsss import cli as wsss_cli

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device 'gpu0' is not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1': CUDA is not available here"):
            resolve_device("cuda:1")
    assert cli.main([str(one_image), "--device", "gpu0", "--out", str(tmp_path / "o")]) == 2
    assert "--device 'gpu0' is not a device" in capsys.readouterr().err
    voc = tmp_path / "voc"
    for argv in (["pseudo-labels", "--voc-root", str(voc), "--out", str(tmp_path / "pl"), "--device", "gpu0"],
                 ["train", "--voc-root", str(voc), "--out", str(tmp_path / "run"), "--device", "gpu0"]):
        assert wsss_cli.main(argv) == 2
        assert "--device 'gpu0' is not a device" in capsys.readouterr().err
