"""--blocks auto: each GLMix block's oracle mIoU on a labelled sample, the best blocks refine the CAM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import glmix_viz  # noqa: F401
from glmix_viz.capture import SlotCapture
from glmix_viz.fields import FieldError
from glmix_viz.images import load_image, normalize
from glmix_viz.models import load_checkpoint
from glmix_viz.models.demo import load_demo_model
from wsss import cli
from wsss.block_choice import BlockChoiceParams, block_oracle_miou, choose_blocks, choose_blocks_on_split
from wsss.emojivoc import make_emojivoc
from wsss.evidence import EvidenceConfig
from wsss.voc import VOCLayout, read_mask

from .test_pipeline import tiny_ckpt  # noqa: F401  (fixture)

VOC = Path(__file__).parent / "data" / "voc_sample"


def test_choose_blocks_hand_worked():
    scores = [(1, 50.0), (2, 60.0), (3, 60.0), (4, 40.0), (5, float("nan"))]
    assert choose_blocks(scores, 1, "top") == (3,)  # a tie goes to the deeper block
    assert choose_blocks(scores, 2, "top") == (2, 3)
    assert choose_blocks(scores, 4, "top") == (1, 2, 3, 4)  # NaN (nothing scored) last
    with pytest.raises(FieldError, match="BlockChoiceParams.count.*5 GLMix blocks"):
        choose_blocks(scores, 6)
    with pytest.raises(FieldError, match="BlockChoiceParams.images"):
        BlockChoiceParams(images=0)
    with pytest.raises(FieldError, match="BlockChoiceParams.rule.*spread, top"):
        BlockChoiceParams(rule="best")
    # spread: 10 blocks in runs 1-4, 5-7, 8-10 (numpy.array_split), the best of each
    ten = [(1, 50), (2, 60), (3, 60), (4, 40), (5, 70), (6, 65), (7, 71), (8, 80), (9, 79), (10, 80)]
    assert choose_blocks(ten, 3, "spread") == (3, 7, 10)
    assert choose_blocks(ten, 3, "top") == (8, 9, 10)
    assert choose_blocks(ten, 2, "spread") == (5, 10)  # runs 1-5, 6-10
    assert choose_blocks(ten, 10, "spread") == tuple(range(1, 11))


def _brute_force_oracle_miou(model, samples, blocks):
    """Per block: slots from a plain forward, upsampled with torch, each slot's majority class by a loop,
    IoU counted per class; summed over the images."""
    counts = {b: np.zeros((21, 3), np.int64) for b in blocks}  # tp, fp, fn
    for image, mask in samples:
        with torch.no_grad(), SlotCapture(model, list(blocks)) as cap:
            model(normalize(image)[None])
        valid = mask != 255
        for b in blocks:
            maps = cap[b].dispatch_maps()[0]
            up = F.interpolate(maps[None], size=mask.shape, mode="bilinear", align_corners=False)[0]
            hard = up.argmax(0).numpy()
            pred = np.full(mask.shape, 255)
            for k in np.unique(hard):
                classes = mask[(hard == k) & valid]
                if classes.size:
                    pred[hard == k] = np.bincount(classes, minlength=21).argmax()
            for c in range(21):
                counts[b][c] += [((pred == c) & (mask == c) & valid).sum(),
                                 ((pred == c) & (mask != c) & valid).sum(),
                                 ((mask == c) & (pred != c) & valid).sum()]
    out = {}
    for b, n in counts.items():
        present = n.sum(1) > 0
        out[b] = 100 * float(np.mean(n[present, 0] / n[present].sum(1)))
    return out


def test_oracle_miou_per_block_equals_brute_force_on_photos():
    """The demo model on two real VOC photos, every block: the library's number is the brute force's."""
    model, _ = load_demo_model()
    layout = VOCLayout(VOC)
    ids = layout.ids("val")[:2]
    samples = [(np.asarray(load_image(layout.image(i))), read_mask(layout.mask(i))) for i in ids]
    with glmix_viz.devices.torch_threads(1):
        expected = _brute_force_oracle_miou(model, samples, range(1, 11))
    scores, images = block_oracle_miou(model, samples, EvidenceConfig(scales=(1.0, 0.5), stitch=(1, 4)))
    assert images == 2 and [b for b, _ in scores] == list(range(1, 11))
    np.testing.assert_allclose([s for _, s in scores], [expected[b] for b in range(1, 11)], atol=1e-9)
    assert len({round(s, 3) for _, s in scores}) > 5  # the blocks differ: the test can tell them apart
    with glmix_viz.devices.torch_threads(2):  # the same scores, to the bit, at another thread count
        again, _ = block_oracle_miou(model, samples, EvidenceConfig(scales=(1.0, 0.5), stitch=(1, 4)))
    assert again == scores


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    return make_emojivoc(tmp_path_factory.mktemp("voc") / "ev", train=3, val=4, seed=12, progress=False)


def _args(voc, ckpt, out, *extra):
    return ["-q", "pseudo-labels", "--voc-root", str(voc), "--split", "train", "--model", "test_glnet",
            "--checkpoint", str(ckpt), "--out", str(out), "--scales", "1.0", "--max-side", "128",
            "--crf-iterations", "2", "--threads", "1", "--workers", "0", "--blocks", "auto",
            "--blocks-images", "3", *extra]


def test_blocks_auto_runs_the_measured_blocks_and_records_them(tiny_voc, tiny_ckpt, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "pl"
    assert cli.main(_args(tiny_voc, tiny_ckpt, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    model = load_checkpoint(timm.create_model("test_glnet", num_classes=20), tiny_ckpt).eval()
    expected = choose_blocks_on_split(model, VOCLayout(tiny_voc), EvidenceConfig(scales=(1.0,)),
                                      BlockChoiceParams(count=3, split="val", images=3), max_side=128)
    record = manifest["run"]["block_choice"]
    assert record["blocks"] == list(expected.blocks) == manifest["config"]["slots.blocks"]
    assert record["images"] == 3 and record["split"] == "val" and record["rule"] == "spread"
    assert record["oracle_miou"] == {str(b): round(s, 4) for b, s in expected.scores}
    assert manifest["sources"]["settings"]["slots.blocks"].startswith("flag --blocks auto: blocks")
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert len(before) == 3
    # the rerun measures the same blocks, so it resumes (the manifest would refuse other blocks)
    assert cli.main(_args(tiny_voc, tiny_ckpt, out)) == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    # and the masks are those of the same blocks given by hand
    fixed = tmp_path / "fixed"
    by_hand = [*_args(tiny_voc, tiny_ckpt, fixed)[:-4], "--blocks", ",".join(map(str, expected.blocks))]
    assert cli.main(by_hand) == 0
    assert {p.name: p.read_bytes() for p in fixed.glob("*.png")} == before


def test_blocks_rule_reaches_the_choice(tiny_voc, tiny_ckpt, tmp_path, capsys):  # noqa: F811
    assert cli.main(_args(tiny_voc, tiny_ckpt, tmp_path / "s", "--blocks-rule", "top", "--show-config")) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("slots.blocks"))
    model = load_checkpoint(timm.create_model("test_glnet", num_classes=20), tiny_ckpt).eval()
    expected = choose_blocks_on_split(model, VOCLayout(tiny_voc), EvidenceConfig(scales=(1.0,)),
                                      BlockChoiceParams(count=3, images=3, rule="top"), max_side=128)
    assert line.split()[1] == ",".join(map(str, expected.blocks)) and "oracle mIoU (top)" in line


def test_blocks_auto_errors_name_the_flag(tiny_voc, tiny_ckpt, tmp_path, capsys):  # noqa: F811
    assert cli.main(_args(tiny_voc, tiny_ckpt, tmp_path / "a", "--method", "cam")) == 2
    assert "--blocks auto: the slot refinement is off" in capsys.readouterr().err
    assert cli.main(_args(tiny_voc, tiny_ckpt, tmp_path / "b", "--blocks-split", "nosuch")) == 2
    err = capsys.readouterr().err
    assert "--blocks auto (--blocks-split nosuch)" in err and "nosuch.txt" in err
    assert cli.main(_args(tiny_voc, tiny_ckpt, tmp_path / "c", "--blocks-images", "0")) == 2
    assert "--blocks-images 0: expected 1 or more" in capsys.readouterr().err
    assert cli.main(_args(tiny_voc, tiny_ckpt, tmp_path / "d", "--from-evidence", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "--blocks auto measures the blocks with the model: not with --from-evidence" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
