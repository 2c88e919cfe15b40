"""loger_core: ROS-free LoGeR reconstruction engine (PyTorch). Never imports ROS."""

__version__ = "0.1.0"
