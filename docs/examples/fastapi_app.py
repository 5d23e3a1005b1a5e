"""FastAPI endpoints that get the session repository injected from the ``Container``.

The app's lifespan opens the repository (``init_resources``) and closes it
(``shutdown_resources``); endpoints receive it through ``Provide[Container.repository]``.
Run it with ``uvicorn fastapi_app:app`` from this folder (``pip install uvicorn``;
``SESSION_STORE_URL`` picks the store). The session id travels in the path to
keep the example short; a real service reads it from a header
(``Mcp-Session-Id``), because paths end up in access logs and a session id is a
secret.

No ``from __future__ import annotations`` here: ``@inject`` reads the
``Annotated[..., Depends(Provide[...])]`` markers when it decorates, so the
annotations must be real objects, not strings.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from session_repo import InvalidInput, SessionRepository
from session_repo.container import Container

Repository = Annotated[SessionRepository, Depends(Provide[Container.repository])]

router = APIRouter()


class ClaimRequest(BaseModel):
    alloc_id: str
    ttl: float | None = Field(default=None, gt=0)
    replacing: str | None = None


class Binding(BaseModel):
    owner: str


class Claimed(Binding):
    won: bool


@router.post("/sessions/{session_id}/claim")
@inject
async def claim(session_id: str, body: ClaimRequest, repository: Repository) -> Claimed:
    owner = await repository.claim(session_id, body.alloc_id, body.ttl, replacing=body.replacing)
    return Claimed(owner=owner, won=owner == body.alloc_id)


@router.get("/sessions/{session_id}")
@inject
async def lookup(session_id: str, repository: Repository) -> Binding:
    owner = await repository.lookup(session_id)
    if owner is None:
        raise HTTPException(status_code=404, detail="no live binding")
    return Binding(owner=owner)


@router.delete("/sessions/{session_id}", status_code=204)
@inject
async def delete(session_id: str, repository: Repository) -> Response:
    if not await repository.delete(session_id):
        raise HTTPException(status_code=404, detail="no live binding")
    return Response(status_code=204)


@router.get("/health")
@inject
async def health(repository: Repository) -> JSONResponse:
    report = await repository.health()
    body = {"status": report.status, "backend": report.backend}
    return JSONResponse(body, status_code=503 if report.status == "down" else 200)


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    """The library's messages never echo a session id, so they are safe to return."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


def create_app(container: Container | None = None) -> FastAPI:
    """The app, wired to ``container`` (a fresh ``Container`` reading the env by default)."""
    container = container if container is not None else Container()
    container.wire(modules=[__name__])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.init_resources()
        try:
            yield
        finally:
            await container.shutdown_resources()

    app = FastAPI(title="session-repo example", lifespan=lifespan)
    app.state.container = container
    app.include_router(router)
    app.add_exception_handler(InvalidInput, invalid_input)
    return app


app = create_app()
