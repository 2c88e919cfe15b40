"""ROS message conversions, free of rclpy/cv_bridge and tested off-ROS.

Readers take any object with the ROS field names (rclpy messages on a robot, rosbags
typestore messages in tests and replay). Writers build messages through a
:class:`MessageFactory` (:class:`RosbagsFactory` or :class:`RclpyFactory`). Every
unsupported or malformed input raises :class:`~loger_ros.errors.ConversionError`.

Modules (one job each): ``stamps``, ``factory``, ``image``, ``compressed_image``,
``camera_info``, ``pointcloud``, ``geometry``, ``odometry``, ``occupancy_grid``.
"""
from loger_ros.conversions.camera_info import DISTORTION_MODELS, CameraModel, Undistorter, camera_info_to_camera
from loger_ros.conversions.compressed_image import COMPRESSED_FORMATS, compressed_to_rgb
from loger_ros.conversions.factory import MessageFactory, RclpyFactory, RosbagsFactory, rosbags_factory
from loger_ros.conversions.geometry import (
    make_pose,
    make_transform,
    matrix_from_pose,
    matrix_from_transform,
    path_from_poses,
    pose_stamped_from_matrix,
    transform_stamped_from_matrix,
    validate_rigid_transform,
)
from loger_ros.conversions.image import DEPTH_ENCODINGS, RGB_ENCODINGS, image_to_depth_m, image_to_rgb
from loger_ros.conversions.occupancy_grid import (
    OccupancyGridArrays,
    occupancy_grid_from_array,
    occupancy_grid_to_array,
)
from loger_ros.conversions.odometry import CovarianceModel, odometry_from_poses, twist_from_poses
from loger_ros.conversions.pointcloud import PointCloudArrays, pointcloud2_from_points, pointcloud2_to_arrays
from loger_ros.conversions.stamps import make_header, make_time, ns_to_stamp_fields, stamp_to_ns
from loger_ros.errors import ConversionError

__all__ = [
    "COMPRESSED_FORMATS",
    "DEPTH_ENCODINGS",
    "DISTORTION_MODELS",
    "RGB_ENCODINGS",
    "CameraModel",
    "ConversionError",
    "CovarianceModel",
    "MessageFactory",
    "OccupancyGridArrays",
    "PointCloudArrays",
    "RclpyFactory",
    "RosbagsFactory",
    "Undistorter",
    "camera_info_to_camera",
    "compressed_to_rgb",
    "image_to_depth_m",
    "image_to_rgb",
    "make_header",
    "make_pose",
    "make_time",
    "make_transform",
    "matrix_from_pose",
    "matrix_from_transform",
    "ns_to_stamp_fields",
    "occupancy_grid_from_array",
    "occupancy_grid_to_array",
    "odometry_from_poses",
    "path_from_poses",
    "pointcloud2_from_points",
    "pointcloud2_to_arrays",
    "pose_stamped_from_matrix",
    "rosbags_factory",
    "stamp_to_ns",
    "transform_stamped_from_matrix",
    "twist_from_poses",
    "validate_rigid_transform",
]
