"""The FastAPI app of ``rs-geo-edit serve``: submit, follow and cancel edit jobs over HTTP.

Every endpoint but /health needs ``Authorization: Bearer <token>`` (or the token as the password
of HTTP Basic, any user name, for clients that keep it as a Basic credential, such as a QGIS
authentication configuration), and every request a Host
header naming this machine's loopback or the bound address (a page on another site that
rebinds its DNS name to 127.0.0.1 is refused). Jobs live in the SQLite store and run in worker
processes; this process validates at the door (body size, option bounds, scene and AOI headers,
output paths), stores, reports, and supervises the workers (:mod:`.supervisor`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from .. import __version__
from ..config import MODES
from ..errors import RsGeoEditError
from .inputs import job_inputs
from .layout import JobLayout, inline_aoi
from .schema import AUTH, HealthView, JobRequest, JobView, error_response, inline_aoi_error
from .security import LOOPBACK, FailedAuthLimit
from .store import TERMINAL, JobStore
from .transfer import TransferLimits, accept_windows, transfer_router

MAX_BODY = 4 << 20  # bytes: an inline AOI of a few thousand polygons fits


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
    keys = ("id", "state", "interrupted", "attempts", "progress", "stage", "message", "created", "started", "finished", "log",
            "result", "error", "request")
    return {**{k: job[k] for k in keys}, "eta_s": eta, "transfer": job["request"].get("transfer")}


def _check_request(body: JobRequest, job_dir: Path) -> None:
    """422 naming the file and the problem for anything that cannot be read or written: the
    scene's and the AOI's headers are opened here, so a broken input never reaches the queue."""
    from ..geo.check import check_inputs
    from ..pipeline import check_outputs

    for what, path in (("scene", body.scene), ("aoi", body.aoi), ("output", body.output), ("copy_from", body.copy_from),
                       ("options.cache_dir", body.options.cache_dir)):
        if isinstance(path, str) and ("\x00" in path or not path.strip()):
            raise HTTPException(422, f"{what} {path!r} is not a usable path: give a file path")
    if isinstance(body.aoi, dict) and body.aoi.get("type") not in ("FeatureCollection", "Feature"):
        raise HTTPException(422, "inline aoi must be a GeoJSON FeatureCollection or Feature")
    try:
        inputs = job_inputs(body.model_dump(), job_dir)
        check_inputs(inputs.scene, inputs.aoi, layer=body.layer, prompt_field=body.prompt_field,
                     default_prompt=body.prompt)
        if body.copy_from and not Path(body.copy_from).exists():
            raise HTTPException(422, f"copy_from {body.copy_from!r} does not exist: check the path")
        check_outputs(inputs.scene, inputs.aoi, inputs.output, inputs.config)
    except RsGeoEditError as exc:
        raise HTTPException(422, inline_aoi_error(exc, inline_aoi(job_dir) if isinstance(body.aoi, dict) else None)) \
            from None
    except OSError as exc:
        raise HTTPException(422, f"{exc.filename or body.scene!r}: {exc.strerror or exc}") from None


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


def available_engines() -> list[str]:
    """The engines this installation can run: ``instruct`` needs the optional diffusers extra."""
    import importlib.util

    return ["sinddm"] + (["instruct"] if importlib.util.find_spec("diffusers") else [])


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


class HostCheck:
    """Pure ASGI middleware: refuse a request whose Host header is not one of ``allowed`` (400).

    The standard defence against DNS rebinding: a web page whose name resolves to 127.0.0.1
    can reach a local service, but its requests carry its own name in Host."""

    def __init__(self, app, allowed: set[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
        name = raw[1:raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw
        if name in self.allowed:
            return await self.app(scope, receive, send)
        message = (f"Host header {raw!r} is not allowed: this service answers to "
                   f"{', '.join(sorted(self.allowed))} (start it with --allow-host NAME to add a name)")
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def allowed_hosts(bound: str, extra: tuple[str, ...] = ()) -> set[str]:
    """Loopback names, the bound address and any names given with --allow-host."""
    names = set(LOOPBACK) | {bound.strip("[]")} | {h.strip("[]") for h in extra}
    return {n.lower() for n in names if n and n not in ("0.0.0.0", "::")}


def _one_line(exc: RequestValidationError) -> tuple[str, list[dict]]:
    """A body validation failure as one line (each field and what is wrong) plus the details."""
    errors = []
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())[1:]) or str(next(iter(err.get("loc", ())), ""))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field: remove it (see the schema at /docs)"
        elif err.get("type") == "json_invalid":
            loc, msg = "body", f"not valid JSON ({err.get('ctx', {}).get('error', 'parse error')} at character {err['loc'][-1]})"
        parts.append(f"{loc}: {msg}" if loc else msg)
        errors.append({"loc": [str(p) for p in err.get("loc", ())], "msg": msg, "type": err.get("type", "")})
    return "; ".join(parts) or "invalid request", errors


ERRORS = {400: error_response("Host header not allowed (DNS rebinding defence)"),
          413: error_response(f"request body over {MAX_BODY} bytes")}
NOT_FOUND = {404: error_response("no such job")}
INVALID = {422: error_response("invalid request: the message names the field or file")}


def create_app(store: JobStore, token: str, data_dir: Path, workers: int, *, pool=None,
               hosts: Optional[set[str]] = None, limits: Optional[TransferLimits] = None) -> FastAPI:
    """The API over ``store``. ``pool`` (a :class:`.supervisor.WorkerPool`) reports worker
    health; ``hosts`` are the Host names accepted (default: loopback names); ``limits`` bound
    the uploads of remote edits."""
    app = FastAPI(title="rs-geo-edit", version=__version__, responses=ERRORS,
                  description="Text-guided generative editing of georeferenced scenes: local job service.")
    bearer, basic = HTTPBearer(auto_error=False), HTTPBasic(auto_error=False)
    failures = FailedAuthLimit()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _one_line(exc)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    async def authorised(request: Request,
                         credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
                         password: Optional[HTTPBasicCredentials] = Depends(basic)) -> None:
        client = request.client.host if request.client else "unknown"
        failures.check(client)
        given = credentials.credentials if credentials else password.password if password else None
        if given is None or not secrets.compare_digest(given.encode(), token.encode()):
            failures.failed(client)
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                     "(see rs-geo-edit serve --print-token)", headers={"WWW-Authenticate": "Bearer"})

    app.add_middleware(BodyLimit, limit=MAX_BODY)
    layout = JobLayout(data_dir)
    transfers, uploads = transfer_router(store, layout, limits or TransferLimits(), authorised)
    app.include_router(transfers)
    # Added last, so it runs first: a foreign Host learns nothing, not even the body limit.
    app.add_middleware(HostCheck, allowed=hosts or set(LOOPBACK))

    @app.get("/health")
    async def health() -> HealthView:
        try:
            device = json.loads(layout.device_info.read_text())
        except (OSError, ValueError):
            device = {"device": "starting"}
        pool_health = pool.health() if pool is not None else {"workers": workers, "workers_alive": workers,
                                                              "worker_restarts": 0, "worker_pids": [],
                                                              "last_worker_loss": None}
        status = "ok" if pool_health["workers_alive"] == pool_health["workers"] else "degraded"
        return {"status": status, "version": __version__, **device, **pool_health,
                "clip_weights": available_weights(), "modes": list(MODES), "engines": available_engines(),
                "queue_length": store.queue_length()}

    # Endpoints return plain dicts: FastAPI validates them against JobView once.
    @app.post("/jobs", status_code=201, dependencies=[Depends(authorised)], responses={
        **AUTH, **INVALID,
        409: error_response("an upload named in windows is not complete or belongs to another job"),
        413: error_response(f"request body over {MAX_BODY} bytes, or the windows' uploads over the per-job quota")})
    def submit(body: JobRequest) -> JobView:
        if body.windows is not None:
            return _view(accept_windows(store, uploads, body.model_dump(exclude={"windows"}), body.windows))
        with layout.staging("submit") as staging:  # where an inline AOI is read from
            _check_request(body, staging)
        return _view(store.create(body.model_dump()))

    # Reads are async: a status poll is a few hundred microseconds of SQLite, cheaper on the event
    # loop than a hop through the thread pool (p99 under load, scripts/bench/service.py).
    @app.get("/jobs", dependencies=[Depends(authorised)], responses={**AUTH, **INVALID})
    async def recent(limit: int = 50) -> list[JobView]:
        return [_view(j) for j in store.list(min(max(limit, 1), 500))]

    def _job(job_id: str) -> dict:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorised)], responses={**AUTH, **NOT_FOUND, **INVALID})
    async def status(job_id: str) -> JobView:
        return _view(_job(job_id))

    @app.delete("/jobs/{job_id}", dependencies=[Depends(authorised)], responses={**AUTH, **NOT_FOUND, **INVALID})
    def cancel(job_id: str) -> JobView:
        _job(job_id)
        return _view(store.request_cancel(job_id))

    @app.get("/jobs/{job_id}/events", dependencies=[Depends(authorised)], response_class=StreamingResponse,
             responses={200: {"description": "server-sent events, one 'progress' event per change, until the job "
                                             "ends", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                        **AUTH, **NOT_FOUND, **INVALID})
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
