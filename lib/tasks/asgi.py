"""The app's ASGI entry point: MONAI Label's FastAPI app with request validation in front of training.

``POST /train/{model}`` starts training in a background process and answers 200 at once, so a bad
request (unknown ``noise_strategy``, nothing to train on) would only surface as a failed task in the
log. Here a trainer that has a ``validate(params, datastore)`` method checks the request first and
answers 4xx with what to fix; a valid request goes on to MONAI Label's own handler.

Start the server with ``--uvicorn_app lib.tasks.asgi:app`` (``scripts/start.sh`` and ``lib/server.py`` do).
"""

from __future__ import annotations

from typing import Optional

from fastapi import Depends
from monailabel.app import app
from monailabel.config import RBAC_ADMIN, settings
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

__all__ = ["app"]


async def train_model(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
):
    instance = app_instance()
    trainer = instance._trainers.get(model)
    if trainer is not None and hasattr(trainer, "validate"):
        trainer.validate(params or {}, instance.datastore())  # raises an HTTPException (4xx) on bad input
    return ml_train.run_model(model, params, run_sync, enqueue)


def _install() -> None:
    path = f"{settings.MONAI_LABEL_API_STR}/train/{{model}}"
    app.add_api_route(path, train_model, methods=["POST"], summary=f"{RBAC_ADMIN} Run Training Task for specific model")
    # ahead of MONAI Label's routers (routes match in registration order)
    app.router.routes.insert(0, app.router.routes.pop())


_install()
