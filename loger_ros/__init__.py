"""loger_ros: ROS 2 node, message conversions and offline rosbag replay over loger_core."""
