"""Command-line tools of loger_core (ROS-free)."""
