"""numpy <-> ``sensor_msgs/PointCloud2``.

Written clouds are unorganised (``height = 1``), little-endian, with float32 fields
``x, y, z`` [, ``rgb``] [, ``confidence``] packed densely in that order. ``rgb`` is the
float32 whose four little-endian bytes are B, G, R, 0, i.e. the uint32 ``0x00RRGGBB``
reinterpreted as float: the layout RViz's "RGB8" colour transformer expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loger_ros.conversions._fields import as_byte_buffer, as_flag, as_int, as_str, get_field
from loger_ros.conversions.factory import MessageFactory
from loger_ros.errors import ConversionError

__all__ = ["POINT_FIELD_DTYPES", "PointCloudArrays", "pointcloud2_from_points", "pointcloud2_to_arrays"]

# sensor_msgs/PointField datatype constants -> numpy scalar type (byte order added per message).
POINT_FIELD_DTYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32 = 7


@dataclass(frozen=True, eq=False)
class PointCloudArrays:
    """Arrays of one point cloud.

    Attributes:
        points: ``(N, 3)`` float32 x, y, z in the message's frame.
        colors: ``(N, 3)`` uint8 RGB, or None when the cloud has no ``rgb``/``rgba`` field.
        confidence: ``(N,)`` float32, or None when the cloud has no ``confidence`` field.
    """

    points: np.ndarray
    colors: np.ndarray | None
    confidence: np.ndarray | None


def _checked_array(value: Any, name: str, dtype: type, shape_tail: tuple[int, ...], count: int | None) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise ConversionError(f"{name} is not an array", field=name) from None
    expected = ("N",) + shape_tail if count is None else (count,) + shape_tail
    wrong_count = count is not None and array.ndim > 0 and array.shape[0] != count
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail or wrong_count:
        raise ConversionError(f"{name} has shape {array.shape}, expected {expected}", field=name, value=array.shape)
    if dtype is np.uint8 and array.dtype != np.uint8:
        raise ConversionError(f"{name} has dtype {array.dtype}, expected uint8", field=name, value=str(array.dtype))
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConversionError(
            f"{name} has dtype {array.dtype}, expected a real number", field=name, value=str(array.dtype)
        )
    return array.astype(dtype, copy=False)


def pointcloud2_from_points(
    factory: MessageFactory,
    header: Any,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> Any:
    """Build a ``sensor_msgs/msg/PointCloud2``.

    Args:
        factory: message factory (rosbags or rclpy).
        header: ``std_msgs/Header`` (see :func:`make_header`); points are in ``header.frame_id``.
        points: ``(N, 3)`` float32 (other real dtypes are cast) x, y, z.
        colors: ``(N, 3)`` uint8 RGB or None.
        confidence: ``(N,)`` float32 or None.

    ``is_dense`` is True when every x, y, z is finite.
    """
    xyz = _checked_array(points, "points", np.float32, (3,), None)
    count = xyz.shape[0]
    names = ["x", "y", "z"]
    rgb = None
    if colors is not None:
        rgb8 = _checked_array(colors, "colors", np.uint8, (3,), count).astype(np.uint32)
        rgb = ((rgb8[:, 0] << 16) | (rgb8[:, 1] << 8) | rgb8[:, 2]).astype("<u4").view("<f4")
        names.append("rgb")
    conf = None
    if confidence is not None:
        conf = _checked_array(confidence, "confidence", np.float32, (), count)
        names.append("confidence")

    record = np.dtype({"names": names, "formats": ["<f4"] * len(names)})
    cloud = np.empty(count, dtype=record)
    cloud["x"], cloud["y"], cloud["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        cloud["rgb"] = rgb
    if conf is not None:
        cloud["confidence"] = conf

    point_step = record.itemsize
    fields = [
        factory.make("sensor_msgs/msg/PointField", name=name, offset=4 * index, datatype=_FLOAT32, count=1)
        for index, name in enumerate(names)
    ]
    return factory.make(
        "sensor_msgs/msg/PointCloud2",
        header=header,
        height=1,
        width=int(count),
        fields=fields,
        is_bigendian=False,
        point_step=int(point_step),
        row_step=int(point_step * count),
        data=factory.uint8_array(cloud.view(np.uint8)),
        is_dense=bool(np.all(np.isfinite(xyz))),
    )


def _field_table(msg: Any, point_step: int) -> dict[str, tuple[int, str]]:
    """name -> (offset, numpy scalar type) for every PointField of the message."""
    table = {}
    for index, field in enumerate(get_field(msg, "PointCloud2", "fields")):
        where = f"PointCloud2.fields[{index}]"
        name = as_str(get_field(field, "PointField", "name"), f"{where}.name")
        offset = as_int(get_field(field, "PointField", "offset"), f"{where}.offset", minimum=0)
        datatype = as_int(get_field(field, "PointField", "datatype"), f"{where}.datatype")
        count = as_int(get_field(field, "PointField", "count"), f"{where}.count", minimum=0)
        if datatype not in POINT_FIELD_DTYPES:
            raise ConversionError(
                f"{where}.datatype {datatype} of field {name!r} is not a PointField type (1..8)",
                field=f"{where}.datatype",
                value=datatype,
            )
        size = np.dtype(POINT_FIELD_DTYPES[datatype]).itemsize * max(count, 1)
        if offset + size > point_step:
            raise ConversionError(
                f"{where}.offset {offset} + size {size} of field {name!r} exceeds PointCloud2.point_step {point_step}",
                field=f"{where}.offset",
                value=offset,
            )
        table[name] = (offset, POINT_FIELD_DTYPES[datatype])
    return table


def pointcloud2_to_arrays(msg: Any) -> PointCloudArrays:
    """``sensor_msgs/PointCloud2`` -> :class:`PointCloudArrays` (organised clouds are flattened row-major).

    Reads x, y, z of any float/int type, ``rgb`` / ``rgba`` packed as 0x00RRGGBB (float32 or
    uint32) and ``confidence`` (any number type); other fields are ignored.
    """
    height = as_int(get_field(msg, "PointCloud2", "height"), "PointCloud2.height", minimum=0)
    width = as_int(get_field(msg, "PointCloud2", "width"), "PointCloud2.width", minimum=0)
    point_step = as_int(get_field(msg, "PointCloud2", "point_step"), "PointCloud2.point_step", minimum=1)
    row_step = as_int(get_field(msg, "PointCloud2", "row_step"), "PointCloud2.row_step", minimum=0)
    order = ">" if as_flag(get_field(msg, "PointCloud2", "is_bigendian"), "PointCloud2.is_bigendian") else "<"
    data = as_byte_buffer(get_field(msg, "PointCloud2", "data"), "PointCloud2.data")
    table = _field_table(msg, point_step)
    missing = [axis for axis in "xyz" if axis not in table]
    if missing:
        raise ConversionError(
            f"PointCloud2.fields {sorted(table)} lack {', '.join(missing)}",
            field="PointCloud2.fields",
            value=sorted(table),
        )
    if row_step < width * point_step:
        raise ConversionError(
            f"PointCloud2.row_step {row_step} < width*point_step {width * point_step}",
            field="PointCloud2.row_step",
            value=row_step,
        )
    if data.size != row_step * height:
        raise ConversionError(
            f"PointCloud2.data has {data.size} bytes, expected row_step*height = {row_step * height}",
            field="PointCloud2.data",
            value=data.size,
        )

    rows = data.reshape(height, row_step)[:, : width * point_step]
    raw = np.ascontiguousarray(rows).reshape(height * width, point_step)

    def column(name: str, scalar: str | None = None) -> np.ndarray:
        offset, kind = table[name]
        size = np.dtype(scalar or kind).itemsize
        return np.ascontiguousarray(raw[:, offset : offset + size]).view(order + (scalar or kind)).reshape(-1)

    points = np.stack([column(axis).astype(np.float32) for axis in "xyz"], axis=1)
    colors = None
    colour_name = "rgb" if "rgb" in table else "rgba" if "rgba" in table else None
    if colour_name is not None:
        if np.dtype(table[colour_name][1]).itemsize != 4:
            raise ConversionError(
                f"PointCloud2 field {colour_name!r} has type {table[colour_name][1]}, "
                "expected a 4-byte packed 0x00RRGGBB",
                field=f"PointCloud2.fields.{colour_name}",
                value=table[colour_name][1],
            )
        packed = column(colour_name, "u4")
        colors = np.stack([(packed >> shift) & 0xFF for shift in (16, 8, 0)], axis=1).astype(np.uint8)
    confidence = column("confidence").astype(np.float32) if "confidence" in table else None
    return PointCloudArrays(points=points, colors=colors, confidence=confidence)
