"""The per-image slot classifier: seeds, features, the fit, and what it adds."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from glmix_viz.capture import SlotRecord
from wsss import cli
from wsss.slot_classifier import (
    SlotClassifierParams,
    fit_softmax_regression,
    mix_slot_classifier,
    seed_labels,
    slot_classifier,
    slot_features,
)


def _record(ordinal, logits, grid):
    """A captured block's record of one image: ``logits`` ``(K, N)``."""
    return SlotRecord(f"block{ordinal}", ordinal, logits[None], grid)


def test_seed_labels_hand_worked():
    scores = torch.tensor([[0.9, 0.05, 0.3, 0.6, 0.0],
                           [0.2, 0.08, 0.4, 0.7, 0.12]])
    labels, confident = seed_labels(scores, foreground=0.5, background=0.1)
    assert labels.tolist() == [1, 0, 2, 2, 2]
    assert confident.tolist() == [True, True, False, True, False]


def test_slot_features_are_standardised_dispatch_maps():
    torch.manual_seed(0)
    s = _record(1, torch.randn(4, 6) * 3, (2, 3))
    x = slot_features([s], (2, 3))
    d = torch.softmax(s.logits[0], 0).T  # (N, K): each pixel's distribution over the slots
    want = (d - d.mean(0)) / d.std(0)
    torch.testing.assert_close(x, want)
    # a second block on a coarser grid is resized to the first's grid and appended
    coarse = _record(2, torch.randn(4, 1), (1, 1))  # one pixel: its columns are constant
    x2 = slot_features([s, coarse], (2, 3))
    assert x2.shape == (6, 8)
    torch.testing.assert_close(x2[:, :4], want)
    assert torch.all(x2[:, 4:] == 0)


def test_fit_matches_sklearn_logistic_regression():
    """Same objective as sklearn's multinomial fit with C = 1 / (2 * l2 * M) (unpenalised intercept)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = rng.integers(0, 3, 120)
    x[np.arange(120), y] += 1.5  # overlapping classes: a finite optimum
    l2 = 0.01
    w, b = fit_softmax_regression(torch.tensor(x), torch.tensor(y), 3, l2=l2, iterations=500)
    ours = torch.softmax(torch.tensor(x) @ w + b, 1).numpy()
    ref = LogisticRegression(C=1 / (2 * l2 * len(x)), tol=1e-10, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-4)


def _two_region_image():
    """Slots split a 16x16 grid into left (slot 0) and right (slot 1) halves; evidence peaks on a left
    patch."""
    h = w = 16
    left = torch.zeros(h, w, dtype=torch.bool)
    left[:, :8] = True
    logits = torch.stack([left.float(), (~left).float()]).flatten(1) * 8  # (K=2, N)
    scores = np.zeros((1, h, w), np.float32)
    scores[0][left.numpy()] = 0.3  # uncertain on most of the object
    scores[0, 4:8, 2:6] = 0.9  # confident on a patch of it
    return scores, [_record(1, logits, (h, w))], left.numpy()


def test_classifier_grows_seeds_to_their_slot():
    scores, slots, left = _two_region_image()
    probs = slot_classifier(scores, slots, SlotClassifierParams(stride=1))
    assert probs.shape == (2, 16, 16)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert np.all((probs.argmax(0) == 1) == left)  # the whole left slot, not just the confident patch
    assert (scores[0] >= 0.5).sum() == 16  # what thresholding alone would keep


def test_mix_weights_the_classifier_and_keeps_probs_without_seeds():
    scores, slots, _ = _two_region_image()
    probs = np.stack([1 - scores[0], scores[0]])
    params = SlotClassifierParams(stride=1, weight=0.25)
    learned = slot_classifier(scores, slots, params)
    np.testing.assert_allclose(mix_slot_classifier(probs, learned, 0.25), 0.75 * probs + 0.25 * learned)
    assert mix_slot_classifier(probs, None, 0.25) is probs


def test_classifier_needs_two_seed_labels():
    scores, slots, _ = _two_region_image()
    assert slot_classifier(np.full_like(scores, 0.3), slots) is None  # no seeds at all
    assert slot_classifier(np.zeros_like(scores), slots) is None  # background seeds only
    assert slot_classifier(scores, []) is None


def test_params_are_checked():
    with pytest.raises(ValueError, match="SlotClassifierParams.background"):
        SlotClassifierParams(foreground=0.2, background=0.3)
    with pytest.raises(ValueError, match="SlotClassifierParams.weight"):
        SlotClassifierParams(weight=1.5)


def test_cli_names_a_bad_seed_threshold(tmp_path, capsys):
    code = cli.main(["pseudo-labels", "--voc-root", str(tmp_path), "--out", str(tmp_path / "pl"),
                     "--seed-fg", "0.05"])
    assert code == 2
    assert "--seed-fg" in capsys.readouterr().err
    assert not (tmp_path / "pl").exists()
