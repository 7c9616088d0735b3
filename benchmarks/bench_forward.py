"""Forward throughput of glnet_stl at 224 px: ours vs the release, and the cost of capturing slots.

    python benchmarks/bench_forward.py                          # ours, fused on/off, with/without capture
    python benchmarks/bench_forward.py --official-repo ~/GLMix  # + the release's implementation
    python benchmarks/bench_forward.py --compile                # + torch.compile(model), inductor

``--official-repo`` is a clone of https://github.com/rayleizhu/GLMix; its
``models/glnet.py`` is imported as is (fairscale, needed only for its
checkpoint wrapper, is stubbed). All variants share the same random weights,
run interleaved round by round in one process, and the median per variant is
reported; ratios are against the first column that ran (the release, if given).

``--compile`` adds ``torch.compile(model, dynamic=False)`` of the same model
(inductor traces the plain path and does its own fusion; ``--freezing`` turns
on inductor's weight freezing and pre-packing too), compiled once per batch
size in the warm-up: the first call's time is printed as the compile time,
and its speed is compared with the fused eager path ("ours") of the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import timm
import torch

import glmix_viz  # noqa: F401
from glmix_viz.capture import SlotCapture
from glmix_viz.models import fuse_for_inference


def load_official(repo: Path, name: str) -> torch.nn.Module:
    """The release's model class, imported from a clone (nothing is registered with timm)."""
    path = repo / "models" / "glnet.py"
    if not path.is_file():
        raise SystemExit(f"--official-repo {repo}: no models/glnet.py there; "
                         "clone github.com/rayleizhu/GLMix")
    if "fairscale" not in sys.modules:  # only its checkpoint wrapper is imported, unused at inference
        fs = types.ModuleType("fairscale")
        fs.nn = types.ModuleType("fairscale.nn")
        fs.nn.checkpoint = types.ModuleType("fairscale.nn.checkpoint")
        fs.nn.checkpoint.checkpoint_wrapper = lambda m, *a, **k: m
        sys.modules.update({"fairscale": fs, "fairscale.nn": fs.nn,
                            "fairscale.nn.checkpoint": fs.nn.checkpoint})
    import timm.models

    register = timm.models.register_model
    timm.models.register_model = lambda fn: fn  # keep the registry ours
    try:
        spec = importlib.util.spec_from_file_location("glmix_official_glnet", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        timm.models.register_model = register
    return getattr(module, name)()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="glnet_stl")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--official-repo", type=Path)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true",
                   help="add torch.compile(model) (inductor; minutes to compile each batch size on a CPU)")
    p.add_argument("--freezing", action="store_true",
                   help="with --compile: inductor's freezing (weights as constants, pre-packed for oneDNN)")
    args = p.parse_args()
    if args.freezing and not args.compile:
        p.error("--freezing is an option of --compile")
    device = torch.device(args.device)

    torch.manual_seed(0)
    ours = timm.create_model(args.model).eval().to(device)
    variants = {}
    if args.official_repo:
        official = load_official(args.official_repo.expanduser(), args.model).eval().to(device)
        official.load_state_dict(ours.state_dict())
        variants["release"] = lambda x: official(x)
    variants["ours"] = lambda x: ours(x)

    def ours_unfused(x):  # the same model and weights, its fused path off for this call
        fuse_for_inference(ours, False)
        try:
            return ours(x)
        finally:
            fuse_for_inference(ours, True)

    if ours.fused_inference.enabled and device.type == "cpu":
        variants["ours, no fusion"] = ours_unfused

    def ours_capture(x):
        with SlotCapture(ours) as cap:
            out = ours(x)
        assert len(cap.records) == len(cap.blocks)
        return out

    variants["ours + capture (all blocks)"] = ours_capture

    compiled_name = "ours, torch.compile" + (" (freezing)" if args.freezing else "")
    if args.compile:
        import torch._inductor.config as inductor_config

        compiled = torch.compile(ours, dynamic=False)  # one static graph per batch size

        def ours_compiled(x):
            with inductor_config.patch(freezing=args.freezing):  # in effect whenever it (re)compiles
                return compiled(x)

        variants[compiled_name] = ours_compiled

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"{args.model}, {args.size}x{args.size}, {device} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, median of {args.rounds} interleaved rounds")
    for bs in args.batch_sizes:
        x = torch.randn(bs, 3, args.size, args.size, device=device)
        times = {k: [] for k in variants}
        with torch.inference_mode():
            ref = None
            first_call = {}
            for name, fn in variants.items():  # warm-up, and every variant computes the same numbers
                t = time.perf_counter()
                out = fn(x)
                first_call[name] = time.perf_counter() - t
                ref = out if ref is None else ref
                diff = (out - ref).abs().max().item()
                assert diff < 1e-3, f"{name} differs from the first variant by {diff}"
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    sync()
                    t = time.perf_counter()
                    fn(x)
                    sync()
                    times[name].append(time.perf_counter() - t)
        first = statistics.median(next(iter(times.values())))
        print(f"\nbatch {bs}")
        print(f"  {'variant':30s} {'images/s':>10s} {'ms/batch':>10s} {'speed vs first':>15s}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:30s} {bs / med:10.2f} {med * 1000:10.1f} {first / med:14.2f}x")
        cap = statistics.median(times["ours + capture (all blocks)"]) / statistics.median(times["ours"]) - 1
        print(f"  capture overhead: {cap * 100:+.1f}% (target: at most +5%)")
        if args.compile:
            eager = "fused eager" if "ours, no fusion" in variants else "eager"
            speed = statistics.median(times["ours"]) / statistics.median(times[compiled_name])
            print(f"  torch.compile: {first_call[compiled_name]:.1f} s to compile (first call), "
                  f"{speed:.2f}x the {eager} path (ours)")


if __name__ == "__main__":
    main()
