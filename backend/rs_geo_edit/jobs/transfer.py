"""Window transfer for remote edits: resumable uploads in, changed pixels out.

A client whose scene the service cannot read crops the windows of its edit plan (context margin
included) into small GeoTIFFs and uploads them here in chunks: ``POST /uploads`` declares the
size, each ``PATCH /uploads/{id}`` appends bytes at ``Upload-Offset``, and ``GET /uploads/{id}``
says how many bytes arrived, so a dropped connection resumes where it stopped instead of starting
over. A complete upload is checked (a GeoTIFF with a CRS) before a job may use it. ``POST /jobs``
with ``windows`` names the uploads; the worker edits them (``window_edit.py``), and
``GET /jobs/{id}/result`` lists the changed boxes, ``GET /jobs/{id}/result/{index}`` streams one.

Uploads and results live where :mod:`.layout` puts them, count against a per-job quota, and are removed ``retention`` seconds after their job finished (an upload no job
claimed, after the same time since it was last written, and never within an hour).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ..files import atomic_path
from .inputs import job_inputs
from .layout import JobLayout, inline_aoi
from .schema import (AUTH, PlanRequest, PlanView, ResultManifest, SceneGrid, UploadRequest, UploadView, WindowUpload,
                     error_response, inline_aoi_error)
from .store import TERMINAL, JobStore

RESULT_CHUNK = 1 << 20  # bytes per streamed piece of a result
UPLOAD_GRACE_S = 3600.0  # an unclaimed upload lives at least this long after its last byte: the client may
                         # still be sending the job's other windows


@dataclass
class TransferLimits:
    """Per-job disk quota (bytes of uploaded windows) and how long finished jobs' files stay (s)."""

    quota_bytes: int = 8 << 30
    retention_s: float = 72 * 3600.0


NO_UPLOAD = {404: error_response("no such upload (finished uploads are removed after the retention period)")}
NO_RESULT = {404: error_response("no such job, or no such window in its result"),
             409: error_response("the job edited files on the server, or is not done yet"),
             410: error_response("the job's results were removed after the retention period")}


class Uploads:
    """The upload folder: ``<id>.tif`` (the bytes so far) and ``<id>.json`` (size, state, job)."""

    def __init__(self, layout: JobLayout, limits: TransferLimits):
        self.layout = layout
        layout.uploads.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # uploads a request is appending to right now
        self._last_clean = 0.0

    def path(self, upload_id: str) -> Path:
        return self.layout.upload(upload_id)

    def meta(self, upload_id: str) -> dict:
        if not upload_id.isalnum():
            raise HTTPException(404, f"no upload {upload_id!r}")
        try:
            return json.loads(self.layout.upload_state(upload_id).read_text())
        except FileNotFoundError:
            raise HTTPException(404, f"no upload {upload_id!r} (finished uploads are kept for a limited "
                                     "time): upload the window again") from None

    def _save(self, upload_id: str, meta: dict) -> None:
        with atomic_path(self.layout.upload_state(upload_id)) as tmp:
            tmp.write_text(json.dumps(meta))

    def create(self, size: int) -> dict:
        if size > self.limits.quota_bytes:
            raise HTTPException(413, f"upload of {size} bytes is over the per-job quota of "
                                     f"{self.limits.quota_bytes} bytes: edit fewer or smaller ROIs per job")
        upload_id = uuid.uuid4().hex
        self.path(upload_id).touch()
        meta = {"id": upload_id, "size": size, "created": time.time(), "complete": False, "job": None}
        self._save(upload_id, meta)
        return self.view(upload_id)

    def view(self, upload_id: str) -> dict:
        meta = self.meta(upload_id)
        return {"id": upload_id, "size": meta["size"], "offset": self.path(upload_id).stat().st_size,
                "complete": meta["complete"]}

    async def append(self, upload_id: str, offset: int, request: Request) -> dict:
        """Append the request body at ``offset``; bytes that arrive before a dropped connection are
        kept, so the client resumes from the offset ``GET /uploads/{id}`` reports."""
        meta = self.meta(upload_id)
        path = self.path(upload_id)
        held = path.stat().st_size
        if meta["complete"] or offset != held or upload_id in self._busy:
            raise HTTPException(409, f"upload {upload_id} holds {held} of {meta['size']} bytes"
                                     + (" and a chunk is still arriving" if upload_id in self._busy else "")
                                     + f": send the bytes from offset {held}", headers={"Upload-Offset": str(held)})
        self._busy.add(upload_id)
        try:
            return await self._receive(upload_id, meta, held, request)
        finally:
            self._busy.discard(upload_id)

    async def _receive(self, upload_id: str, meta: dict, held: int, request: Request) -> dict:
        with open(self.path(upload_id), "ab") as fh:
            try:
                async for piece in request.stream():
                    if held + len(piece) > meta["size"]:
                        raise HTTPException(413, f"upload {upload_id} was declared as {meta['size']} bytes: "
                                                 "more arrived; declare the real size")
                    fh.write(piece)
                    held += len(piece)
            except ClientDisconnect:
                return {"id": upload_id, "size": meta["size"], "offset": held, "complete": False}
        if held == meta["size"]:
            self._check_raster(upload_id)
            meta["complete"] = True
            self._save(upload_id, meta)
        return self.view(upload_id)

    def _check_raster(self, upload_id: str) -> None:
        """A complete upload must be a GeoTIFF with a CRS; anything else is removed with a 422."""
        import rasterio
        from rasterio.errors import RasterioIOError

        from ..geo.raster import SUPPORTED_DTYPES

        path = self.path(upload_id)
        problem = None
        try:
            with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as src:
                if src.driver != "GTiff":
                    problem = f"is a {src.driver} raster, not a GeoTIFF"
                elif src.crs is None:
                    problem = "has no CRS: assign one to the scene (gdal_edit.py -a_srs EPSG:XXXX)"
                elif src.dtypes[0] not in SUPPORTED_DTYPES:
                    problem = f"has data type {src.dtypes[0]}, which is not supported"
        except RasterioIOError:
            problem = "is not a GeoTIFF"
        if problem:
            self.remove(upload_id)
            raise HTTPException(422, f"upload {upload_id} {problem}; upload a window cropped from the scene "
                                     "(rs-geo-edit edit --backend does it)")

    def remove(self, upload_id: str) -> None:
        for path in (self.path(upload_id), self.layout.upload_state(upload_id)):
            path.unlink(missing_ok=True)

    def claim(self, windows: list[WindowUpload], create_job: Callable[[int], dict]) -> dict:
        """Check the uploads of ``windows`` (complete, free, within the quota), create the job with
        ``create_job(total bytes)`` and give it the uploads, all under one lock."""
        with self._lock:
            metas = [self.meta(w.upload) for w in windows]
            for w, meta in zip(windows, metas):
                if not meta["complete"]:
                    raise HTTPException(409, f"upload {w.upload} is not complete: send its remaining bytes first")
                if meta["job"] is not None:
                    raise HTTPException(409, f"upload {w.upload} already belongs to job {meta['job']}")
            total = sum(m["size"] for m in metas)
            if total > self.limits.quota_bytes:
                raise HTTPException(413, f"the windows of this job hold {total} bytes, over the per-job quota of "
                                         f"{self.limits.quota_bytes} bytes: split the ROIs over several jobs")
            job = create_job(total)
            for meta in metas:
                self._save(meta["id"], {**meta, "job": job["id"]})
        return job

    def clean(self, store: JobStore) -> list[str]:
        """Remove the files of jobs finished over ``retention`` ago and of stale unclaimed uploads;
        at most once a minute (or once per retention period, if shorter). Returns what went."""
        now = time.time()
        if now - self._last_clean < min(60.0, self.limits.retention_s):
            return []
        self._last_clean = now
        cutoff = now - self.limits.retention_s
        removed = []
        for meta_path in self.layout.uploads.glob("*.json"):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if meta["job"] is None:
                path = self.path(meta["id"])
                stale = not path.exists() or path.stat().st_mtime < min(cutoff, now - UPLOAD_GRACE_S)
            else:
                job = store.get(meta["job"])
                stale = job is None or (job["state"] in TERMINAL and (job["finished"] or 0) < cutoff)
            if stale:
                self.remove(meta["id"])
                removed.append(f"upload {meta['id']}")
        if self.layout.jobs.is_dir():
            for job_dir in self.layout.jobs.iterdir():
                job = store.get(job_dir.name)
                if job is not None and job["state"] in TERMINAL and (job["finished"] or 0) < cutoff:
                    shutil.rmtree(job_dir, ignore_errors=True)
                    removed.append(f"job {job_dir.name}")
        return removed


def _refuse_copy(request: dict[str, Any]) -> None:
    """A remote edit has only its windows: copy mode's content comes from outside them."""
    if request.get("copy_from") or request.get("mode") == "copy":
        raise HTTPException(422, "copy mode needs content outside the windows: run copy edits locally")


def accept_windows(store: JobStore, uploads: Uploads, request: dict[str, Any], windows: list[WindowUpload]) -> dict:
    """Create the job of a window-upload request (checked at the door) and give it its uploads."""
    from ..errors import RsGeoEditError

    uploads.clean(store)
    indexes = [w.index for w in windows]
    if not windows or len(set(indexes)) != len(indexes):
        raise HTTPException(422, "windows must list each window index once")
    aoi = request["aoi"]
    if not isinstance(aoi, dict) or aoi.get("type") != "FeatureCollection":
        raise HTTPException(422, "a window job takes its ROIs inline: aoi must be a GeoJSON FeatureCollection "
                                 "whose features carry the property 'window' (the window index)")
    owners = {(f.get("properties") or {}).get("window") for f in aoi.get("features", [])}
    if not owners <= set(indexes) or not set(indexes) <= owners:
        raise HTTPException(422, "every window needs its ROIs and every ROI a window: the features' "
                                 f"'window' properties {sorted(map(str, owners))} must match the windows {indexes}")
    _refuse_copy(request)
    try:
        job_inputs(request)
    except RsGeoEditError as exc:
        raise HTTPException(422, str(exc)) from None
    return uploads.claim(windows, lambda total: store.create(
        {**request, "windows": [w.model_dump() for w in windows],
         "transfer": {"uploaded_bytes": total, "downloaded_bytes": 0}}))


def plan_for_client(request: dict[str, Any], grid: SceneGrid, staging: Path) -> dict:
    """The windows of an edit over a client's scene known only by its grid (``POST /plan``)."""
    import warnings

    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    from ..errors import RsGeoEditError
    from ..pipeline import plan_grid, window_features

    _refuse_copy(request)
    aoi = request["aoi"]
    if aoi.get("type") not in ("FeatureCollection", "Feature"):
        raise HTTPException(422, "aoi must be a GeoJSON FeatureCollection or Feature of the ROIs")
    try:
        crs = CRS.from_user_input(grid.crs)
    except CRSError as exc:
        raise HTTPException(422, f"grid.crs is not a CRS ({exc}): send the scene's WKT or 'EPSG:XXXX'") from None
    transform = Affine(*grid.transform)
    if transform.is_degenerate:
        raise HTTPException(422, "grid.transform is degenerate (its pixels have no area): send the scene's "
                                 "geotransform")
    aoi_path = inline_aoi(staging)
    try:
        config = job_inputs({**request, "scene": "remote"}, staging).config
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, windows = plan_grid(aoi_path, crs, transform, grid.width, grid.height, config)
    except RsGeoEditError as exc:
        raise HTTPException(422, inline_aoi_error(exc, aoi_path)) from None
    return {"windows": [{"index": ew.index, "col_off": int(ew.window.col_off), "row_off": int(ew.window.row_off),
                         "width": ew.shape[1], "height": ew.shape[0], "rois": len(ew.rois)} for ew in windows],
            "aoi": {"type": "FeatureCollection", "features": window_features(windows)},
            "warnings": [inline_aoi_error(w.message, aoi_path) for w in caught]}


def transfer_router(store: JobStore, layout: JobLayout, limits: TransferLimits,
                    authorised: Callable) -> tuple[APIRouter, Uploads]:
    """The upload and result endpoints, and the upload folder (``POST /jobs`` claims uploads from
    it); ``authorised`` is the service's token check."""
    uploads = Uploads(layout, limits)
    uploads.clean(store)  # files whose retention ran out while the service was down
    router = APIRouter(dependencies=[Depends(authorised)])

    @router.post("/plan", response_model=PlanView, responses={
        **AUTH, 422: error_response("invalid request, an unusable AOI or CRS, or copy mode: the message says which")})
    def plan(body: PlanRequest) -> dict:
        with layout.staging("plan") as staging:  # where the inline AOI is read from
            return plan_for_client(body.model_dump(exclude={"grid"}), body.grid, staging)

    @router.post("/uploads", status_code=201, response_model=UploadView,
                 responses={**AUTH, 413: error_response("the declared size is over the per-job quota"),
                            422: error_response("invalid request: the message names the field")})
    def create_upload(body: UploadRequest) -> dict:
        uploads.clean(store)
        return uploads.create(body.size)

    @router.get("/uploads/{upload_id}", response_model=UploadView, responses={**AUTH, **NO_UPLOAD})
    def upload_state(upload_id: str) -> dict:
        return uploads.view(upload_id)

    @router.patch("/uploads/{upload_id}", response_model=UploadView, responses={
        **AUTH, **NO_UPLOAD,
        400: error_response("no Upload-Offset header, or a Host header that is not allowed"),
        409: error_response("the offset is not where the upload stands (the header Upload-Offset says where), "
                    "the upload is complete, or another chunk is arriving"),
        413: error_response("more bytes than the upload declared"),
        422: error_response("the complete upload is not a GeoTIFF with a CRS (it is removed)")})
    async def upload_chunk(upload_id: str, request: Request) -> dict:
        try:
            offset = int(request.headers["upload-offset"])
        except (KeyError, ValueError):
            raise HTTPException(400, "send the chunk's position in the header Upload-Offset (bytes)") from None
        return await uploads.append(upload_id, offset, request)

    @router.delete("/uploads/{upload_id}", status_code=204, responses={
        **AUTH, **NO_UPLOAD, 409: error_response("the upload belongs to a job")})
    def delete_upload(upload_id: str) -> None:
        meta = uploads.meta(upload_id)
        if meta["job"] is not None:
            raise HTTPException(409, f"upload {upload_id} belongs to job {meta['job']}")
        uploads.remove(upload_id)

    def finished(job_id: str) -> tuple[dict, dict]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        if not job["request"].get("windows"):
            raise HTTPException(409, f"job {job_id} edited files on the server: its output is {job['result']}")
        if job["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['state']}: results come when it is done")
        manifest = layout.manifest(job_id)
        if not manifest.is_file():
            raise HTTPException(410, f"the results of job {job_id} were removed after the retention period: "
                                     "submit the edit again")
        return job, json.loads(manifest.read_text())

    @router.get("/jobs/{job_id}/result", response_model=ResultManifest, responses={**AUTH, **NO_RESULT})
    def result(job_id: str) -> dict:
        return finished(job_id)[1]

    @router.get("/jobs/{job_id}/result/{index}", response_class=StreamingResponse, responses={
        **AUTH, **NO_RESULT, 422: error_response("the window index is not an integer"),
        200: {"description": "the changed pixels of the window as a GeoTIFF",
              "content": {"image/tiff": {"schema": {"type": "string", "format": "binary"}}}}})
    def result_window(job_id: str, index: int) -> StreamingResponse:
        _, manifest = finished(job_id)
        entry = next((w for w in manifest["windows"] if w["index"] == index), None)
        if entry is None:
            raise HTTPException(404, f"job {job_id} has no window {index}")
        path = layout.results(job_id) / entry["file"]

        def stream():
            with open(path, "rb") as fh:
                while piece := fh.read(RESULT_CHUNK):
                    yield piece
                    store.add_downloaded(job_id, len(piece))

        return StreamingResponse(stream(), media_type="image/tiff",
                                 headers={"Content-Length": str(path.stat().st_size)})

    return router, uploads
