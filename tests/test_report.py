"""``glmix-wsss report``: its numbers are score's, its gallery in order, its page whole (in a browser too)."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss import cli
from wsss.emojivoc import make_emojivoc
from wsss.voc import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, VOCLayout, read_mask, save_mask

from . import browser

GALLERY_FIGURES = 3  # IoU bars, precision and recall, the confusion matrix; then one per gallery image


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_emojivoc(tmp_path_factory.mktemp("emojivoc"), train=4, val=1, seed=11, progress=False)


@pytest.fixture(scope="module")
def perturbed(voc, tmp_path_factory) -> Path:
    """The ground truth of train, each image spoilt differently: shifted by 0, 9, 18, 27 px, the last also
    with one class relabelled and a strip left unlabeled (255)."""
    layout, out = VOCLayout(voc), tmp_path_factory.mktemp("pred")
    for k, image_id in enumerate(layout.ids("train")):
        mask = np.roll(read_mask(layout.mask(image_id)), 9 * k, axis=1)
        if k == 3:
            fg = [c for c in np.unique(mask) if 0 < c < NUM_CLASSES]
            mask[mask == fg[-1]] = 15 if fg[-1] != 15 else 8
            mask[:12] = IGNORE_INDEX
        save_mask(out / f"{image_id}.png", mask)
    return out


def _report(tmp_path: Path, *args: str, name: str = "report.html") -> tuple:
    out = tmp_path / name
    code = cli.main(["report", *args, "--out", str(out)])
    return code, out


def _data(page: Path) -> dict:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page.read_text(),
                      re.S)
    assert found, "the page embeds its numbers"
    return json.loads(found.group(1))


def _masks(voc: Path, pred: Path, image_id: str):
    layout = VOCLayout(voc)
    return read_mask(pred / f"{image_id}.png"), read_mask(layout.mask(image_id))


def _miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Per-image mIoU from the masks: classes in either, void ground truth ignored, unlabeled a miss."""
    valid = gt != IGNORE_INDEX
    ious = []
    for c in range(NUM_CLASSES):
        union = (valid & ((gt == c) | (pred == c))).sum()
        if union:
            ious.append((valid & (gt == c) & (pred == c)).sum() / union)
    return float(np.mean(ious))


def test_ground_truth_as_predictions_scores_100(voc, tmp_path, capsys):
    layout = VOCLayout(voc)
    code, page = _report(tmp_path, "--pred", str(layout.mask_dir()), "--voc-root", str(voc))
    assert code == 0
    data = _data(page)
    assert data["summary"]["miou"] == 1.0 and data["summary"]["images"] == 4
    present = [name for name, v in data["summary"]["iou"].items() if v is not None]
    assert "background" in present and all(data["summary"]["iou"][n] == 1.0 for n in present)
    assert all(data["precision"][n] == 1.0 and data["recall"][n] == 1.0 for n in present)
    assert [i["miou"] for i in data["images"]] == [1.0] * 4
    assert f"{page}: mIoU 100.00, 4 images" in capsys.readouterr().out


def test_numbers_are_score_json(voc, perturbed, tmp_path):
    score = tmp_path / "score.json"
    assert cli.main(["score", "--pred", str(perturbed), "--voc-root", str(voc), "--json", str(score)]) == 0
    code, page = _report(tmp_path, "--pred", str(perturbed), "--voc-root", str(voc), "--split", "train")
    assert code == 0
    data, expected = _data(page), json.loads(score.read_text())
    assert data["summary"] == expected
    assert 0.3 < expected["miou"] < 0.99
    # precision and recall against pixel counts taken straight from the masks
    preds, gts = zip(*(_masks(voc, perturbed, i) for i in VOCLayout(voc).ids("train")))
    pred, gt = np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts])
    valid = gt != IGNORE_INDEX
    for c, name in enumerate(VOC_CLASSES):
        tp = (valid & (gt == c) & (pred == c)).sum()
        predicted, actual = (valid & (pred == c)).sum(), (valid & (gt == c)).sum()
        assert data["precision"][name] == (pytest.approx(tp / predicted) if predicted else None), name
        assert data["recall"][name] == (pytest.approx(tp / actual) if actual else None), name
    # the page shows them too
    text = page.read_text()
    assert f"{100 * expected['miou']:.2f} %" in text
    assert f"{100 * expected['iou']['background']:.2f}" in text


def test_worst_and_best_images_in_order(voc, perturbed, tmp_path):
    ids = VOCLayout(voc).ids("train")
    miou = {i: _miou(*_masks(voc, perturbed, i)) for i in ids}
    assert len(set(miou.values())) == 4  # the spoilt copies differ
    ranked = sorted(ids, key=miou.get)
    for gallery, worst, best in (("6", ranked[:2], ranked[:1:-1]), ("1", ranked[:1], ranked[-1:])):
        code, page = _report(tmp_path, "--pred", str(perturbed), "--voc-root", str(voc), "--gallery", gallery,
                             name=f"g{gallery}.html")
        assert code == 0
        data = _data(page)
        assert {i["id"]: i["miou"] for i in data["images"]} == pytest.approx(miou)
        assert data["gallery"] == {"worst": worst, "best": best}
        shown = re.findall(r'<figure class="(worst|best)" data-id="([^"]+)"', page.read_text())
        assert shown == [("worst", i) for i in worst] + [("best", i) for i in best]


def test_every_image_is_an_embedded_png_and_nothing_is_fetched(voc, perturbed, tmp_path):
    code, page = _report(tmp_path, "--pred", str(perturbed), "--voc-root", str(voc))
    assert code == 0
    text = page.read_text()
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', text)
    assert len(sources) == len(re.findall(r"<img\b", text)) == GALLERY_FIGURES + 4
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as img:
            img.verify()
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and min(img.size) > 50
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)  # no file, no URL: it works offline, anywhere
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temporary file left


def test_from_score_json(voc, perturbed, tmp_path):
    score = tmp_path / "score.json"
    cli.main(["score", "--pred", str(perturbed), "--voc-root", str(voc), "--json", str(score)])
    code, page = _report(tmp_path, "--from-json", str(score))
    assert code == 0
    data = _data(page)
    assert data["summary"] == json.loads(score.read_text()) and "precision" in data and "gallery" not in data
    assert len(re.findall(r"<img\b", page.read_text())) == GALLERY_FIGURES
    old = {k: v for k, v in json.loads(score.read_text()).items() if k != "confusion"}  # before the matrix
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, page = _report(tmp_path, "--from-json", str(tmp_path / "old.json"), name="old.html")
    assert code == 0 and "precision" not in _data(page)
    assert len(re.findall(r"<img\b", page.read_text())) == 1 and "rerun <code>glmix-wsss score --json" in \
        page.read_text()


def test_missing_predictions_are_counted(voc, perturbed, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(perturbed, partial)
    first = sorted(partial.glob("*.png"))[0]
    first.unlink()
    code, page = _report(tmp_path, "--pred", str(partial), "--voc-root", str(voc))
    assert code == 1  # as score
    summary = _data(page)["summary"]
    assert summary["images"] == 3 and summary["missing"] == 1 and summary["missing_ids"] == [first.stem]
    assert "1 listed ids without a prediction" in capsys.readouterr().out


@pytest.mark.parametrize("args, flag", [
    ([], "report: give --pred and --voc-root"),
    (["--pred", "{pred}"], "report: give --pred and --voc-root"),
    (["--pred", "{tmp}/nothing", "--voc-root", "{voc}"], "--pred "),
    (["--pred", "{pred}", "--voc-root", "{tmp}"], "--voc-root: no VOC 2012 layout"),
    (["--pred", "{pred}", "--voc-root", "{voc}", "--split", "nosuch"], "--split: no list for split 'nosuch'"),
    (["--pred", "{pred}", "--voc-root", "{voc}", "--gallery", "-1"], "--gallery -1: expected 0"),
    (["--from-json", "{score}", "--pred", "{pred}"], "--from-json: the score file holds finished numbers"),
    (["--from-json", "{tmp}/nothing.json"], "--from-json "),
    (["--from-json", "{voc}/voc12/cls_labels.npy"], "--from-json "),
    (["--from-json", "{sweep}"], "--from-json "),
], ids=["nothing", "no-voc-root", "no-pred-folder", "no-layout", "no-split", "gallery", "both", "no-json",
        "not-json", "sweep-json"])
def test_errors_name_the_flag(voc, perturbed, tmp_path, capsys, args, flag):
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": [[0.1, 0.5]], "best": [0.1, 0.5],
                                                     "missing": 0}))
    (tmp_path / "score.json").write_text("{}")
    values = dict(pred=perturbed, voc=voc, tmp=tmp_path, score=tmp_path / "score.json",
                  sweep=tmp_path / "sweep.json")
    code, page = _report(tmp_path, *(a.format(**values) for a in args))
    err = capsys.readouterr().err.strip()
    assert code == 2 and not page.exists()
    assert err.startswith(f"glmix-wsss: error: {flag}") and "\n" not in err, err


def test_out_must_be_a_file_path(voc, perturbed, tmp_path, capsys):
    code = cli.main(["report", "--pred", str(perturbed), "--voc-root", str(voc), "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"glmix-wsss: error: --out {tmp_path}: a folder")


@pytest.mark.slow
def test_report_in_a_browser(voc, perturbed, tmp_path):
    """Headless Chromium loads the page offline: every image decodes, no script or console error, the
    embedded numbers parse, and the screenshot shows something. The same probe on a spoilt copy (an image
    that does not decode, one from the network) reports both, so its silence on the report means something."""
    code, page = _report(tmp_path, "--pred", str(perturbed), "--voc-root", str(voc))
    assert code == 0
    probe = browser.load_probe(page)
    assert probe["images"] == GALLERY_FIGURES + 4
    assert probe["broken"] == [] and probe["errors"] == [] and probe["console"] == [], probe
    assert probe["json_blocks"] == 1 and probe["json_errors"] == []
    assert probe["title"] == "Pseudo-masks of train" and probe["text_length"] > 500
    pixels = browser.screenshot(page, tmp_path / "report.png", size=(1200, 2000))
    assert pixels.shape == (2000, 1200, 3) and not browser.is_blank(pixels)
    assert not browser.is_blank(pixels[:600])  # the top: title, numbers, bars

    text = page.read_text()
    spoilt = text.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    spoilt = spoilt.replace("</body>", '<img src="https://example.com/x.png" alt="remote"></body>')
    (tmp_path / "spoilt.html").write_text(spoilt)
    probe = browser.load_probe(tmp_path / "spoilt.html")
    assert len(probe["broken"]) == 2 and len(probe["errors"]) == 2, probe
