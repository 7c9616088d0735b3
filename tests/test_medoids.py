"""Representative slots: k-medoids (PAM) on constructed maps with known answers, and backend agreement."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from glmix_viz.analysis import cluster_slots, distance_matrix, select_representatives

BACKENDS = ("sklearn_extra", "kmedoids")


def four_groups(rng: np.random.Generator, shape=(4, 5)):
    """28 maps: 4 far-apart centres, each with 6 neighbours centre +- d * e_i (i = 3 pixels), shuffled.

    Within a group the centre is at distance d from all 6 neighbours (total 6d);
    a neighbour is at d, 2d and 4 x sqrt(2) d (total 8.66d): the centre is the
    unique medoid of its group.
    """
    n = int(np.prod(shape))
    centres = [np.zeros(n) for _ in range(4)]
    for g, c in enumerate(centres):
        c[g * 5 : g * 5 + 5] = 10.0 + g  # disjoint supports: groups ~15 apart
    d = 0.1
    maps, group, is_centre = [], [], []
    for g, c in enumerate(centres):
        maps.append(c)
        group.append(g)
        is_centre.append(True)
        for i in rng.choice(n, 3, replace=False):
            for sign in (1, -1):
                m = c.copy()
                m[i] += sign * d
                maps.append(m)
                group.append(g)
                is_centre.append(False)
    order = rng.permutation(len(maps))
    maps = np.stack(maps)[order].reshape(len(maps), *shape)
    return maps, np.array(group)[order], np.flatnonzero(np.array(is_centre)[order])


def brute_force_cost(d: np.ndarray, medoids) -> float:
    return float(d[:, list(medoids)].min(axis=1).sum())


@pytest.mark.parametrize("method", BACKENDS + ("auto",))
def test_four_groups_one_medoid_each_and_it_is_the_centre(method):
    maps, group, centres = four_groups(np.random.default_rng(3))
    result = cluster_slots(maps, 4, method=method)
    np.testing.assert_array_equal(result.medoids, np.sort(centres))
    # every slot is labelled with the medoid of its own group
    np.testing.assert_array_equal(group[result.medoids[result.labels]], group)
    assert result.method == ("kmedoids" if method == "auto" else method)  # auto prefers kmedoids
    # cost: 4 groups x 6 neighbours at distance 0.1
    assert result.cost == pytest.approx(24 * 0.1)


def test_duplicates_give_the_smallest_index_of_each_distinct_map():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((3, 3)) * s for s in (1.0, 5.0, 9.0))
    which = {2: a, 5: a, 7: a, 0: b, 9: b, 1: c, 3: c, 4: c, 6: c, 8: c}
    maps = np.stack([which[i] for i in range(10)])
    for method in BACKENDS:
        result = cluster_slots(maps, 3, method=method)
        np.testing.assert_array_equal(result.medoids, [0, 1, 2])
        assert result.cost == 0.0
        np.testing.assert_array_equal(result.labels, [0, 1, 2, 1, 1, 2, 1, 2, 1, 0])


@pytest.mark.parametrize("method", BACKENDS)
def test_more_representatives_than_distinct_maps_still_distinct(method):
    rng = np.random.default_rng(1)
    a, b, c = (rng.random((3, 3)) * s for s in (1.0, 5.0, 9.0))
    classes = {0: [2, 5, 7], 1: [0, 9], 2: [1, 3, 4, 6, 8]}
    maps = np.zeros((10, 3, 3))
    for cls, idx in classes.items():
        maps[idx] = (a, b, c)[cls]
    result = cluster_slots(maps, 5, method=method)
    med = result.medoids.tolist()
    assert result.cost == 0.0
    for cls, idx in classes.items():
        assert idx[0] in med, f"class {cls} is not represented by its smallest index"
    # one per distinct map (2, 0, 1), then the smallest unused indices (3, 4)
    assert med == [0, 1, 2, 3, 4]
    # no cluster is empty: every medoid labels itself
    np.testing.assert_array_equal(result.labels[result.medoids], np.arange(5))


def test_all_maps_identical():
    maps = np.ones((6, 2, 2))
    for method in BACKENDS:
        np.testing.assert_array_equal(select_representatives(maps, 3, method=method), [0, 1, 2])


@pytest.mark.parametrize("k", [64, 65, 200])
def test_k_at_least_K_returns_every_slot_in_index_order(k):
    maps = np.random.default_rng(0).random((64, 3, 3))
    result = cluster_slots(maps, k)
    np.testing.assert_array_equal(result.medoids, np.arange(64))
    np.testing.assert_array_equal(result.labels, np.arange(64))
    assert result.cost == 0.0 and result.method == "trivial"


def test_k_equal_one_is_the_exact_1_medoid():
    maps = np.random.default_rng(5).random((30, 4, 4))
    d = distance_matrix(maps)
    best = min(range(30), key=lambda i: (d[i].sum(), i))
    np.testing.assert_array_equal(select_representatives(maps, 1), [best])


@pytest.mark.parametrize("method", BACKENDS)
def test_result_is_a_swap_local_optimum(method):
    """PAM stops when no single swap (medoid <-> non-medoid) lowers the cost: check every swap."""
    rng = np.random.default_rng(11)
    for trial in range(3):
        maps = rng.random((20, 3, 4))
        result = cluster_slots(maps, 3, method=method)
        d = result.distances
        assert brute_force_cost(d, result.medoids) == pytest.approx(result.cost)
        others = [i for i in range(20) if i not in result.medoids]
        for pos, o in itertools.product(range(3), others):
            swapped = result.medoids.copy()
            swapped[pos] = o
            assert brute_force_cost(d, swapped) >= result.cost - 1e-9


def test_small_case_matches_exhaustive_optimum():
    rng = np.random.default_rng(2)
    maps, *_ = four_groups(rng, shape=(4, 5))
    maps = maps[:14]
    d = distance_matrix(maps)
    best = min(itertools.combinations(range(14), 3), key=lambda c: brute_force_cost(d, c))
    for method in BACKENDS:
        result = cluster_slots(maps, 3, method=method)
        assert result.cost == pytest.approx(brute_force_cost(d, best))


def _rays():
    """16 points in 2-D: angles (-2, 0, 2) and (16, 18, 20, 22, 24) degrees, each at radius 1 and 10."""
    angles = (-2, 0, 2, 16, 18, 20, 22, 24)
    pts = [r * np.array([np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))]) for r in (1, 10) for a in angles]
    return np.array(pts).reshape(16, 1, 2), np.array(angles * 2), np.repeat([1, 10], 8)


@pytest.mark.parametrize("method", BACKENDS)
def test_cosine_groups_by_direction_euclidean_by_size(method):
    maps, angles, radius = _rays()
    # cosine ignores the radius: two direction groups; their centres are 0 deg and 20 deg, each
    # present twice (radius 1 and 10, at cosine distance 0): the smaller indices 1 and 5
    cos = cluster_slots(maps, 2, metric="cosine", method=method)
    np.testing.assert_array_equal(cos.medoids, [1, 5])
    np.testing.assert_array_equal(cos.labels, (angles > 10).astype(int))
    # L2: the radius-1 and radius-10 points are 9 apart, directions at most 3.6: two size groups
    l2 = cluster_slots(maps, 2, metric="euclidean", method=method)
    np.testing.assert_array_equal(radius[l2.medoids], [1, 10])
    np.testing.assert_array_equal(l2.labels, (radius == 10).astype(int))
    d = distance_matrix(maps, "euclidean")
    best = min(itertools.combinations(range(16), 2), key=lambda c: brute_force_cost(d, c))
    np.testing.assert_array_equal(l2.medoids, best)  # (4, 12): 18 deg at both sizes


@pytest.mark.parametrize("k", [2, 4, 7])
def test_backends_agree_on_random_dispatch_maps(k):
    rng = np.random.default_rng(k)
    for trial in range(8):
        logits = torch.from_numpy(rng.normal(size=(64, 7, 7)) * (1 + trial))
        maps = torch.softmax(logits, dim=0).numpy()
        for metric in ("euclidean", "cosine", "cityblock"):
            a = cluster_slots(maps, k, metric=metric, method="sklearn_extra")
            b = cluster_slots(maps, k, metric=metric, method="kmedoids")
            np.testing.assert_array_equal(a.medoids, b.medoids, err_msg=f"trial {trial}, {metric}")


def test_backends_agree_on_constructed_cases():
    """Cases whose optimum is unique up to exact duplicates (k > 4 on four_groups has ties: skipped)."""
    groups, *_ = four_groups(np.random.default_rng(8))
    rays, *_ = _rays()
    dup = np.stack([np.full((2, 2), v) for v in (3, 1, 3, 2, 1, 1, 3)])
    cases = [(groups, k, "euclidean") for k in (2, 3, 4)] + [(rays, 2, "cosine"), (rays, 2, "euclidean")]
    cases += [(dup, k, "euclidean") for k in (2, 3, 4, 6)]
    for maps, k, metric in cases:
        np.testing.assert_array_equal(
            select_representatives(maps, k, metric=metric, method="sklearn_extra"),
            select_representatives(maps, k, metric=metric, method="kmedoids"),
            err_msg=f"k={k}, {metric}, {maps.shape}",
        )


def test_seed_determinism():
    maps = np.random.default_rng(4).random((64, 5, 5))
    for method in BACKENDS:
        first = select_representatives(maps, 4, seed=7, method=method, init="random")
        again = select_representatives(maps, 4, seed=7, method=method, init="random")
        np.testing.assert_array_equal(first, again)
        # BUILD does not depend on the seed
        np.testing.assert_array_equal(
            select_representatives(maps, 4, seed=0, method=method),
            select_representatives(maps, 4, seed=99, method=method),
        )


def test_tensor_input_and_no_mutation():
    maps = np.random.default_rng(6).random((16, 3, 3)).astype(np.float32)
    copy = maps.copy()
    reps = select_representatives(maps, 3)
    np.testing.assert_array_equal(maps, copy)
    np.testing.assert_array_equal(select_representatives(torch.from_numpy(maps), 3), reps)
    assert reps.dtype == np.int64 and list(reps) == sorted(set(reps.tolist()))


def test_members_partition_the_slots():
    maps, group, _ = four_groups(np.random.default_rng(9))
    result = cluster_slots(maps, 4)
    members = np.sort(np.concatenate([result.members(j) for j in range(4)]))
    np.testing.assert_array_equal(members, np.arange(len(maps)))


def test_errors_name_the_bad_value():
    maps = np.random.default_rng(0).random((8, 2, 2))
    with pytest.raises(ValueError, match="k=0"):
        select_representatives(maps, 0)
    with pytest.raises(ValueError, match=r"maps\[i\]"):
        select_representatives(maps[None], 2)
    with pytest.raises(ValueError, match="no_such_metric"):
        select_representatives(maps, 2, metric="no_such_metric")
    with pytest.raises(ValueError, match="method='magic'"):
        select_representatives(maps, 2, method="magic")
    with pytest.raises(ValueError, match="init="):
        select_representatives(maps, 2, init="kmeans++")
    with pytest.raises(ValueError, match="NaN"):
        select_representatives(np.full((4, 2, 2), np.nan), 2)
