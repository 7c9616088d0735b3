"""Time one Fig. 4 panel (one image, one block): the release's way vs ``render_fig4``.

    python benchmarks/bench_figures.py                    # demo model + bundled image, last block
    python benchmarks/bench_figures.py --rounds 5 --out /tmp/fig4   # also save both renders
    python benchmarks/bench_figures.py --official-repo ~/GLMix      # the release's own code, timed
    python benchmarks/bench_figures.py --workers 3 --images 64      # glmix-viz on a folder: --workers 0 vs 3

With ``--official-repo`` (a clone of github.com/rayleizhu/GLMix, and
``opencv-python-headless``) the release's own ``visualization/utils.py:
visualize_a_batch`` runs, imported as is. Without it, that function (one
image and one block) is re-implemented here, step for step: maps min-max
normalised over the batch; pairwise L2 distances with
``F.pairwise_distance``; its k-medoids loop from random medoids; each
representative blended with the image at nearest-neighbour alpha; three
pyplot figures (the input, an 8 x 8 grid of 64 subplots with highlighted
spines, a 2 x 2 grid of the blends) each saved to an in-memory PNG, decoded,
and pasted side by side. OpenCV's ``applyColorMap``/``resize`` are replaced
by their numpy equivalents (a LUT lookup, index-based nearest resize) so
OpenCV is not needed; both are a negligible part of the time.

Ours is ``select_representatives`` (PAM) + ``render_fig4``, on the same maps.
Both run interleaved, round by round, in one process; medians are reported.

With ``--workers N`` it times whole ``glmix-viz`` runs instead: a folder of
``--images`` copies of the image, the demo model (or ``--model`` and
``--checkpoint``), ``--workers 0`` against ``--workers N`` (each a fresh
process, so imports, model loading and the workers' start-up count; the
variants interleaved round by round, ``--rounds`` of them), and prints each
one's median seconds and images/s, and the ratio. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import statistics
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glmix_viz.analysis import select_representatives
from glmix_viz.capture import SlotCapture
from glmix_viz.figures import render_fig4
from glmix_viz.images import Preprocess, load_image, preprocess
from glmix_viz.models.demo import load_demo_model

_logger = logging.getLogger("bench_figures")
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "glmix_viz" / "data" / "demo_cat.jpg"


# ------------------------------------------------------------------ the release's way, re-implemented


def _release_gray_lut() -> np.ndarray:
    """visualize.py's ``gray_cmap``: linspace(0, 16, 128) tiled to a (256, 1, 3) uint8 LUT."""
    ramp = np.reshape(np.linspace(0, 16, 128), (128, 1, 1))
    return np.tile(ramp, (2, 1, 3)).astype(np.uint8)


def release_blend(heatmap: torch.Tensor, img: torch.Tensor, lut: np.ndarray, alpha: float = 0.4):
    """``blend_heatmap_and_img(normalize=True, auto_alpha=True, heat_intp='nearest')``."""
    _, H, W = img.size()
    heatmap = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    alpha = F.interpolate(heatmap.unsqueeze(0).unsqueeze(0), size=(H, W), mode="nearest").squeeze(0)
    heat_u8 = np.uint8(heatmap.numpy() * 255)
    colored = lut[heat_u8, 0]  # cv2.applyColorMap with a user LUT (BGR; grey, so RGB alike)
    rows = (np.arange(H) * heat_u8.shape[0]) // H  # cv2.resize(..., INTER_NEAREST)
    cols = (np.arange(W) * heat_u8.shape[1]) // W
    colored = torch.from_numpy(np.ascontiguousarray(colored[rows][:, cols])).permute(2, 0, 1)
    return ((1 - alpha) * colored + alpha * img).to(torch.uint8)


def release_kmedoids(dist_mat: np.ndarray, num_repr: int = 4, max_iter: int = 100) -> np.ndarray:
    """``find_most_repsentative_ids``: random initial medoids, then assign / re-centre until stable."""
    n, k = dist_mat.shape[0], num_repr
    M = np.random.choice(n, k, replace=False)
    C = {}
    for _ in range(max_iter):
        for i in range(k):
            C[i] = []
        for i in range(n):
            C[int(np.argmin(dist_mat[i, M]))].append(i)
        M_new = np.copy(M)
        for i in range(k):
            d = np.sum(dist_mat[C[i], :][:, C[i]], axis=1)
            M_new[i] = C[i][int(np.argmin(d))]
        if np.array_equal(M, M_new):
            break
        M = np.copy(M_new)
    return M


def release_plot_imgs(imgs, ncols=None, highlight_subplot_ids=None, highlight_colors=None,
                      highlight_thickness=1.5):
    """``plot_imgs``: one pyplot subplot per image, highlighted spines, 4 x 4 inches."""
    import matplotlib.pyplot as plt
    import torchvision.transforms.functional as tvF

    if highlight_subplot_ids is not None:
        if highlight_colors is None:
            highlight_colors = ["red"] * len(highlight_subplot_ids)
        highlight_colors = list(highlight_colors)
    if not isinstance(imgs, list):
        imgs = [imgs]
    ncols = ncols or len(imgs)
    nrows = len(imgs) // ncols
    fig, axs = plt.subplots(nrows=nrows, ncols=ncols, squeeze=False)
    for i, img in enumerate(imgs):
        ax = axs[i // ncols, i % ncols]
        ax.imshow(np.asarray(tvF.to_pil_image(img.detach())))
        ax.set(xticklabels=[], yticklabels=[], xticks=[], yticks=[])
        if highlight_subplot_ids is not None and i in highlight_subplot_ids:
            color = highlight_colors.pop()
            for spine in ax.spines.values():
                spine.set_linewidth(highlight_thickness)
                spine.set_edgecolor(color)
    fig.set_size_inches(4, 4)
    plt.subplots_adjust(wspace=0.08, hspace=0.08)
    return fig


def release_fig_to_pil(fig):
    """``plt_fig_to_pil_img``: savefig to an in-memory PNG and decode it."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    im = deepcopy(Image.open(buf))
    buf.close()
    return im


def release_fig4(img: torch.Tensor, assignment: torch.Tensor, num_repr: int = 4):
    """``visualize_a_batch`` for one image (``(3, h, w)`` uint8) and one block (``(1, K, H, W)``)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    hcolors = ("red", "orange", "brown", "deeppink")
    lut = _release_gray_lut()
    assignment = (assignment - assignment.min()) / (assignment.max() - assignment.min())
    with plt.rc_context({"savefig.bbox": "tight"}):  # the release sets this globally
        pils = []
        fig = release_plot_imgs([img])
        pils.append(release_fig_to_pil(fig))
        plt.close(fig)
        _, K, H, W = assignment.size()
        masks = [assignment[0, j] for j in range(K)]
        x = assignment[0].view(K, 1, H * W).expand(-1, K, -1).flatten(0, 1)
        y = assignment[0].view(1, K, H * W).expand(K, -1, -1).flatten(0, 1)
        dist_mat = F.pairwise_distance(x, y, p=2.0).view(K, K).numpy()
        repr_ids = release_kmedoids(dist_mat, num_repr=num_repr)
        repr_ids.sort()
        blended = [release_blend(assignment[0, j], img, lut) for j in repr_ids]
        fig2 = release_plot_imgs(masks, ncols=math.isqrt(K), highlight_subplot_ids=repr_ids,
                                 highlight_colors=hcolors)
        fig3 = release_plot_imgs(blended, ncols=math.isqrt(num_repr), highlight_subplot_ids=list(range(4)),
                                 highlight_colors=hcolors)
        for f in (fig2, fig3):
            pils.append(release_fig_to_pil(f))
            plt.close(f)
    grid = Image.new("RGB", (sum(p.size[0] for p in pils), max(p.size[1] for p in pils)))
    left = 0
    for p in pils:
        grid.paste(p, (left, 0))
        left += p.size[0]
    return grid


# ------------------------------------------------------------------ ours


def load_release_visualization(repo: Path):
    """The release's ``visualization/utils.py``, imported from a clone as is (needs OpenCV)."""
    import importlib.util

    path = repo / "visualization" / "utils.py"
    if not path.is_file():
        raise SystemExit(f"--official-repo {repo}: no visualization/utils.py there; "
                         "clone github.com/rayleizhu/GLMix")
    spec = importlib.util.spec_from_file_location("glmix_release_visualization", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        raise SystemExit(f"the release's visualization code needs {err.name}: pip install "
                         "opencv-python-headless") from None
    return module


def png_costs(figure: np.ndarray, levels=(1, 3, 6, 9), repeats: int = 5):
    """``(level, median ms, KB)`` of writing ``figure`` as a PNG at each zlib compression level."""
    from PIL import Image

    image = Image.fromarray(figure)
    out = []
    for level in levels:
        times, size = [], 0
        for _ in range(repeats):
            buf = io.BytesIO()
            t0 = time.perf_counter()
            image.save(buf, format="PNG", compress_level=level)
            times.append(time.perf_counter() - t0)
            size = buf.tell()
        out.append((level, 1e3 * statistics.median(times), size / 1024))
    return out


def ours_fig4(view: np.ndarray, maps: np.ndarray, num_repr: int = 4, seed: int = 0) -> np.ndarray:
    reps = select_representatives(maps, num_repr, seed=seed)
    return render_fig4(view, maps, reps)


def bench_workers(args: argparse.Namespace) -> None:
    """``glmix-viz`` on a folder, ``--workers 0`` against ``--workers N``, interleaved; medians and ratio."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if args.workers < 1 or args.images < 1 or args.rounds < 1:
        raise SystemExit(f"--workers {args.workers}, --images {args.images}, --rounds {args.rounds}: "
                         "expected at least 1 each")
    with tempfile.TemporaryDirectory(prefix="bench_figures_") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(args.images):
            shutil.copy(args.image, folder / f"img{i:04d}{args.image.suffix}")
        model = ["--model", args.model] + (["--checkpoint", str(args.checkpoint)] if args.checkpoint else [])
        base = [sys.executable, "-m", "glmix_viz.cli", str(folder), *model, "--input-size",
                str(args.input_size), "--figure", args.figure, "--batch-size", str(args.batch_size), "-q"]
        base += (["--block", args.block] if args.block else []) + (["--save-maps"] if args.save_maps else [])
        _logger.info("glmix-viz on %d images (%s), %s", args.images, args.image.name, " ".join(base[3:]))
        times: dict = {0: [], args.workers: []}
        for r in range(args.rounds):
            for workers in times:
                out = Path(tmp) / f"out{workers}_{r}"
                t0 = time.perf_counter()
                subprocess.run([*base, "--out", str(out), "--workers", str(workers)], check=True)
                times[workers].append(time.perf_counter() - t0)
                shutil.rmtree(out)
    median = {w: statistics.median(t) for w, t in times.items()}
    for w, t in median.items():
        _logger.info("--workers %d: %7.2f s (%.2f images/s; median of %d)", w, t, args.images / t,
                     len(times[w]))
    _logger.info("--workers %d / --workers 0: %.2fx the speed", args.workers,
                 median[0] / median[args.workers])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=DEMO_IMAGE)
    p.add_argument("--block", default=None, help="GLMix block ordinal (default: the last; glmix-viz's)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5, help="release renders (ours runs 10x as many)")
    p.add_argument("--out", type=Path, help="also save one render of each here")
    p.add_argument("--official-repo", type=Path,
                   help="a clone of github.com/rayleizhu/GLMix: time its own visualize_a_batch instead of "
                        "the re-implementation (needs opencv-python-headless)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="time glmix-viz runs on a folder instead: --workers 0 against --workers N")
    p.add_argument("--images", type=int, default=32, help="with --workers: images in the folder")
    p.add_argument("--figure", default="fig4", help="with --workers: glmix-viz --figure")
    p.add_argument("--batch-size", type=int, default=8, help="with --workers: glmix-viz --batch-size")
    p.add_argument("--save-maps", action="store_true", help="with --workers: glmix-viz --save-maps")
    p.add_argument("--model", default="glnet_demo", help="with --workers: glmix-viz --model")
    p.add_argument("--checkpoint", type=Path, help="with --workers: glmix-viz --checkpoint")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workers is not None:
        bench_workers(args)
        return
    import matplotlib

    matplotlib.use("Agg")
    torch.set_num_threads(1)

    model, what = load_demo_model()
    x, view = preprocess(load_image(args.image), Preprocess(input_size=args.input_size))
    block = int(args.block) if args.block else None
    with torch.no_grad(), SlotCapture(model, block) as cap:
        model(x[None])
    rec = cap.records[-1]
    maps_t = rec.dispatch_maps()  # (1, K, H, W)
    maps = maps_t[0].numpy()
    img_t = torch.from_numpy(view.copy()).permute(2, 0, 1).contiguous()
    _logger.info("model: %s\nblock %d (%s): maps %s, image %s", what, rec.ordinal, rec.name,
                 tuple(maps.shape), view.shape)

    release = release_fig4
    if args.official_repo:
        utils = load_release_visualization(args.official_repo)

        def release(img, maps):  # the release's own function, one image and one block
            return utils.visualize_a_batch(img[None], [maps], num_repr=4)[0]

        _logger.info("release: %s/visualization/utils.py visualize_a_batch, as is", args.official_repo)
    np.random.seed(0)
    release(img_t, maps_t)  # warm-up: imports, font cache
    ours_fig4(view, maps)
    t_rel, t_ours = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        rel = release(img_t, maps_t)
        t_rel.append(time.perf_counter() - t0)
        for _ in range(10):
            t0 = time.perf_counter()
            ours = ours_fig4(view, maps)
            t_ours.append(time.perf_counter() - t0)
    r, o = statistics.median(t_rel), statistics.median(t_ours)
    _logger.info("release (pyplot subplots + PNG round trips): %8.1f ms / panel  (median of %d)",
                 r * 1e3, len(t_rel))
    _logger.info("ours (PAM + render_fig4 into uint8):       %8.2f ms / panel  (median of %d)",
                 o * 1e3, len(t_ours))
    _logger.info("speed-up: %.0fx", r / o)
    # what glmix-viz adds per figure: the PNG write of the captioned, --scale 2 figure, by compression level
    from glmix_viz.figures import render_fig4 as render

    reps = select_representatives(maps, 4, seed=0)
    figure = render(view, maps, reps, captions=True, title="image | model | block", height=2 * view.shape[0],
                    font_size=16)
    for level, ms, kb in png_costs(figure):
        _logger.info("PNG write of a %dx%d figure, compress_level %d: %6.1f ms, %6.0f KB%s",
                     figure.shape[1], figure.shape[0], level, ms, kb,
                     "  (Pillow's default)" if level == 6 else "")
    if args.out:
        from PIL import Image

        args.out.mkdir(parents=True, exist_ok=True)
        rel.save(args.out / "release_fig4.png")
        Image.fromarray(ours).save(args.out / "ours_fig4.png")
        _logger.info("saved %s and %s", args.out / "release_fig4.png", args.out / "ours_fig4.png")


if __name__ == "__main__":
    main()
