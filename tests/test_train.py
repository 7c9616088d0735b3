"""glmix-wsss train: the loss goes down, checkpoints are in the release's format, resume continues."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glmix_viz.models import read_checkpoint
from wsss import cli, commands
from wsss.emojivoc import make_emojivoc
from wsss.train import TrainConfig, average_precision, mean_average_precision, train
from wsss.voc import VOCLayout


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_emojivoc(tmp_path_factory.mktemp("tv") / "ev", train=16, val=8, seed=5, progress=False)


def config(voc, out, **kw):
    base = dict(voc_root=str(voc), out=str(out), model="test_glnet", input_size=64, epochs=2, batch_size=8,
                lr=1e-3, warmup_epochs=0.0, drop_path=0.0, workers=0, threads=1, seed=0, min_scale=0.8)
    return TrainConfig(**{**base, **kw})


def test_average_precision_matches_hand_worked_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, 1, 0, 1])
    # precision at each positive: 1/1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    ties = average_precision(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 1]))
    assert ties == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)  # tied scores form one threshold (as scikit-learn)
    m, aps = mean_average_precision(np.array([[0.9, 0.1], [0.2, 0.3]]), np.array([[1, 0], [0, 0]]))
    assert m == 1.0 and np.isnan(aps[1])


def test_loss_decreases_on_a_fixed_batch(voc, tmp_path):
    """A few steps on a tiny generated set: the training loss falls below where it started."""
    out = tmp_path / "run"
    train(config(voc, out, epochs=6, lr=2e-3, batch_size=16), progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.02


def test_checkpoints_and_resume(voc, tmp_path):
    out = tmp_path / "run"
    train(config(voc, out, epochs=1), progress=False)
    ckpt = read_checkpoint(out / "checkpoint-last.pth")
    assert ckpt["epoch"] == 0 and "model" in ckpt and "optimizer" in ckpt
    assert (out / "checkpoint-best.pth").is_file() and (out / "checkpoint-001.pth").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files
    # resume to 2 epochs: continues at epoch 1, the log has one line per epoch
    assert cli.main(["-q", "train", "--voc-root", str(voc), "--out", str(out), "--model", "test_glnet",
                     "--input-size", "64", "--epochs", "2", "--batch-size", "8", "--workers", "0",
                     "--threads", "1", "--warmup-epochs", "0", "--resume"]) == 0
    log = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [0, 1]
    assert read_checkpoint(out / "checkpoint-last.pth")["epoch"] == 1


def test_resume_without_checkpoint_is_a_clear_error(voc, tmp_path, capsys):
    code = cli.main(["train", "--voc-root", str(voc), "--out", str(tmp_path / "none"), "--batch-size", "8",
                     "--resume"])
    assert code == 2 and "checkpoint-last.pth" in capsys.readouterr().err


def test_classifier_starts_at_label_prior_unless_a_trained_head_is_loaded(voc, tmp_path):
    """A new head starts at log(p / (1 - p)) of the label frequencies; a head loaded with --init-checkpoint is
    kept."""
    labels = VOCLayout(voc).image_labels(VOCLayout(voc).ids("train"))
    prior = np.stack(list(labels.values())).mean(0).clip(1e-3, 1 - 1e-3)
    fresh = tmp_path / "fresh"
    train(config(voc, fresh, epochs=1, lr=0.0), progress=False)  # lr 0: the weights stay where they started
    bias = read_checkpoint(fresh / "checkpoint-last.pth")["model"]["head.bias"].numpy()
    np.testing.assert_allclose(bias, np.log(prior / (1 - prior)), rtol=1e-5)

    trained = read_checkpoint(fresh / "checkpoint-last.pth")
    trained["model"]["head.bias"] = trained["model"]["head.bias"] + 1.0  # a head that is not the prior
    torch.save({"model": trained["model"]}, tmp_path / "init.pth")
    again = tmp_path / "again"
    train(config(voc, again, epochs=1, lr=0.0, init_checkpoint=str(tmp_path / "init.pth")), progress=False)
    kept = read_checkpoint(again / "checkpoint-last.pth")["model"]["head.bias"].numpy()
    np.testing.assert_allclose(kept, np.log(prior / (1 - prior)) + 1.0, rtol=1e-5)


def test_ema_weights_are_evaluated_kept_as_best_and_resumed(voc, tmp_path):
    """decay 1 keeps the average at the start through training and a resume; decay ~0 follows the model."""
    start = tmp_path / "start"
    train(config(voc, start, epochs=1), progress=False)
    init = {k: v for k, v in read_checkpoint(start / "checkpoint-last.pth")["model"].items()
            if v.is_floating_point()}  # integer buffers (BatchNorm's counters) are copied, not averaged

    frozen = tmp_path / "frozen"
    train(config(voc, frozen, epochs=1, init_checkpoint=str(start / "checkpoint-last.pth"), ema_decay=1.0),
          progress=False)
    train(config(voc, frozen, epochs=2, init_checkpoint=str(start / "checkpoint-last.pth"), ema_decay=1.0),
          resume=True, progress=False)
    last = read_checkpoint(frozen / "checkpoint-last.pth")
    assert last["epoch"] == 1
    assert all(torch.equal(last["model_ema"][k], v) for k, v in init.items())
    best = read_checkpoint(frozen / "checkpoint-best.pth")["model"]
    assert all(torch.equal(best[k], v) for k, v in init.items())
    assert not all(torch.equal(last["model"][k], v) for k, v in init.items())  # the raw weights did train
    log = [json.loads(line) for line in (frozen / "log.jsonl").read_text().splitlines()]
    assert log[0]["val_map"] == log[1]["val_map"] and "val_map_raw" in log[0]

    follow = tmp_path / "follow"
    train(config(voc, follow, epochs=1, ema_decay=1e-12), progress=False)
    last = read_checkpoint(follow / "checkpoint-last.pth")
    assert all(torch.allclose(last["model_ema"][k].float(), v.float(), atol=1e-6)
               for k, v in last["model"].items())


def test_mosaic_training_is_reproducible_and_checks_the_input_size(voc, tmp_path, capsys):
    """--mosaic: the same seed gives the same weights (mosaics depend on seed and step); a bad size is an
    error."""
    runs = []
    for name in ("a", "b"):
        train(config(voc, tmp_path / name, epochs=1, mosaic=1.0), progress=False)
        runs.append(read_checkpoint(tmp_path / name / "checkpoint-last.pth")["model"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    plain = tmp_path / "plain"
    train(config(voc, plain, epochs=1), progress=False)
    assert not torch.equal(read_checkpoint(plain / "checkpoint-last.pth")["model"]["head.weight"],
                           runs[0]["head.weight"])  # the mosaics changed what was learned
    code = cli.main(["train", "--voc-root", str(voc), "--out", str(tmp_path / "bad"), "--model", "test_glnet",
                     "--input-size", "80", "--batch-size", "8", "--workers", "0", "--mosaic", "0.5"])
    assert code == 2 and "multiple of the model's stride 32" in capsys.readouterr().err


def test_position_negatives_are_reproducible_and_change_what_is_learned(voc, tmp_path):
    """--position-negatives, with and without mosaics: same seed same weights; the term changes the
    weights."""
    for mosaic in (0.0, 0.5):
        runs = []
        for name in ("a", "b", "off"):
            out = tmp_path / f"{name}{mosaic}"
            train(config(voc, out, epochs=1, mosaic=mosaic, position_negatives=0.0 if name == "off" else 1.0),
                  progress=False)
            runs.append(read_checkpoint(out / "checkpoint-last.pth")["model"]["head.weight"])
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_pos_weight_parses_names_and_weights_the_positives(voc, tmp_path, capsys):
    """--pos-weight bird=4: 20 weights in class order; all-ones equals no weighting; other weights change
    training."""
    weights = commands._pos_weight("bird=4, person=2")
    assert len(weights) == 20 and weights[2] == 4.0 and weights[14] == 2.0 and sum(weights) == 18 + 6
    assert commands._pos_weight("") == ()
    runs = {}
    for name, pw in (("none", ()), ("ones", (1.0,) * 20), ("bird", commands._pos_weight("bird=4"))):
        train(config(voc, tmp_path / name, epochs=1, pos_weight=pw), progress=False)
        runs[name] = read_checkpoint(tmp_path / name / "checkpoint-last.pth")["model"]["head.weight"]
    assert torch.equal(runs["none"], runs["ones"]) and not torch.equal(runs["none"], runs["bird"])
    with pytest.raises(ValueError, match="20"):
        train(config(voc, tmp_path / "short", pos_weight=(2.0,)), progress=False)
    for bad in ("birds=4", "bird=0", "bird"):
        assert cli.main(["train", "--voc-root", str(voc), "--out", str(tmp_path / "bad"),
                         "--pos-weight", bad]) == 2
        assert "--pos-weight" in capsys.readouterr().err
