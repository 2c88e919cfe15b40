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
