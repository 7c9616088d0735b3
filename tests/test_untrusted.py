"""Files from elsewhere run no code: checkpoints in every torch format, cls_labels.npy, .npz, XML, images.

Each attack file carries a payload whose unpickling would create a marker file
in ``tmp_path`` (as ``os.system("touch ...")`` would run any command). Every
test checks that the marker is absent after reading, and, where the format
allows it, that Python's full pickle does run the payload (the file is a real
attack, not an inert one).
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import timm
import torch

from glmix_viz import cli as viz_cli
from glmix_viz.images import load_image
from glmix_viz.models import load_checkpoint, read_checkpoint
from glmix_viz.untrusted import (
    Skipped,
    TorchScriptArchiveError,
    UntrustedPickleError,
    load_npy,
    load_npz,
    parse_xml,
    restricted_loads,
)
from wsss import cli as wsss_cli
from wsss.emojivoc import make_emojivoc
from wsss.voc import VOCLayout, labels_from_xml, load_cls_labels, read_mask, save_cls_labels

from ._legacy_formats import write_tar_checkpoint
from .conftest import DATA, load_fixture

CLS_LABELS = DATA / "voc_sample" / "voc12" / "cls_labels.npy"


class Payload:
    """Unpickling this runs ``touch MARKER`` through a shell."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    path.unlink(missing_ok=True)


def release_contents(marker, state_dict):
    """Like the official files: weights, training state, an ``args`` Namespace; plus a payload."""
    return {"model": state_dict, "epoch": 299, "args": argparse.Namespace(lr=1e-3), "evil": Payload(marker)}


def save_zip(path, obj):
    torch.save(obj, path)


def save_legacy(path, obj):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def save_tar(path, obj):
    write_tar_checkpoint(path, obj)


FORMATS = {"zip": save_zip, "legacy": save_legacy, "tar": save_tar}


@pytest.mark.parametrize("fmt,mmap", [("zip", False), ("zip", True), ("legacy", False), ("legacy", True),
                                      ("tar", False)])
def test_checkpoint_payloads_are_skipped_in_every_format(tmp_path, marker, fmt, mmap):
    fx = load_fixture("tiny_stl")
    path = tmp_path / f"ckpt_{fmt}.pth"
    FORMATS[fmt](path, release_contents(marker, fx["state_dict"]))

    ckpt = read_checkpoint(path, mmap=mmap)
    assert not marker.exists()
    assert (isinstance(ckpt["evil"], Skipped) and "system" in repr(ckpt["evil"])
            and "skipped" in repr(ckpt["evil"]))
    assert isinstance(ckpt["args"], Skipped) and ckpt["args"].qualname == "argparse.Namespace"
    assert ckpt["epoch"] == 299
    model = load_checkpoint(timm.create_model("test_glnet"), path, checkpoint=ckpt)
    for key, value in fx["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key

    trusted = read_checkpoint(path, weights_only=False)  # full pickle runs the payload: a live attack
    assert marker.exists() and trusted["args"].lr == 1e-3


def test_plain_pickle_checkpoint_runs_nothing(tmp_path, marker):
    """The issue's file: ``pickle.dump`` of a dict, read by torch's legacy path (``pickle_module.load``)."""
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.ones(2)}, "args": Payload(marker)}, f)
    with pytest.raises(UntrustedPickleError, match=r"evil\.pth.*not plain data"):
        read_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(ValueError):
        read_checkpoint(path, weights_only=False)  # torch runs the payload, then fails on the magic number
    assert marker.exists()


def test_payload_in_a_legacy_header_runs_nothing(tmp_path, marker):
    """A payload where torch's legacy readers call ``pickle_module.load``, not its ``Unpickler``."""
    stream = tmp_path / "header.pth"
    with open(stream, "wb") as f:
        pickle.dump(Payload(marker), f)  # read as the magic number
        f.write(b"\0" * 64)
    tar = write_tar_checkpoint(tmp_path / "header.tar", {"w": torch.ones(2)}, storages_header=Payload(marker))
    for path in (stream, tar):
        with pytest.raises(ValueError, match="system"):
            read_checkpoint(path)
        assert not marker.exists(), path


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, and still read by torch.load
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(TorchScriptArchiveError, match=r"scripted\.pth is a TorchScript archive"):
        read_checkpoint(path)


def test_glmix_viz_cli_refuses_the_attack_in_one_line(tmp_path, marker, capsys):
    fx = load_fixture("tiny_stl")
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": fx["state_dict"], "args": Payload(marker)}, f)
    image = DATA / "voc_sample" / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000032.jpg"
    code = viz_cli.main([str(image), "--model", "test_glnet", "--checkpoint", str(path),
                         "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(path) in err and "--trust-checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_restricted_unpickler_reads_plain_data_in_every_protocol():
    data = {
        "numbers": [1, -2**70, 2.5, 1j, True, None], "text": ("s", b"bytes", bytearray(b"ba")),
        "sets": ({1, 2}, frozenset({3})), "slice": slice(1, 5, 2),
        "ordered": collections.OrderedDict(a=1, b=[2]), "counter": collections.Counter("aab"),
        "array": np.arange(6, dtype=np.int16).reshape(2, 3), "fortran": np.asfortranarray(np.eye(3)),
        "scalar": np.float32(2.5), "dtype": np.dtype(">f8"),
        "objects": np.array([{"k": 1}, None], dtype=object),
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        got = restricted_loads(pickle.dumps(data, protocol=protocol))
        assert got.keys() == data.keys()
        for key, value in data.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype and got[key].shape == value.shape
                assert got[key].tolist() == value.tolist(), key
            else:
                assert got[key] == value and type(got[key]) is type(value), key


@pytest.mark.parametrize("payload", ["getattr", "eval", "import"])
def test_restricted_unpickler_refuses_code(payload):
    calls = {
        "getattr": b"cbuiltins\ngetattr\n(cos\nS'system'\ntR.",
        "eval": b"cbuiltins\neval\n(S'1+1'\ntR.",
        "import": b"c__builtin__\n__import__\n(S'os'\ntR.",
    }
    with pytest.raises(UntrustedPickleError, match="not plain data"):
        restricted_loads(calls[payload])
    assert isinstance(restricted_loads(calls[payload], on_unknown="placeholder"), Skipped)


# --- cls_labels.npy -----------------------------------------------------------------------------------------


def test_cls_labels_reader_equals_numpy_on_the_official_file():
    reference = np.load(CLS_LABELS, allow_pickle=True).item()  # the file shipped with the tests: trusted
    got = load_cls_labels(CLS_LABELS)
    assert got.keys() == {int(k) for k in reference}
    assert all(np.array_equal(got[int(k)], v) and got[int(k)].dtype == np.float32
               for k, v in reference.items())


def test_cls_labels_round_trip(tmp_path):
    labels = {2007000032: np.eye(20, dtype=np.float32)[0], 2011003276: np.eye(20, dtype=np.float32)[19]}
    save_cls_labels(tmp_path / "cls_labels.npy", labels)
    got = load_cls_labels(tmp_path / "cls_labels.npy")
    assert got.keys() == labels.keys() and all(np.array_equal(got[k], labels[k]) for k in labels)


@pytest.mark.parametrize("where", ["whole", "value"])
def test_cls_labels_payload_is_refused(tmp_path, marker, where):
    path = tmp_path / "cls_labels.npy"
    obj = Payload(marker) if where == "whole" else {2007000032: Payload(marker)}
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cls_labels\.npy: .*system.*not plain data.*expected a dict"):
        load_cls_labels(path)
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # numpy's reader runs it: a live attack
    assert marker.exists()


def test_wsss_cli_refuses_the_label_payload(tmp_path, marker, capsys):
    voc = make_emojivoc(tmp_path / "ev", train=2, val=1, seed=3, progress=False)
    labels = VOCLayout(voc).cls_labels_file()
    labels.parent.mkdir(parents=True, exist_ok=True)
    np.save(labels, np.array(Payload(marker), dtype=object), allow_pickle=True)
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny20.pth"
    torch.save({"model": timm.create_model("test_glnet", num_classes=20).state_dict()}, ckpt)
    code = wsss_cli.main(["-q", "pseudo-labels", "--voc-root", str(voc), "--split", "train",
                          "--model", "test_glnet", "--checkpoint", str(ckpt), "--out", str(tmp_path / "pl"),
                          "--labels-from", "npy"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(labels) in err and "expected a dict" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content,message", [
    (np.zeros((3, 20)), r"holds a float64 array of shape \(3, 20\)"),
    (np.array([1, 2], dtype=object), r"holds an? .*array of shape \(2,\)"),
    (np.array({"cat.jpg": np.ones(20)}, dtype=object), r"entry .cat\.jpg."),
    (np.array({2007000032: np.ones(19)}, dtype=object), r"entry 2007000032"),
    (np.array({2007000032: "cat"}, dtype=object), r"entry 2007000032"),
])
def test_malformed_cls_labels_name_file_and_format(tmp_path, content, message):
    path = tmp_path / "cls_labels.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(ValueError, match=message) as err:
        load_cls_labels(path)
    assert str(path) in str(err.value) and "expected a dict of int image key" in str(err.value)
    assert "\n" not in str(err.value)


def test_not_an_npy_file_is_named(tmp_path):
    path = tmp_path / "cls_labels.npy"
    path.write_bytes(b"PK\x03\x04 not numpy")
    with pytest.raises(ValueError, match=r"cls_labels\.npy: not a label file .*not a \.npy file"):
        load_cls_labels(path)
    truncated = tmp_path / "short.npy"
    np.save(truncated, np.array({1: np.ones(20)}, dtype=object), allow_pickle=True)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(ValueError, match="unreadable"):
        load_npy(truncated)


# --- .npz, XML, images --------------------------------------------------------------------------------------


def test_npz_with_pickled_arrays_is_refused(tmp_path, marker):
    path = tmp_path / "scores.npz"
    np.savez(path, scores=np.zeros((1, 2, 2), np.float32), classes=np.array([Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match=r"scores\.npz: holds pickled object arrays"):
        load_npz(path)
    assert not marker.exists()
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3), names=np.array(["x", "yz"]))
    got = load_npz(plain)
    assert got["a"].tolist() == [0, 1, 2] and got["names"].tolist() == ["x", "yz"]


def test_score_sweep_refuses_pickled_scores(tmp_path, marker, capsys):
    voc = make_emojivoc(tmp_path / "ev", train=1, val=1, seed=5, progress=False)
    image_id = VOCLayout(voc).ids("train")[0]
    (tmp_path / "pred" / "scores").mkdir(parents=True)
    np.savez(tmp_path / "pred" / "scores" / f"{image_id}.npz", scores=np.zeros((0, 2, 2), np.float32),
             classes=np.array([Payload(marker)], dtype=object))
    code = wsss_cli.main(["score", "--voc-root", str(voc), "--split", "train",
                          "--pred", str(tmp_path / "pred"), "--sweep-bg"])
    assert code == 2 and not marker.exists()
    assert "holds pickled object arrays" in capsys.readouterr().err


VOC_XML = b"<annotation><object><name>cat</name></object></annotation>"
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<annotation><object><name>&lol9;</name></object></annotation>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<annotation><object><name>&secret;</name></object></annotation>"""


@pytest.mark.parametrize("name,data", [
    ("laughs", LAUGHS), ("external", EXTERNAL), ("doctype_only", b"<!DOCTYPE annotation>" + VOC_XML),
    ("utf16",
     EXTERNAL.replace(b'version="1.0"', b'version="1.0" encoding="UTF-16"').decode().encode("utf-16")),
])
def test_xml_with_a_dtd_is_refused(tmp_path, name, data):
    path = tmp_path / f"{name}.xml"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{name}\.xml: .*DTD.*refused"):
        parse_xml(path)
    with pytest.raises(ValueError, match=rf"not a VOC annotation XML: .*{name}\.xml"):
        labels_from_xml(path)


def test_plain_xml_is_parsed(tmp_path):
    path = tmp_path / "a.xml"
    path.write_bytes(VOC_XML.replace(b"cat", b"cat &amp; &#100;og"))
    assert parse_xml(path).find("object/name").text == "cat & dog"
    path.write_bytes(VOC_XML)
    assert np.flatnonzero(labels_from_xml(path)).tolist() == [7]
    path.write_bytes(b"<annotation><object>")
    with pytest.raises(ValueError, match=r"a\.xml: not well-formed XML"):
        parse_xml(path)


def png_header(width, height):
    """A PNG that declares ``width x height`` pixels but holds almost nothing: a decompression bomb's
    header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette
    plte = bytes(range(3)) * 1
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte) \
        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_by_name(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(100_000, 100_000))  # 10^10 pixels: 10 GB decoded
    with pytest.raises(ValueError, match=r"bomb\.png: not a readable image .*decompression bomb"):
        load_image(path)
    with pytest.raises(ValueError, match=r"bomb\.png: not a readable label PNG .*decompression bomb"):
        read_mask(path)
    buf = io.BytesIO()
    from PIL import Image

    Image.new("P", (4, 3)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    assert read_mask(path).shape == (3, 4)  # the same reader takes a normal file
