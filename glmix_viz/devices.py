"""Which device a run uses: one rule for ``glmix-viz``, ``glmix-wsss pseudo-labels`` and ``train``; and
the torch threads of a piece of work."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["resolve_device", "torch_threads"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available (a ``torchrun`` process's own GPU, ``cuda:$LOCAL_RANK``), else the CPU;
    otherwise ``torch.device(name)``, checked to exist here.

    Raises:
        ValueError: ``name`` is not a device, or a CUDA device this machine lacks; names the value.
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device(f"cuda:{int(local_rank)}" if local_rank is not None else "cuda")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {name!r} is not a device ({err}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available here; use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch (and MKL) threads; the count before is restored after.

    Some CPU kernels split a reduction between threads (a resize, a matrix product
    with a long inner dimension), so their float rounding depends on the thread
    count. Small work run with ``torch_threads(1)`` gives the same bytes on any
    machine and in any process layout (``--workers``, ``torchrun``).
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
