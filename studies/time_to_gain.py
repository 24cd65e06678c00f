"""Time to gain: how long a run took to win a given share of what fine-tuning gave, read from its log.jsonl.

The gain is start_loss - end_loss (e.g. the base's val loss minus the teacher's); the threshold of a fraction f
is start_loss - f * gain, and a run reaches it at its first evaluation whose val loss is at or below it. The
answer is resolved to the evaluation interval: the step and time of that evaluation, never a point
interpolated between two evaluations (the run may have crossed anywhere since the one before).

Time is gpt2/trainer.py's elapsed_s: wall seconds since the run began (summed over a resumed run's sessions),
earlier evaluations included. An eval line carries no time of its own; it is written right after the train
line of the same step, whose elapsed_s it takes (the evaluation's own seconds are not in it). The evaluation at
step 0, before any training, is at 0 s. What the run needed before it started (generating its training set)
is passed in as extra_seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

from gpt2.atomic import atomic_open
from gpt2.records import read_log


def val_curve(run_dir: str | Path) -> list[dict]:
    """[{"step", "val_loss", "elapsed_s"}] for every eval line of run_dir/log.jsonl, in the log's order;
    elapsed_s is that of the train line of the same step (0.0 at step 0)."""
    records = read_log(run_dir)
    elapsed = {r["step"]: r["elapsed_s"] for r in records if r.get("kind") == "train"}
    curve = []
    for r in records:
        if r.get("kind") != "eval":
            continue
        step = r["step"]
        if step != 0 and step not in elapsed:
            raise ValueError(f"{Path(run_dir) / 'log.jsonl'}: the evaluation at step {step} has no train line of "
                             "that step to take its time from (a damaged log?): run the training again")
        curve.append({"step": step, "val_loss": r["val_loss"], "elapsed_s": elapsed.get(step, 0.0)})
    return curve


def time_to_gain(curve: list[dict], start_loss: float, end_loss: float, fractions: tuple[float, ...] = (0.5, 0.8),
                 extra_seconds: float = 0.0) -> dict:
    """When `curve` (val_curve's) first reached each fraction of the gain start_loss - end_loss.

    For each f: threshold = start_loss - f * gain; the first point with val_loss <= threshold gives "step" and
    "seconds" = its elapsed_s + extra_seconds; both None when no point reaches it. Resolved to the evaluation
    interval (no interpolation). Returns {"gain", "start_loss", "end_loss", "extra_seconds",
    "reached": [{"fraction", "threshold", "step", "seconds"}, one per fraction, in order]}.
    """
    gain = start_loss - end_loss
    if not gain > 0:
        raise ValueError(f"time_to_gain: start loss {start_loss} minus end loss {end_loss} is {gain}, not a gain: "
                         "the end (e.g. the fine-tuned teacher) must have the lower loss")
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"time_to_gain: fraction {bad[0]} is not a share of the gain: give fractions in (0, 1]")
    reached = []
    for f in fractions:
        threshold = start_loss - f * gain
        first = next((p for p in curve if p["val_loss"] <= threshold), None)
        reached.append({"fraction": f, "threshold": threshold, "step": None if first is None else first["step"],
                        "seconds": None if first is None else first["elapsed_s"] + extra_seconds})
    return {"gain": gain, "start_loss": start_loss, "end_loss": end_loss, "extra_seconds": extra_seconds,
            "reached": reached}


def record_seconds(path: Path, run: str, curve: list[dict], set_seconds: float) -> None:
    """Add one run's seconds (each evaluation's elapsed_s, the set's generation) to the JSON file `path`, the
    study's one file of curve seconds: like timings.json, it differs between two runs of the same study, so the
    runs' own records keep only steps and losses."""
    record = json.loads(path.read_text()) if path.exists() else {}
    record[run] = {"elapsed_s": [p["elapsed_s"] for p in curve], "set_seconds": set_seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write((json.dumps(record, indent=2) + "\n").encode())


def arm_times(records: dict[int, dict], teacher_loss: float, seconds: dict[int, dict] | None = None) -> dict | None:
    """An arm's time to gain over its seeds ({seed: its result record, holding "curve": [{"step", "val_loss"}]};
    `seconds`: {seed: record_seconds' entry}): per fraction, the steps of the seeds that reached it and how many
    did, and, where `seconds` has the seed, the seconds (the set's generation included). The gain is each seed's
    start (its curve's step-0 evaluation: the base) minus the teacher's loss on the same val slice. None where
    the records have no curves."""
    seconds, runs = seconds or {}, []
    for seed, r in records.items():
        if not r.get("curve") or r["curve"][0]["step"] != 0:
            continue
        timed = seconds.get(seed, {"elapsed_s": [None] * len(r["curve"]), "set_seconds": None})
        curve = [{**p, "elapsed_s": t} for p, t in zip(r["curve"], timed["elapsed_s"])]
        runs.append(time_to_gain(curve, curve[0]["val_loss"], teacher_loss, extra_seconds=timed["set_seconds"]))
    if not runs:
        return None
    out = {}
    for i, fraction in enumerate(runs[0]["reached"]):
        hits = [run["reached"][i] for run in runs if run["reached"][i]["step"] is not None]
        out[f"{fraction['fraction']:g}"] = {"seeds": len(runs), "reached": len(hits),
                                            "steps": sorted(h["step"] for h in hits),
                                            "seconds": sorted(h["seconds"] for h in hits if h["seconds"] is not None)}
    return out


def times_table(times: dict[str, dict], with_seconds: bool) -> list[str]:
    """Markdown rows: per arm and fraction of the gain, the seeds that reached it and their median step (and
    median seconds, with_seconds)."""
    fractions = next(iter(times.values())).keys() if times else []
    what = "seeds, median step" + (", median s" if with_seconds else "")
    lines = ["| arm | " + " | ".join(f"{float(f):.0%} of the gain: {what}" for f in fractions) + " |",
             "|---|" + "---:|" * len(fractions)]
    for name, by_fraction in times.items():
        cells = []
        for t in by_fraction.values():
            seconds = f", {median(t['seconds']):,.0f}" if with_seconds and t["seconds"] else ""
            cells.append(f"{t['reached']}/{t['seeds']}" + (f", {median(t['steps']):g}{seconds}" if t["reached"]
                                                           else ", never"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
