"""Lab patches (docs/lab/naming.md), each behind its environment variable: UNITUNE_LAB_SIZE_OUTLINE=1 (the outline rule before a size word), UNITUNE_LAB_NO_OUTLINE=1 (the outline rule off), UNITUNE_LAB_MAP_SEED_SHIFT=N (the map read at seed + N)."""
import os

if os.environ.get("UNITUNE_LAB_SIZE_OUTLINE"):
    import numpy as np
    import torch.nn.functional as F
    from unitune import regions as R

    def region_mask(difference, regions, background_ratio, reach=0):
        height, width = regions.shape
        label = R.background_label(regions)
        background = regions == label
        grid = difference.detach().float().cpu()
        spread = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
        if background.all():
            return np.ones((height, width), dtype=bool)
        if spread[background].mean() > background_ratio * spread[~background].mean():
            return R._grown(background, R._scaled(R.BACKGROUND_MARGIN, regions.shape))
        chosen = R._objects(regions, label, spread)
        if R.redraws_outline(chosen, spread):
            room = R.outline_mask(chosen)
            if reach:
                inside = R._shrunk(chosen, R._scaled(R.KEPT_CORE, chosen.shape))
                room = R._grown(room | inside, R._scaled(reach, regions.shape)) & ~inside
            return room
        if reach:
            return R._grown(chosen, R._scaled(reach, regions.shape))
        return chosen

    R.region_mask = region_mask

if os.environ.get("UNITUNE_LAB_NO_OUTLINE"):
    from unitune import regions as _regions

    _regions.OUTLINE_RATIO = float("inf")

if os.environ.get("UNITUNE_LAB_MAP_SEED_SHIFT"):
    from unitune import sample_batches as _batches

    _shift = int(os.environ["UNITUNE_LAB_MAP_SEED_SHIFT"])
    _original = _batches.difference_map

    def _shifted(pipe, latent, edit, reference, settings, seed, runtime, readings=None):
        return _original(pipe, latent, edit, reference, settings, seed + _shift, runtime, readings)

    _batches.difference_map = _shifted
