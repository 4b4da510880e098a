"""The app's HTTP surface: MONAI Label's REST protocol, served by MONAI Label's FastAPI app with this
package's endpoints in place of MONAI Label's own for everything that takes a client's input.

- :mod:`lib.api.app` — the ASGI entry point (``--uvicorn_app lib.api.app:app``);
- :mod:`lib.api.access` — hosts, origins (CORS) and the optional access token;
- :mod:`lib.api.datastore`, :mod:`lib.api.infer`, :mod:`lib.api.jobs`, :mod:`lib.api.session`,
  :mod:`lib.api.logs` — the endpoints, with names, parameters and uploads checked before anything runs;
- :mod:`lib.api.uploads` — checks of uploaded images and labels;
- :mod:`lib.api.ohif`, :mod:`lib.api.dicom_proxy` — the bundled OHIF viewer and its DICOMweb proxy.
"""
