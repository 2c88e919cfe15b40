"""Launch files (parsed with ast: launch/launch_ros are not installed here) and the RViz config (YAML)
name only topics, frames and parameters that the node really has; setup.py installs them."""
from __future__ import annotations

import ast
import py_compile
from pathlib import Path

import pytest
import yaml

from loger_ros.params import NODE_NAME, OUTPUT_TOPICS, READY_MESSAGE, NodeParams, param_specs
from loger_ros.replay import output_topic_names

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "loger.launch.py"
REPLAY_LAUNCH = REPO / "launch" / "replay.launch.py"
RVIZ = REPO / "rviz" / "loger.rviz"
PARAMETERS = {s.name for s in param_specs()}
DEFAULTS = NodeParams()


def _tree(path: Path) -> ast.Module:
    py_compile.compile(str(path), doraise=True)
    return ast.parse(path.read_text())


def _module_constant(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"module constant {name} not found")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords}


def _declared_arguments(tree: ast.Module) -> set[str]:
    """Names of DeclareLaunchArgument calls: literal names plus those of comprehensions over constants."""
    names = set()
    for call in _calls(tree, "DeclareLaunchArgument"):
        first = call.args[0]
        if isinstance(first, ast.Constant):
            names.add(first.value)
        elif isinstance(first, ast.JoinedStr):  # f"camera_{axis}" over a literal tuple
            comp = next(c for c in ast.walk(tree) if isinstance(c, ast.ListComp) and call in ast.walk(c))
            for value in ast.literal_eval(comp.generators[0].iter):
                names.add(ast.unparse(first).replace("{axis}", value)[2:-1])
        elif isinstance(first, ast.Name):  # `for name in CONSTANT`
            comp = next(c for c in ast.walk(tree) if isinstance(c, ast.ListComp) and call in ast.walk(c))
            iterable = comp.generators[0].iter
            constant = _module_constant(tree, iterable.id)
            excluded = set()
            for cond in comp.generators[0].ifs:
                excluded |= set(ast.literal_eval(cond.comparators[0]))
            names |= set(constant) - excluded
    return names


def test_loger_launch_maps_arguments_onto_real_parameters():
    tree = _tree(LAUNCH)
    mapping = _module_constant(tree, "PARAMETER_ARGUMENTS")
    booleans = _module_constant(tree, "BOOLEAN_PARAMETER_ARGUMENTS")
    assert set(mapping.values()) <= PARAMETERS
    assert set(booleans.values()) <= PARAMETERS | {"use_sim_time"}
    for parameter in booleans.values():
        assert parameter == "use_sim_time" or isinstance(getattr(DEFAULTS, parameter), bool)
    declared = _declared_arguments(tree)
    assert set(mapping) | set(booleans) | {"params_file", "publish_camera_tf"} <= declared
    remaps = _module_constant(tree, "OUTPUT_REMAP_ARGUMENTS")
    assert set(remaps.values()) <= set(OUTPUT_TOPICS.values())  # only topics the node publishes
    assert set(remaps) <= declared
    assert set(_module_constant(tree, "ARGUMENT_HELP")) == set(mapping) | set(booleans) | set(remaps)
    assert {"checkpoint", "device", "image_topic", "camera_info_topic"} <= declared


def _executables(node_keywords: dict) -> set:
    """The executable names a launch ``Node(...)`` may run (a literal, or the literals of a conditional)."""
    return {n.value for n in ast.walk(node_keywords["executable"]) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_loger_launch_starts_the_node_with_the_yaml_and_the_camera_mount():
    tree = _tree(LAUNCH)
    nodes = [_keywords(c) for c in _calls(tree, "Node")]
    loger = [n for n in nodes if "loger_node" in _executables(n)]
    assert len(loger) == 1
    # lifecycle:=true runs the managed node instead, a console script of this package.
    assert _executables(loger[0]) == {"loger_node", "loger_lifecycle_node"}
    assert "lifecycle" in _declared_arguments(tree)
    scripts = (REPO / "setup.py").read_text()
    assert "loger_lifecycle_node = loger_ros.lifecycle_node:main" in scripts and "loger_node = loger_ros.node:main" in scripts
    assert _module_constant(tree, "NODE_NAME") == NODE_NAME  # the YAML key must match the node name
    assert ast.unparse(loger[0]["name"]) == "NODE_NAME"
    node_fn = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_node")
    assert "params_file" in ast.unparse(node_fn) and ast.unparse(loger[0]["parameters"]) == "parameters"
    assert "namespace" in _declared_arguments(tree)
    yaml_path = [ast.literal_eval(a) for c in _calls(tree, "PathJoinSubstitution") for a in c.args[0].elts[1:]]
    assert ["config", "loger.yaml"] in [yaml_path[i:i + 2] for i in range(len(yaml_path))]
    assert (REPO / "config" / "loger.yaml").is_file()
    static = [n for n in nodes if _executables(n) == {"static_transform_publisher"}]
    assigned = {t.id: ast.unparse(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    conditions = [assigned.get(ast.unparse(n["condition"]), ast.unparse(n["condition"])) for n in static]
    assert len(static) == 2 and all("IfCondition(LaunchConfiguration('publish_camera_tf'))" == c for c in conditions)
    # The mount hangs off the node's base frame by default.
    defaults = {ast.literal_eval(c.args[0]): _keywords(c).get("default_value") for c in _calls(tree, "DeclareLaunchArgument")
                if isinstance(c.args[0], ast.Constant)}
    assert ast.literal_eval(defaults["mount_base_frame"]) == DEFAULTS.base_frame


def test_replay_launch_plays_with_clock_and_runs_the_node_in_sim_time():
    tree = _tree(REPLAY_LAUNCH)
    text = REPLAY_LAUNCH.read_text()
    play = [c for c in _calls(tree, "ExecuteProcess")]
    assert play and "play_command(" in ast.unparse(tree)
    forwarded = set(_module_constant(tree, "FORWARDED_ARGUMENTS"))
    launch_args = _declared_arguments(_tree(LAUNCH))
    assert forwarded <= launch_args  # every forwarded argument exists in loger.launch.py
    assert forwarded <= _declared_arguments(tree) | {"params_file", "publish_camera_tf"}
    assert "bag" in _declared_arguments(tree)
    assert "'use_sim_time': 'true'" in ast.unparse(tree) and "loger.launch.py" in text
    rviz = [_keywords(c) for c in _calls(tree, "Node") if ast.literal_eval(_keywords(c)["executable"]) == "rviz2"]
    assert rviz and "use_sim_time" in ast.unparse(rviz[0]["parameters"])
    assert "'rviz', 'loger.rviz'" in ast.unparse(tree)


def _function(tree: ast.Module, name: str):
    """A pure module-level function of a launch file, compiled on its own (launch is not installed here)."""
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(REPLAY_LAUNCH), "exec"), namespace)
    return namespace[name]


def test_a_namespaced_node_gets_the_parameter_file_section_itself(tmp_path):
    import yaml

    from loger_ros.params import NodeParams, params_to_yaml

    fn = next(n for n in _tree(LAUNCH).body if isinstance(n, ast.FunctionDef) and n.name == "_parameter_section")
    scope: dict = {"yaml": yaml, "NODE_NAME": NODE_NAME}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(LAUNCH), "exec"), scope)
    section = scope["_parameter_section"]
    path = tmp_path / "params.yaml"
    path.write_text(params_to_yaml(NodeParams(input_width=84, input_height=56)))
    values = section(str(path))
    assert NodeParams.from_mapping(values) == NodeParams(input_width=84, input_height=56)
    assert section(str(REPO / "config" / "loger.yaml")) == NodeParams().to_dict()
    path.write_text("other_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(RuntimeError, match="no 'loger: ros__parameters:'"):
        section(str(path))


def test_replay_launch_passes_delay_only_when_positive():
    # `ros2 bag play --delay 0.0` is refused (positive_float): the player would exit with code 2.
    play_command = _function(_tree(REPLAY_LAUNCH), "play_command")
    assert play_command("/b", "1.0", "0.0") == ["ros2", "bag", "play", "/b", "--clock", "--rate", "1.0"]
    assert play_command("/b", "0.5", "0") == ["ros2", "bag", "play", "/b", "--clock", "--rate", "0.5"]
    assert play_command("/b", "1.0", "0.01")[-2:] == ["--delay", "0.01"]
    assert float(_module_constant(_tree(REPLAY_LAUNCH), "DEFAULT_START_DELAY_S")) > 0


def test_replay_launch_starts_playback_when_the_node_is_ready():
    tree = _tree(REPLAY_LAUNCH)
    assert _module_constant(tree, "READY_MESSAGE") == READY_MESSAGE
    assert _calls(tree, "OnProcessIO") and _calls(tree, "RegisterEventHandler")
    node_py = (REPO / "loger_ros" / "node.py").read_text()
    assert 'f"{READY_MESSAGE}: mapping' in node_py  # the node logs it once ready


def test_launch_gives_the_node_time_to_save_the_map():
    tree = _tree(LAUNCH)
    node = next(_keywords(c) for c in _calls(tree, "Node") if "loger_node" in _executables(_keywords(c)))
    assert ast.unparse(node["sigterm_timeout"]) == "LaunchConfiguration('sigterm_timeout')"
    assert "sigterm_timeout" in _declared_arguments(tree)
    assert float(_module_constant(tree, "SIGTERM_TIMEOUT_S")) >= DEFAULTS.shutdown_timeout_s + 5


# ------------------------------------------------------------------ RViz
def _displays() -> list[dict]:
    return yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Displays"]


def test_rviz_config_names_only_topics_and_frames_of_the_node():
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == DEFAULTS.map_frame
    node_topics = set(output_topic_names().values())
    for display in _displays():
        topic = display.get("Topic", {}).get("Value")
        if topic is not None:
            assert topic in node_topics | {DEFAULTS.image_topic}, f"{display['Name']}: unknown topic {topic}"
    frames = {DEFAULTS.map_frame, DEFAULTS.odom_frame, DEFAULTS.base_frame}

    def tree_frames(tree: dict) -> set:
        return set(tree) | {f for child in tree.values() if isinstance(child, dict) for f in tree_frames(child)}

    tf = next(d for d in _displays() if d["Class"] == "rviz_default_plugins/TF")
    assert tree_frames(tf["Tree"]) <= frames
    assert manager["Views"]["Current"]["Target Frame"] in frames
    assert next(d for d in _displays() if d["Class"].endswith("/Grid"))["Reference Frame"] in frames


def test_rviz_shows_map_window_odometry_path_tf_and_camera():
    by_topic = {d.get("Topic", {}).get("Value"): d for d in _displays()}
    topics = output_topic_names()
    classes = {d["Class"] for d in _displays()}
    assert {"rviz_default_plugins/PointCloud2", "rviz_default_plugins/Odometry", "rviz_default_plugins/Path",
            "rviz_default_plugins/TF", "rviz_default_plugins/Image"} <= classes
    assert by_topic[topics["map"]]["Class"] == "rviz_default_plugins/PointCloud2"
    # The map is published transient-local; a volatile subscriber would miss the last map.
    assert by_topic[topics["map"]]["Topic"]["Durability Policy"] == "Transient Local"
    assert by_topic[topics["cloud"]]["Class"] == "rviz_default_plugins/PointCloud2"
    assert by_topic[topics["odom"]]["Class"] == "rviz_default_plugins/Odometry"
    assert by_topic[topics["path"]]["Class"] == "rviz_default_plugins/Path"
    # The back end's closed loops, latched like the map.
    assert by_topic[topics["loop_closures"]]["Class"] == "rviz_default_plugins/MarkerArray"
    assert by_topic[topics["loop_closures"]]["Topic"]["Durability Policy"] == "Transient Local"
    # The Nav2 occupancy grid, latched like the map and listed before it (drawn under the cloud).
    assert by_topic[topics["grid"]]["Class"] == "rviz_default_plugins/Map"
    assert by_topic[topics["grid"]]["Topic"]["Durability Policy"] == "Transient Local"
    assert by_topic[topics["grid"]]["Draw Behind"] is True
    names = [d.get("Topic", {}).get("Value") for d in _displays()]
    assert names.index(topics["grid"]) < names.index(topics["map"])
    assert by_topic[DEFAULTS.image_topic]["Class"] == "rviz_default_plugins/Image"
    # Camera drivers publish images best effort (sensor data QoS).
    assert by_topic[DEFAULTS.image_topic]["Topic"]["Reliability Policy"] == "Best Effort"
    for display in (by_topic[topics["map"]], by_topic[topics["cloud"]]):
        assert display["Color Transformer"] == "RGB8"


def test_setup_installs_launch_config_and_rviz_files():
    setup = ast.parse((REPO / "setup.py").read_text())
    data_files = next(k.value for c in _calls(setup, "setup") for k in c.keywords if k.arg == "data_files")
    text = ast.unparse(data_files)
    for pattern, files in (("launch/*.py", [LAUNCH, REPLAY_LAUNCH]), ("config/*.yaml", [REPO / "config" / "loger.yaml"]),
                           ("rviz/*.rviz", [RVIZ])):
        assert pattern in text, f"setup.py data_files lack {pattern}"
        assert all(f.is_file() for f in files)


@pytest.mark.parametrize("path", [LAUNCH, REPLAY_LAUNCH])
def test_launch_files_define_generate_launch_description(path):
    tree = _tree(path)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
