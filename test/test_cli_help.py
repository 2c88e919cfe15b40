"""Every console script answers --help and argument errors without importing torch, open3d or cv2."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open3d", "cv2", "ray")


def _console_scripts() -> dict[str, str]:
    text = (REPO / "setup.py").read_text()
    found = dict(re.findall(r'"(loger-[a-z]+) = ([\w.]+:\w+)"', text))
    assert set(found) == {"loger-replay", "loger-reconstruct", "loger-synth", "loger-train", "loger-batch"}
    return found


def _run_entry(target: str, argv: list[str]) -> dict:
    module, func = target.split(":")
    code = (
        "import json, sys, io, contextlib\n"
        f"import {module} as m\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        "    try:\n"
        f"        rc = m.{func}({argv!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        f"print(json.dumps({{'rc': rc, 'heavy': [n for n in {HEAVY!r} if n in sys.modules], 'out': out.getvalue()}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", ["loger-replay", "loger-reconstruct", "loger-synth", "loger-train", "loger-batch"])
def test_help_and_bad_arguments_import_nothing_heavy(script):
    target = _console_scripts()[script]
    shown = _run_entry(target, ["--help"])
    assert shown["rc"] == 0 and f"usage: {script}" in shown["out"]
    assert shown["heavy"] == [], f"{script} --help imported {shown['heavy']}"
    bad = _run_entry(target, ["--no-such-option"])
    assert bad["rc"] == 2 and ("unrecognized arguments" in bad["out"] or "required" in bad["out"])
    assert bad["heavy"] == []


def _actions(parser) -> list[tuple]:
    return [(a.option_strings, a.dest, a.default, a.choices, a.help, a.nargs, a.required,
             getattr(a.type, "__name__", a.type), type(a).__name__) for a in parser._actions]


def test_light_parsers_match_the_implementations():
    from loger_core.cli import reconstruct, reconstruct_args
    from loger_core.training import train_args
    from loger_core.stream.config import DTYPES
    from loger_core.training.losses import LossWeights

    assert reconstruct.build_parser is reconstruct_args.build_parser  # one parser, no copy
    assert reconstruct_args.DTYPE_NAMES == tuple(DTYPES)
    assert reconstruct_args.AUTO_VOXEL_FRACTION == reconstruct.AUTO_VOXEL_FRACTION
    weights = {f.name: f.default for f in dataclasses.fields(LossWeights)}
    assert {k: weights[k] for k in train_args.LOSS_DEFAULTS} == train_args.LOSS_DEFAULTS


def test_light_entry_runs_the_implementation(tmp_path):
    """The light entry hands the same argv to the real main (here: loger-synth writing a tiny sequence)."""
    target = _console_scripts()["loger-synth"]
    done = _run_entry(target, ["--frames", "2", "--size", "24x16", "--out", str(tmp_path / "s"), "--quiet",
                               "--device", "cpu"])
    assert done["rc"] == 0 and (tmp_path / "s" / "synth_config.json").is_file()
