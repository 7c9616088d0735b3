"""Would OpenCV be the better tool here? Its kernels against ours, on the same inputs, in one run.

    pip install opencv-python-headless   # only for this measurement: not a dependency
    python benchmarks/bench_opencv.py [--repeats 50]

Three places where OpenCV is the usual tool, timed on what they see in the
default pipeline and ``glmix-viz`` (real VOC masks from tests/data, 500x375):

1. connected components of each class in a mask (``wsss.regions``, region
   relabelling): ``scipy.ndimage.label`` vs ``cv2.connectedComponents``;
2. bilinear upsampling, ``F.interpolate`` vs ``cv2.resize`` per map: the
   per-class slot maps of ``wsss.refine`` (2 classes, 14x20 -> 375x500), and
   ``glmix-viz``'s 64 dispatch maps of a 224 px input (7x7 -> 224x224);
3. slot boundaries of a hard grouping (``glmix_viz.figures.render_hard_grouping``):
   two numpy comparisons vs ``cv2.morphologyEx`` (gradient) on the label map.

Each pair must give the same result (checked); medians of ``--repeats`` runs,
one thread each, the ratio ours / OpenCV, and the saving as a share of one
default pseudo-label (2.3 s on a 2-core CPU, docs/wsss.md "Throughput").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from wsss.voc import read_mask

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import median_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MASKS = ROOT / "tests" / "data" / "voc_sample" / "VOCdevkit" / "VOC2012" / "SegmentationClass"
PSEUDO_LABEL_S = 2.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        raise SystemExit("needs OpenCV for the comparison: pip install opencv-python-headless") from None
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    masks = [read_mask(p) for p in sorted(MASKS.glob("*.png"))[:20]]
    masks = [m for m in masks if m.shape == (375, 500)][:10]
    rows = []

    # 1. connected components, per class present
    binaries = [(m == c) for m in masks for c in np.unique(m) if 0 < c < 255]

    def scipy_cc():
        return [ndimage.label(b)[1] for b in binaries]

    def cv_cc():
        return [cv2.connectedComponents(b.astype(np.uint8), connectivity=4)[0] - 1 for b in binaries]

    assert scipy_cc() == cv_cc()  # same component counts (4-connectivity, as ndimage's default)
    rows.append(("connected components, per mask", scipy_cc, cv_cc, len(masks)))

    # 2. bilinear upsampling: the pipeline's per-class slot maps, and glmix-viz's 64 dispatch maps
    def upsampling(maps: torch.Tensor, size):
        np_maps = maps.numpy()

        def with_torch():
            return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]

        def with_cv():
            return np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_LINEAR) for m in np_maps])

        assert np.abs(with_torch().numpy() - with_cv()).max() < 1e-2  # OpenCV interpolates in fixed point
        return with_torch, with_cv

    rows.append(("2 class maps 14x20 -> 375x500", *upsampling(torch.rand(2, 14, 20), (375, 500)), 1))
    rows.append(("64 maps 7x7 -> 224x224 (glmix-viz)", *upsampling(torch.rand(64, 7, 7), (224, 224)), 1))
    maps = torch.rand(64, 14, 20)
    torch_up = upsampling(maps, (375, 500))[0]

    # 3. boundaries of a hard grouping
    groups = torch_up().argmax(0).numpy().astype(np.int32)

    def np_edges():
        edge = np.zeros(groups.shape, bool)
        edge[:, 1:] |= groups[:, 1:] != groups[:, :-1]
        edge[1:, :] |= groups[1:, :] != groups[:-1, :]
        return edge

    kernel = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0]], np.uint8)  # the pixel, its left and top neighbours
    g16 = groups.astype(np.uint16)

    def cv_edges():  # max != min over {pixel, left, top}: differs from its left or top neighbour
        return cv2.morphologyEx(g16, cv2.MORPH_GRADIENT, kernel) > 0

    assert np.array_equal(np_edges(), cv_edges())
    rows.append(("slot boundaries of one grouping", np_edges, cv_edges, 1))

    print(f"{'operation':38s} {'ours ms':>9s} {'OpenCV ms':>10s} {'ours/cv':>8s} "
          f"{'saving / pseudo-label':>22s}")
    for name, ours, theirs, per in rows:
        a, b = median_seconds(ours, args.repeats) / per, median_seconds(theirs, args.repeats) / per
        saving = 100 * (a - b) / PSEUDO_LABEL_S
        print(f"{name:38s} {1e3 * a:9.3f} {1e3 * b:10.3f} {a / b:8.2f} {saving:21.3f}%")


if __name__ == "__main__":
    main()
