"""I/O helpers for loger_core: trajectories and image sources (ROS-free)."""
