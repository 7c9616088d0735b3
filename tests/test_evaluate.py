"""``glmix-viz evaluate`` on the real VOC sample: its numbers are the analysis functions', its files whole,
its errors one line naming the flag (and its page in a browser)."""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glmix_viz import cli
from glmix_viz.analysis import (
    SegmentScoreAccumulator,
    dispatch_entropy,
    grid_segments,
    group_segments,
    kmeans_segments,
    segment_count,
    slic_segments,
    slot_segments,
)
from glmix_viz.capture import SlotCapture, resolve_blocks
from glmix_viz.images import Preprocess, load_image, preprocess
from glmix_viz.models import load_demo_model
from glmix_viz.voc import VOC_CLASSES, VOCLayout, read_mask, save_mask

from . import browser
from .conftest import DATA

VOC = DATA / "voc_sample"
SIZE = 96
LIMIT = 3
BLOCKS = (2, 10)  # of the demo model's 10: a shallow one and the last
METHODS = ("slots", "slic", "grid", "kmeans", "groups", "groups_slic", "groups_grid")
NUMBERS = ("oracle_miou", "purity", "ari", "fg_ari", "boundary_precision", "boundary_recall", "boundary_f",
           "segments", "regions", "entropy", "images", "fg_ari_images")


def _argv(out: Path, *extra: str, voc: Path = VOC) -> list:
    return ["evaluate", "--voc-root", str(voc), "--split", "val", "--limit", str(LIMIT), "--input-size",
            str(SIZE), "--demo", "--out", str(out), "-q", *extra]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "eval"
    assert cli.main(_argv(out, "--block", str(BLOCKS[0]), "--block", str(BLOCKS[1]), "--workers", "2")) == 0
    return out


def _numbers(block: dict, method: str) -> dict:
    if method == "slots":
        return block
    if method == "groups":
        return block["groups"]
    if method.startswith("groups_"):
        return block["groups"]["baselines"][method[7:]]
    return block["baselines"][method]


def _same(json_value, value: float, what: str) -> None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        assert json_value is None, what
    else:
        assert json_value == pytest.approx(value, rel=1e-6, abs=1e-6), what


def _page_data(page: Path) -> dict:
    found = re.search(r'<script type="application/json" id="evaluate-data">(.*?)</script>', page.read_text(),
                      re.S)
    assert found, "the page embeds its numbers"
    return json.loads(found.group(1))


def _by_hand(block: int, ids, voc: Path = VOC):
    """The block's numbers straight from the analysis functions: one forward per image, the norm1 features
    hooked here, every segmentation and score computed as docs/slot-metrics.md says."""
    model, _ = load_demo_model()
    layout = VOCLayout(voc)
    (_, _, glmix) = resolve_blocks(model, [block])[0]
    accs = {m: SegmentScoreAccumulator() for m in METHODS}
    per_image = []
    for image_id in ids:
        img = load_image(layout.image(image_id))
        image, mask = np.asarray(img), read_mask(layout.mask(image_id))
        inst_path = layout.instance_mask(image_id)
        instances = read_mask(inst_path) if inst_path is not None else None
        x, _ = preprocess(img, Preprocess(input_size=SIZE, mode="whole"))
        seen = {}
        hook = glmix.norm1.register_forward_hook(lambda m, a, out: seen.update(features=out))
        try:
            with torch.inference_mode(), SlotCapture(model, [block]) as cap:
                model(x[None])
        finally:
            hook.remove()
        maps = cap[block].dispatch_maps()[0].numpy()
        features = seen["features"][0].float().numpy()
        H, W = mask.shape
        slots = slot_segments(maps, (H, W))
        groups = group_segments(maps, (H, W), k=4, seed=0)
        n, g = segment_count(slots), segment_count(groups)
        entropy = dispatch_entropy(maps)
        segmentations = {
            "slots": slots, "slic": slic_segments(image, n), "grid": grid_segments(H, W, n),
            "kmeans": kmeans_segments(features, min(64, features.shape[1] * features.shape[2]), (H, W),
                                      seed=0),
            "groups": groups, "groups_slic": slic_segments(image, g), "groups_grid": grid_segments(H, W, g),
        }
        for method, seg in segmentations.items():
            s = accs[method].update(seg, mask, instances, entropy=entropy if method in ("slots", "groups")
                                    else None)
            if method == "slots":
                one = SegmentScoreAccumulator()
                one.add(s)
                per_image.append((image_id, one.summary().oracle_miou))
    return accs, per_image


def test_numbers_are_the_analysis_functions(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    ids = VOCLayout(VOC).ids("val")[:LIMIT]
    assert metrics["images"] == LIMIT and [i["id"] for i in metrics["per_image"]] == ids
    assert [b["ordinal"] for b in metrics["blocks"]] == list(BLOCKS)
    assert metrics["blocks"][-1]["name"] == "stages.2.blocks.5"
    assert metrics["model"] == "glnet_demo" and metrics["checkpoint"] == "bundled demo model"
    assert metrics["split"] == "val" and metrics["input_size"] == SIZE and metrics["groups_k"] == 4
    assert metrics["tool"].startswith("glmix-viz ") and metrics["skipped"] == []
    accs, per_image = _by_hand(BLOCKS[-1], ids)
    block = metrics["blocks"][-1]
    for method in METHODS:
        summary = accs[method].summary()
        got = _numbers(block, method)
        for key in NUMBERS:
            _same(got[key], float(getattr(summary, key)), f"{method} {key}")
        iou = {name: got["iou"][name] for name in VOC_CLASSES}
        confusion = summary.confusion
        tp = np.diag(confusion[:, :21]).astype(float)
        union = confusion.sum(1) + confusion[:, :21].sum(0) - tp
        for c, name in enumerate(VOC_CLASSES):
            _same(iou[name], 100 * tp[c] / union[c] if union[c] else float("nan"), f"{method} IoU {name}")
    assert block["groups"]["k"] == 4
    assert block["fg_ari"] is None and block["fg_ari_images"] == 0  # the sample has no SegmentationObject
    assert block["entropy"] > 0 and block["baselines"]["slic"]["entropy"] is None
    for (image_id, miou), row in zip(per_image, metrics["per_image"]):
        assert row["id"] == image_id
        _same(row["oracle_miou"], miou, image_id)
    # the slots of this demo model beat nothing in particular; the numbers are merely in range
    assert 0 < block["oracle_miou"] <= 100 and 0 < block["segments"] <= 64
    assert 0 < block["groups"]["segments"] <= 4


def test_csv_rows_are_the_json(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    rows = list(csv.DictReader(io.StringIO((evaluated / "metrics.csv").read_text())))
    assert [(int(r["block"]), r["method"]) for r in rows] == [(b, m) for b in BLOCKS for m in METHODS]
    for row in rows:
        block = next(b for b in metrics["blocks"] if b["ordinal"] == int(row["block"]))
        got = _numbers(block, row["method"])
        assert row["name"] == block["name"]
        for key in NUMBERS:
            expected = got[key]
            assert (row[key] == "") if expected is None else float(row[key]) == pytest.approx(expected), key


def test_files_are_whole_and_the_page_self_contained(evaluated):
    names = sorted(p.name for p in evaluated.iterdir())
    assert names == ["depths.png", "metrics.csv", "metrics.json", "report.html"]  # no temporary file left
    with Image.open(evaluated / "depths.png") as png:
        assert png.format == "PNG" and png.size[0] > 800 and png.size[1] > 300
    page = evaluated / "report.html"
    text = page.read_text()
    data = _page_data(page)
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert data["blocks"] == metrics["blocks"] and data["per_image"] == metrics["per_image"]
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', text)
    assert len(sources) == len(re.findall(r"<img\b", text)) == 1 + LIMIT  # the depths plot, every image once
    assert base64.b64decode(sources[0].split(",", 1)[1]) == (evaluated / "depths.png").read_bytes()
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as img:
            img.verify()
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)  # nothing fetched: works offline
    # the gallery: worst and best by the last block's per-image oracle mIoU, none in both, in order
    scores = {i["id"]: i["oracle_miou"] for i in metrics["per_image"]}
    ranked = sorted(scores, key=scores.get)
    assert metrics["gallery"] == {"block": BLOCKS[-1], "worst": ranked[:2], "best": ranked[2:][::-1]}
    shown = re.findall(r'<figure class="(worst|best)" data-id="([^"]+)"', text)
    assert shown == [("worst", i) for i in ranked[:2]] + [("best", ranked[2])]
    for name in ("hard slots", "SLIC", "grid", "k-means of features", "k groups"):
        assert name in text
    assert "stages.2.blocks.5" in text and "aeroplane" in text  # block names, the class legend


def test_gallery_row_shows_image_mask_slots_and_oracle(evaluated):
    """A gallery row: image | ground truth | hard slots of blocks 2 and 10 | oracle labels, each panel at most
    200 px, under its caption; the image panel is the photo, resized."""
    text = (evaluated / "report.html").read_text()
    first = re.search(r'<figure class="worst" data-id="([^"]+)"><img src="data:image/png;base64,([^"]+)"',
                      text)
    image_id, png = first.group(1), base64.b64decode(first.group(2))
    with Image.open(io.BytesIO(png)) as img:
        row = np.asarray(img.convert("RGB"))
    photo = load_image(VOCLayout(VOC).image(image_id))
    f = min(1.0, 200 / max(photo.size))
    small = np.asarray(photo.resize((round(photo.size[0] * f), round(photo.size[1] * f)),
                                    Image.Resampling.LANCZOS))
    h, w = small.shape[:2]
    np.testing.assert_array_equal(row[-h:, :w], small)  # first column: under its caption, at the bottom
    assert row.shape[1] >= 5 * w  # image, ground truth, two blocks' slots, oracle labels
    assert f"worst 1: {image_id}, oracle mIoU" in text


def test_default_blocks_are_all(tmp_path, monkeypatch):
    from glmix_viz import _cli_evaluate

    seen = {}

    def record(args, layout, ids, *, model, source, blocks, config, device):
        seen.update(blocks=blocks, ids=list(ids), config=config)
        return 0

    monkeypatch.setattr(_cli_evaluate, "run_command", record)
    assert cli.main(_argv(tmp_path / "o")) == 0
    assert [o for o, _ in seen["blocks"]] == list(range(1, 11))
    assert seen["ids"] == VOCLayout(VOC).ids("val")[:LIMIT]
    assert seen["config"] == Preprocess(input_size=SIZE, mode="whole")
    assert cli.main(_argv(tmp_path / "o", "--block", "all")) == 0 and len(seen["blocks"]) == 10
    assert cli.main(_argv(tmp_path / "o", "--block", "5,stages.2.blocks.5")) == 0
    assert [o for o, _ in seen["blocks"]] == [5, 10]
    assert not (tmp_path / "o").exists()


def test_instance_masks_give_fg_ari(tmp_path):
    """A layout with SegmentationObject masks (here: each connected foreground region an instance): FG-ARI
    is scored on them, as foreground_ari gives it."""
    from scipy import ndimage

    voc = tmp_path / "voc"
    shutil.copytree(VOC, voc)
    layout = VOCLayout(voc)
    ids = layout.ids("val")[:2]
    (layout.voc / "SegmentationObject").mkdir()
    for image_id in ids:
        mask = read_mask(layout.mask(image_id))
        inst, _ = ndimage.label((mask > 0) & (mask < 255))
        inst = inst.astype(np.uint8)
        inst[mask == 255] = 255
        save_mask(layout.voc / "SegmentationObject" / f"{image_id}.png", inst)
        assert layout.instance_mask(image_id) is not None
    out = tmp_path / "o"
    assert cli.main(["evaluate", "--voc-root", str(voc), "--limit", "2", "--input-size", str(SIZE), "--demo",
                     "--block", "10", "--gallery", "0", "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["instance_masks"] == 2
    block = metrics["blocks"][0]
    accs, _ = _by_hand(10, ids, voc)
    assert block["fg_ari_images"] == 2
    _same(block["fg_ari"], accs["slots"].summary().fg_ari, "fg_ari")
    _same(block["groups"]["fg_ari"], accs["groups"].summary().fg_ari, "groups fg_ari")
    assert all(math.isfinite(s.fg_ari) for s in accs["slots"].scores)
    assert not re.findall(r'<figure class="(?:worst|best)"', (out / "report.html").read_text())  # --gallery 0


def test_workers_give_the_numbers_of_one_process(evaluated, tmp_path):
    """--workers 2 (the fixture) and --workers 0: the same numbers, to the last bit, in the same order."""
    out = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the fixture's forward ran on the one thread its two workers left
    try:
        assert cli.main(_argv(out, "--block", f"{BLOCKS[0]},{BLOCKS[1]}", "--workers", "0")) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (out, evaluated))
    assert (one["workers"], two["workers"]) == (0, 2)
    for key in ("blocks", "per_image", "skipped", "images", "gallery"):
        assert one[key] == two[key], key
    assert (out / "metrics.csv").read_bytes() == (evaluated / "metrics.csv").read_bytes()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_skipped_ids_are_named_and_exit_1(tmp_path, caplog, workers):
    """A missing mask (found while loading) and a mask holding a value that is no class (found while
    scoring, in a worker with --workers 2) are skipped by name; the other images are scored."""
    voc = tmp_path / "voc"
    shutil.copytree(VOC, voc)
    layout = VOCLayout(voc)
    first, second, third = layout.ids("val")[:3]
    layout.mask(first).unlink()
    bad = read_mask(layout.mask(third))
    bad[0, 0] = 50
    save_mask(layout.mask(third), bad)
    out = tmp_path / "o"
    assert cli.main(["evaluate", "--voc-root", str(voc), "--limit", "4", "--input-size", "64", "--demo",
                     "--block", "10", "--gallery", "0", "--out", str(out), "-q", "--workers", workers]) == 1
    assert f"skipped {first}" in caplog.text
    assert f"skipped {third}: ValueError: mask has values" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and [s["id"] for s in metrics["skipped"]] == [first, third]
    assert [p["id"] for p in metrics["per_image"]] == [second, layout.ids("val")[3]]


@pytest.mark.parametrize("args, message", [
    (["evaluate"], "--voc-root: required"),
    (["evaluate", "--voc-root", "{tmp}"], "--voc-root: no VOC 2012 layout under"),
    (["evaluate", "--voc-root", "{voc}", "--split", "nosuch"], "--split: no list for split 'nosuch'"),
    (["evaluate", "--voc-root", "{voc}", "--demo", "--block", "99"],
     "--block 99: GLMix block ordinal 99 is out of range"),
    (["evaluate", "--voc-root", "{voc}", "--demo", "--block", "nosuch"],
     "--block nosuch: no GLMix block named"),
    (["evaluate", "--voc-root", "{voc}", "--groups", "0"], "--groups 0: expected 1 or more"),
    (["evaluate", "--voc-root", "{voc}", "--limit", "-1"], "--limit -1: expected 0"),
    (["evaluate", "--voc-root", "{voc}", "--input-size", "16"], "--input-size 16: expected 32 or more"),
    (["evaluate", "--voc-root", "{voc}", "--gallery", "-2"], "--gallery -2: expected 0"),
    (["evaluate", "--voc-root", "{voc}", "--demo", "--model", "glnet_4g"],
     "--demo runs the bundled demo model"),
    (["evaluate", "--voc-root", "{voc}", "--model", "resnet50"], "--model 'resnet50' is not a GLNet"),
    (["evaluate", "--voc-root", "{voc}", "--device", "gpu0", "--demo"], "--device 'gpu0' is not a device"),
    (["evaluate", "--voc-root", "{voc}", "--out", "{file}"], "--out {file} exists and is not a folder"),
], ids=["no-voc-root", "no-layout", "bad-split", "block-range", "block-name", "groups", "limit",
        "input-size", "gallery", "demo-and-model", "not-a-glnet", "device", "out-file"])
def test_errors_name_the_flag(tmp_path, capsys, args, message):
    afile = tmp_path / "taken.txt"
    afile.write_text("x")
    values = dict(voc=VOC, tmp=tmp_path, file=afile)
    argv = [a.format(**values) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"glmix-viz: error: {message.format(**values)}") and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_evaluate_is_a_subcommand_not_an_image(tmp_path, capsys, monkeypatch):
    """``evaluate`` first is the subcommand (its --help), anywhere else an image path; ``./evaluate`` is an
    image file of that name."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: glmix-viz evaluate") and "--voc-root" in text and "examples:" in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "glmix-viz evaluate" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "evaluate", format="PNG")
    assert cli.main(["./evaluate", "--model", "glnet_demo", "--input-size", "64", "--scale", "1",
                     "--out", "o", "-q"]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["evaluate_b10_fig4.png"]


@pytest.mark.slow
def test_report_in_a_browser(evaluated, tmp_path):
    """Headless Chromium loads the page offline: every image decodes, no script or console error, the
    embedded numbers parse, and the screenshot shows something."""
    page = tmp_path / "report.html"
    shutil.copy(evaluated / "report.html", page)
    probe = browser.load_probe(page)
    assert probe["images"] == 1 + LIMIT
    assert probe["broken"] == [] and probe["errors"] == [] and probe["console"] == [], probe
    assert probe["json_blocks"] == 1 and probe["json_errors"] == []
    assert probe["title"] == "Slot segmentations of val" and probe["text_length"] > 1000
    pixels = browser.screenshot(page, tmp_path / "report.png", size=(1200, 2000))
    assert pixels.shape == (2000, 1200, 3) and not browser.is_blank(pixels)
    assert not browser.is_blank(pixels[:600])  # the top: title, the headline table


def test_progress_lines_when_not_a_terminal(tmp_path, monkeypatch, caplog):
    """In a log file (no terminal, no bar): images done, images/s and ETA, then a summary line."""
    import logging

    from glmix_viz import _cli_evaluate

    monkeypatch.setattr(_cli_evaluate, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO)
    assert cli.main(["evaluate", "--voc-root", str(VOC), "--limit", "2", "--input-size", "64", "--demo",
                     "--block", "10", "--gallery", "0", "--out", str(tmp_path / "o"), "--workers", "0"]) == 0
    lines = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert lines[0].startswith("1/2 images (1 scored, 0 skipped)") and "ETA 0:" in lines[0], lines
    assert lines[-1].startswith("2/2 images (2 scored, 0 skipped)") and "took 0:" in lines[-1], lines


@pytest.mark.slow
def test_ctrl_c_stops_the_scoring_workers_and_writes_nothing(tmp_path):
    """SIGINT to a run with 2 scoring workers: exit 130 with one line, no worker process left, no file."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from .conftest import alive_after, sigint_default

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "glmix_viz.cli", "evaluate", "--voc-root", str(VOC),
                             "--split", "trainval", "--demo", "--input-size", "64", "--block", "10",
                             "--gallery", "0", "--workers", "2", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    deadline, children, seen = time.time() + 300, set(), None
    while proc.poll() is None and time.time() < deadline:
        children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        if len(children) >= 2 and seen is None:
            seen = time.time()
        if seen is not None and time.time() - seen > 8:  # the workers started and scored a few images
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("glmix-viz: interrupted after ")
    assert len(children) >= 2
    assert not alive_after(children)  # the workers, and multiprocessing's resource tracker after them
    assert not out.exists()
