"""NodeParams: the YAML file, the ROS declarations in node.py and the stream/map configs agree."""
from __future__ import annotations

import ast
import py_compile
from pathlib import Path

import pytest
import torch
import yaml

from loger_core.model.selection import BUNDLED_CHECKPOINT, BUNDLED_MODEL
from loger_ros.mapping_core import MappingCore
from loger_ros.params import (
    NODE_NAME,
    NodeParams,
    ParamsError,
    load_params_yaml,
    param_specs,
    params_to_yaml,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "loger.yaml"
NODE_PY = REPO / "loger_ros" / "node.py"


def _yaml_params() -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    return doc[NODE_NAME]["ros__parameters"]


def test_yaml_has_exactly_the_dataclass_parameters_with_ros_types():
    values = _yaml_params()
    specs = {s.name: s for s in param_specs()}
    assert set(values) == set(specs)
    for name, value in values.items():
        # rclpy types parameters by the YAML scalar: a float written as '2' would be an integer.
        assert type(value) is specs[name].type_, f"{name}: YAML {value!r} is {type(value).__name__}"


def test_yaml_loads_into_valid_params():
    params = load_params_yaml(CONFIG)
    assert params.to_dict() == {name: value for name, value in _yaml_params().items()}


def test_every_parameter_is_documented_and_its_default_valid():
    for spec in param_specs():
        assert len(spec.description) > 20, spec.name
        assert spec.validate(spec.default) == spec.default
        if spec.choices:
            assert spec.default in spec.choices


def test_params_to_yaml_round_trips(tmp_path):
    custom = NodeParams(image_topic="/cam/image/compressed", window_size=16, overlap_size=2,
                        voxel_size=0.1, publish_tf=False, scale_source="fixed", scale_factor=2.5)
    path = tmp_path / "p.yaml"
    path.write_text(params_to_yaml(custom))
    assert load_params_yaml(path) == custom


def test_overrides_and_use_sim_time_are_accepted(tmp_path):
    path = tmp_path / "p.yaml"
    text = params_to_yaml().replace("  ros__parameters:\n", "  ros__parameters:\n    use_sim_time: true\n")
    path.write_text(text)
    assert load_params_yaml(path, overrides={"window_size": 8}).window_size == 8


@pytest.mark.parametrize(
    "values, message",
    [
        ({"window_size": -1}, "window_size -1 must be >= 0"),
        ({"window_size": 8.0}, "window_size 8.0 must be an integer"),
        ({"voxel_size": "big"}, "voxel_size 'big' must be a finite number"),
        ({"voxel_size": float("nan")}, "voxel_size nan must be a finite number"),
        ({"tf_mode": "map_to_base"}, "tf_mode 'map_to_base' must be one of"),
        ({"publish_tf": 1}, "publish_tf 1 must be a bool"),
        ({"window_size": 32, "overlap_size": 32}, "overlap_size 32 must be < window_size 32"),
        ({"shutdown_partial_window": "keep"}, "shutdown_partial_window 'keep' must be one of"),
        ({"odom_frame": "map"}, "must be three different frames"),
        ({"base_frame": "/base_link"}, "base_frame '/base_link' must be a non-empty frame id"),
        ({"input_width": 500, "input_height": 280}, "input_width 500 must be a multiple of the patch size 14"),
        ({"input_height": 280}, "input_width 0 and input_height 280 must both be 0"),
        ({"scale_source": "depth"}, "scale_source 'depth' needs depth_topic"),
        ({"no_such_parameter": 1}, "unknown parameter(s) ['no_such_parameter']"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ParamsError) as err:
        NodeParams.from_mapping(values)
    assert message in str(err.value)


def test_bad_parameter_files(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params_yaml(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("loger: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params_yaml(broken)
    other = tmp_path / "other.yaml"
    other.write_text("other_node:\n  ros__parameters:\n    window_size: 4\n")
    with pytest.raises(ParamsError, match="no 'loger: ros__parameters:' mapping"):
        load_params_yaml(other)


def test_stream_and_map_configs_follow_the_parameters():
    p = NodeParams(checkpoint_path="~/w.safetensors", model_config="tiny", window_size=12, overlap_size=2,
                   reset_every=3, provisional_every=2, input_width=0, input_height=0, alignment="sim3",
                   confidence_threshold=0.3, depth_topic="/depth", voxel_size=0.2, max_map_points=1000)
    cfg = p.stream_config()
    assert (cfg.model, cfg.window_size, cfg.overlap_size, cfg.reset_every, cfg.provisional_every) == (
        "tiny", 12, 2, 3, 2)
    assert cfg.resolution is None and cfg.alignment == "sim3" and cfg.conf_threshold == 0.3
    assert cfg.checkpoint.endswith("/w.safetensors") and not cfg.checkpoint.startswith("~")
    assert cfg.scale.source == "depth"  # 'auto' picks the depth topic
    assert NodeParams(odometry_topic="/wheel").resolved_scale_source == "odometry"
    assert NodeParams().resolved_scale_source == "none"
    m = p.map_config()
    assert (m.voxel_size, m.max_points) == (0.2, 1000)


def test_yaml_is_generated_from_the_dataclass():
    # Regenerate with: python -c "from loger_ros.params import params_to_yaml; print(params_to_yaml(), end='')" > config/loger.yaml
    assert CONFIG.read_text() == params_to_yaml()


def test_no_checkpoint_means_the_bundled_small_weights():
    p = NodeParams()
    selection = p.model_selection()
    assert BUNDLED_MODEL == "small" and (selection.model, selection.weights) == ("small", "bundled")
    assert Path(selection.checkpoint) == BUNDLED_CHECKPOINT and BUNDLED_CHECKPOINT.is_file()
    cfg = p.stream_config()
    assert cfg.model == "small" and cfg.checkpoint == str(BUNDLED_CHECKPOINT)
    assert "BUNDLED DEMO MODEL" in selection.warning() and "NOT fit for navigation" in selection.warning()
    synthetic = NodeParams(allow_synthetic_weights=True).stream_config()
    assert synthetic.model == "small" and synthetic.checkpoint is None


def test_a_full_model_without_checkpoint_is_refused():
    for model in ("loger", "loger_star"):
        with pytest.raises(ParamsError, match=f"model_config '{model}'.*needs a checkpoint"):
            NodeParams(model_config=model).stream_config()
    assert NodeParams(model_config="loger", allow_synthetic_weights=True).stream_config().checkpoint is None


def test_explicit_checkpoint_and_auto_model(tmp_path):
    assert NodeParams(checkpoint_path="~/latest.pt").stream_config().model == "loger_star"
    assert NodeParams(checkpoint_path="~/latest.pt", model_config="loger").stream_config().model == "loger"
    # 'auto' reads the model from the JSON beside a .safetensors file (as the bundled weights have).
    assert NodeParams(checkpoint_path=str(BUNDLED_CHECKPOINT)).model_selection().model == "small"
    selection = NodeParams(checkpoint_path=str(BUNDLED_CHECKPOINT)).model_selection()
    assert selection.weights == "checkpoint" and selection.warning() is None


@pytest.mark.parametrize("model, checkpoint, resolution, pixel_limit, window", [
    ("auto", "", None, 10_000, 16),
    ("small", "", None, 10_000, 16),
    ("tiny", "/w/tiny.safetensors", None, 10_000, 16),
    ("loger", "/w/latest.pt", (504, 280), 255_000, 32),
    ("loger_star", "/w/latest.pt", (504, 280), 255_000, 32),
])
def test_input_size_and_window_follow_the_model_when_left_at_0(model, checkpoint, resolution, pixel_limit, window):
    cfg = NodeParams(model_config=model, checkpoint_path=checkpoint).stream_config()
    assert (cfg.resolution, cfg.pixel_limit, cfg.window_size, cfg.overlap_size) == (resolution, pixel_limit, window, 3)
    # Set by hand, they win.
    cfg = NodeParams(model_config=model, checkpoint_path=checkpoint, input_width=140, input_height=84,
                     window_size=8, overlap_size=2).stream_config()
    assert (cfg.resolution, cfg.window_size, cfg.overlap_size) == ((140, 84), 8, 2)


def test_default_input_is_cpu_sized_for_a_320x240_camera():
    from loger_core.stream.preprocess import demo_resolution

    cfg = NodeParams().stream_config()
    assert demo_resolution(320, 240, cfg.pixel_limit, 14) == (112, 84)


def test_overlap_is_checked_against_the_model_window():
    with pytest.raises(ParamsError, match="overlap_size 16 must be < the window size 16"):
        NodeParams(overlap_size=16).stream_config()


# ------------------------------------------------------------------ node.py (not importable here)
def _node_tree() -> ast.Module:
    return ast.parse(NODE_PY.read_text())


def test_node_module_compiles_and_imports_rclpy_at_top():
    py_compile.compile(str(NODE_PY), doraise=True)
    top_imports = [n for n in _node_tree().body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top_imports if isinstance(n, ast.Import) for a in n.names}
    assert "rclpy" in names


def test_node_declares_every_parameter_from_the_specs():
    tree = _node_tree()
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and isinstance(n.iter, ast.Call)
             and getattr(n.iter.func, "id", None) == "param_specs"]
    declared = [c for loop in loops for c in ast.walk(loop) if isinstance(c, ast.Call)
                and getattr(c.func, "attr", None) == "declare_parameter"]
    assert declared, "node.py must call declare_parameter for every spec of param_specs()"
    call = declared[0]
    assert ast.unparse(call.args[0]) == "spec.name" and ast.unparse(call.args[1]) == "spec.default"


def _attributes_of(tree: ast.AST, owner: str) -> set[str]:
    """Names X used as `self.<owner>.X`."""
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == owner and getattr(node.value.value, "id", None) == "self"):
            found.add(node.attr)
    return found


def test_node_only_uses_names_that_exist_in_the_core_and_params():
    tree = _node_tree()
    params_used = _attributes_of(tree, "params")
    assert params_used, "node.py reads its parameters through self.params"
    assert params_used <= {s.name for s in param_specs()} | {n for n in dir(NodeParams) if not n.startswith("_")}
    core_used = _attributes_of(tree, "core")
    assert {"on_image", "on_camera_info", "start", "stop_intake", "stop", "finish", "save_map", "diagnostics"} <= core_used
    core_trees = [ast.parse((REPO / "loger_ros" / "mapping_core.py").read_text()),
                  ast.parse((REPO / "loger_core" / "pipeline" / "core.py").read_text())]
    instance_attributes = {t.attr for core_tree in core_trees for n in ast.walk(core_tree)
                           if isinstance(n, (ast.Assign, ast.AnnAssign))
                           for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                           if isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self"}
    missing = {name for name in core_used if not hasattr(MappingCore, name) and name not in instance_attributes}
    assert not missing, f"node.py calls MappingCore members that do not exist: {missing}"


def test_node_dispatches_every_channel():
    from loger_ros.publications import CHANNELS

    text = NODE_PY.read_text()
    for channel in CHANNELS:
        assert f'"{channel}"' in text, f"node.py does not route channel {channel!r}"


def test_model_choices_are_the_model_configs():
    from loger_core.model import CONFIGS
    from loger_core.model.selection import MODEL_CHOICES, MODEL_DEFAULTS

    assert set(MODEL_CHOICES) == {"auto", *CONFIGS} and set(MODEL_DEFAULTS) == set(CONFIGS)


def test_map_device_follows_the_model_and_is_checked():
    assert NodeParams(device="cpu").resolved_map_device() == "cpu"  # 'auto' on a CPU model: the numpy map
    if torch.cuda.is_available():
        assert NodeParams(device="cpu", map_device="cuda:0").resolved_map_device() == "cuda:0"
    else:  # a clear refusal at start-up, not a CUDA error at the first fused window
        with pytest.raises(ParamsError, match="map_device 'cuda:1' but CUDA is not available"):
            NodeParams(device="cpu", map_device="cuda:1").resolved_map_device()
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ParamsError, match="map_device"):
            NodeParams(map_device=bad)
