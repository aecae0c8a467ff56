"""Lab patch: words that shrink ("small", "smaller", "tiny") get their object's mask grown by
UNITUNE_LAB_SHRINK_REACH px (default rule: SIZE_REACH 4), no outline rule."""
import os

if os.environ.get("UNITUNE_LAB_SHRINK_REACH") is not None:
    import numpy as np

    from unitune import regions, sample_batches

    REACH = int(os.environ["UNITUNE_LAB_SHRINK_REACH"])
    ORIGINAL = regions.edit_mask

    def edit_mask(words, labels, read_map, ratio):
        tokens = regions._tokens(words)
        if regions.adds_object(words) or not any(t in ("small", "smaller", "tiny") for t in tokens):
            return ORIGINAL(words, labels, read_map, ratio)
        saved = regions.OUTLINE_RATIO
        regions.OUTLINE_RATIO = np.inf
        try:
            return regions.region_mask(read_map(), labels, ratio, REACH)
        finally:
            regions.OUTLINE_RATIO = saved

    regions.edit_mask = edit_mask
    sample_batches.edit_mask = edit_mask
