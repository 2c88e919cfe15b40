"""Play a bag with ``--clock`` and map it live: ``ros2 bag play`` + ``loger_node`` (sim time) + RViz.

    ros2 launch loger_ros replay.launch.py bag:=/data/office_bag checkpoint:=~/ckpts/LoGeR_star/latest.pt

Node arguments (``image_topic``, ``checkpoint``, ``device``, ...) are passed on to
``loger.launch.py``; ``use_sim_time`` is forced to true so the node follows the bag's ``/clock``.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Arguments forwarded to loger.launch.py unchanged (empty = the parameter file's value).
FORWARDED_ARGUMENTS = ("params_file", "image_topic", "camera_info_topic", "depth_topic", "model", "checkpoint",
                       "device", "dtype", "camera_frame", "publish_camera_tf")


def generate_launch_description():
    share = FindPackageShare("loger_ros")
    arguments = [
        DeclareLaunchArgument("bag", description="bag to play (rosbag2 directory or file)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("start_delay", default_value="0.0", description="seconds before playback starts"),
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "rviz", "loger.rviz"]),
                              description="RViz configuration"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "loger.yaml"]),
                              description="ROS 2 parameter file"),
        DeclareLaunchArgument("publish_camera_tf", default_value="false", description="publish a camera mount"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description="passed to loger.launch.py")
        for name in FORWARDED_ARGUMENTS if name not in ("params_file", "publish_camera_tf")
    ]
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate"),
             "--delay", LaunchConfiguration("start_delay")],
        output="screen",
    )
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
    return LaunchDescription(arguments + [node, play, rviz])
