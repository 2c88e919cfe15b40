"""package.xml is a valid format-3 ament_python manifest naming what the node imports."""
import xml.etree.ElementTree as ET


def test_manifest_declares_runtime_dependencies(fixtures_dir):
    root = ET.parse(fixtures_dir.parents[1] / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "loger_ros"
    assert root.find("export").findtext("build_type") == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    # ROS packages the node and launch files use, and rosdep keys (rosdistro rosdep/python.yaml)
    # for the Python libraries; python3-pytorch-pip is end-of-life there, python3-torch is current.
    assert {"rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "tf2_ros", "std_srvs", "cv_bridge",
            "diagnostic_msgs", "launch_ros", "python3-numpy", "python3-yaml", "python3-opencv",
            "python3-torch", "python3-open3d-pip", "python3-rosbags-pip"} <= deps
    assert "python3-pytorch-pip" not in deps


def test_numpy_and_python_ranges_cover_the_ros_distros(fixtures_dir):
    import ast
    import re

    repo = fixtures_dir.parents[1]
    root = ET.parse(repo / "package.xml").getroot()
    numpy = next(e for e in root.findall("exec_depend") if e.text == "python3-numpy")
    assert numpy.get("version_gte") == "1.21"  # Humble's numpy
    setup = ast.parse((repo / "setup.py").read_text())
    keywords = {k.arg: k.value for c in ast.walk(setup) if isinstance(c, ast.Call)
                and getattr(c.func, "id", None) == "setup" for k in c.keywords}
    assert ast.literal_eval(keywords["python_requires"]) == ">=3.10"
    spec = next(r for r in ast.literal_eval(keywords["install_requires"]) if r.startswith("numpy"))
    low, high = re.fullmatch(r"numpy>=([\d.]+),<(\d+)", spec).groups()
    assert low == "1.21" and int(high) >= 3  # 1.21 (Humble), 1.26 (Jazzy) and our pinned 2.x
    pinned = re.search(r"^numpy==([\d.]+)", (repo / "requirements-np126.txt").read_text(), re.M).group(1)
    assert pinned.startswith("1.26.")


def test_sources_parse_as_python_3_10(fixtures_dir):
    """Humble's Python is 3.10: no syntax newer than that in what the robot runs or tests."""
    import ast

    repo = fixtures_dir.parents[1]
    files = [p for d in ("loger_core", "loger_ros", "launch", "test", "bench") for p in (repo / d).rglob("*.py")]
    files.append(repo / "setup.py")
    assert len(files) > 50
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
