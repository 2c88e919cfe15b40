"""Play a bag with ``--clock`` and map it live: ``ros2 bag play`` + ``loger_node`` (sim time) + RViz.

    ros2 launch loger_ros replay.launch.py bag:=/data/office_bag checkpoint:=~/ckpts/LoGeR_star/latest.pt

Node arguments (``image_topic``, ``checkpoint``, ``device``, ...) are passed on to
``loger.launch.py``; ``use_sim_time`` is forced to true so the node follows the bag's ``/clock``.

Lossless (``lossless:=true``, the default here): every frame of the bag gets mapped, however much
slower than the bag's rate the node is. Instead of dropping the oldest queued frame, the node pauses
the player through its ``/rosbag2_player/pause`` service when half of its ``queue_size`` frames wait
and resumes it (``~/resume``) at a quarter, so the bag plays at the node's pace (``rate`` is then an
upper bound). ``lossless:=false`` plays at ``rate`` like a live camera and drops frames when the node
falls behind.

Playback starts when the node reports that it is ready (model loaded, subscriptions created: the
line starting with ``READY_MESSAGE`` in its output), plus ``start_delay`` seconds so that the
player's publishers and the node's subscriptions have discovered each other; ``--delay`` is passed
to ``ros2 bag play`` only when positive (it refuses 0).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.actions import RegisterEventHandler
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessIO
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Arguments forwarded to loger.launch.py unchanged (empty = the parameter file's value).
FORWARDED_ARGUMENTS = ("params_file", "image_topic", "camera_info_topic", "depth_topic", "model", "checkpoint",
                       "device", "dtype", "camera_frame", "publish_camera_tf", "output_dir", "sigterm_timeout",
                       "lossless")
# loger_ros.params.READY_MESSAGE (a test keeps them equal): the node logs it once it can take frames.
READY_MESSAGE = "loger_node ready"
DEFAULT_START_DELAY_S = "1.0"


def play_command(bag: str, rate: str, start_delay: str) -> list:
    """``ros2 bag play`` arguments; ``--delay`` only when ``start_delay`` is positive."""
    cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", rate]
    if float(start_delay) > 0.0:
        cmd += ["--delay", start_delay]
    return cmd


def _play(context, *args, **kwargs):
    cmd = play_command(LaunchConfiguration("bag").perform(context), LaunchConfiguration("rate").perform(context),
                       LaunchConfiguration("start_delay").perform(context))
    return [ExecuteProcess(cmd=cmd, name="bag_play", output="screen")]


def _start_playback_when_ready():
    started = []

    def on_output(event):
        if started or READY_MESSAGE.encode() not in event.text:
            return None
        started.append(True)
        return [OpaqueFunction(function=_play)]

    return RegisterEventHandler(OnProcessIO(on_stdout=on_output, on_stderr=on_output))


def generate_launch_description():
    share = FindPackageShare("loger_ros")
    arguments = [
        DeclareLaunchArgument("bag", description="bag to play (rosbag2 directory or file)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("start_delay", default_value=DEFAULT_START_DELAY_S,
                              description="seconds between the node being ready and the first message played "
                              "(discovery); 0 = none"),
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "rviz", "loger.rviz"]),
                              description="RViz configuration"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "loger.yaml"]),
                              description="ROS 2 parameter file"),
        DeclareLaunchArgument("publish_camera_tf", default_value="false", description="publish a camera mount"),
        DeclareLaunchArgument("sigterm_timeout", default_value="20",
                              description="seconds the node gets after SIGINT to save its map"),
        DeclareLaunchArgument("lossless", default_value="true",
                              description="map every frame: the node pauses the player instead of dropping frames "
                              "(false: play at rate like a live camera)"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description="passed to loger.launch.py")
        for name in FORWARDED_ARGUMENTS
        if name not in ("params_file", "publish_camera_tf", "sigterm_timeout", "lossless")
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "loger.launch.py"])),
        launch_arguments={
            **{name: LaunchConfiguration(name) for name in FORWARDED_ARGUMENTS},
            "use_sim_time": "true",
        }.items(),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": True}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    return LaunchDescription(arguments + [_start_playback_when_ready(), node, rviz])
