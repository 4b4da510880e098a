"""Post-processing of the segmentation UNet's class probabilities into a label map.

A UNet that sees 48³-voxel patches (144 mm at 3 mm) does not know where in the body a patch lies: its
argmax carries small blobs of an organ far from the organ where the tissue looks alike. On the sample
cohort they are mostly "kidney", "liver" or "spleen" blobs of 20–1000 voxels in bowel and muscle below the
kidneys (almost all background in the ground truth), in the supervised UNet as in the one-shot one. Each
abdominal organ here is one structure (the pancreas, thin at 3 mm, may come in two or three large pieces),
so a fragment much smaller than the organ's largest piece is an error. ``remove_fragments`` drops, per
class, every connected component smaller than ``min_fraction`` of that class's largest component and gives
its voxels their next most probable class (background for most; the touching organ for a blob inside
another organ, so no hole is left).

Unlike MONAI's ``KeepLargestConnectedComponent`` (a fixed number of components) the threshold is relative,
which keeps an organ that the field of view or the resolution splits into large pieces.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def remove_fragments(probs: np.ndarray, min_fraction: float, connectivity: int = 3) -> np.ndarray:
    """Label map ``(I, J, K)`` of class probabilities ``probs (C, I, J, K)`` (class 0 = background), without the
    fragments of each foreground class smaller than ``min_fraction`` × its largest component (voxels counted).

    ``min_fraction``: 0 = plain argmax, 1 = the largest component only; ``connectivity``: 1 (faces, 6
    neighbours) to 3 (faces, edges and corners, 26 neighbours; MONAI's default). A dropped fragment's voxels
    take their most probable other class (computed once: a reassigned voxel is not checked again).
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    label = probs.argmax(axis=0)
    if min_fraction == 0.0:
        return label
    structure = ndimage.generate_binary_structure(3, connectivity)
    dropped = np.zeros(label.shape, dtype=bool)
    masked = None
    for c in range(1, probs.shape[0]):
        components, n = ndimage.label(label == c, structure)
        if n < 2:
            continue
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes < min_fraction * sizes.max()) + 1
        if not len(small):
            continue
        fragment = np.isin(components, small)
        if masked is None:
            masked = probs.copy()
        masked[c][fragment] = -np.inf
        dropped |= fragment
    if masked is not None:
        label[dropped] = masked[:, dropped].argmax(axis=0)
    return label
