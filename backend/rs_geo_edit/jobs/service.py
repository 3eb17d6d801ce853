"""The FastAPI app of ``rs-geo-edit serve``: submit, follow and cancel edit jobs over HTTP.

Every endpoint but /health needs ``Authorization: Bearer <token>``. Jobs live in the SQLite
store and run in worker processes; this process only validates, stores and reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from .. import __version__
from ..config import MODES
from ..errors import RsGeoEditError
from .schema import JobRequest, JobView, api_name
from .store import TERMINAL, JobStore

MAX_BODY = 4 << 20  # bytes: an inline AOI of a few thousand polygons fits
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def load_or_create_token(config_dir: Path) -> str:
    """The service's bearer token, created on first use in ``config_dir/token`` (mode 0600)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "token"
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def _view(job: dict) -> dict:
    eta = None
    if job["state"] == "running" and job["started"] and 0.01 < job["progress"] < 1:
        elapsed = time.time() - job["started"]
        eta = round(elapsed * (1 - job["progress"]) / job["progress"], 1)
    keys = ("id", "state", "interrupted", "progress", "stage", "message", "created", "started", "finished", "log",
            "result", "error", "request")
    return {**{k: job[k] for k in keys}, "eta_s": eta}


def _check_paths(body: JobRequest) -> None:
    """422 with the path in the message for anything that cannot be read or written."""
    from ..geo.raster import check_output_path
    from .worker import job_config

    def readable(path: str, what: str) -> None:
        p = Path(path)
        if not p.exists():
            raise HTTPException(422, f"{what} {path!r} does not exist")
        if not os.access(p, os.R_OK):
            raise HTTPException(422, f"{what} {path!r} is not readable")

    readable(body.scene, "scene")
    if isinstance(body.aoi, str):
        readable(body.aoi, "aoi")
    elif body.aoi.get("type") not in ("FeatureCollection", "Feature"):
        raise HTTPException(422, "inline aoi must be a GeoJSON FeatureCollection or Feature")
    if body.copy_from:
        readable(body.copy_from, "copy_from")
    try:
        scene, aoi, output, config = job_config(body.model_dump())
        inputs = [scene] + ([aoi] if aoi else []) + ([body.copy_from] if body.copy_from else [])
        check_output_path(output, inputs, config.output.overwrite)
    except RsGeoEditError as exc:
        raise HTTPException(422, exc.render(api_name)) from None


def available_weights() -> list[str]:
    """Names of the RemoteCLIP weights found locally (weights folder or hub cache)."""
    from ..config import GuidanceConfig
    from ..errors import WeightsNotFound
    from ..guidance.clip import KNOWN, parse_spec, resolve_weights

    folder = GuidanceConfig().weights_dir
    found = []
    for name in KNOWN:
        try:
            resolve_weights(parse_spec(name), Path(folder) if folder else None, offline=True)
            found.append(name)
        except WeightsNotFound:
            pass
    return found


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes (413) before they are read,
    by their Content-Length or, for chunked bodies, as they arrive. (Starlette's @middleware("http")
    would cost about a millisecond on every request.)"""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)

    async def _refuse(self, send):
        body = json.dumps({"detail": f"request body over {self.limit} bytes: pass the AOI as a file path"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(store: JobStore, token: str, data_dir: Path, workers: int) -> FastAPI:
    app = FastAPI(title="rs-geo-edit", version=__version__,
                  description="Text-guided generative editing of georeferenced scenes: local job service.")
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                     "(see rs-geo-edit serve --print-token)", headers={"WWW-Authenticate": "Bearer"})

    app.add_middleware(BodyLimit, limit=MAX_BODY)

    @app.get("/health")
    async def health() -> dict:
        device_file = data_dir / "device.json"
        device = json.loads(device_file.read_text()) if device_file.is_file() else {"device": "starting"}
        return {"status": "ok", "version": __version__, **device, "workers": workers,
                "clip_weights": available_weights(), "modes": list(MODES),
                "queue_length": store.queue_length()}

    # Endpoints return plain dicts: FastAPI validates them against JobView once.
    @app.post("/jobs", status_code=201, dependencies=[Depends(authorised)])
    def submit(body: JobRequest) -> JobView:
        _check_paths(body)
        return _view(store.create(body.model_dump()))

    # Reads are async: a status poll is a few hundred microseconds of SQLite, cheaper on the event
    # loop than a hop through the thread pool (p99 under load, scripts/bench/service.py).
    @app.get("/jobs", dependencies=[Depends(authorised)])
    async def recent(limit: int = 50) -> list[JobView]:
        return [_view(j) for j in store.list(min(max(limit, 1), 500))]

    def _job(job_id: str) -> dict:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorised)])
    async def status(job_id: str) -> JobView:
        return _view(_job(job_id))

    @app.delete("/jobs/{job_id}", dependencies=[Depends(authorised)])
    def cancel(job_id: str) -> JobView:
        _job(job_id)
        return _view(store.request_cancel(job_id))

    @app.get("/jobs/{job_id}/events", dependencies=[Depends(authorised)])
    async def events(job_id: str) -> StreamingResponse:
        _job(job_id)

        async def stream():
            last = None
            while True:
                job = store.get(job_id)
                view = _view(job)
                key = (job["updated"], job["state"])
                if key != last:
                    last = key
                    payload = {k: view[k] for k in ("id", "state", "progress", "stage", "message", "eta_s", "error",
                                                    "result")}
                    yield f"event: progress\ndata: {json.dumps(payload)}\n\n"
                if job["state"] in TERMINAL:
                    return
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app
