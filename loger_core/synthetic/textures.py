"""Procedural, seamlessly tiling textures with mip pyramids.

Every texture is periodic with period ``size`` texels in both directions (built from
integer frequencies, wrapped distances or whole tiles), so surfaces can repeat it
without seams. Kinds: fractal noise, stripes, tiles/bricks, Voronoi colour cells,
random colour blocks, checkers, dots and marble bands, each with fine noise on top
so that no area is flat (a network needs gradients everywhere to learn geometry).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

__all__ = ["TextureBank", "make_texture_bank", "make_detail_bank", "TEXTURE_KINDS", "ASPHALT"]

TEXTURE_KINDS = ("noise", "stripes", "tiles", "cells", "blocks", "checker", "dots", "marble")
# Texture 0 of every bank: grey, grainy, for roads and road marks.
ASPHALT = 0


@dataclass
class TextureBank:
    """All mip levels of ``count`` square textures, flattened for gather lookups.

    Attributes:
        texels: ``(count * texels_per_texture, C) float32`` in [0, 1]; texture ``i``,
            level ``l``, texel ``(row, col)`` is at
            ``i * texels_per_texture + level_offsets[l] + row * (size >> l) + col``.
        size: texels per side at level 0 (power of two).
        levels: number of mip levels (``log2(size) + 1``, down to 1x1).
        level_offsets: ``(levels,) int64`` start of each level inside one texture.
        texels_per_texture: texels of all levels of one texture.
        kinds: generator kind of each texture (for inspection and tests).
    """

    texels: np.ndarray
    size: int
    levels: int
    level_offsets: np.ndarray
    texels_per_texture: int
    kinds: list

    @property
    def count(self) -> int:
        return len(self.kinds)

    def level0(self, index: int) -> np.ndarray:
        """Level-0 image of texture ``index``, ``(size, size, C) float32``."""
        start = index * self.texels_per_texture
        return self.texels[start : start + self.size * self.size].reshape(self.size, self.size, -1)


def _fbm(rng: np.random.Generator, size: int, beta: float, min_freq: float = 1.0) -> np.ndarray:
    """Periodic fractal noise ``(size, size) float32`` in [0, 1] with a 1/f^beta spectrum."""
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.rfftfreq(size)[None, :] * size
    freq = np.sqrt(fx * fx + fy * fy)
    amp = np.where(freq >= min_freq, np.maximum(freq, 1.0) ** (-beta), 0.0)
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    field = np.fft.irfft2(spec, s=(size, size))
    lo, hi = field.min(), field.max()
    return ((field - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def _colour(rng: np.random.Generator, sat: tuple = (0.15, 0.9), val: tuple = (0.2, 0.95)) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
    return np.asarray(rgb, dtype=np.float32)


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a * (1.0 - w[..., None]) + b * w[..., None]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(size, dtype=np.float32)
    return np.meshgrid(idx, idx)  # (x, y) with x along columns


def _tex_asphalt(rng, size):
    grain = _fbm(rng, size, 0.4, min_freq=size / 6)
    blotch = _fbm(rng, size, 1.8)
    grey = 0.25 + 0.25 * blotch + 0.2 * grain
    speck = _fbm(rng, size, 0.2, min_freq=size / 4) > 0.8
    grey = np.where(speck, grey + 0.25, grey)
    return np.repeat(grey[..., None], 3, axis=-1) * np.array([1.0, 1.0, 1.04], dtype=np.float32)


def _tex_noise(rng, size):
    w = _fbm(rng, size, rng.uniform(1.0, 2.2))
    img = _mix(_colour(rng), _colour(rng), w)
    return _mix(img, _colour(rng), _fbm(rng, size, 1.6) ** 3)


def _tex_stripes(rng, size):
    x, y = _grid(size)
    kx, ky = int(rng.integers(0, 9)), int(rng.integers(0, 9))
    if kx == ky == 0:
        kx = 4
    phase = (kx * x + ky * y) / size + 0.15 * _fbm(rng, size, 2.0) * rng.uniform(0, 1)
    frac = phase - np.floor(phase)
    if rng.uniform() < 0.5:
        w = (frac < rng.uniform(0.2, 0.8)).astype(np.float32)
    else:
        w = 0.5 + 0.5 * np.cos(2 * np.pi * frac)
    img = _mix(_colour(rng), _colour(rng), w)
    if rng.uniform() < 0.4:
        k2 = int(rng.integers(8, 33))
        thin = ((k2 * (x if kx == 0 else y) / size) % 1.0 < 0.12).astype(np.float32)
        img = _mix(img, _colour(rng), thin * 0.7)
    return img


def _tex_tiles(rng, size):
    x, y = _grid(size)
    tile_w = size // int(rng.choice([2, 4, 8, 16]))
    tile_h = size // int(rng.choice([4, 8, 16, 32]))
    tile_h = max(tile_h, 2)
    row = np.floor(y / tile_h).astype(np.int64)
    brick = rng.uniform() < 0.6
    xs = x + (row % 2) * (tile_w // 2 if brick else 0)
    col = np.floor(xs / tile_w).astype(np.int64) % (size // tile_w)
    n_rows, n_cols = size // tile_h, size // tile_w
    jitter = rng.uniform(-0.25, 0.25, size=(n_rows, n_cols, 3)).astype(np.float32)
    base = _colour(rng)
    img = np.clip(base + jitter[row % n_rows, col], 0.0, 1.0)
    mortar_px = int(rng.integers(1, 4))
    mortar = ((xs % tile_w) < mortar_px) | ((y % tile_h) < mortar_px)
    img[mortar] = _colour(rng, val=(0.1, 0.9))
    return img


def _tex_cells(rng, size):
    x, y = _grid(size)
    n = int(rng.integers(6, 40))
    pts = rng.uniform(0, size, size=(n, 2)).astype(np.float32)
    dx = np.abs(x[..., None] - pts[:, 0])
    dy = np.abs(y[..., None] - pts[:, 1])
    dx = np.minimum(dx, size - dx)
    dy = np.minimum(dy, size - dy)
    d2 = dx * dx + dy * dy
    nearest = np.argmin(d2, axis=-1)
    colours = np.stack([_colour(rng) for _ in range(n)])
    img = colours[nearest]
    part = np.partition(d2, 1, axis=-1)
    edge = (np.sqrt(part[..., 1]) - np.sqrt(part[..., 0])) < rng.uniform(0.8, 2.5)
    img[edge] *= 0.35
    return img


def _tex_blocks(rng, size):
    cells = int(rng.choice([2, 4, 8, 16]))
    colours = np.stack([_colour(rng) for _ in range(cells * cells)]).reshape(cells, cells, 3)
    rep = size // cells
    img = np.repeat(np.repeat(colours, rep, axis=0), rep, axis=1)
    if rng.uniform() < 0.5:
        # Smooth the blocks periodically so some fields are soft colour gradients.
        spec = np.fft.rfft2(img, axes=(0, 1))
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        sigma = rng.uniform(0.5, 2.0) / rep
        spec *= np.exp(-(fx * fx + fy * fy) / (2 * sigma * sigma))[..., None]
        img = np.fft.irfft2(spec, s=(size, size), axes=(0, 1))
    return img.astype(np.float32)


def _tex_checker(rng, size):
    x, y = _grid(size)
    k = int(rng.choice([2, 4, 8, 16]))
    w = ((np.floor(x * k / size) + np.floor(y * k / size)) % 2).astype(np.float32)
    return _mix(_colour(rng), _colour(rng), w)


def _tex_dots(rng, size):
    x, y = _grid(size)
    k = int(rng.choice([4, 8, 16]))
    period = size / k
    fx = (x % period) - period / 2
    fy = (y % period) - period / 2
    radius = rng.uniform(0.15, 0.42) * period
    w = (fx * fx + fy * fy < radius * radius).astype(np.float32)
    return _mix(_colour(rng), _colour(rng), w)


def _tex_marble(rng, size):
    x, y = _grid(size)
    k = int(rng.integers(1, 6))
    bands = 0.5 + 0.5 * np.sin(2 * np.pi * (k * x / size + rng.uniform(2, 6) * _fbm(rng, size, 1.8)))
    return _mix(_colour(rng), _colour(rng), bands.astype(np.float32) ** rng.uniform(0.5, 3.0))


_GENERATORS = {
    "asphalt": _tex_asphalt,
    "noise": _tex_noise,
    "stripes": _tex_stripes,
    "tiles": _tex_tiles,
    "cells": _tex_cells,
    "blocks": _tex_blocks,
    "checker": _tex_checker,
    "dots": _tex_dots,
    "marble": _tex_marble,
}


def _mip_flatten(images: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    levels = int(np.log2(size)) + 1
    offsets = np.zeros(levels, dtype=np.int64)
    total = 0
    for lvl in range(levels):
        offsets[lvl] = total
        total += (size >> lvl) ** 2
    out = []
    for img in images:
        cur = img
        for lvl in range(levels):
            out.append(cur.reshape(-1, cur.shape[-1]))
            if lvl + 1 < levels:
                h = cur.shape[0] // 2
                cur = cur.reshape(h, 2, h, 2, -1).mean(axis=(1, 3))
    return np.concatenate(out, axis=0).astype(np.float32), offsets, levels, total


def make_texture_bank(rng: np.random.Generator, count: int, size: int) -> TextureBank:
    """``count`` RGB textures of ``size`` x ``size`` texels.

    Texture ``ASPHALT`` (0) is a grey road surface; the others cycle through
    ``TEXTURE_KINDS`` in shuffled order, so all kinds appear when
    ``count > len(TEXTURE_KINDS)``. Deterministic in ``rng``.
    """
    kinds = [TEXTURE_KINDS[i % len(TEXTURE_KINDS)] for i in range(count - 1)]
    rng.shuffle(kinds)
    kinds = ["asphalt"] + kinds
    images = []
    for kind in kinds:
        img = _GENERATORS[kind](rng, size)
        grain = _fbm(rng, size, rng.uniform(0.3, 1.0), min_freq=size / 8)
        img = img * (0.82 + 0.36 * grain[..., None])
        images.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    texels, offsets, levels, per = _mip_flatten(images, size)
    return TextureBank(texels, size, levels, offsets, per, kinds)


def make_detail_bank(rng: np.random.Generator, count: int, size: int) -> TextureBank:
    """``count`` single-channel large-scale noise fields used to modulate brightness.

    Sampled at a scale unrelated to the base texture, they break up the visible
    repetition of a tiled texture over a large surface.
    """
    images = [_fbm(rng, size, rng.uniform(1.2, 2.2))[..., None] for _ in range(count)]
    texels, offsets, levels, per = _mip_flatten(images, size)
    return TextureBank(texels, size, levels, offsets, per, ["detail"] * count)
