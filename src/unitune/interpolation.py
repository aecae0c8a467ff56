"""Base-detail interpolation: after sampling, bring back the base image where the edit left it alone.

out = edit + w * g * (base - edit),   g = exp(-|blur(edit - base)|^2 / tau^2)

|.|^2 is the squared difference summed over RGB (pixels in [0, 1]) after a Gaussian blur, so g is a
soft "unchanged here" mask: near 1 where the edit stayed close to the base (there the base's fine detail,
lost in sampling, is restored) and near 0 where the edit changed colour or shape (there it is kept).
w = 0 returns the edit, w = 1 gives the base back in unchanged regions. UniTune's own operator is not
public (arXiv 2210.09477, section 3.3 mentions interpolating base details after sampling); this is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TAU = 0.15


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(blurred, vertical, groups=channels)


def unchanged_mask(edit: torch.Tensor, base: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """g in [0, 1], (B, 1, H, W): 1 where the blurred edit equals the base."""
    sigma = max(1.0, edit.shape[-1] / 128)
    difference = gaussian_blur(edit - base, sigma)
    return torch.exp(-difference.pow(2).sum(dim=1, keepdim=True) / tau**2)


def interpolate_details(edit: torch.Tensor, base: torch.Tensor, weight: float, tau: float = DEFAULT_TAU):
    """Edit images (B, 3, H, W) with base details mixed back in; base is (1 or B, 3, H, W), all in [0, 1]."""
    if weight == 0:
        return edit
    base = base.expand_as(edit)
    return (edit + weight * unchanged_mask(edit, base, tau) * (base - edit)).clamp(0, 1)
