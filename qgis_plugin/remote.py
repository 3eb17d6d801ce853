"""Editing on a remote server that cannot read the analyst's files: only windows travel.

The server plans the windows from the scene's grid (size, CRS, transform: ``POST /plan``), the
plugin crops each window (context margin included) with GDAL into a small lossless GeoTIFF and
uploads it, the server trains and edits, and the plugin downloads the changed boxes and writes the
output here: a copy of the source with those boxes replaced, so outside the ROIs and their blend
band it is the source bit for bit, with its profile, tags, masks and (rebuilt) overviews. The
output appears under its name only when complete.

``RemoteEditTask`` runs it in QGIS's task manager: upload, the remote job, download and writing
share one progress bar; a cancel stops the upload or cancels the remote job. It can also pick up a
job submitted before QGIS was closed (``job_id``) and fetch its result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .client import BackendClient, BackendError
from .entities import Job
from .jobs import EditTask, follow_job

# Shares of the progress bar: uploading, the remote job's own progress, then downloading and writing.
UPLOAD_END, JOB_END = 0.1, 0.9


@dataclasses.dataclass(frozen=True)
class LocalFiles:
    """Where a remote job's scene is and where its output goes, on this machine."""

    scene: str
    output: str


def scene_grid(path: str) -> dict:
    """The scene's grid as ``POST /plan`` takes it (the affine in rasterio's order)."""
    from osgeo import gdal

    ds = _open(path)
    g = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if g is None or not wkt:
        raise ValueError(f"{path} has no georeferencing: assign a CRS and geotransform first")
    grid = {"width": ds.RasterXSize, "height": ds.RasterYSize, "crs": wkt,
            "transform": [g[1], g[2], g[0], g[4], g[5], g[3]]}
    del ds
    gdal.ErrorReset()
    return grid


def data_bands(ds) -> list[int]:
    """1-based numbers of the bands the backend edits: every band but alpha."""
    from osgeo import gdal

    return [b for b in range(1, ds.RasterCount + 1)
            if ds.GetRasterBand(b).GetColorInterpretation() != gdal.GCI_AlphaBand]


def crop_window(path: str, window: dict, dest: Path) -> Path:
    """One planned window as a lossless GeoTIFF (all bands, nodata, colour interpretation, mask)."""
    from osgeo import gdal

    ds = _open(path)
    floating = gdal.GetDataTypeName(ds.GetRasterBand(1).DataType).startswith(("Float", "CFloat"))
    options = gdal.TranslateOptions(format="GTiff", srcWin=[window["col_off"], window["row_off"], window["width"],
                                                             window["height"]],
                                    creationOptions=["COMPRESS=DEFLATE", f"PREDICTOR={3 if floating else 2}",
                                                     "TILED=YES"])
    if gdal.Translate(str(dest), ds, options=options) is None:
        raise ValueError(f"cannot crop window {window['index']} of {path}: {gdal.GetLastErrorMsg()}")
    return dest


def write_output(scene: str, output: Path, boxes: list[tuple[int, int, Path]]) -> None:
    """Copy ``scene`` and replace the data bands of each ``(col, row, file)`` box; overviews are
    rebuilt (average, as the backend does). Written beside ``output`` and renamed when complete."""
    from osgeo import gdal

    partial = output.with_name(f".{output.name}.partial")
    shutil.copyfile(scene, partial)
    try:
        ds = gdal.Open(str(partial), gdal.GA_Update)
        if ds is None:
            raise ValueError(f"cannot update a copy of {scene}: {gdal.GetLastErrorMsg()}")
        bands = data_bands(ds)
        for col, row, path in boxes:
            box = _open(str(path))
            if box.RasterCount != len(bands):
                raise ValueError(f"the server returned {box.RasterCount} bands for a scene with {len(bands)}")
            for k, band in enumerate(bands):
                pixels = box.GetRasterBand(k + 1).ReadRaster()
                ds.GetRasterBand(band).WriteRaster(col, row, box.RasterXSize, box.RasterYSize, pixels)
            del box
        first = ds.GetRasterBand(1)
        factors = [round(ds.RasterXSize / first.GetOverview(i).XSize) for i in range(first.GetOverviewCount())]
        if factors:
            ds.BuildOverviews("AVERAGE", factors)
        ds.FlushCache()
        del ds
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()


def _open(path: str):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    if ds is None:
        raise ValueError(f"cannot read {path}: {gdal.GetLastErrorMsg() or 'not a raster GDAL reads'}")
    return ds


class RemoteEditTask(EditTask):
    """A remote edit in QGIS's task manager; ``job`` holds the latest state with this machine's
    scene and output paths (read it on the main thread from ``progressChanged``);
    ``taskCompleted``/``taskTerminated`` report the end. Give ``request`` (the dock's edit, its
    ``scene`` and ``output`` local paths) to start one, or ``job_id`` and ``files`` to follow a
    job submitted earlier and fetch its result."""

    def __init__(self, client: BackendClient, request: Optional[dict] = None, *, job_id: Optional[str] = None,
                 files: Optional[LocalFiles] = None, poll: float = 0.5):
        super().__init__(client, request, job_id, poll)
        self.setDescription(f"{self.description()} (remote)")
        self.files = files or LocalFiles(scene=request["scene"], output=request["output"])

    def run(self) -> bool:  # worker thread: no widgets here
        try:
            with tempfile.TemporaryDirectory(prefix="rs-geo-edit-windows-") as tmp:
                job_id = self.job_id or self._submit(Path(tmp))
                if job_id is None:
                    return False
                job = follow_job(self.client, job_id=job_id, is_canceled=self.is_canceled, on_update=self._on_job,
                                 poll=self.poll, is_detached=lambda: self.detached)
                if self.detached:
                    return False
                if job.state != "done":
                    self._on_job(job)
                    if job.state == "failed":
                        self.error = job.error or "the remote job failed"
                    return False
                self._fetch(job, Path(tmp))
        except (BackendError, ValueError, OSError) as exc:
            self.error = str(exc)
            return False
        return True

    def _submit(self, folder: Path) -> Optional[str]:
        """Plan, crop and upload the windows and submit the job; None when cancelled meanwhile."""
        request = self.request
        edit = {k: request[k] for k in ("prompt", "mode", "preset", "seed") if request.get(k) is not None}
        options = dict(request.get("options") or {})
        self._show("plan", 0.0, "planning the windows on the server")
        plan = self.client.plan({"grid": scene_grid(self.files.scene), "aoi": request["aoi"], "options": options,
                                 **edit})
        files = [crop_window(self.files.scene, w, folder / f"window-{w['index']}.tif") for w in plan["windows"]]
        total, done = sum(p.stat().st_size for p in files), 0
        windows = []
        for w, path in zip(plan["windows"], files):
            def sent(held: int, name=path.name) -> None:
                self._show("upload", UPLOAD_END * (done + held) / total,
                           f"{name}: {(done + held) / 1e6:.1f} of {total / 1e6:.1f} MB")
            try:
                upload = self.client.upload(path, sent, self.isCanceled)  # closing QGIS stops an upload too
            except BackendError:
                if self.isCanceled():
                    self.job = Job(id="", state="cancelled", stage="upload", message="cancelled while uploading")
                    return None
                raise
            done += path.stat().st_size
            windows.append({"upload": upload, "index": w["index"], "col_off": w["col_off"], "row_off": w["row_off"]})
        body = {"scene": Path(self.files.scene).name, "output": Path(self.files.output).name, "aoi": plan["aoi"],
                "windows": windows, "options": options, **edit}
        job = self.client.submit(body)
        self.job_id = job.id
        self._on_job(job)
        return job.id

    def _fetch(self, job: Job, folder: Path) -> None:
        """Download the changed boxes of a finished job and write the output and its record."""
        manifest = self.client.result(job.id)
        boxes = []
        changed = [w for w in manifest["windows"] if w["width"]]
        for n, entry in enumerate(changed):
            self._show("download", JOB_END + (0.95 - JOB_END) * n / max(len(changed), 1), f"window {entry['index']}")
            dest = folder / f"result-{entry['index']}.tif"
            self.client.download(job.id, entry["index"], dest)
            boxes.append((entry["col_off"], entry["row_off"], dest))
        output = Path(self.files.output)
        if output.exists():
            raise ValueError(f"{output} appeared meanwhile: it is left alone; load the job again to write "
                             "its result under a new name")
        self._show("write", 0.95, f"writing {output.name}")
        write_output(self.files.scene, output, boxes)
        job = self.client.job(job.id)
        record = {"software": "rs-geo-edit QGIS plugin", "scene": self.files.scene, "output": str(output),
                  "backend": {"url": self.client.url, "job": job.id, "transfer": job.request.get("transfer")},
                  "request": {k: v for k, v in job.request.items() if k not in ("aoi", "windows", "transfer")},
                  "editor": manifest["editor"], "windows": [w["record"] for w in manifest["windows"]]}
        provenance = output.with_suffix(".json")
        if not provenance.exists():
            partial = provenance.with_name(f".{provenance.name}.partial")
            partial.write_text(json.dumps(record, indent=2, default=str))
            os.replace(partial, provenance)
        self.job = self._local(dataclasses.replace(job, progress=1.0))

    def _local(self, job: Job) -> Job:
        """``job`` with this machine's paths: the result layer is this output, placed over this scene."""
        return dataclasses.replace(job, output=self.files.output, request={**job.request, "scene": self.files.scene})

    def _on_job(self, job: Job) -> None:
        share = UPLOAD_END + (JOB_END - UPLOAD_END) * job.progress
        self.job = self._local(dataclasses.replace(job, progress=share))
        self.setProgress(100.0 * share)

    def _show(self, stage: str, fraction: float, message: str) -> None:
        base = self.job or Job(id=self.job_id or "", state="running")
        self.job = dataclasses.replace(base, state="running", stage=stage, message=message, progress=fraction,
                                       eta_s=None)
        self.setProgress(100.0 * fraction)


def is_remote_job(job: Job) -> bool:
    """Whether ``job`` edited uploaded windows (its result is written by the client)."""
    return bool(job.request.get("windows"))
