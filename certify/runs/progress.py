"""A progress line for long runs: inputs done, samples per second, ETA (on stderr)."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """Redrawn in place on a terminal (at most 5 times a second); one line every 10 s otherwise,
    so logs of batch jobs stay short. Rates count this session's work only (not resumed rows)."""

    def __init__(self, total: int, done: int = 0, samples_per_input: int = 0, quiet: bool = False, stream=None):
        self.total, self.done, self.start_done = total, done, done
        self.samples = 0
        self.samples_per_input = samples_per_input
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = self.last = time.perf_counter()

    def add_samples(self, count: int) -> None:
        self.samples += count
        self._draw()

    def add_inputs(self, count: int) -> None:
        self.done += count
        self._draw(force=self.done == self.total)

    def _draw(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if not force and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        finished = self.done - self.start_done
        parts = [f"inputs {self.done}/{self.total}"]
        if self.samples_per_input:
            parts.append(f"{self.samples / elapsed:,.0f} samples/s")
        else:
            parts.append(f"{finished / elapsed:,.1f} inputs/s")
        # ETA from the work rate: samples for smoothing (finer-grained than inputs).
        if self.samples_per_input and self.samples:
            left = (self.total - self.start_done) * self.samples_per_input - self.samples
            eta = left / (self.samples / elapsed)
        elif finished:
            eta = (self.total - self.done) * elapsed / finished
        else:
            eta = None
        parts.append("ETA " + (_clock(eta) if eta is not None else "?"))
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(60))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
