"""The paper's figures as uint8 arrays and matplotlib Figures, on hand-worked inputs."""
from __future__ import annotations

import io

import numpy as np
import pytest

from glmix_viz.figures import (
    RELEASE_COLORS,
    REPRESENTATIVE_COLORS,
    array_figure,
    blend_heatmap,
    checkpoints_figure,
    colormap_lut,
    default_depth_blocks,
    depths_figure,
    fig4_captions,
    fig4_figure,
    fig4_panels,
    render_captioned,
    render_checkpoints,
    render_depths,
    render_fig4,
    render_hard_grouping,
    render_label,
    render_representatives,
    render_slot_grid,
    representative_colors,
)

RED, CYAN, MAGENTA, BLACK = [255, 0, 0], [0, 255, 255], [255, 0, 255], [0, 0, 0]  # REPRESENTATIVE_COLORS
RELEASE_RGB = [[255, 0, 0], [255, 165, 0], [165, 42, 42], [255, 20, 147]]  # red, orange, brown, deeppink


@pytest.fixture(autouse=True)
def no_pyplot_figures_left():
    """No figure function may leave a figure in pyplot's registry."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    "num_blocks, expected",
    [(10, [2, 5, 10]), (4, [1, 2, 4]), (1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (5, [1, 3, 5]),
     (20, [4, 10, 20])],
)
def test_default_depth_blocks(num_blocks, expected):
    assert default_depth_blocks(num_blocks) == expected


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_default_depth_blocks_rejects(bad):
    with pytest.raises(ValueError, match="num_blocks"):
        default_depth_blocks(bad)


def test_representative_colors_default_and_release():
    assert REPRESENTATIVE_COLORS == ("red", "cyan", "magenta", "black")
    np.testing.assert_array_equal(representative_colors(4), [RED, CYAN, MAGENTA, BLACK])
    image, maps = _fig4_inputs()
    release = render_representatives(image, maps, [5, 0, 3, 1], colors=RELEASE_COLORS, cols=4, tile_height=10)
    np.testing.assert_array_equal([release[2, 2 + 17 * i] for i in range(4)], RELEASE_RGB)  # the paper's look
    six = representative_colors(6)
    assert six.shape == (6, 3) and six.dtype == np.uint8
    assert len({tuple(c) for c in six}) == 6


def test_blend_heatmap_hand_worked():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:] = (200, 100, 50)
    heat = np.array([[0.0, 1.0], [0.5, 0.25]])  # already spans [0, 1]: normalisation keeps it
    out = blend_heatmap(image, heat)
    # each map cell covers a 2 x 2 block; out = a * image + (1 - a) * backdrop(a), backdrop = a * 16 grey
    np.testing.assert_array_equal(out[:2, :2], np.zeros((2, 2, 3)))  # a = 0: backdrop 0
    np.testing.assert_array_equal(out[:2, 2:], image[:2, 2:])  # a = 1: the image
    grey = round(128 * 16 / 255)  # backdrop LUT at index round(0.5 * 255) = 128 -> 8
    expected = [int(0.5 * v + 0.5 * grey + 0.5) for v in (200, 100, 50)]  # [104, 54, 29]
    np.testing.assert_array_equal(out[2:, :2], np.broadcast_to(expected, (2, 2, 3)))
    grey = round(64 * 16 / 255)  # index round(0.25 * 255) = 64 -> 4
    expected = [int(0.25 * v + 0.75 * grey + 0.5) for v in (200, 100, 50)]  # [53, 28, 16]
    np.testing.assert_array_equal(out[2:, 2:], np.broadcast_to(expected, (2, 2, 3)))
    # normalisation: the same map scaled and shifted gives the same picture
    np.testing.assert_array_equal(blend_heatmap(image, heat * 0.01 + 0.3), out)


def test_render_slot_grid_normalisation_modes():
    maps = np.stack([np.full((2, 2), v, np.float32) for v in (0.0, 0.2, 1.0, 0.6)])
    lut = colormap_lut("viridis")
    by_image = render_slot_grid(maps, cols=4, cell=2, pad=1, normalize="image")
    for k, v in enumerate((0.0, 0.2, 1.0, 0.6)):
        np.testing.assert_array_equal(by_image[1, 1 + k * 3], lut[int(v * 255 + 0.5)])
    by_map = render_slot_grid(maps, cols=4, cell=2, pad=1, normalize="map")  # constant maps -> 0
    for k in range(4):
        np.testing.assert_array_equal(by_map[1, 1 + k * 3], lut[0])
    with pytest.raises(ValueError, match="normalize='batch'"):
        render_slot_grid(maps, normalize="batch")


def _fig4_inputs(h=40, w=60, grid=(4, 6), K=16):
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = (200, 100, 50)
    maps = np.stack([np.full(grid, k / (K - 1), np.float32) for k in range(K)])
    maps[5] = 0.0
    maps[5, :, : grid[1] // 2] = 1.0  # slot 5: left half on, right half off
    return image, maps


def test_render_fig4_layout_non_square():
    image, maps = _fig4_inputs()
    reps = [5, 9, 12, 14]
    out = render_fig4(image, maps, reps, normalize="image")
    # grid: 4 x 4 tiles of (40 - 2) // 4 - 2 = 7 rows x round(7 * 6 / 4) = 10 cols -> 38 x 50
    # representatives: 2 x 2 tiles of (40 - 2) // 2 - 2 = 17 x round(17 * 60 / 40) = 26 -> 40 x 58
    assert out.shape == (40, 60 + 8 + 50 + 8 + 58, 3)
    np.testing.assert_array_equal(out[:, :60], image)  # the input, untouched
    grid = out[1:39, 68:118]  # centred vertically: (40 - 38) // 2 = 1
    lut = colormap_lut("viridis")
    # tile of slot 3 (row 0, col 3): value 3/15 on the image-wide range [0, 1]
    np.testing.assert_array_equal(grid[2 + 3, 2 + 3 * 12 + 5], lut[int(3 / 15 * 255 + 0.5)])
    # slot 5 (row 1, col 1) and 9 (row 2, col 1) are outlined red and cyan (2 px frame)
    np.testing.assert_array_equal(grid[2 + 9, 2 + 12], RED)
    np.testing.assert_array_equal(grid[2 + 2 * 9 + 6, 2 + 12 + 9], CYAN)
    assert (grid[2 + 9 + 3, 2 + 12 + 3] != RED).any()  # interior is the map
    reps_panel = out[:, 126:]
    tile = reps_panel[2 : 2 + 17, 2 : 2 + 26]  # slot 5, outlined red (3 px)
    np.testing.assert_array_equal(tile[0, 0], RED)
    np.testing.assert_array_equal(tile[8, 5], [200, 100, 50])  # left half: the image
    np.testing.assert_array_equal(tile[8, 20], [0, 0, 0])  # right half: the dark backdrop
    np.testing.assert_array_equal(reps_panel[2 + 19, 2], MAGENTA)  # third: second row, first column
    np.testing.assert_array_equal(reps_panel[-3, -3], BLACK)  # fourth, bottom right


def test_render_fig4_tall_image_keeps_aspect():
    image, maps = _fig4_inputs(h=60, w=30, grid=(6, 3))
    view, grid, reps = fig4_panels(image, maps, [0, 1, 2, 3])
    assert view.shape == (60, 30, 3)
    # tiles (60 - 2) // 4 - 2 = 12 tall, round(12 * 3 / 6) = 6 wide
    assert grid.shape == (4 * 14 + 2, 4 * 8 + 2, 3)
    # representatives 27 tall, round(27 * 30 / 60) = 14 wide (rounded half to even)
    assert reps.shape == (2 * 29 + 2, 2 * 16 + 2, 3)
    out = render_fig4(image, maps, [0, 1, 2, 3], height=120)
    assert out.shape[0] == 120
    np.testing.assert_array_equal(out[:, :60].shape, (120, 60, 3))


def test_render_fig4_big_maps_are_averaged_down_and_inputs_untouched():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    maps = rng.random((64, 56, 56)).astype(np.float32)
    image0, maps0 = image.copy(), maps.copy()
    out = render_fig4(image, maps, [1, 2, 3, 4])
    assert out.shape[0] == 32
    np.testing.assert_array_equal(image, image0)
    np.testing.assert_array_equal(maps, maps0)


def test_render_fig4_rejects_bad_input():
    image, maps = _fig4_inputs()
    with pytest.raises(ValueError, match=r"\[16\]"):
        render_fig4(image, maps, [1, 16])
    with pytest.raises(ValueError, match="repeat"):
        render_fig4(image, maps, [1, 1])
    with pytest.raises(ValueError, match=r"maps\[i\]"):
        render_fig4(image, maps[None], [1])
    with pytest.raises(ValueError, match="uint8"):
        render_fig4(image.astype(np.float32), maps, [1])


def test_render_representatives_custom_colours_and_columns():
    image, maps = _fig4_inputs()
    out = render_representatives(image, maps, [5, 0, 3], colors=["blue", "lime", "black"], cols=3,
                                 tile_height=10)
    assert out.shape == (10 + 4, 3 * (15 + 2) + 2, 3)
    np.testing.assert_array_equal(out[2, 2], [0, 0, 255])
    np.testing.assert_array_equal(out[2, 2 + 17], [0, 255, 0])
    np.testing.assert_array_equal(out[2, 2 + 34], [0, 0, 0])


def test_render_depths_rows_and_labels():
    image, maps = _fig4_inputs()
    labels = ["block 2", "block 5", "b 10"]
    out = render_depths(image, [maps, maps[:9], maps], [[1, 2], [3], [4, 5, 6, 7]], labels)
    assert out.shape[0] == 3 * 40 + 2 * 8
    label_w = max(render_label(t).shape[1] for t in ("block 2", "block 5", "b 10"))
    for r in range(3):
        y = r * 48
        labels = out[y : y + 40, :label_w]
        assert (labels < 128).any()  # dark text drawn
        np.testing.assert_array_equal(out[y : y + 40, label_w + 4 : label_w + 4 + 60], image)
    with pytest.raises(ValueError, match="one of each per block"):
        render_depths(image, [maps], [[1], [2]], ["a"])


def test_render_checkpoints_one_labelled_row():
    image, maps = _fig4_inputs()
    other = maps[::-1].copy()
    out = render_checkpoints(image, [maps, other], [[5, 1], [2, 3]], ["epoch 1", "epoch 300"])
    no_reps = render_checkpoints(image, [maps, other], [[5, 1], [2, 3]], ["epoch 1", "epoch 300"],
                                 show_representatives=False)
    assert out.shape[1] == no_reps.shape[1]  # strips go under the grids, not beside them
    assert out.shape[0] > no_reps.shape[0]
    # the input column: a text line, then the image
    col = out[:, :60]
    top = np.flatnonzero((col != 255).any(axis=(1, 2)))
    assert (col[: top[0] + 5] < 128).any()  # the "input" label
    start = next(y for y in range(out.shape[0] - 40 + 1) if np.array_equal(col[y : y + 40], image))
    assert 5 < start < 40  # under the label


def test_hard_grouping_mean_colour_hand_worked():
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3] = (10, 20, 30)
    image[:, 3:] = (100, 0, 200)
    image[0, 0] = (40, 50, 60)  # left group's mean: (10 * 11 + 40) / 12 = 12.5 -> 13 etc.
    maps = np.zeros((3, 2, 3), np.float32)  # slot 2 owns nothing
    maps[0, :, 0], maps[0, :, 1] = 1.0, 0.6
    maps[1, :, 1], maps[1, :, 2] = 0.4, 1.0
    # bilinear to 6 columns samples map columns at x = i/2 - 1/4: slot 0 wins at i = 0, 1, 2
    # (1.0, 0.9, 0.7 vs 0, 0.1, 0.3), slot 1 at i = 3, 4, 5 (0.55 vs 0.45, ...)
    out = render_hard_grouping(image, maps, mean_color=True, boundary_color=(255, 255, 255))
    from glmix_viz.analysis import hard_assignment

    groups = hard_assignment(maps, (4, 6))
    edge = np.zeros((4, 6), bool)
    edge[:, 1:] |= groups[:, 1:] != groups[:, :-1]
    edge[1:, :] |= groups[1:, :] != groups[:-1, :]
    assert edge.any() and (~edge).any()
    for g in np.unique(groups):
        mean = (image[groups == g].astype(float).mean(axis=0) + 0.5).astype(np.uint8)
        inside = (groups == g) & ~edge
        np.testing.assert_array_equal(out[inside], np.broadcast_to(mean, (inside.sum(), 3)))
    np.testing.assert_array_equal(out[edge], np.full((edge.sum(), 3), 255))
    np.testing.assert_array_equal(groups, np.repeat([[0, 0, 0, 1, 1, 1]], 4, axis=0))
    # left group: 11 pixels (10, 20, 30) and one (40, 50, 60): mean (12.5, 22.5, 32.5), rounded half up
    np.testing.assert_array_equal(out[1, 1], [13, 23, 33])


def test_matplotlib_figures_titles_and_pdf():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image, maps = _fig4_inputs()
    fig = fig4_figure(image, maps, [1, 5, 9, 12], title="block 10")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["input", "16 dispatch maps", "4 representatives"]
    assert fig._suptitle.get_text() == "block 10"
    FigureCanvasAgg(fig).draw()
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image)

    fig = depths_figure(image, [maps, maps], [[1], [2, 3]], ["block 2", "block 5"])
    assert len(fig.axes) == 6
    assert [fig.axes[i].get_ylabel() for i in (0, 3)] == ["block 2", "block 5"]

    fig = checkpoints_figure(image, [maps, maps], [[1], [2]], ["init", "trained"])
    assert [ax.get_title() for ax in fig.axes] == ["input", "init", "trained"]

    buf = io.BytesIO()
    array_figure(image, title="x").savefig(buf, format="pdf")
    assert buf.getvalue().startswith(b"%PDF")


# Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB: simulated protanopia, deuteranopia,
# tritanopia
_CVD = {
    "normal": np.eye(3),
    "protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
               [-0.003882, -0.048116, 1.051998]],
    "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
               [-0.011820, 0.042940, 0.968881]],
    "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
               [0.004733, 0.691367, 0.303900]],
}


def _worst_distances(rgb: np.ndarray):
    """Smallest CIEDE2000 between two outline colours, and between an outline colour and viridis, over all
    visions."""
    from matplotlib import colormaps
    from skimage.color import deltaE_ciede2000, rgb2lab

    def seen(c, m):
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) @ np.asarray(m).T
        lin = np.clip(lin, 0, 1)
        return rgb2lab(np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)[None])[0]

    viridis = colormaps["viridis"](np.linspace(0, 1, 33))[:, :3]
    pair = backdrop = np.inf
    for m in _CVD.values():
        lab, vir = seen(rgb / 255.0, m), seen(viridis, m)
        for i in range(len(lab)):
            backdrop = min(backdrop, deltaE_ciede2000(np.repeat(lab[i : i + 1], len(vir), 0), vir).min())
            for j in range(i + 1, len(lab)):
                pair = min(pair, float(deltaE_ciede2000(lab[i], lab[j])))
    return pair, backdrop


def test_outline_colours_stay_apart_for_colour_blind_readers_and_on_viridis():
    pair, backdrop = _worst_distances(representative_colors(4).astype(float))
    assert pair > 20 and backdrop > 10, (pair, backdrop)  # distinct to every reader, against every map colour
    release_pair, release_backdrop = _worst_distances(np.asarray(RELEASE_RGB, float))
    assert release_pair < 15 and release_backdrop < 5  # the release's: orange on viridis' yellow, red ~ brown


def test_captions_and_title_sit_over_the_unchanged_panels():
    image, maps = _fig4_inputs()
    reps = [5, 9, 12, 14]
    panels = fig4_panels(image, maps, reps)
    out = render_fig4(image, maps, reps, captions=True, title="img | model | block 3 (stages.1.blocks.0)")
    assert fig4_captions(16, 4) == ("input", "16 dispatch maps", "4 representatives")
    title_h = render_label("img | model | block 3 (stages.1.blocks.0)", size=16).shape[0]
    caption_h = render_label("input", size=14).shape[0]
    top = title_h + 8 // 2 + caption_h  # title, half a gap, caption line
    np.testing.assert_array_equal(out[top : top + image.shape[0], : image.shape[1]], panels[0])
    assert (out[:title_h] < 128).any() and (out[title_h + 4 : top] < 128).any()  # dark text in both lines
    assert out.shape[0] == top + max(p.shape[0] for p in panels)
    bare = render_captioned(list(panels), ["", "", ""])
    assert bare.shape[1] == sum(p.shape[1] for p in panels) + 2 * 8  # the panels side by side, 8 px apart
    row = render_captioned(list(panels), list(fig4_captions(16, 4)))  # captions wider than a panel widen it
    title_w = render_label("img | model | block 3 (stages.1.blocks.0)", size=16).shape[1]
    assert out.shape[1] == max(row.shape[1], title_w) and row.shape[1] >= bare.shape[1]
    np.testing.assert_array_equal(out[title_h + 4 :, : row.shape[1]], row)
