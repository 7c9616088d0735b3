"""Render the emoji sprites EmojiVOC is drawn from (run once; the output ships in the package).

    apt-get install fonts-noto-color-emoji
    python scripts/render_emoji_sprites.py [--font /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf]

Writes ``wsss/data/emoji/*.png`` (RGBA, cropped to the glyph), ``sprites.json``
(file -> VOC class or ``null`` for distractors, code points) and ``OFL.txt``
(the font's licence, SIL Open Font License 1.1, from the Debian package).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
OUT = Path(__file__).resolve().parents[1] / "wsss" / "data" / "emoji"
TONES = ("\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF")
VS16 = "\ufe0f"

# VOC class -> glyphs (several per class where Unicode has them, so classes are not single templates).
CLASS_GLYPHS = {
    "aeroplane": ["\u2708" + VS16, "\U0001F6E9" + VS16, "\U0001F6EB", "\U0001F6EC"],
    "bicycle": ["\U0001F6B2"],
    "bird": ["\U0001F426", "\U0001F424", "\U0001F425", "\U0001F427", "\U0001F985", "\U0001F986",
             "\U0001F989", "\U0001F99C", "\U0001F54A" + VS16, "\U0001F9A2", "\U0001F9A9", "\U0001F413"],
    "boat": ["\u26F5", "\U0001F6A4", "\U0001F6E5" + VS16, "\U0001F6F6", "\u26F4" + VS16, "\U0001F6A2"],
    "bottle": ["\U0001F37E", "\U0001F37C", "\U0001F9F4", "\U0001F376"],
    "bus": ["\U0001F68C", "\U0001F68D", "\U0001F68E", "\U0001F690"],
    "car": ["\U0001F697", "\U0001F698", "\U0001F699", "\U0001F695", "\U0001F693", "\U0001F3CE" + VS16],
    "cat": ["\U0001F408", "\U0001F408\u200d\u2B1B", "\U0001F431"],
    "chair": ["\U0001FA91"],
    "cow": ["\U0001F404", "\U0001F42E", "\U0001F402", "\U0001F403"],
    "diningtable": ["\U0001F37D" + VS16],
    "dog": ["\U0001F415", "\U0001F436", "\U0001F9AE", "\U0001F415\u200d\U0001F9BA", "\U0001F429"],
    "horse": ["\U0001F40E", "\U0001F434"],
    "motorbike": ["\U0001F3CD" + VS16, "\U0001F6F5"],
    "person": [base + tone for base in ("\U0001F9CD", "\U0001F6B6", "\U0001F3C3", "\U0001F483", "\U0001F64B")
               for tone in ("",) + TONES[::2]] + ["\U0001F9D1", "\U0001F469\U0001F3FE",
                                                  "\U0001F468\U0001F3FB"],
    "pottedplant": ["\U0001FAB4"],
    "sheep": ["\U0001F411", "\U0001F40F"],
    "sofa": ["\U0001F6CB" + VS16],
    "train": ["\U0001F686", "\U0001F682", "\U0001F684", "\U0001F685", "\U0001F687", "\U0001F688",
              "\U0001F683"],
    "tvmonitor": ["\U0001F4FA", "\U0001F5A5" + VS16],
}
# Not VOC: background clutter, so that "something is there" is not evidence of a class.
DISTRACTORS = [
    "\U0001F333", "\U0001F332", "\U0001F334", "\U0001F335", "\U0001F3E0", "\U0001F3E2", "\U0001F3DB" + VS16,
    "\u26F0" + VS16, "\U0001FAA8", "\U0001F344", "\U0001F338", "\U0001F33B", "\U0001F34E", "\U0001F355",
    "\U0001F354", "\U0001F382", "\U0001F388", "\u26BD", "\U0001F3C0", "\U0001F381", "\U0001F511",
    "\U0001F4DA", "\u2602" + VS16, "\U0001F3B8",
]


def codepoints(glyph: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in glyph)


def render(font: ImageFont.FreeTypeFont, glyph: str) -> Image.Image:
    canvas = Image.new("RGBA", (200, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), glyph, font=font, embedded_color=True)
    box = canvas.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError(f"the font has no glyph for {codepoints(glyph)}")
    return canvas.crop(box)


def licence_text(copyright_file: Path) -> str:
    """The OFL 1.1 block of the Debian copyright file, unindented."""
    text = copyright_file.read_text()
    block = text[text.index("License:   SIL-1.1\n This Font") :]
    lines = [re.sub(r"^ \.?", "", ln) for ln in block.splitlines()[1:]]
    return "Noto Color Emoji: Copyright 2013-2017 Google Inc.\n\n" + "\n".join(lines).strip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--font", type=Path, default=FONT)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    font = ImageFont.truetype(str(args.font), 109)  # the size the bitmap font is drawn at
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    entries = [(c, g) for c, gs in CLASS_GLYPHS.items() for g in gs] + [(None, g) for g in DISTRACTORS]
    for cls, glyph in entries:
        sprite = render(font, glyph)
        name = f"{cls or 'distractor'}_{'-'.join(f'{ord(c):x}' for c in glyph if c != VS16)}.png"
        sprite.save(args.out / name, optimize=True)
        manifest[name] = {"class": cls, "codepoints": codepoints(glyph), "size": list(sprite.size)}
    (args.out / "sprites.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    copyright_file = Path("/usr/share/doc/fonts-noto-color-emoji/copyright")
    if copyright_file.is_file():
        (args.out / "OFL.txt").write_text(licence_text(copyright_file))
    print(f"{len(manifest)} sprites -> {args.out}")


if __name__ == "__main__":
    main()
