"""Reading files that someone else wrote, without running code from them.

Every pickle the project reads from a user's file (checkpoints through
``torch.load``, in any of its formats; ``cls_labels.npy``) goes through one
restricted unpickler, :class:`RestrictedUnpickler`. It rebuilds tensors, numpy
arrays and dtypes, containers, numbers and strings; any other class or
function a file names is never imported nor called. Depending on the reader,
it becomes an inert placeholder (:class:`Skipped`: checkpoints, whose
official release stores an ``argparse.Namespace`` next to the weights) or an
error (:class:`UntrustedPickleError`: label files, which hold data only).

The other readers follow the same rule: ``.npz`` files are read with
``allow_pickle=False`` (:func:`load_npz`), XML with any DTD refused, so no
entity can be declared, let alone expanded (:func:`parse_xml`). See
``docs/security.md``.
"""
from __future__ import annotations

import collections
import io
import logging
import pickle
import pyexpat
import types
import xml.etree.ElementTree as ET
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple, Union

import numpy as np

__all__ = [
    "UntrustedPickleError",
    "Skipped",
    "TorchScriptArchiveError",
    "RestrictedUnpickler",
    "restricted_loads",
    "torch_load",
    "load_npy",
    "load_npz",
    "parse_xml",
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


class UntrustedPickleError(pickle.UnpicklingError, ValueError):
    """A file's pickle names a class or function that is not plain data, and was not read."""


class TorchScriptArchiveError(ValueError):
    """A TorchScript archive was given where a checkpoint of weights was expected."""


class Skipped:
    """Stands in for an object of a class a checkpoint names but that is not plain data.

    Its class was neither imported nor called: the placeholder keeps the
    arguments and state the file gave, as plain data, and nothing else.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Skipped":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<skipped {self.qualname}: not plain data, not unpickled>"


@lru_cache(maxsize=None)
def _placeholder(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (Skipped,), {"qualname": qualname})


@lru_cache(maxsize=1)
def _allowed() -> Dict[Tuple[str, str], Any]:
    """``(module, name) -> object`` for every global a data pickle may name.

    Looked up in this table, never imported: a name outside it cannot reach
    ``importlib``. Torch's and numpy's entries are what ``torch.save`` and
    ``np.save`` write for tensors, parameters, storages, arrays and dtypes.
    """
    import torch
    import torch._utils as tu

    table: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): _codecs_encode,  # bytes in protocol-2 pickles
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "UntypedStorage"): torch.UntypedStorage,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state", "_rebuild_meta_tensor_no_storage",
                 "_rebuild_device_tensor_from_cpu_tensor"):
        if hasattr(tu, name):
            table["torch._utils", name] = getattr(tu, name)
    table["torch._tensor", "_rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            table["torch", name] = getattr(torch, name)

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    for prefix in ("numpy.core", "numpy._core"):  # numpy 1 writes the first, numpy 2 the second
        table[f"{prefix}.multiarray", "_reconstruct"] = multiarray._reconstruct
        table[f"{prefix}.multiarray", "scalar"] = multiarray.scalar
        table[f"{prefix}.numeric", "_frombuffer"] = numeric._frombuffer  # protocol 5: arrays from raw buffers
    table["numpy", "ndarray"] = np.ndarray
    table["numpy", "dtype"] = np.dtype
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 may name the dtype classes
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith("DType"):
            table["numpy.dtypes", name] = getattr(dtypes, name)
    return table


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    import codecs

    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UntrustedPickleError(f"_codecs.encode({type(text).__name__}, {encoding!r}) "
                                   "is not a bytes literal")
    return codecs.encode(text, encoding)


def _storage_type(name: str) -> Any:
    """Torch's stand-in for a legacy storage class (``torch.FloatStorage``): only its dtype."""
    from torch.serialization import StorageType

    try:
        return StorageType(name)
    except (KeyError, AttributeError):
        return None


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # pickles written by Python 2


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data only: tensors, numpy arrays and dtypes, containers, numbers, strings.

    Args:
        file: a binary file positioned at the pickle.
        on_unknown: what a global outside the allowed table becomes:
            ``"error"`` (:class:`UntrustedPickleError`) or ``"placeholder"``
            (a :class:`Skipped` subclass named after it; its name is added to
            ``skipped``).
        skipped: collects the names of the placeholders made.
        **kwargs: passed to :class:`pickle.Unpickler` (``encoding``...).
    """

    def __init__(self, file, *, on_unknown: str = "error", skipped: Optional[Set[str]] = None,
                 **kwargs) -> None:
        if on_unknown not in ("error", "placeholder"):
            raise ValueError(f"on_unknown={on_unknown!r}; expected 'error' or 'placeholder'")
        super().__init__(file, **kwargs)
        self.on_unknown = on_unknown
        self.skipped = skipped if skipped is not None else set()

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        found = _allowed().get((module, name))
        if found is not None:
            return found
        if module == "torch" and name.endswith("Storage"):
            storage = _storage_type(name)
            if storage is not None:
                return storage
        qualname = f"{module}.{name}"
        if self.on_unknown == "error":
            raise UntrustedPickleError(f"the pickle names {qualname}, which is not plain data; refused")
        self.skipped.add(qualname)
        return _placeholder(qualname)


def _pickle_module(on_unknown: str, skipped: Set[str]) -> types.SimpleNamespace:
    """A stand-in for the ``pickle`` module whose ``Unpickler``, ``load`` and ``loads`` are all restricted.

    ``torch.load(pickle_module=...)`` calls both the module's ``Unpickler``
    (the main pickle) and its ``load`` (the legacy formats' headers and
    storage lists), so neither may be the standard one.
    """

    class Unpickler(RestrictedUnpickler):
        def __init__(self, file, **kwargs) -> None:
            super().__init__(file, on_unknown=on_unknown, skipped=skipped, **kwargs)

    def load(file, **kwargs) -> Any:
        return Unpickler(file, **kwargs).load()

    def loads(data: bytes, **kwargs) -> Any:
        return Unpickler(io.BytesIO(data), **kwargs).load()

    return types.SimpleNamespace(Unpickler=Unpickler, load=load, loads=loads, __name__=__name__)


def restricted_loads(data: bytes, *, on_unknown: str = "error") -> Any:
    """Unpickle bytes with :class:`RestrictedUnpickler`."""
    return _pickle_module(on_unknown, set()).loads(data)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def torch_load(path: PathLike, *, mmap: bool = False) -> Tuple[Any, Set[str]]:
    """``torch.load`` onto the CPU through the restricted unpickler; other classes become placeholders.

    Covers every format ``torch.load`` reads: zip (``torch.save``'s default,
    memory-mapped with ``mmap=True``), legacy pickle-stream files
    (``_use_new_zipfile_serialization=False``) and legacy ``.tar`` files.
    TorchScript archives are refused (``torch.load`` would hand them to
    ``torch.jit.load``, which runs the archive's code).

    Args:
        path: the file.
        mmap: map the storages instead of reading them (zip files; other
            formats are read as usual).

    Returns:
        ``(contents, skipped)``: what the file holds, and the names of the
        classes replaced by :class:`Skipped` placeholders.

    Raises:
        TorchScriptArchiveError: a TorchScript archive.
        UntrustedPickleError: the file could not be read and names classes or
            functions that are not plain data (the message lists them).
        pickle.UnpicklingError, RuntimeError, EOFError, OSError: not a readable
            torch file (as ``torch.load``).
    """
    import torch

    path = Path(path)
    if _is_torchscript(path):
        raise TorchScriptArchiveError(
            f"{path} is a TorchScript archive (torch.jit.save), whose loading runs the archive's code; "
            "expected a checkpoint of weights (torch.save). Load it with torch.jit.load only if you trust it."
        )
    skipped: Set[str] = set()
    try:
        contents = torch.load(
            path, map_location="cpu", pickle_module=_pickle_module("placeholder", skipped),
            weights_only=False, mmap=bool(mmap and zipfile.is_zipfile(path)),
        )
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError, KeyError,
            IndexError) as err:
        if not skipped:
            raise
        raise UntrustedPickleError(
            f"{err}; the file names {', '.join(sorted(skipped))}, which are not plain data and were neither "
            "imported nor run"
        ) from err
    if skipped:
        _logger.info("%s: objects of %s were not unpickled (not plain data); placeholders stand in for them",
                     path, ", ".join(sorted(skipped)))
    return contents, skipped


def load_npy(path: PathLike) -> np.ndarray:
    """Read a ``.npy`` file; an object array's pickle goes through the restricted unpickler.

    numpy's own reader needs ``allow_pickle=True`` for object arrays (e.g.
    ``cls_labels.npy``: a pickled dict), which runs any code the file names.
    Here the header is parsed with numpy's format module and the pickle that
    follows it is read by :class:`RestrictedUnpickler`: arrays, numbers,
    strings and containers only.

    Raises:
        UntrustedPickleError: the pickle names anything else.
        ValueError: not a ``.npy`` file, or its pickle does not hold the array
            its header announces.
    """
    from numpy.lib import format as npy_format

    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version} is not supported (1.0 and 2.0 are)")
        except ValueError as err:
            raise ValueError(f"{path}: not a .npy file ({err})") from err
        if not dtype.hasobject:
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
        try:
            array = _pickle_module("error", set()).Unpickler(f, encoding="latin1").load()
        except UntrustedPickleError as err:
            raise UntrustedPickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ValueError(f"{path}: the object array's pickle is unreadable "
                             f"({type(err).__name__}: {err})") from err
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{path}: the pickle holds {type(array).__name__}, "
                         f"not the {shape} array of the header")
    return array


def load_npz(path: PathLike) -> Dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, refusing pickled (object) arrays.

    Raises:
        ValueError: not an ``.npz`` file, or one of its arrays is pickled;
            the message names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{path}: holds pickled object arrays, which are not read (expected plain "
                             "numeric or string arrays)") from None
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    except (OSError, EOFError, zipfile.BadZipFile, AttributeError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err


class _DTDRefused(Exception):
    pass


def _refuse(*_args: Any) -> None:
    raise _DTDRefused


def parse_xml(path: PathLike) -> ET.Element:
    """Parse an XML file whose document has no DTD; return its root element.

    Entities (the billion-laughs and quadratic-blowup attacks, external
    entities reading local files) can only be declared in a DTD, so any
    ``<!DOCTYPE`` is refused before ElementTree sees the document. expat
    reports the DTD whatever the document's encoding, which a byte search
    would miss (UTF-16).

    Raises:
        ValueError: the file is not well-formed XML, or has a DTD.
    """
    path = Path(path)
    data = path.read_bytes()
    check = pyexpat.ParserCreate()
    check.StartDoctypeDeclHandler = _refuse
    check.EntityDeclHandler = _refuse
    try:
        check.Parse(data, True)
    except _DTDRefused:
        raise ValueError(f"{path}: XML with a DTD (<!DOCTYPE ...>) is refused: it can declare entities that "
                         "expand without bound or read other files (VOC annotations have none)") from None
    except pyexpat.ExpatError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from err
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from err
