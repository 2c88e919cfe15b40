"""Files in and out: image folders, videos, datasets, trajectories (TUM/KITTI), mapping-session
files (ROS-free). May import: ``loger_core.mapping`` (the map inside a session file)."""
