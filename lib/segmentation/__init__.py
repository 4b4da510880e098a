"""3D UNet segmentation trained on noisy drafts (PRNet pseudo masks) with a noise-robust strategy."""
