"""The map: one :class:`VoxelMap` interface (``voxel_map``) with a numpy/CPU storage
(``numpy_storage``) and a torch/CUDA storage (``torch_storage``), the 2D occupancy grid
(``occupancy_grid``; its floor frame for inputs without TF ``floor_grid``, its map_server / PNG
files ``grid_files``; ``grid`` re-exports all three), voxel downsampling (``voxel_downsample``),
PLY files.
May import: numpy/torch/open3d only (nothing else of loger_core). Both storages register
themselves the first time ``VoxelMap(cfg, storage=...)`` builds one (the package imports no torch).
"""
from .voxel_map import MapConfig, MapError, VoxelMap

__all__ = ["MapConfig", "MapError", "VoxelMap"]
