"""Command-line tools of loger_core (ROS-free): ``loger-reconstruct`` drives the same pipeline
(:class:`~loger_core.pipeline.mapper.Mapper`) as the node. May import: every loger_core folder."""
