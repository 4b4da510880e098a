"""One-shot weakly-supervised segmentation for MONAI Label.

``lib`` holds the method and is importable without a running MONAI Label server:

- :mod:`lib.data`   — sample-cohort construction (label reduction, deformation, simulated scribbles);
- :mod:`lib.config` — the app's configuration defaults (``configs/``) merged with ``--conf`` overrides.

The MONAI Label tasks that wrap the method live in :mod:`lib.tasks`.

Array convention throughout: volumes are numpy arrays in the NIfTI file's voxel order ``(i, j, k)``
(for the sample data ``k`` is the axial slice axis); spacings are in millimetres, per axis, in the
same order.
"""
