"""Errors the client must fix, answered as HTTP 4xx with a message (never a 500).

MONAI Label's endpoints let exceptions propagate and FastAPI answers unknown ones with 500; a
:class:`fastapi.HTTPException` raised anywhere below an endpoint keeps its status and ``detail``.
"""

from __future__ import annotations

from fastapi import HTTPException
from monailabel.interfaces.exception import ImageNotFoundException


class ClientError(HTTPException):
    """Bad input: ``status_code`` (default 400) and a message that says what to fix."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(status_code=status_code, detail=message)

    def __str__(self) -> str:
        return str(self.detail)


class ImageNotFound(ClientError, ImageNotFoundException):
    """An image id that the datastore does not hold (404); still an ``ImageNotFoundException``."""

    def __init__(self, image_id: str):
        super().__init__(
            f"image '{image_id}' is not in the datastore; list the ids with GET /datastore/?output=all "
            f"or upload it first with PUT /datastore/?image={image_id}",
            status_code=404,
        )
