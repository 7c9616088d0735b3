"""Which device a run uses: one rule for ``glmix-viz``, ``glmix-wsss pseudo-labels`` and ``train``."""
from __future__ import annotations

import os

import torch

__all__ = ["resolve_device"]


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
