"""Keras ``ImageDataGenerator`` augmentation, on whole batches of tensors.

Semantics follow keras-preprocessing 1.1 (``get_random_transform`` + ``apply_affine_transform`` +
``flip_axis``): per image, a rotation, a shift (height first, in pixels), a shear and an independent
x/y zoom are composed into one 3x3 matrix that maps OUTPUT pixel coordinates (row, col) to INPUT
coordinates about the image centre (h/2 + 0.5, w/2 + 0.5); scipy resamples with order 1 and the
chosen fill mode; the horizontal flip is applied afterwards. Here all of that, the flip included, is
folded into one ``grid_sample`` call per batch, so each image is resampled exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FILL_MODES = ("nearest", "constant")
INTERPOLATIONS = {"bilinear": "bilinear", "nearest": "nearest"}


@dataclass
class KerasAugmentConfig:
    rotation_range: float = 30.0
    zoom_range: float = 0.2
    shear_range: float = 30.0
    width_shift_range: float = 0.125
    height_shift_range: float = 0.125
    horizontal_flip: bool = True
    fill_mode: str = "nearest"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"augment.fill_mode must be one of {', '.join(FILL_MODES)} (Keras' "
                             f"'nearest' is the article's); got {self.fill_mode!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"augment.interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                             f"got {self.interpolation!r}.")
        for key in ("rotation_range", "zoom_range", "shear_range", "width_shift_range", "height_shift_range"):
            if getattr(self, key) < 0:
                raise ValueError(f"augment.{key}={getattr(self, key)} must be >= 0.")
        if self.zoom_range >= 1:
            raise ValueError(f"augment.zoom_range={self.zoom_range} must be below 1 (zoom is drawn in "
                             f"[1 - z, 1 + z]).")


@dataclass
class AffineParams:
    """Per-image parameters in Keras' units: degrees, pixels (tx along rows, ty along columns)."""
    theta: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    shear: torch.Tensor
    zx: torch.Tensor
    zy: torch.Tensor
    flip: torch.Tensor  # bool

    def __getitem__(self, index) -> "AffineParams":
        return AffineParams(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})


def sample_params(cfg: KerasAugmentConfig, n: int, h: int, w: int, generator: torch.Generator) -> AffineParams:
    """Draw what ``get_random_transform`` draws, for n images at once (float64, generator's device)."""
    device = generator.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64, device=device)

    def symmetric(r: float) -> torch.Tensor:
        return uniform(-r, r) if r else torch.zeros(n, dtype=torch.float64, device=device)

    theta = symmetric(cfg.rotation_range)
    # Ranges below 1 are fractions of the image size (Keras); tx moves rows, ty columns.
    tx = symmetric(cfg.height_shift_range) * (h if cfg.height_shift_range < 1 else 1)
    ty = symmetric(cfg.width_shift_range) * (w if cfg.width_shift_range < 1 else 1)
    shear = symmetric(cfg.shear_range)
    if cfg.zoom_range:
        zx, zy = uniform(1 - cfg.zoom_range, 1 + cfg.zoom_range), uniform(1 - cfg.zoom_range, 1 + cfg.zoom_range)
    else:
        zx = zy = torch.ones(n, dtype=torch.float64, device=device)
    if cfg.horizontal_flip:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
    else:
        flip = torch.zeros(n, dtype=torch.bool, device=device)
    return AffineParams(theta, tx, ty, shear, zx, zy, flip)


def keras_matrices(p: AffineParams, h: int, w: int) -> torch.Tensor:
    """(n, 3, 3) float64: output (row, col, 1) -> input (row, col, 1), as apply_affine_transform
    hands it to scipy (rotation @ shift @ shear @ zoom, offset to the centre)."""
    n = p.theta.shape[0]
    t, s = torch.deg2rad(p.theta), torch.deg2rad(p.shear)
    zero, one = torch.zeros_like(t), torch.ones_like(t)

    def mat(*rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rotation = mat((torch.cos(t), -torch.sin(t), zero), (torch.sin(t), torch.cos(t), zero), (zero, zero, one))
    shift = mat((one, zero, p.tx), (zero, one, p.ty), (zero, zero, one))
    shear = mat((one, -torch.sin(s), zero), (zero, torch.cos(s), zero), (zero, zero, one))
    zoom = mat((p.zx, zero, zero), (zero, p.zy, zero), (zero, zero, one))
    m = rotation @ shift @ shear @ zoom
    ox, oy = h / 2 + 0.5, w / 2 + 0.5
    offset = torch.tensor([[1, 0, ox], [0, 1, oy], [0, 0, 1]], dtype=torch.float64, device=m.device)
    reset = torch.tensor([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], dtype=torch.float64, device=m.device)
    return offset.expand(n, 3, 3) @ m @ reset


def sampling_grid(p: AffineParams, h: int, w: int) -> torch.Tensor:
    """Normalised (align_corners=True) grid for grid_sample: (n, h, w, 2) as (x=col, y=row)."""
    m = keras_matrices(p, h, w)
    # Output pixel (r, c) after the flip reads the unflipped output at (r, w-1-c).
    dev = m.device
    rows = torch.arange(h, dtype=torch.float64, device=dev).view(1, h, 1).expand(1, h, w)
    cols = torch.arange(w, dtype=torch.float64, device=dev).view(1, 1, w).expand(1, h, w)
    cols = torch.where(p.flip.view(-1, 1, 1), (w - 1) - cols, cols)
    rows = rows.expand_as(cols)
    in_r = m[:, 0, 0, None, None] * rows + m[:, 0, 1, None, None] * cols + m[:, 0, 2, None, None]
    in_c = m[:, 1, 0, None, None] * rows + m[:, 1, 1, None, None] * cols + m[:, 1, 2, None, None]
    return torch.stack((in_c * (2 / (w - 1)) - 1, in_r * (2 / (h - 1)) - 1), dim=-1)


def apply_affine(x: torch.Tensor, p: AffineParams, fill_mode: str = "nearest",
                 interpolation: str = "bilinear") -> torch.Tensor:
    """Warp a float batch (n, c, h, w) with per-image Keras parameters: one resampling per batch."""
    n, _, h, w = x.shape
    grid = sampling_grid(p, h, w)
    # 'border' clamps coordinates to the edge pixels: scipy's 'nearest' extension for order 0 and 1.
    out = F.grid_sample(x, grid.to(x.dtype), mode=INTERPOLATIONS[interpolation], padding_mode="border",
                        align_corners=True)
    if fill_mode == "constant":
        # scipy's 'constant' fills every sample taken outside [0, size-1] with cval (0) and does
        # not blend across the edge.
        tol = 1e-6
        inside = ((grid[..., 0].abs() <= 1 + tol) & (grid[..., 1].abs() <= 1 + tol)).unsqueeze(1)
        out = out * inside.to(out.dtype)
    return out


class KerasAugment:
    """Callable: float batch -> augmented float batch, parameters drawn from ``generator``."""

    def __init__(self, cfg: KerasAugmentConfig):
        self.cfg = cfg

    def params(self, n: int, h: int, w: int, generator: torch.Generator) -> AffineParams:
        return sample_params(self.cfg, n, h, w, generator)

    def apply(self, x: torch.Tensor, p: AffineParams) -> torch.Tensor:
        return apply_affine(x, p, self.cfg.fill_mode, self.cfg.interpolation)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.params(x.shape[0], x.shape[2], x.shape[3], generator))

