"""Writers for torch's legacy checkpoint formats, which torch.save no longer writes (tests only)."""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

_STORAGE = {torch.float32: torch.FloatStorage, torch.float16: torch.HalfStorage,
            torch.int64: torch.LongStorage}


def write_tar_checkpoint(path: Path, obj: Any, *, storages_header: Optional[Any] = None) -> Path:
    """``obj`` in the pre-0.4 ``.tar`` format that ``torch.load``'s ``legacy_load`` reads.

    Members: ``storages`` (a pickled count, then per storage a pickled
    ``(key, location, storage type)`` and its raw data), ``tensors`` (a pickled
    count, then per tensor a pickled ``(key, storage key, type)`` and its
    geometry) and ``pickle`` (``obj``, tensors as persistent ids).
    ``storages_header`` replaces the pickled storage count (to plant a payload
    where torch calls ``pickle_module.load``).
    """
    tensors: Dict[int, torch.Tensor] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, torch.Tensor):
                key = 1000 + len(tensors)
                tensors[key] = o.detach().contiguous()
                return key
            return None

    main = io.BytesIO()
    Pickler(main, protocol=2).dump(obj)
    storages, described = io.BytesIO(), io.BytesIO()
    pickle.dump(len(tensors) if storages_header is None else storages_header, storages, protocol=2)
    pickle.dump(len(tensors), described, protocol=2)
    for i, (key, t) in enumerate(tensors.items()):
        pickle.dump((i, "cpu", _STORAGE[t.dtype]), storages, protocol=2)
        storages.write(struct.pack("<q", t.numel()) + t.numpy().tobytes())
        pickle.dump((key, i, None), described, protocol=2)
        storages_geometry = struct.pack("<i", t.dim()) + b"\0" * 4
        storages_geometry += struct.pack(f"<{t.dim()}q", *t.shape) + struct.pack(f"<{t.dim()}q", *t.stride())
        described.write(storages_geometry + struct.pack("<q", 0))
    pickle.dump([], storages, protocol=2)  # no storage views
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("storages", storages), ("tensors", described), ("pickle", main)):
            info = tarfile.TarInfo(name)
            info.size = len(data.getvalue())
            tar.addfile(info, io.BytesIO(data.getvalue()))
    return path
