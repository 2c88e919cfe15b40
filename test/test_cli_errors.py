"""Every CLI, bad inputs: exit 2, a few lines naming the file and the reason, no traceback and no
output folder left behind (in-process: the entry points' own ``main``)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from loger_core.io.image_folder_writer import write_image_folder
    from loger_core.synthetic import SynthConfig, render_frames
    from loger_core.synthetic.rosbag_writer import write_rosbag

    root = tmp_path_factory.mktemp("inputs")
    frames = render_frames(SynthConfig(frames=3, width=64, height=48, fps=10.0, seed=1), device="cpu")
    write_image_folder(root / "seq", frames, fps=10.0)
    write_rosbag(root / "bag", frames, storage="mcap")
    (root / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    (root / "garbage.pt").write_bytes(b"not a pickle either")
    (root / "a_file").write_text("x")
    (root / "notabag.mcap").write_bytes(b"\x89MCAP0\r\n truncated")
    (root / "garbage.loger.safetensors").write_bytes(b"nonsense")
    return root


def _run(tool: str, argv: list[str]) -> int:
    if tool == "replay":
        from loger_ros.replay import main
    elif tool == "reconstruct":
        from loger_core.cli.reconstruct import main
    elif tool == "synth":
        from loger_core.synthetic.cli import main
    else:
        pytest.importorskip("ray")
        from loger_ros.batch.cli import main
    try:
        return main(argv)
    except SystemExit as err:  # argparse-style exits
        return err.code


FAST = ["--model", "tiny", "--device", "cpu"]
# tool, argv ({d}: the inputs folder, {out}: the output folder that must not be left behind), what stderr names
CASES = [
    ("replay", ["{d}/bag", "-o", "{out}", "--checkpoint", "{d}/missing.pt", *FAST], ["missing.pt", "not found"]),
    ("replay", ["{d}/bag", "-o", "{out}", "--checkpoint", "{d}/garbage.safetensors", *FAST],
     ["garbage.safetensors", "not a readable safetensors file"]),
    ("replay", ["{d}/bag", "-o", "{out}", "--checkpoint", "{d}/garbage.pt", *FAST], ["garbage.pt"]),
    ("replay", ["{d}/nothing", "-o", "{out}", "--synthetic-weights", *FAST], ["nothing", "does not exist"]),
    ("replay", ["{d}/notabag.mcap", "-o", "{out}", "--synthetic-weights", *FAST], ["notabag.mcap", "metadata.yaml"]),
    ("replay", ["{d}/bag", "-o", "{d}/a_file", "--synthetic-weights", *FAST], ["a_file", "not a folder"]),
    ("replay", ["{d}/bag", "-o", "{out}", "--synthetic-weights", "--resume", "{d}/missing.loger.safetensors", *FAST],
     ["missing.loger.safetensors", "does not exist"]),
    ("replay", ["{d}/bag", "-o", "{out}", "--synthetic-weights", "--resume", "{d}/garbage.loger.safetensors", *FAST],
     ["garbage.loger.safetensors", "garbage"]),
    ("reconstruct", ["{d}/seq", "--out", "{out}", "--checkpoint", "{d}/missing.pt", *FAST], ["missing.pt", "not found"]),
    ("reconstruct", ["{d}/seq", "--out", "{out}", "--checkpoint", "{d}/garbage.safetensors", *FAST],
     ["garbage.safetensors", "not a readable safetensors file"]),
    ("reconstruct", ["{d}/bag/bag.mcap", "--out", "{out}", "--synthetic-weights", *FAST], ["bag.mcap", "loger-replay"]),
    ("reconstruct", ["{d}/nothing", "--out", "{out}", "--synthetic-weights", *FAST], ["nothing"]),
    ("reconstruct", ["{d}/seq", "--out", "{d}/a_file", "--synthetic-weights", *FAST], ["a_file", "not a folder"]),
    ("reconstruct", ["{d}/seq", "--out", "{out}", "--synthetic-weights", "--resume", "{d}/missing.loger.safetensors",
                     *FAST], ["missing.loger.safetensors", "does not exist"]),
    ("synth", ["--out", "{d}/a_file", "--frames", "2", "--size", "16x12", "--quiet"], ["a_file", "not a folder"]),
    ("batch", ["{d}/bag", "--out", "{out}", "--checkpoint", "{d}/garbage.safetensors", "--no-progress"],
     ["garbage.safetensors", "not a readable safetensors file"]),
    ("batch", ["{d}/bag", "--out", "{out}", "--checkpoint", "{d}/missing.pt", "--no-progress"],
     ["missing.pt", "does not exist"]),
]


@pytest.mark.parametrize("tool,argv,names", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_a_short_reason_and_no_output_folder(inputs, tmp_path, capsys, tool, argv, names):
    out = tmp_path / "out"
    argv = [a.format(d=inputs, out=out) for a in argv]
    code = _run(tool, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "WARNING" not in line and "[INFO]" not in line]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) <= 3, err
    for name in names:
        assert name in err, err
    assert not out.exists(), f"{tool} left {out} behind"
    assert Path(inputs / "a_file").is_file()
