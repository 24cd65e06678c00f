"""The dataclass -> command line generator: help from comments, every supported type, --config, errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from gpt2.cli import build_parser, config_to_dict, field_comments, parse_config


@dataclass
class Demo:
    """A demo config."""

    # a section heading, not help text
    lr: float = 3e-4  # peak learning rate
    steps: int | None = None  # optimizer steps;
                              # None: from epochs
    # another heading
    dtype: Literal["bf16", "fp32"] = "fp32"  # precision
    compile: bool | None = None  # torch.compile; None: automatic
    shuffle_data: bool = True  # shuffle the data
    files: list[str] = field(default_factory=list)  # input files
    out_dir: str = "runs/x"  # where "# results" go

    def __post_init__(self):
        if self.lr < 0:
            raise ValueError("--lr must be >= 0")


def test_comments_become_help():
    assert field_comments(Demo) == {
        "lr": "peak learning rate", "steps": "optimizer steps; None: from epochs", "dtype": "precision",
        "compile": "torch.compile; None: automatic", "shuffle_data": "shuffle the data", "files": "input files",
        "out_dir": 'where "# results" go',
    }
    help_text = " ".join(build_parser(Demo).format_help().split())
    assert "A demo config." in help_text and "optimizer steps; None: from epochs (default: None)" in help_text


def test_types():
    assert parse_config(Demo, []) == Demo()
    cfg = parse_config(Demo, ["--lr", "0.1", "--steps", "5", "--dtype", "bf16", "--compile", "--no-shuffle-data",
                              "--files", "a.txt", "b.txt", "--out-dir", "elsewhere"])
    assert cfg == Demo(lr=0.1, steps=5, dtype="bf16", compile=True, shuffle_data=False, files=["a.txt", "b.txt"],
                       out_dir="elsewhere")
    assert parse_config(Demo, ["--steps", "5", "--steps", "none", "--no-compile"]) == Demo(steps=None, compile=False)
    assert config_to_dict(cfg)["files"] == ["a.txt", "b.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--steps", "many"], "invalid int value: 'many'"),
    (["--dtype", "fp16"], "invalid choice: 'fp16'"),
    (["--lr", "-1"], "--lr must be >= 0"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
])
def test_mistakes_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Demo, argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_config_file_then_flags(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.5, "steps": 7}))
    assert parse_config(Demo, ["--config", str(path), "--steps", "9"]) == Demo(lr=0.5, steps=9)
    path.write_text(json.dumps({"learning_rate": 0.5}))
    with pytest.raises(SystemExit):
        parse_config(Demo, ["--config", str(path)])
    assert "unknown field(s) learning_rate" in capsys.readouterr().err


def test_a_field_without_comment_is_refused():
    @dataclass
    class Undocumented:
        a: int = 1  # documented
        b: int = 2

    with pytest.raises(TypeError, match="Undocumented.b has no comment"):
        build_parser(Undocumented)


def test_require_positive_names_the_flag():
    import dataclasses

    from gpt2.cli import require_positive

    @dataclasses.dataclass
    class C:
        steps: int | None = None  # may be left unset
        rate: float = 1.0  # must be > 0

    require_positive(C(), "steps", "rate")  # None passes: unset
    for bad in (C(steps=0), C(rate=-0.5)):
        with pytest.raises(ValueError, match=r"--(steps|rate) must be positive, got (0|-0.5)"):
            require_positive(bad, "steps", "rate")
