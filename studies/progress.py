"""What a study prints as it goes: the work done out of the work planned, and the time left.

Both studies plan their work as pieces with a cost in units (the sweep: one unit per training run; the
retrain study: scored-token equivalents), count a piece an earlier invocation finished as done but not
timed, and estimate the time left at this invocation's pace: the seconds per unit of the pieces it ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpt2.atomic import atomic_open


class Progress:
    """The work done out of `total` units, printed with a label and the seconds since the start; with
    `timings`, each piece's seconds are also recorded in that JSON file."""

    def __init__(self, label: str, total: float = 0.0, done: float = 0.0, timings: Path | None = None):
        self.label, self.total, self.done, self.timings_path = label, total, done, timings
        self.t0 = self.mark = time.perf_counter()
        self.ran_units = self.ran_seconds = 0.0
        self.timings = json.loads(timings.read_text()) if timings is not None and timings.exists() else {}

    def say(self, text: str) -> None:
        print(f"[{self.label} {time.perf_counter() - self.t0:7.0f} s] {text}", flush=True)

    def left(self) -> str:
        """The time left at this invocation's pace, in words."""
        if not self.ran_units:
            return "time left: estimated once a piece with work in it has run"
        return f"about {(self.total - self.done) * self.ran_seconds / self.ran_units / 60:.0f} min left"

    def status(self) -> str:
        return f"{self.done / self.total:.0%} of the work done, {self.left()}" if self.total else self.left()

    def start(self) -> None:
        """The next piece starts now: its time is counted from here."""
        self.mark = time.perf_counter()

    def finished(self, name: str, units: float, fresh: bool) -> None:
        """A piece of `units` is done; `fresh`: this invocation did its work (timed since `start` or the
        previous piece), else an earlier invocation did (counted, not timed)."""
        now = time.perf_counter()
        self.done += units
        if fresh:
            self.ran_units, self.ran_seconds = self.ran_units + units, self.ran_seconds + now - self.mark
            if self.timings_path is not None:
                self.timings[name] = round(now - self.mark, 1)
                self.timings_path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(self.timings_path) as f:
                    f.write((json.dumps(self.timings, indent=2) + "\n").encode())
        self.mark = now

    def run(self, name: str, units: float, make) -> None:
        """Announce a piece with the work done so far, run `make()`, count it."""
        self.say(f"{name} ({self.status()})")
        self.start()
        make()
        self.finished(name, units, fresh=True)
