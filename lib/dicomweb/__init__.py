"""DICOM and DICOMweb plumbing for the app: CT series from NIfTI (``convert``), labels to and from DICOM-SEG
(``seg``), STOW-RS upload (``upload``), an Orthanc launcher (``orthanc``).

The DICOMweb datastore that uses them is a MONAI Label datastore and lives in ``lib/tasks``.
"""
