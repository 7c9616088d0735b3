"""Slot-segmentation metrics and baselines against hand-worked cases and brute force."""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from glmix_viz.analysis import (
    BoundaryCounts,
    ClassConfusion,
    SegmentScoreAccumulator,
    adjusted_rand,
    boundary_counts,
    boundary_map,
    cluster_slots,
    confusion_matrix,
    dispatch_entropy,
    foreground_ari,
    grid_segments,
    grid_shape,
    group_segments,
    kmeans_segments,
    mask_boundary,
    oracle_labels,
    region_count,
    segment_count,
    segment_scores,
    slic_segments,
    slot_segments,
)

# ----------------------------------------------------------------------------- brute force


def brute_oracle(seg, gt, n=21):
    out = np.full(seg.shape, 255, np.int64)
    for s in np.unique(seg):
        counts = [int(((seg == s) & (gt == c)).sum()) for c in range(n)]
        if max(counts) > 0:
            out[seg == s] = counts.index(max(counts))  # list.index: the first (lowest) class
    return out


def brute_iou_percent(preds, gts, n=21):
    ious = []
    for c in range(n):
        inter = union = 0
        for p, g in zip(preds, gts):
            valid = g != 255
            inter += np.logical_and(p == c, g == c)[valid].sum()
            union += np.logical_or(p == c, g == c)[valid].sum()
        ious.append(100 * inter / union if union else np.nan)
    return np.array(ious)


def brute_regions(seg):
    """Flood fill with the 8 neighbours."""
    H, W = seg.shape
    seen = np.zeros(seg.shape, bool)
    regions = 0
    for y in range(H):
        for x in range(W):
            if seen[y, x]:
                continue
            regions += 1
            seen[y, x] = True
            todo = deque([(y, x)])
            while todo:
                cy, cx = todo.popleft()
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < H and 0 <= nx < W and not seen[ny, nx] and seg[ny, nx] == seg[y, x]:
                            seen[ny, nx] = True
                            todo.append((ny, nx))
    return regions


def brute_matched(source, target, tol):
    """How many ``source`` pixels have a ``target`` pixel within ``tol`` (all pairs)."""
    s, t = np.argwhere(source), np.argwhere(target)
    if len(s) == 0 or len(t) == 0:
        return 0
    d = np.sqrt(((s[:, None, :] - t[None, :, :]) ** 2).sum(-1))
    return int((d.min(1) <= tol).sum())


def random_case(rng, shape=(17, 23), n_seg=9, classes=(0, 3, 7, 15)):
    gt = rng.choice(classes, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.15] = 255
    seg = rng.integers(0, n_seg, shape)
    return seg, gt


def square(size=20, lo=5, hi=15, value=1, dy=0, dx=0):
    m = np.zeros((size, size), np.int64)
    m[lo + dy : hi + dy, lo + dx : hi + dx] = value
    return m


# ----------------------------------------------------------------------------- oracle labelling


def test_segments_equal_to_the_ground_truth_score_100_and_ari_1():
    gt = np.zeros((12, 16), np.uint8)
    gt[2:8, 3:9] = 15
    gt[6:11, 10:15] = 8
    gt[1:3, 12:14] = 255
    seg = gt.astype(np.int64) * 7 + 3  # other label numbers, same regions (255 pixels: one more segment)
    s = segment_scores(seg, gt)
    acc = ClassConfusion()
    acc.update(oracle_labels(seg, gt), gt)
    assert acc.miou == 100.0 and acc.purity == 100.0 and s.purity == 100.0
    assert s.ari == pytest.approx(1.0)
    np.testing.assert_array_equal(oracle_labels(seg, gt)[gt != 255], gt[gt != 255])
    assert (oracle_labels(seg, gt)[gt == 255] == 255).all()  # a segment wholly under 255: unlabelled


def test_a_single_segment_has_the_majority_class_share_as_purity():
    gt = np.zeros((6, 6), np.uint8)  # 36 pixels
    gt[:2, :5] = 15  # 10 person
    gt[5, :] = 255  # 6 ignored -> 20 background
    s = segment_scores(np.zeros((6, 6), np.int64), gt)
    assert s.purity == pytest.approx(100 * 20 / 30)
    acc = SegmentScoreAccumulator()
    acc.add(s)
    # background IoU 20/30, person 0/10 -> mean of the two present classes
    assert acc.summary().oracle_miou == pytest.approx((100 * 20 / 30 + 0) / 2)
    assert s.ari == 0.0  # sklearn: one cluster against two classes
    assert s.segments == 1 and s.regions == 1


def test_ties_go_to_the_lowest_class():
    gt = np.array([[7, 7, 3, 3, 255], [7, 3, 7, 3, 255]], np.uint8)  # 4 of each
    seg = np.zeros(gt.shape, np.int64)
    assert (oracle_labels(seg, gt) == 3).all()
    assert (oracle_labels(seg, gt[:, ::-1].copy()) == 3).all()
    gt2 = gt.copy()
    gt2[0, 4] = 7  # 7 now leads
    assert (oracle_labels(seg, gt2) == 7).all()


def test_oracle_labels_equal_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(5):
        seg, gt = random_case(rng)
        np.testing.assert_array_equal(oracle_labels(seg, gt), brute_oracle(seg, gt))


def test_pixels_under_255_never_count():
    rng = np.random.default_rng(2)
    seg, gt = random_case(rng)
    seg[gt == 255] = 100  # an extra segment wholly under 255
    other = seg.copy()
    void = gt == 255
    other[void] = rng.integers(0, 12, void.sum())  # any labels there, old segments and new ones
    a, b = segment_scores(seg, gt), segment_scores(other, gt)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.purity == b.purity and a.ari == b.ari
    np.testing.assert_array_equal(oracle_labels(seg, gt)[~void], oracle_labels(other, gt)[~void])


def test_accumulation_equals_one_big_confusion_matrix_and_brute_force():
    rng = np.random.default_rng(3)
    cases = [random_case(rng, shape=(11 + i, 13)) for i in range(4)]
    acc, conf = SegmentScoreAccumulator(), ClassConfusion()
    preds = []
    for seg, gt in cases:
        acc.update(seg, gt)
        preds.append(brute_oracle(seg, gt))
        conf.update(preds[-1], gt)
    gts = [gt for _, gt in cases]
    whole = confusion_matrix(np.concatenate([p.ravel() for p in preds]),
                             np.concatenate([g.ravel() for g in gts]))
    summary = acc.summary()
    np.testing.assert_array_equal(summary.confusion, whole)
    np.testing.assert_array_equal(conf.confusion, whole)
    expected = brute_iou_percent(preds, gts)
    np.testing.assert_allclose(conf.iou, expected)
    assert summary.oracle_miou == pytest.approx(np.nanmean(expected))
    valid = np.concatenate([(g != 255).ravel() for g in gts])
    hits = np.concatenate([(p == g).ravel() for p, g in zip(preds, gts)])
    assert summary.purity == pytest.approx(100 * hits[valid].mean())
    assert summary.images == 4 and summary.boundary == sum((s.boundary for s in acc.scores), BoundaryCounts())


# ----------------------------------------------------------------------------- ARI


def test_ari_hand_worked_ignoring_255():
    gt = np.array([[0, 0, 1, 1, 255, 255]], np.uint8)
    seg = np.array([[0, 0, 1, 2, 1, 0]])
    # pairs: index 1, classes 2, segments 1, n = 4 -> expected 1/3, max 3/2 -> (1 - 1/3) / (3/2 - 1/3)
    assert adjusted_rand(seg, gt) == pytest.approx(4 / 7)
    assert math.isnan(adjusted_rand(seg, np.full_like(gt, 255)))


def test_foreground_ari_uses_instance_pixels_only():
    inst = np.array([[0, 0, 1, 1, 255], [0, 2, 2, 1, 255]], np.uint8)
    seg = np.array([[5, 6, 1, 1, 9], [7, 2, 2, 1, 3]])  # instances exact, background and border anything
    assert foreground_ari(seg, inst) == pytest.approx(1.0)
    seg_split = seg.copy()
    seg_split[0, 2] = 4  # instance 1 split in two
    assert foreground_ari(seg_split, inst) < 1.0
    one = np.array([[0, 1, 1, 0]], np.uint8)
    assert foreground_ari(np.array([[3, 4, 4, 5]]), one) == 1.0  # one instance, one segment on it
    assert foreground_ari(np.array([[3, 4, 5, 5]]), one) == 0.0  # one instance, two segments
    assert math.isnan(foreground_ari(np.zeros((1, 4), np.int64), np.zeros((1, 4), np.uint8)))


# ----------------------------------------------------------------------------- boundaries


def test_boundary_map_marks_the_right_and_lower_side():
    b = boundary_map(square(6, 2, 4))  # object rows/cols 2..3
    expected = np.zeros((6, 6), bool)
    expected[2, 2:4] = expected[4, 2:4] = expected[2:4, 2] = expected[2:4, 4] = True
    np.testing.assert_array_equal(b, expected)


def test_a_shift_of_1_is_fully_matched():
    gt = square().astype(np.uint8)
    c = boundary_counts(square(dy=1, dx=1), gt, tolerance=2)
    assert c == BoundaryCounts(39, 39, 39, 39)  # 4 sides of 10, one shared corner
    assert c.precision == c.recall == c.f == 100.0


def test_a_shift_of_3_counted_by_hand():
    gt = square().astype(np.uint8)  # rows/cols 5..14
    pred = square(dx=3)  # cols 8..17
    c = boundary_counts(pred, gt, tolerance=2)
    # predicted: top row 10 of 10, bottom row 9 (col 17 is sqrt 5 away), left side rows 6, 7, 13, 14
    # (near the ground truth's top and bottom rows), right side (col 18) none -> 23 of 39;
    # ground truth: top row cols 6..14, bottom row cols 6..14, left side none, right side rows 5, 6, 7,
    # 13, 14 -> 23 of 39
    assert c == BoundaryCounts(23, 39, 23, 39)
    assert c.precision == pytest.approx(100 * 23 / 39) and c.f == pytest.approx(100 * 23 / 39)
    pb, gb = boundary_map(pred), mask_boundary(gt)
    for tol in (1, 2, 3):
        c = boundary_counts(pred, gt, tolerance=tol)
        assert c.pred_matched == brute_matched(pb, gb, tol) and c.gt_matched == brute_matched(gb, pb, tol)
    assert boundary_counts(pred, gt, tolerance=3) == BoundaryCounts(39, 39, 39, 39)


def test_a_255_band_puts_the_ground_truth_boundary_in_its_middle():
    gt = np.zeros((8, 20), np.uint8)
    gt[:, 10:] = 1
    gt[:, 8:12] = 255  # band cols 8..11: 8, 9 take 0, 10, 11 take 1
    expected = np.zeros(gt.shape, bool)
    expected[:, 10] = True
    np.testing.assert_array_equal(mask_boundary(gt), expected)
    pred = np.zeros(gt.shape, np.int64)
    pred[:, 8:] = 1  # boundary at col 8, inside the band, 2 px from its middle
    assert boundary_counts(pred, gt, tolerance=2) == BoundaryCounts(8, 8, 8, 8)
    assert boundary_counts(pred, gt, tolerance=1) == BoundaryCounts(0, 0, 0, 8)  # unmatched on 255: left out


def test_boundaries_in_a_void_region_are_left_out_of_precision():
    gt = np.zeros((20, 20), np.uint8)
    inner = square(20, 7, 13)  # boundary: 4 sides of 6, one shared corner -> 23 pixels
    assert boundary_counts(inner, gt) == BoundaryCounts(0, 23, 0, 0)
    gt[5:15, 5:15] = 255  # a difficult object: no ground-truth boundary, predicted ones not scored
    assert not mask_boundary(gt).any()
    c = boundary_counts(inner, gt)
    assert c == BoundaryCounts(0, 0, 0, 0) and math.isnan(c.precision) and math.isnan(c.f)
    assert not mask_boundary(np.full((4, 4), 255, np.uint8)).any()


# ----------------------------------------------------------------------------- counts, entropy


def test_regions_counted_by_hand_with_8_connectivity():
    seg = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 1],
                    [1, 1, 0, 0],
                    [1, 1, 0, 2]])
    assert segment_count(seg) == 3
    assert region_count(seg) == 3  # the blocks of 0 and of 1 touch at corners; 4-connectivity gives 5
    checker = np.indices((5, 5)).sum(0) % 2  # 1-pixel checkerboard: diagonals join each colour
    assert region_count(checker) == 2
    stripes = np.zeros((5, 6), np.int64)
    stripes[:, 1::2] = 1  # columns 0, 2, 4 and 1, 3, 5 never touch
    assert segment_count(stripes) == 2 and region_count(stripes) == 6
    rng = np.random.default_rng(4)
    for _ in range(3):
        seg = rng.integers(0, 4, (9, 11))
        assert region_count(seg) == brute_regions(seg)


def test_entropy_in_bits():
    K = 8
    assert dispatch_entropy(np.full((K, 3, 4), 1 / K)) == pytest.approx(3.0)
    assert dispatch_entropy(np.full((K, 3, 4), 1 / K), normalized=True) == pytest.approx(1.0)
    one_hot = np.zeros((K, 3, 4))
    one_hot[2] = 1
    assert dispatch_entropy(one_hot) == 0.0
    half = np.zeros((2, 1, 2))
    half[:, 0, 0] = 0.5
    half[0, 0, 1] = 1.0  # 1 bit at one pixel, 0 at the other
    assert dispatch_entropy(half) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="summing to 1"):
        dispatch_entropy(np.ones((K, 3, 4)))


# ----------------------------------------------------------------------------- slot maps, groups


def test_slot_segments_upsample_bilinearly_then_argmax():
    maps = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)  # (2, 1, 2)
    # align_corners=False: output x reads 0, 0.25, 0.75, 1 of the way -> slot 0 at x = 0.75 * 0.9 + ...
    np.testing.assert_array_equal(slot_segments(maps, (1, 4)), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(slot_segments(maps, (3, 4)), np.array([[0, 0, 1, 1]] * 3))


def softmax_maps(rng, K=16, h=7, w=7):
    logits = rng.normal(size=(K, h, w)) * 3
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def test_k_groups_are_unions_of_whole_slots():
    rng = np.random.default_rng(5)
    maps = softmax_maps(rng)
    hard = slot_segments(maps, (28, 28))
    groups = group_segments(maps, (28, 28), k=4)
    clusters = cluster_slots(maps, 4, seed=0)
    assert segment_count(groups) <= 4 and groups.min() >= 0 and groups.max() < 4
    for s in np.unique(hard):
        assert set(np.unique(groups[hard == s])) == {clusters.labels[s]}
    np.testing.assert_array_equal(group_segments(maps, (28, 28), clusters=clusters), groups)
    assert segment_count(group_segments(maps, (28, 28), k=1)) == 1


# ----------------------------------------------------------------------------- baselines


def test_grid_counts():
    assert grid_shape(100, 100, 64) == (8, 8)
    assert grid_shape(100, 200, 50) == (5, 10)
    assert grid_shape(375, 500, 64) == (7, 9)  # round(sqrt(48)) = 7 rows, round(64 / 7) = 9 cols: 63
    assert grid_shape(3, 200, 64) == (1, 64)  # rows clipped to 1..H
    for H, W, n in ((100, 100, 64), (375, 500, 64), (500, 375, 17), (10, 10, 200)):
        g = grid_segments(H, W, n)
        rows, cols = grid_shape(H, W, n)
        assert g.shape == (H, W) and segment_count(g) == rows * cols == region_count(g)
        a, b = H // rows, W // cols  # cells are a or a + 1 rows high, b or b + 1 columns wide
        assert set(np.bincount(g.ravel())) <= {a * b, a * (b + 1), (a + 1) * b, (a + 1) * (b + 1)}
    np.testing.assert_array_equal(grid_segments(2, 4, 2), [[0, 0, 1, 1], [0, 0, 1, 1]])


def smooth_image(rng, H=96, W=128):
    base = rng.integers(0, 256, (H // 16, W // 16, 3)).astype(np.float64)
    img = np.kron(base, np.ones((16, 16, 1))) + rng.normal(0, 8, (H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_slic_is_deterministic_and_near_n():
    img = smooth_image(np.random.default_rng(6))
    a, b = slic_segments(img, 48), slic_segments(img, 48)
    np.testing.assert_array_equal(a, b)
    m = segment_count(a)
    assert 24 <= m <= 72 and a.min() == 0 and a.max() == m - 1
    assert region_count(a) == m  # connectivity enforced: one region per superpixel
    with pytest.raises(ValueError, match="image must be"):
        slic_segments(img.astype(np.float32), 48)


def test_slic_on_the_demo_photo_gives_about_n():
    from PIL import Image

    from glmix_viz._names import DEMO_IMAGE

    with Image.open(DEMO_IMAGE) as im:
        img = np.asarray(im.convert("RGB"))
    for n in (16, 64, 256):
        seg = slic_segments(img, n)
        assert n // 2 <= segment_count(seg) <= n  # SLIC's count is near n, usually below


def test_kmeans_is_deterministic_and_upsampled_nearest():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(8, 16)) * 5
    pixels = centres[rng.integers(0, 8, 14 * 14)] + rng.normal(size=(14 * 14, 16)) * 0.1  # 8 clear clusters
    feats = pixels.T.reshape(16, 14, 14)
    a = kmeans_segments(feats, k=8, size=(56, 56), seed=0)
    np.testing.assert_array_equal(a, kmeans_segments(feats, k=8, size=(56, 56), seed=0))
    low = kmeans_segments(feats, k=8, seed=0)
    assert low.shape == (14, 14) and segment_count(low) == 8
    np.testing.assert_array_equal(a, np.kron(low, np.ones((4, 4), np.int64)))
    with pytest.raises(ValueError, match="k must be"):
        kmeans_segments(feats, k=14 * 14 + 1)


# ----------------------------------------------------------------------------- per image and dataset


def test_summary_means_and_fg_ari_over_images_with_instances():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:8, 2:8] = 12
    inst = np.where(gt == 12, 1, 0).astype(np.uint8)
    acc = SegmentScoreAccumulator()
    exact = acc.update(gt.astype(np.int64), gt, inst, entropy=1.0)
    grid = acc.update(grid_segments(10, 10, 4), gt, entropy=3.0)  # no instance mask
    acc.update(grid_segments(10, 10, 4), gt, np.zeros_like(inst))  # no instance pixel, no entropy
    s = acc.summary()
    assert s.images == 3 and s.fg_ari_images == 1 and s.fg_ari == exact.fg_ari == 1.0
    assert s.entropy == 2.0 and s.segments == pytest.approx((2 + 4 + 4) / 3)
    assert s.ari == pytest.approx((1.0 + 2 * grid.ari) / 3)
    b = exact.boundary + grid.boundary + grid.boundary
    assert s.boundary == b and s.boundary_recall == pytest.approx(100 * b.gt_matched / b.gt_total)
    assert s.as_dict()["fg_ari_images"] == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="mask shape"):
        segment_scores(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="mask has values outside 0..20 and 255"):
        oracle_labels(np.zeros((2, 2), np.int64), np.full((2, 2), 30, np.uint8))
    with pytest.raises(ValueError, match="segments must hold integer"):
        segment_count(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"maps must be \(K, h, w\)"):
        group_segments(np.zeros((1, 4, 3, 3)), (6, 6))
    with pytest.raises(ValueError, match="n must be"):
        grid_shape(10, 10, 0)


def test_boundary_counts_cache_follows_the_mask_content():
    """The ground truth's side is cached by the mask's bytes: a mask changed in place (same object) is
    scored afresh, and a repeated one gives the same counts as the first time."""
    from glmix_viz.analysis.segments import boundary_counts

    seg = np.zeros((20, 20), np.int64)
    seg[:, 10:] = 1
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 10:] = 3
    first = boundary_counts(seg, mask)
    assert boundary_counts(seg, mask) == first and first.recall == 100.0
    mask[:, 10:] = 0  # in place: no boundary left in the ground truth
    mask[:, 15:] = 3
    moved = boundary_counts(seg, mask)
    assert moved != first and moved.recall == 0.0


# ----------------------------------------------------------------------------- fast paths, references


def ref_consecutive(labels):
    """The sort-based renumbering the counting one replaces."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)


def ref_region_count(seg):
    """Each label's pixels split by ``scipy.ndimage.label`` (8-connectivity) in its bounding box, summed."""
    from scipy.ndimage import find_objects, label

    idx = ref_consecutive(seg)
    total = 0
    for i, box in enumerate(find_objects(idx + 1)):
        if box is not None:
            total += label(idx[box] == i, structure=np.ones((3, 3), bool))[1]
    return int(total)


def ref_near(target, tol):
    from scipy.ndimage import distance_transform_edt

    if not target.any():
        return np.zeros(target.shape, bool)
    return distance_transform_edt(~target) <= tol


SHAPES = ((1, 1), (1, 9), (7, 1), (2, 3), (9, 11), (31, 17), (40, 53))


def label_images(rng):
    """Label images of many kinds: few labels, one label, blobs, gaps in the numbering, every pixel its own
    label, bool, unsigned, large and sparse or negative labels (those take the sorting path)."""
    for shape in SHAPES:
        n = shape[0] * shape[1]
        yield rng.integers(0, 4, shape)
        yield np.full(shape, 7, np.int64)
        yield np.kron(rng.integers(0, 6, (shape[0] // 3 + 1, shape[1] // 3 + 1)), np.ones((3, 3), np.int64))[
            : shape[0], : shape[1]]
        yield rng.choice([0, 5, 17, 200], size=shape).astype(np.uint8)
        yield rng.integers(0, 2, shape).astype(bool)
        yield rng.permutation(n).reshape(shape).astype(np.int32)
        yield rng.integers(0, 4 * n + 1024, shape).astype(np.uint64)  # all below the bound: counted
        yield rng.choice([3, 4 * n + 1024], size=shape)  # one at the bound: sorted
        yield rng.choice([0, 10**9, 2**40], size=shape)
        yield rng.integers(-3, 3, shape)


def test_counting_paths_equal_np_unique():
    from glmix_viz.analysis.segments import _consecutive, _dense_counts

    rng = np.random.default_rng(8)
    paths = set()
    for seg in label_images(rng):
        paths.add(_dense_counts(seg) is None)
        got = _consecutive(seg)
        assert got.dtype == np.int64 and got.shape == seg.shape
        np.testing.assert_array_equal(got, ref_consecutive(seg))
        assert segment_count(seg) == np.unique(seg).size
    assert paths == {True, False}  # both the counting and the sorting path were taken


def test_region_count_equals_the_per_label_scipy_loop():
    rng = np.random.default_rng(9)
    for seg in label_images(rng):
        assert region_count(seg) == ref_region_count(seg)
    for _ in range(3):
        seg = rng.integers(0, 3, (13, 15))
        assert region_count(seg) == ref_region_count(seg) == brute_regions(seg)


def ari_cases(rng):
    for seg in label_images(rng):
        shape = seg.shape
        gt = rng.choice([0, 3, 15, 20], size=shape).astype(np.uint8)
        gt[rng.random(shape) < 0.2] = 255
        yield seg, gt
        yield seg, np.where(rng.random(shape) < 0.5, 255, 0).astype(np.uint8)  # one class (or none)
        yield seg, np.full(shape, 255, np.uint8)  # every pixel ignored
        yield seg, (seg % 7).astype(np.uint8)  # close to the segmentation
        yield seg, ref_consecutive(seg).astype(np.uint8) if np.unique(seg).size < 255 else gt
        yield (rng.permutation(seg.size).reshape(shape), gt)  # each pixel its own segment


def test_ari_equals_scikit_learn_exactly():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(10)
    checked = 0
    for seg, gt in ari_cases(rng):
        valid = gt != 255
        got = adjusted_rand(seg, gt)
        if not valid.any():
            assert math.isnan(got)
            continue
        expected = adjusted_rand_score(gt[valid], seg[valid])
        assert type(got) is float and got == expected, (seg.shape, got, expected)
        inst = rng.integers(0, 6, seg.shape).astype(np.uint8)
        inst[rng.random(seg.shape) < 0.1] = 255
        fg = (inst >= 1) & (inst <= 254)
        got = foreground_ari(seg, inst)
        if fg.any():
            assert got == adjusted_rand_score(inst[fg], seg[fg])
        else:
            assert math.isnan(got)
        checked += 1
    assert checked > 100
    for _ in range(40):  # image-sized: pair counts beyond 2**53, where float arithmetic would round
        H, W = rng.integers(100, 300, 2)
        k, c = int(rng.integers(2, 60)), int(rng.integers(2, 21))
        seg = rng.integers(0, k, (H, W))
        noise = (rng.random((H, W)) < rng.random()) * rng.integers(0, c, (H, W))
        gt = ((seg * c // k + noise) % c).astype(np.uint8)
        assert adjusted_rand(seg, gt) == adjusted_rand_score(gt.ravel(), seg.ravel())


def test_near_equals_the_distance_transform():
    from glmix_viz.analysis.segments import _near

    rng = np.random.default_rng(11)
    tolerances = (0, 1, 1.5, 2, 2.0, 2.5, 3, math.sqrt(5), math.sqrt(8), 7.9, 8, 8.5, 12)
    for shape in SHAPES + ((5, 60), (60, 5)):
        for p in (0.0, 0.005, 0.05, 0.3, 1.0):
            target = rng.random(shape) < p
            if shape[0] > 2 and p == 0.005:
                target[0, 0] = target[-1, -1] = True  # corners: dilation must stop at the borders
            for tol in tolerances:
                got, expected = _near(target, tol), ref_near(target, tol)
                np.testing.assert_array_equal(got, expected, err_msg=f"{shape}, {tol}")
    edges = boundary_map(rng.integers(0, 3, (40, 53)))
    for tol in tolerances:
        np.testing.assert_array_equal(_near(edges, tol), ref_near(edges, tol))
