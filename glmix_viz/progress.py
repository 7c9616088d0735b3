"""Progress of long runs written to a log file: when stderr is not a terminal (``nohup``, a batch job) there
is no progress bar, so a line every ``every_s`` seconds says what is done, the speed and the time left."""
from __future__ import annotations

import logging
import time
from typing import Mapping, Optional

__all__ = ["ProgressLog", "clock", "LOG_EVERY_S"]

LOG_EVERY_S = 30.0  # progress lines when the output is not a terminal (a log file, a batch job)


def clock(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLog:
    """A log line every ``every_s`` seconds (``None``: never; a progress bar shows it):
    ``"12/500 images (11 written, 1 skipped, 0 failed), 0.42 images/s, ETA 0:19:22"``.

    Args:
        total: images in the run.
        every_s: seconds between lines.
        logger: where the lines go (INFO).
        rate_key: the count the speed is measured on (images skipped as already done cost nothing).
    """

    def __init__(self, total: int, every_s: Optional[float], logger: logging.Logger,
                 rate_key: str = "written") -> None:
        self.total, self.every_s, self.logger, self.rate_key = total, every_s, logger, rate_key
        self.start = self.last = time.perf_counter()

    def rate(self, counts: Mapping[str, int]) -> float:
        """``counts[rate_key]`` per second since the start."""
        return counts[self.rate_key] / max(time.perf_counter() - self.start, 1e-9)

    def tick(self, counts: Mapping[str, int], final: bool = False) -> None:
        """Log a line if ``every_s`` has passed since the last (``final``: the summary line, always)."""
        now = time.perf_counter()
        if self.every_s is None or not (final or now - self.last >= self.every_s):
            return
        self.last = now
        done = sum(counts.values())
        rate = self.rate(counts)
        eta = clock((self.total - done) / rate) if rate > 0 else "?"
        parts = ", ".join(f"{n} {key}" for key, n in counts.items())
        self.logger.info("%d/%d images (%s), %.2f images/s, %s %s", done, self.total, parts, rate,
                         "took" if final else "ETA", clock(now - self.start) if final else eta)
