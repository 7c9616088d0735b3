"""Headless Chromium for tests of HTML pages (the reports): a screenshot, and what the page did as it loaded.

:func:`load_probe` loads a copy of the page with a probe script put first in its
``<head>``: it records every script error and every resource that failed to load
(``error`` events, caught in the capture phase, so an ``<img>``'s too), every
``console.error``, and, once the page has loaded, how many images it has and how
many of them did not decode (``!complete`` or ``naturalWidth == 0``) and whether
each ``<script type="application/json">`` parses. It writes that as JSON into
the DOM, which ``--dump-dom`` prints after the load event. The network is off
(every host name resolves to nothing), so a page that needs anything but itself
fails the probe. Chromium's own console log (``--enable-logging=stderr``: lines
with ``:CONSOLE``) is returned too, as a second witness; its other stderr lines
(D-Bus, GPU) are noise in containers and are ignored.

No Chromium is a failure, not a skip: CI installs it (``scripts/quickstart.sh test``).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT_S = 180
_PROBE_ID = "__browser_probe__"

_PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window && t.tagName
      ? "failed to load " + t.tagName.toLowerCase() + " " + String(t.src || t.href || "").slice(0, 80)
      : "script error: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + e.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console.error: " + [].slice.call(arguments).join(" "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = [].slice.call(document.images);
    var json = [].slice.call(document.querySelectorAll('script[type="application/json"]'));
    var jsonErrors = [];
    json.forEach(function (s) {
      try { JSON.parse(s.textContent); } catch (err) { jsonErrors.push((s.id || "?") + ": " + err); }
    });
    var out = document.createElement("pre");
    out.id = "%s";
    out.textContent = JSON.stringify({
      images: images.length,
      broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                    .map(function (i) { return i.alt || String(i.src).slice(0, 60); }),
      json_blocks: json.length, json_errors: jsonErrors, errors: errors,
      title: document.title, text_length: document.body.innerText.length
    });
    document.body.appendChild(out);
  });
})();
</script>""" % _PROBE_ID


def chromium() -> str:
    """The Chromium executable (``$CHROMIUM``, else the first of :data:`NAMES` on the PATH); the test fails,
    with what to install, when there is none."""
    given = os.environ.get("CHROMIUM")
    found = shutil.which(given) if given else next(filter(None, map(shutil.which, NAMES)), None)
    if not found:
        pytest.fail(f"no Chromium ({given or ', '.join(NAMES)} not found): this browser test needs one. "
                    "Install it (Debian: apt-get install -y chromium; bash scripts/quickstart.sh test does) "
                    "or set CHROMIUM=/path/to/chrome", pytrace=False)
    return found


def _run(args: List[str], url: str) -> Tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", *args, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout, proc.stderr


def console_lines(stderr: str) -> List[str]:
    """The page's console messages in Chromium's log (``...:CONSOLE...] "message", source: ...``)."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE\b", line) or "Uncaught" in line]


def load_probe(page: Path) -> Dict:
    """Load ``page`` (a copy with the probe) headless; the probe's record plus ``console``, Chromium's console
    log lines."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text, re.I)
    assert head, f"{page}: no <head>"
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(text[: head.end()] + _PROBE + text[head.end():], encoding="utf-8")
    try:
        dom, stderr = _run(["--dump-dom"], probed.resolve().as_uri())
    finally:
        probed.unlink()
    found = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run (no load event?): {dom[-1000:]!r} {stderr[-1000:]}"
    record = json.loads(html.unescape(found.group(1)))
    record["console"] = console_lines(stderr)
    return record


def screenshot(page: Path, out: Path, size: Tuple[int, int] = (1200, 2000)) -> np.ndarray:
    """A ``size`` (width, height) screenshot of ``page`` as ``(H, W, 3)`` uint8, also saved to ``out``."""
    from PIL import Image

    _run([f"--screenshot={Path(out).resolve()}", f"--window-size={size[0]},{size[1]}"],
         Path(page).resolve().as_uri())
    with Image.open(out) as img:
        return np.asarray(img.convert("RGB"))


def is_blank(pixels: np.ndarray) -> bool:
    """A screenshot that shows (almost) nothing: nearly one colour, or next to no variation."""
    flat = pixels.reshape(-1, pixels.shape[-1])
    _, counts = np.unique(flat, axis=0, return_counts=True)
    return counts.max() > 0.97 * len(flat) or float(pixels.std()) < 5.0
