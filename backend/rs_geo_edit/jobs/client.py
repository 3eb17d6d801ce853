"""``rs-geo-edit edit --backend URL``: edit on a remote service that cannot read the scene.

The client plans the windows exactly as a local edit does, crops each window (context margin
included) into a small GeoTIFF, uploads those (resuming after a dropped connection), follows the
job's events as progress, downloads the changed pixels and writes the output itself with the same
streaming writer as a local edit: outside the ROIs and their blend band the output is the source,
bit for bit, and the same inputs and seed give the bytes of a local edit on the same kind of device.
Ctrl-C cancels the remote job.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from .. import __version__
from ..errors import IncompatibleOptions, JobCancelled, RsGeoEditError
from ..progress import ProgressCallback, ProgressEvent, StageReporter

TOKEN_ENV = "RS_GEO_EDIT_TOKEN"
TERMINAL = ("done", "failed", "cancelled")
# Shares of the progress bar: uploading, the remote job's own progress, downloading and writing.
UPLOAD_END, JOB_END = 0.1, 0.9


class BackendError(RsGeoEditError):
    """The remote service refused a request, failed the job, or cannot be reached."""


@dataclass
class RemoteResult:
    output: Path
    provenance: Optional[Path]
    job: dict
    record: dict  # the provenance record (written beside the output unless provenance is off)


class Backend:
    """HTTP calls to one service (``rs-geo-edit serve``) with its bearer token."""

    def __init__(self, url: str, token: Optional[str], *, chunk: int = 1 << 20, retries: int = 8):
        import httpx

        if not token:
            raise IncompatibleOptions(f"--backend {url} needs its token: pass --token or set {TOKEN_ENV} "
                                      "(on the server: rs-geo-edit serve --print-token)")
        self.url, self.chunk, self.retries = url.rstrip("/"), chunk, retries
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(60.0))

    def call(self, method: str, path: str, **kwargs):
        import httpx

        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BackendError(f"cannot reach the backend {self.url} ({exc}): check the URL and that "
                               "'rs-geo-edit serve' runs there") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise BackendError(f"backend {self.url} answered {resp.status_code} to {method} {path}: {detail}")
        return resp

    def cancel(self, job_id: str) -> None:
        """Ask the service to cancel a job, on a connection of its own: a Ctrl-C can land inside
        the shared client's connection pool and leave it waiting for ever."""
        import httpx

        try:
            with httpx.Client(base_url=self.url, headers=self.http.headers, timeout=httpx.Timeout(10.0)) as http:
                resp = http.delete(f"/jobs/{job_id}")
        except httpx.TransportError as exc:
            raise BackendError(f"could not cancel job {job_id} on {self.url} ({exc}): cancel it there "
                               f"(DELETE /jobs/{job_id})") from None
        if resp.status_code >= 400:
            raise BackendError(f"backend {self.url} answered {resp.status_code} to the cancel of job {job_id}")

    def upload(self, path: Path, sent: Callable[[int], None]) -> str:
        """Upload one file in chunks; after a dropped connection ask the server how much it holds
        and go on from there. ``sent(bytes)`` reports progress. Returns the upload id."""
        import httpx

        size = path.stat().st_size
        upload_id = self.call("POST", "/uploads", json={"size": size}).json()["id"]
        offset, failures = 0, 0
        with open(path, "rb") as fh:
            while offset < size:
                fh.seek(offset)
                piece = fh.read(self.chunk)
                try:
                    resp = self.http.patch(f"/uploads/{upload_id}", content=piece,
                                           headers={"Upload-Offset": str(offset),
                                                    "Content-Type": "application/octet-stream"})
                except httpx.TransportError:
                    failures = self._back_off(failures, f"upload of {path.name} to {self.url} failed "
                                              f"{failures + 1} times: check the connection and run the edit again")
                    offset = self._held(upload_id, offset)
                    continue
                if resp.status_code == 409 and "Upload-Offset" in resp.headers:
                    if int(resp.headers["Upload-Offset"]) == offset:  # a dropped chunk is still arriving there
                        time.sleep(0.2)
                    offset = int(resp.headers["Upload-Offset"])
                    continue
                if resp.status_code >= 400:
                    raise BackendError(f"backend {self.url} refused {path.name}: {resp.json().get('detail')}")
                offset = resp.json()["offset"]
                sent(offset)
        return upload_id

    def _back_off(self, failures: int, message: str) -> int:
        """One more failed attempt: give up with ``message`` after ``retries``, else wait
        (exponential, at most 10 s). Returns the new failure count."""
        failures += 1
        if failures > self.retries:
            raise BackendError(message) from None
        time.sleep(min(0.5 * 2 ** failures, 10.0))
        return failures

    def _held(self, upload_id: str, fallback: int) -> int:
        import httpx

        try:
            return int(self.http.get(f"/uploads/{upload_id}").json()["offset"])
        except (httpx.TransportError, ValueError, KeyError):
            return fallback

    def follow(self, job_id: str, update: Callable[[dict], None]) -> dict:
        """Follow the job's event stream until it ends (reconnecting if the stream drops)."""
        import httpx

        failures = 0
        while True:
            try:
                with self.http.stream("GET", f"/jobs/{job_id}/events",
                                      timeout=httpx.Timeout(60.0, read=600.0)) as resp:
                    for line in resp.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        payload = json.loads(line[len("data: "):])
                        update(payload)
                        if payload["state"] in TERMINAL:
                            return self.call("GET", f"/jobs/{job_id}").json()
            except httpx.TransportError:
                failures = self._back_off(failures, f"lost the backend {self.url} while following job {job_id}; "
                                          "the job goes on there")
            job = self.call("GET", f"/jobs/{job_id}").json()
            if job["state"] in TERMINAL:
                return job

    def download(self, job_id: str, index: int, dest: Path) -> int:
        with self.http.stream("GET", f"/jobs/{job_id}/result/{index}") as resp:
            if resp.status_code >= 400:
                resp.read()
                raise BackendError(f"backend {self.url} could not send window {index} of job {job_id}: "
                                   f"{resp.json().get('detail')}")
            with open(dest, "wb") as fh:
                for piece in resp.iter_bytes():
                    fh.write(piece)
        return dest.stat().st_size


def crop_windows(scene: Path, windows, folder: Path) -> list[Path]:
    """Each window of the plan as a lossless GeoTIFF: all bands, nodata, colour interpretation
    and internal mask, so the server sees the pixels and validity a local edit reads."""
    import numpy as np
    import rasterio
    from rasterio.windows import transform as window_transform

    from ..geo.raster import WRITE_ENV, _has_internal_mask, gdal_env, open_scene

    paths = []
    with gdal_env(**WRITE_ENV), open_scene(scene) as src:
        internal_mask = _has_internal_mask(src)
        floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
        for ew in windows:
            height, width = ew.shape
            profile = {"driver": "GTiff", "width": width, "height": height, "count": src.count,
                       "dtype": src.dtypes[0], "crs": src.crs, "transform": window_transform(ew.window, src.transform),
                       "nodata": src.nodata, "compress": "deflate", "predictor": 3 if floating else 2}
            path = folder / f"window-{ew.index}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=ew.window))
                dst.colorinterp = src.colorinterp
                if internal_mask:
                    dst.write_mask(src.read_masks(1, window=ew.window))
            paths.append(path)
    return paths


def check_remote_options(config) -> None:
    """Refuse, before anything travels, the options a window job cannot honour."""
    if config.mode == "copy" or config.copy_from:
        raise IncompatibleOptions("copy mode takes content from outside the windows: run it without --backend")
    if config.rgb_bands is not None or config.guidance.synonyms or config.guidance.llm_endpoint:
        raise IncompatibleOptions("--rgb-bands, --synonyms and --llm-endpoint are not sent to a backend: "
                                  "run the edit without --backend, or without those options")


def job_body(config, plan, uploads: list[str], scene: Path, output: Path) -> dict:
    """The ``POST /jobs`` body of a window job: the ROIs (scene CRS) tagged with their window."""
    from ..options import SPEC_BY_NAME
    from ..pipeline import window_features

    features = window_features(plan.windows)
    g = config.guidance

    # Every model parameter the options schema makes public, so a new one travels without a change here.
    model = {k: v for k, v in dataclasses.asdict(config.model).items() if k in SPEC_BY_NAME}
    options = {"blend": config.blend.mode, "feather": config.blend.band_px, "color_match": config.blend.color_match,
               "detail_match": config.blend.detail_match, "max_side": config.windows.max_side,
               "model_scope": config.model.scope, **model,
               "clip": g.clip, "strength": g.strength, "clip_views": g.views, "guide_every": g.every,
               "momentum": g.momentum, "ensemble": g.ensemble}
    windows = [{"upload": u, "index": ew.index, "col_off": int(ew.window.col_off), "row_off": int(ew.window.row_off)}
               for ew, u in zip(plan.windows, uploads)]
    return {"scene": scene.name, "output": output.name, "aoi": {"type": "FeatureCollection", "features": features},
            "mode": config.mode, "preset": config.preset, "seed": config.seed, "prompt": config.prompt,
            "options": options, "windows": windows}


def edit_remotely(scene: str | Path, aoi: str | Path, output: str | Path, config, backend: Backend,
                  progress: Optional[ProgressCallback] = None) -> RemoteResult:
    """Edit ``scene`` on ``backend`` and write ``output`` here (and its provenance JSON)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from ..files import atomic_path, sha256_file
    from ..geo.raster import Patch, check_output_path, write_edited
    from ..pipeline import plan_scene, provenance_path

    scene, aoi = Path(scene), Path(aoi)
    config.validate()
    check_remote_options(config)
    output = check_output_path(output, [scene, aoi], config.output.overwrite)
    prov_path = provenance_path(output) if config.output.provenance else None
    if prov_path is not None:
        check_output_path(prov_path, [scene, aoi], True)
    plan = plan_scene(scene, aoi, config)
    report = StageReporter(progress, "upload", 0.0, UPLOAD_END)
    with tempfile.TemporaryDirectory(prefix="rs-geo-edit-windows-") as tmp:
        folder = Path(tmp)
        files = crop_windows(scene, plan.windows, folder)
        total, done = sum(p.stat().st_size for p in files), 0
        uploads: list[str] = []
        for path in files:
            uploads.append(backend.upload(path, lambda held: report(done + held, total, f"{path.name}")))
            done += path.stat().st_size
        body = job_body(config, plan, uploads, scene, output)
        job = backend.call("POST", "/jobs", json=body).json()

        def update(payload: dict) -> None:
            if progress is not None:
                where = f"remote job {job['id']}: " if payload.get("stage") in ("", None) else ""
                progress(ProgressEvent(payload.get("stage") or "queued", payload["progress"], 1.0,
                                       UPLOAD_END + (JOB_END - UPLOAD_END) * payload["progress"],
                                       where + (payload.get("message") or payload["state"])))

        try:
            job = backend.follow(job["id"], update)
        except KeyboardInterrupt:
            backend.cancel(job["id"])
            raise
        if job["state"] == "cancelled":
            raise JobCancelled(f"remote job {job['id']} was cancelled on {backend.url}")
        if job["state"] == "failed":
            raise BackendError(f"remote job {job['id']} failed: {job['error']}")
        manifest = backend.call("GET", f"/jobs/{job['id']}/result").json()
        fetch = StageReporter(progress, "download", JOB_END, 0.95)
        patches = []
        for n, entry in enumerate(manifest["windows"]):
            if not entry["width"]:
                continue
            dest = folder / f"result-{entry['index']}.tif"
            backend.download(job["id"], entry["index"], dest)
            with rasterio.open(dest) as src:
                pixels = src.read()
            window = Window(entry["col_off"], entry["row_off"], entry["width"], entry["height"])
            patches.append(Patch(window, pixels, np.ones(pixels.shape[1:], bool)))
            fetch(n + 1, len(manifest["windows"]), f"window {entry['index']}")
        write_info = write_edited(scene, output, patches, compress=config.output.compress, cog=config.output.cog,
                                  progress=StageReporter(progress, "write", 0.95, 1.0))
    job = backend.call("GET", f"/jobs/{job['id']}").json()
    record = {"software": "rs-geo-edit", "version": __version__,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "backend": {"url": backend.url, "job": job["id"], "transfer": job.get("transfer")},
              "inputs": {"scene": {"path": str(scene.resolve()), "sha256": sha256_file(scene)},
                         "aoi": {"path": str(aoi.resolve()),
                                 "sha256": sha256_file(aoi) if aoi.is_file() else None}},
              "output": {**write_info, "sha256": sha256_file(output)},
              "parameters": config.to_dict(), "seed": config.seed, "plan": plan.as_dict(),
              "editor": manifest["editor"], "windows": [e["record"] for e in manifest["windows"]],
              "warnings": plan.warnings}
    if prov_path is not None:
        with atomic_path(prov_path) as path:
            path.write_text(json.dumps(record, indent=2, default=str))
    return RemoteResult(output=output, provenance=prov_path, job=job, record=record)
