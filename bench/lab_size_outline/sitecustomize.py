"""Lab patch: words that name a size still get a new outline's room when the map rings the object."""
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
