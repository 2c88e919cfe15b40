"""The map: one :class:`VoxelMap` (numpy/CPU storage, or torch storage on the model's device:
``voxel_map.make_voxel_map``), the 2D occupancy grid, voxel downsampling, PLY files.
May import: numpy/torch only (nothing else of loger_core).
"""
