"""DICOM and DICOMweb plumbing for the app: CT series from NIfTI, an Orthanc launcher.

Independent of MONAI Label (the DICOMweb datastore that uses it lives in ``lib/tasks``).
"""
