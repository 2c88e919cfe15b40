"""The LoGeR network: DINOv2 encoder, alternating frame/global decoder with TTT and SWA memory,
point / confidence / camera heads.

One call of `forward_window` processes one window of frames and returns the predictions together
with the memory state for the next window; `reconstruct` runs a whole sequence on top of it exactly
as the authors' windowed inference does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .descriptor import pool_patch_tokens
from .encoder import DinoEncoder
from .heads import CameraHead, LinearPatchHead, TransformerDecoder
from .layers import Block, RoPE2D, patch_positions
from .state import MemoryOptions, MemoryState
from .prediction import WindowPrediction, finish_raw_camera, transform_points
from .ttt import FastWeightSwiGLU
from .window_graphs import WindowGraphs, graph_autocast
from .windowing import SequenceMerger, window_schedule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LoGeR", "WindowPrediction", "finish_raw_camera", "pe_token_counts",
           "transform_points"]


def pe_token_counts(n: int, window_size: int, overlap_size: int) -> tuple[int, int, int]:
    """How many of a window's `n` frames get each of the three frame-role tokens:
    (overlap with the previous window, interior, overlap with the next window)."""
    first = min(overlap_size, n)
    middle = min(max(window_size - 2 * overlap_size, 0), n - first)
    last = max(min(overlap_size, n, n - first - middle), 0)
    return first, middle, last


class LoGeR(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.dec_embed_dim
        self.encoder = DinoEncoder(cfg.encoder)
        self.rope = RoPE2D(cfg.rope_freq)
        self.decoder = nn.ModuleList(
            Block(C, cfg.dec_num_heads, cfg.dec_mlp_ratio, layerscale=0.01, qk_norm=True, rope=self.rope)
            for _ in range(cfg.dec_depth)
        )
        self.register_token = nn.Parameter(torch.randn(1, 1, cfg.num_register_tokens, C) * 1e-6)
        for i in range(cfg.num_pe_tokens):
            self.register_parameter(f"pe_token_{i}", nn.Parameter(torch.randn(1, 1, 1, C) * 1e-6))

        hd = cfg.head_embed_dim
        self.point_decoder = TransformerDecoder(2 * C, hd, hd, cfg.head_depth, cfg.head_num_heads, self.rope)
        self.point_head = LinearPatchHead(hd, cfg.patch_size, 3)
        self.conf_decoder = TransformerDecoder(2 * C, hd, hd, cfg.head_depth, cfg.head_num_heads, self.rope)
        self.conf_head = LinearPatchHead(hd, cfg.patch_size, 1)
        self.camera_decoder = TransformerDecoder(2 * C, hd, cfg.camera_dim, cfg.head_depth, cfg.head_num_heads, self.rope)
        self.camera_head = CameraHead(cfg.camera_dim)

        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        self.ttt_layers = nn.ModuleList(
            FastWeightSwiGLU(
                C, cfg.ttt_head_dim, cfg.ttt_inter_multi, base_lr=cfg.ttt_base_lr,
                muon_steps=cfg.num_muon_update_steps, update_steps=cfg.ttt_update_steps, pre_norm=cfg.ttt_pre_norm,
            )
            for _ in cfg.ttt_insert_after
        )
        self.ttt_gate_projs = nn.ModuleList(nn.Linear(C, 1) for _ in cfg.ttt_insert_after)
        self.swa_layers = nn.ModuleList(
            Block(C, cfg.dec_num_heads, cfg.ttt_inter_multi, layerscale=0.01, qk_norm=True, rope=self.rope)
            for _ in cfg.attn_insert_after
        )
        self.swa_gate_projs = nn.ModuleList(nn.Linear(C, 1) for _ in cfg.attn_insert_after)
        # Zero gates: a fresh model behaves like its memory-free base until trained.
        for gate in [*self.ttt_gate_projs, *self.swa_gate_projs]:
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
        self._ttt_at = {pos: j for j, pos in enumerate(cfg.ttt_insert_after)}
        self._swa_at = {pos: j for j, pos in enumerate(cfg.attn_insert_after)}

    # ------------------------------------------------------------------ state
    def init_state(self) -> MemoryState:
        return MemoryState.empty(len(self.ttt_layers), len(self.swa_layers))

    # ---------------------------------------------------------------- forward
    def forward_window(
        self,
        images: Tensor,
        state: MemoryState | None = None,
        options: MemoryOptions = MemoryOptions(),
        commit: bool = True,
        raw_camera: bool = False,
        anchor_frames: int | None = None,
    ) -> tuple[WindowPrediction, MemoryState]:
        """Runs one window.

        images: (B, N, 3, H, W) RGB in [0, 1], H and W multiples of the patch size, N <= window_size.
        state: memory from the previous window (None = start of a sequence).
        commit: False runs a provisional pass that reads the memory but neither updates the TTT
            fast weights nor replaces the SWA history; the returned state is then `state` itself.
        raw_camera: the prediction's `camera_poses` are the camera head's raw (B, N, 12) output and
            `points` is None; `finish_raw_camera` completes them (see `CameraHead`).
        anchor_frames: the frame-role tokens of a provisional pass: its first `anchor_frames`
            frames overlap the previous window, the others are interior frames, as they will be in
            their committed window. None: the roles of a window of N frames (`pe_token_counts`).
        Returns the window's predictions (float32, on the images' device; `descriptors` (B, N, C)
        pooled from the encoder's patch tokens) and the next state.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        B, N, _, H, W = images.shape
        if N > options.window_size:
            raise ValueError(f"window has {N} frames, more than window_size {options.window_size}")
        state = state if state is not None else self.init_state()
        incoming = state
        # A provisional pass sees the memory its committed pass will see, including a TTT reset.
        if options.resets_ttt_at(state.window_index):
            state = state.reset_ttt()

        x = (images.to(self.image_mean.device) - self.image_mean) / self.image_std
        tokens = self.encoder(x.reshape(B * N, 3, H, W).to(self.image_mean.dtype))
        if anchor_frames is not None and not 0 <= anchor_frames <= N:
            raise ValueError(f"anchor_frames must be in [0, {N}], got {anchor_frames}")
        roles = pe_token_counts(N, options.window_size, options.overlap_size) if anchor_frames is None \
            else (anchor_frames, N - anchor_frames, 0)
        hidden, pos, new_ttt, new_swa = self._decode(tokens, B, N, H, W, state, options, commit, roles)
        pred = self._heads(hidden, pos, B, N, H, W, raw_camera)
        # The place descriptor: a few kernels over tokens already computed (no extra pass).
        pred.descriptors = pool_patch_tokens(tokens).reshape(B, N, -1)
        if not commit:
            return pred, incoming
        new_state = MemoryState(ttt=new_ttt, swa=new_swa, window_index=state.window_index + 1, frames_seen=state.frames_seen + N)
        return pred, new_state

    def _frame_tokens(self, patches: Tensor, B: int, N: int, counts: tuple[int, int, int]) -> Tensor:
        """(B*N, hw, C) patch tokens -> (B*N, 6 + hw, C): registers, frame-role token (`counts`
        frames of each role, see `pe_token_counts`), patches."""
        C = patches.shape[-1]
        pe = torch.cat(
            [getattr(self, f"pe_token_{i}").expand(B, n, 1, C) for i, n in enumerate(counts)], dim=1
        ).reshape(B * N, 1, C)
        reg = self.register_token.expand(B, N, -1, -1).reshape(B * N, -1, C)
        return torch.cat([reg, pe.to(patches.dtype), patches], dim=1)

    def _decode(self, patches: Tensor, B: int, N: int, H: int, W: int, state: MemoryState, options: MemoryOptions,
                commit: bool, roles: tuple[int, int, int]):
        p = self.cfg.patch_size
        hidden = self._frame_tokens(patches, B, N, roles)
        BN, L, C = hidden.shape
        # Special tokens sit at position (0, 0); patches at their grid position + 1.
        pos = patch_positions(BN, H // p, W // p, hidden.device) + 1
        pos = torch.cat([torch.zeros(BN, self.cfg.patch_start_idx, 2, dtype=pos.dtype, device=pos.device), pos], dim=1)
        pos_seq = pos.reshape(B, N * L, 2)

        new_ttt = list(state.ttt)
        new_swa = list(state.swa)
        finals: list[Tensor] = []
        depth = len(self.decoder)
        for i, blk in enumerate(self.decoder):
            if i % 2 == 0:  # frame-wise attention
                hidden = blk(hidden.reshape(BN, L, C), pos)
            else:  # global attention over all frames of the window
                hidden = blk(hidden.reshape(B, N * L, C), pos_seq)

            j = self._ttt_at.get(i)
            if j is not None and options.use_ttt:
                x = hidden.reshape(B, N, L, C)
                gate = F.silu(self.ttt_gate_projs[j](x))
                out, weights = self.ttt_layers[j](x, state.ttt[j], update=commit)
                hidden = out * gate + x
                new_ttt[j] = weights

            l = self._swa_at.get(i)
            if l is not None and options.use_swa:
                x = hidden.reshape(B, N * L, C)
                # Every frame shares the same patch positions, so the cached keys carry the same
                # RoPE phases the authors give history tokens (the first frame's, repeated).
                out, kv = self.swa_layers[l].forward_swa(x, pos_seq, state.swa[l])
                gate = F.silu(self.swa_gate_projs[l](out))
                hidden = (out * gate + x).reshape(BN, L, C)
                new_swa[l] = kv

            if i >= depth - 2:
                finals.append(hidden.reshape(BN, L, C))
        return torch.cat(finals, dim=-1), pos, new_ttt, new_swa

    def _heads(self, hidden: Tensor, pos: Tensor, B: int, N: int, H: int, W: int, raw_camera: bool = False) -> WindowPrediction:
        s = self.cfg.patch_start_idx
        point_hidden = self.point_decoder(hidden, pos)
        conf_hidden = self.conf_decoder(hidden, pos)
        camera_hidden = self.camera_decoder(hidden, pos)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            raw = self.point_head(point_hidden[:, s:].float(), H, W).reshape(B, N, H, W, 3)
            xy, z = raw.split([2, 1], dim=-1)
            z = torch.exp(z)
            local_points = torch.cat([xy * z, z], dim=-1)
            conf = self.conf_head(conf_hidden[:, s:].float(), H, W).reshape(B, N, H, W, 1)
            p = self.cfg.patch_size
            if raw_camera:
                raw = self.camera_head(camera_hidden[:, s:].float(), H // p, W // p, raw=True).reshape(B, N, 12)
                return WindowPrediction(local_points, conf, raw, None)
            camera_poses = self.camera_head(camera_hidden[:, s:].float(), H // p, W // p).reshape(B, N, 4, 4)
            points = transform_points(camera_poses, local_points)
        return WindowPrediction(local_points, conf, camera_poses, points)

    # ------------------------------------------------------- whole sequence
    @torch.no_grad()
    def reconstruct(
        self,
        images: Tensor,
        options: MemoryOptions = MemoryOptions(),
        alignment: str | None = None,
        sim3_scale_mode: str = "median",
        cuda_graphs: bool = False,
    ) -> WindowPrediction:
        """Whole-sequence windowed inference, identical to the authors' `forward`.

        images: (B, N, 3, H, W) in [0, 1]. alignment: 'none', 'se3' or 'sim3' (default: the
        config's `se3` flag). Built on `forward_window`; see `windowing.SequenceMerger`.
        cuda_graphs: on a CUDA device, full windows of a shape seen before replay a CUDA graph
        (`window_graphs.WindowGraphs`, kept on the model for later calls); same kernels.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if alignment is None:
            alignment = "se3" if self.cfg.se3 else "none"
        merger = SequenceMerger(alignment, options.overlap_size, options.reset_every, sim3_scale_mode)
        graphs = self._window_graphs(options) if cuda_graphs and images.is_cuda else None
        state = self.init_state()
        for start, end in window_schedule(images.shape[1], options.window_size, options.overlap_size):
            # Full windows only: the final partial one comes once per sequence, not worth a graph.
            full = end - start == options.window_size
            replayed = graphs.run(images[:, start:end], state) if graphs is not None and full else None
            pred, state = replayed if replayed is not None else self.forward_window(images[:, start:end], state, options)
            merger.add(pred)
        return merger.result()

    def _window_graphs(self, options: MemoryOptions):
        """The `WindowGraphs` of `reconstruct` for `options` under the caller's autocast."""
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        return WindowGraphs.shared(self, ("reconstruct", options, dtype),
                                   lambda: WindowGraphs(self, options, graph_autocast("cuda", dtype)))
