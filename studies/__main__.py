"""python -m studies sweep|retrain|report ...: the studies' one entry point (studies/__init__.py says what each does).

    python -m studies sweep --data_dir shards/wikitext2-offline          # make study
    python -m studies retrain --data_dir shards/wikitext2-offline        # make study-retrain
    python -m studies report sweep --results_dir results/study           # make study-report
    python -m studies report retrain --results_dir results/study-retrain # make study-retrain-report
    python -m studies report teachers --weak results/study-weak --strong results/study-strong  # make study-teachers

Every flag after the command is that command's own (`python -m studies sweep --help` lists them).
"""

from __future__ import annotations

import sys

from studies import retrain, retrain_report, sweep, sweep_report, teachers_report

COMMANDS = {"sweep": sweep.main, "retrain": retrain.main}
REPORTS = {"sweep": sweep_report.main, "retrain": retrain_report.main, "teachers": teachers_report.main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command in COMMANDS:
        return COMMANDS[command](rest)
    if command == "report" and rest and rest[0] in REPORTS:
        return REPORTS[rest[0]](rest[1:])
    if command in ("-h", "--help") or command == "report" and rest[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return None
    sys.exit(__doc__ + "\nerror: give a command: sweep, retrain, or report sweep|retrain|teachers" +
             (f" (not {' '.join(argv[:2])!r})" if argv else ""))


if __name__ == "__main__":
    main()
