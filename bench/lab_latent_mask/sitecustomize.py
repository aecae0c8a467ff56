"""Lab patch: how a pixel mask becomes the latent blend's mask (UNITUNE_LAB_LATENT_MASK).

avg (the shipped): the pixel mask averaged over each latent cell (edge cells half kept);
any: a cell touching the mask is free (max pool); half: a cell at least half inside is free;
halfbg: half where the mask covers more than half the image (the background's branch, additions), else avg.
The pixel composite still uses the pixel mask, so nothing outside it changes either way."""

import os

MODE = os.environ.get("UNITUNE_LAB_LATENT_MASK", "avg")
if MODE != "avg":
    import torch.nn.functional as F

    import unitune.sample_batches as sb

    def to_latent_size(mask, latent_shape):
        size = latent_shape[-2:]
        if MODE == "any":
            return F.adaptive_max_pool2d(mask, size)
        if MODE == "halfbg" and float(mask.mean()) <= 0.5:
            return F.adaptive_avg_pool2d(mask, size)
        if MODE in ("half", "halfbg"):
            return (F.adaptive_avg_pool2d(mask, size) >= 0.5).to(mask.dtype)
        raise SystemExit(f"unknown UNITUNE_LAB_LATENT_MASK {MODE}")

    sb.to_latent_size = to_latent_size
