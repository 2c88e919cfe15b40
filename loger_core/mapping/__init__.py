"""The map: one :class:`VoxelMap` interface (``voxel_map``) with a numpy/CPU storage
(``numpy_storage``) and a torch/CUDA storage (``torch_storage``), the 2D occupancy grid
(``grid``), voxel downsampling (``voxel_downsample``), PLY files.
May import: numpy/torch/open3d only (nothing else of loger_core). Importing the package
registers both storages, so ``VoxelMap(cfg, storage=...)`` can build either.
"""
from . import numpy_storage, torch_storage  # noqa: F401  (register the storages)
from .voxel_map import MapConfig, MapError, VoxelMap

__all__ = ["MapConfig", "MapError", "VoxelMap"]
