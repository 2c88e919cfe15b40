"""Launch ``loger_node`` with ``config/loger.yaml`` and optional overrides.

    ros2 launch loger_ros loger.launch.py checkpoint:=~/ckpts/LoGeR_star/latest.pt \
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info device:=cuda

Every override argument left empty keeps the value of ``params_file`` (whose model, input size
and window default to the bundled small demo model sized for a CPU when no checkpoint is given);
``sigterm_timeout`` is how long the node gets after SIGINT (Ctrl-C) to save its map before launch
escalates to SIGTERM (it covers the node's ``shutdown_timeout_s``, 10 s by default). ``odom_out``,
``path_out``, ``cloud_out`` and ``map_out`` remap the node's private outputs. With
``publish_camera_tf:=true`` two static transforms describe the camera mount:
``base_frame -> camera_link`` (``camera_x/y/z/roll/pitch/yaw``, REP-103 body axes) and
``camera_link -> camera_frame`` (the fixed optical rotation, z forward / x right / y down).
``lifecycle:=true`` runs the managed node ``loger_lifecycle_node`` instead (configure, activate).
``namespace:=robot1`` runs it as ``/robot1/loger`` (outputs ``/robot1/loger/odom`` ...; absolute
input topics such as the default ``/camera/image_raw`` stay as they are: point them at the robot's).
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# launch argument -> node parameter it overrides (empty argument = keep the parameter file's value).
PARAMETER_ARGUMENTS = {
    "image_topic": "image_topic",
    "image_transport": "image_transport",
    "camera_info_topic": "camera_info_topic",
    "depth_topic": "depth_topic",
    "odometry_topic": "odometry_topic",
    "model": "model_config",
    "checkpoint": "checkpoint_path",
    "device": "device",
    "dtype": "dtype",
    "base_frame": "base_frame",
    "camera_frame": "camera_frame",
    "tf_mode": "tf_mode",
    "output_dir": "output_dir",
}
# launch argument -> private output topic it remaps (empty argument = keep ~/name).
OUTPUT_REMAP_ARGUMENTS = {"odom_out": "~/odom", "path_out": "~/path", "cloud_out": "~/cloud", "map_out": "~/map"}
# Seconds between SIGINT and SIGTERM (launch's default is 5): the node's shutdown_timeout_s plus saving.
SIGTERM_TIMEOUT_S = "20"
# Arguments whose value is a boolean node parameter.
BOOLEAN_PARAMETER_ARGUMENTS = {"use_sim_time": "use_sim_time", "publish_tf": "publish_tf", "lossless": "lossless"}

ARGUMENT_HELP = {
    "image_topic": "camera image topic (raw or compressed)",
    "image_transport": "auto, raw or compressed",
    "camera_info_topic": "CameraInfo topic",
    "depth_topic": "metric depth topic for scale",
    "odometry_topic": "external odometry topic for scale",
    "model": "auto, loger, loger_star, small, small_deep or tiny",
    "checkpoint": "path of the model weights (empty everywhere: the bundled small demo weights)",
    "device": "auto, cpu, cuda, cuda:N",
    "dtype": "auto, float32, bfloat16, float16",
    "base_frame": "robot body frame",
    "camera_frame": "camera optical frame (default: the image header's frame_id)",
    "tf_mode": "odom_to_base or map_to_odom",
    "output_dir": "folder of ~/save_map",
    "use_sim_time": "true to follow /clock (bag replay)",
    "publish_tf": "broadcast TF (true/false)",
    "lossless": "true: pause the rosbag2 player instead of dropping frames (replay.launch.py sets it)",
    "odom_out": "remap ~/odom to this topic",
    "path_out": "remap ~/path to this topic",
    "cloud_out": "remap ~/cloud to this topic",
    "map_out": "remap ~/map to this topic",
}


NODE_NAME = "loger"


def _parameter_section(path: str) -> dict:
    """The node's ``ros__parameters`` of a parameter file. A namespaced node gets them as a mapping:
    rcl matches the file's ``loger:`` key against the node's full name, and ``/robot1/loger`` would
    silently start with the built-in defaults instead."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    for key in (NODE_NAME, "/" + NODE_NAME, "/**"):
        section = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
    raise RuntimeError(f"parameter file {path!r} has no '{NODE_NAME}: ros__parameters:' mapping")


def _node(context, *args, **kwargs):
    overrides = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context)
        if value != "":
            overrides[parameter] = value
    for argument, parameter in BOOLEAN_PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context).strip().lower()
        if value != "":
            overrides[parameter] = value in ("true", "1", "yes")
    remappings = []
    for argument, topic in OUTPUT_REMAP_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context)
        if value != "":
            remappings.append((topic, value))
    managed = LaunchConfiguration("lifecycle").perform(context).strip().lower() in ("true", "1", "yes")
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    params_file = LaunchConfiguration("params_file")
    parameters = [_parameter_section(params_file.perform(context)) if namespace else params_file, overrides]
    return [
        Node(
            package="loger_ros",
            # The managed variant waits in 'unconfigured' for configure / activate (lifecycle_node.py).
            executable="loger_lifecycle_node" if managed else "loger_node",
            name=NODE_NAME,
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=remappings,
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            sigterm_timeout=LaunchConfiguration("sigterm_timeout"),
        )
    ]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("loger_ros"), "config", "loger.yaml"])
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS 2 parameter file"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node (e.g. robot1: /robot1/loger/odom ...)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="run the managed node (loger_lifecycle_node): it maps only after "
                                          "configure and activate, e.g. from Nav2's lifecycle_manager"),
        DeclareLaunchArgument("sigterm_timeout", default_value=SIGTERM_TIMEOUT_S,
                              description="seconds the node gets after SIGINT to save its map before SIGTERM"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description=ARGUMENT_HELP["use_sim_time"]),
        DeclareLaunchArgument("publish_tf", default_value="", description=ARGUMENT_HELP["publish_tf"]),
        DeclareLaunchArgument("lossless", default_value="", description=ARGUMENT_HELP["lossless"]),
        DeclareLaunchArgument("publish_camera_tf", default_value="false",
                              description="publish the static camera mount below"),
        DeclareLaunchArgument("mount_base_frame", default_value="base_link",
                              description="parent frame of the camera mount"),
        DeclareLaunchArgument("camera_link_frame", default_value="camera_link",
                              description="camera body frame (x forward, z up)"),
        DeclareLaunchArgument("camera_optical_frame", default_value="camera_optical_frame",
                              description="camera optical frame (must be the image header's frame_id)"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=f"{ARGUMENT_HELP[name]} (empty: params_file)")
        for name in PARAMETER_ARGUMENTS
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=f"{ARGUMENT_HELP[name]} (empty: no remap)")
        for name in OUTPUT_REMAP_ARGUMENTS
    ]
    arguments += [
        DeclareLaunchArgument(f"camera_{axis}", default_value="0.0", description=f"camera mount {axis} (m or rad)")
        for axis in ("x", "y", "z", "roll", "pitch", "yaw")
    ]
    with_mount = IfCondition(LaunchConfiguration("publish_camera_tf"))
    mount = Node(
        package="tf2_ros",
        executable="static_transform_publisher",
        name="loger_camera_mount",
        condition=with_mount,
        arguments=[
            "--x", LaunchConfiguration("camera_x"), "--y", LaunchConfiguration("camera_y"),
            "--z", LaunchConfiguration("camera_z"), "--roll", LaunchConfiguration("camera_roll"),
            "--pitch", LaunchConfiguration("camera_pitch"), "--yaw", LaunchConfiguration("camera_yaw"),
            "--frame-id", LaunchConfiguration("mount_base_frame"),
            "--child-frame-id", LaunchConfiguration("camera_link_frame"),
        ],
    )
    # REP-103 body axes (x forward, z up) -> optical axes (z forward, x right, y down).
    optical = Node(
        package="tf2_ros",
        executable="static_transform_publisher",
        name="loger_camera_optical",
        condition=with_mount,
        arguments=[
            "--roll", "-1.5707963267948966", "--pitch", "0", "--yaw", "-1.5707963267948966",
            "--frame-id", LaunchConfiguration("camera_link_frame"),
            "--child-frame-id", LaunchConfiguration("camera_optical_frame"),
        ],
    )
    return LaunchDescription(arguments + [mount, optical, OpaqueFunction(function=_node)])
