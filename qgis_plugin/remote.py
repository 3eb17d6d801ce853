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
from typing import Callable, Optional

from .client import BackendClient
from .entities import Job, LocalFiles
from .errors import BackendError
from .jobs import EditTask, follow_job

# Shares of the progress bar: uploading, the remote job's own progress, then downloading and writing.
UPLOAD_END, JOB_END = 0.1, 0.9


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
    rebuilt (average, as the backend does). A GeoTIFF is copied byte for byte; any other source
    (a VRT, a JPEG 2000, a GeoTIFF with sidecar mask or overviews) is converted to a GeoTIFF
    first. Written beside ``output`` and renamed when complete."""
    from osgeo import gdal

    partial = output.with_name(f".{output.name}.partial")
    source = _open(scene)
    sidecars = [Path(f"{scene}{ext}") for ext in (".msk", ".ovr")]
    try:   # from the first byte copied on, a failure leaves no partial file behind
        if source.GetDriver().ShortName == "GTiff" and not any(p.exists() for p in sidecars):
            shutil.copyfile(scene, partial)   # the source bit for bit, tags and layout included
        else:
            # A VRT copy would write into its sources, and sidecars (mask, overviews) do not travel
            # with a file copy: a full GeoTIFF copy carries the pixels, metadata and mask instead.
            options = gdal.TranslateOptions(format="GTiff", creationOptions=["COMPRESS=DEFLATE", "TILED=YES",
                                                                              "BIGTIFF=IF_SAFER"])
            if gdal.Translate(str(partial), source, options=options) is None:
                raise ValueError(f"cannot copy {scene} into a GeoTIFF: {gdal.GetLastErrorMsg()}")
        del source
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


class RemoteEdit:
    """One remote edit, blocking (call it from a worker thread): plan, crop, upload, submit, follow,
    download, write. Give ``request`` (an edit as the dock builds it, with this machine's ``scene``
    and ``output`` paths) to start one, or ``job_id`` and ``files`` to finish a job submitted
    earlier. ``job`` is the latest state, with this machine's paths and the overall progress;
    ``report(job)`` is called at every change."""

    def __init__(self, client: BackendClient, request: Optional[dict] = None, *, job_id: Optional[str] = None,
                 files: Optional[LocalFiles] = None, overwrite: bool = False,
                 report: Callable[[Job], None] = lambda job: None):
        self.client, self.request, self.job_id, self.overwrite, self.report = client, request, job_id, overwrite, report
        self.files = files or LocalFiles(scene=request["scene"], output=request["output"])
        self.job: Optional[Job] = None

    def run(self, is_canceled: Callable[[], bool] = lambda: False, is_detached: Callable[[], bool] = lambda: False,
            poll: float = 0.5) -> Job:
        """The job's last state: ``done`` once the output is written; ``cancelled`` (also when the
        upload was cancelled), ``failed``, or still running when detached. Raises BackendError,
        ValueError or OSError."""
        with tempfile.TemporaryDirectory(prefix="rs-geo-edit-windows-") as tmp:
            if self.job_id is None and not self._submit(Path(tmp), is_canceled):
                return self.job
            job = follow_job(self.client, job_id=self.job_id, is_canceled=is_canceled, on_update=self._on_job,
                             poll=poll, is_detached=is_detached)
            self._on_job(job)
            if job.state == "done" and not is_detached():
                self._fetch(job, Path(tmp))
        return self.job

    def _submit(self, folder: Path, is_canceled: Callable[[], bool]) -> bool:
        """Plan, crop and upload the windows and submit the job; False when cancelled meanwhile."""
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
                upload = self.client.upload(path, sent, is_canceled)
            except BackendError:
                if is_canceled():
                    self.job = Job(id="", state="cancelled", stage="upload", message="cancelled while uploading")
                    return False
                raise
            done += path.stat().st_size
            windows.append({"upload": upload, "index": w["index"], "col_off": w["col_off"], "row_off": w["row_off"]})
        body = {"scene": Path(self.files.scene).name, "output": Path(self.files.output).name, "aoi": plan["aoi"],
                "windows": windows, "options": options, **edit}
        job = self.client.submit(body)
        self.job_id = job.id
        self._on_job(job)
        return True

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
        if output.exists() and not self.overwrite:
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
        if not provenance.exists() or self.overwrite:
            partial = provenance.with_name(f".{provenance.name}.partial")
            partial.write_text(json.dumps(record, indent=2, default=str))
            os.replace(partial, provenance)
        self._set(dataclasses.replace(job, progress=1.0))

    def _on_job(self, job: Job) -> None:
        self._set(dataclasses.replace(job, progress=UPLOAD_END + (JOB_END - UPLOAD_END) * job.progress))

    def _show(self, stage: str, fraction: float, message: str) -> None:
        base = self.job or Job(id=self.job_id or "", state="running")
        self._set(dataclasses.replace(base, state="running", stage=stage, message=message, progress=fraction,
                                      eta_s=None))

    def _set(self, job: Job) -> None:
        """Keep ``job`` with this machine's paths (the result layer is this output, over this scene)."""
        self.job = dataclasses.replace(job, output=self.files.output, request={**job.request, "scene": self.files.scene})
        self.report(self.job)


class RemoteEditTask(EditTask):
    """A :class:`RemoteEdit` in QGIS's task manager, on the backend of ``connection``; ``job``
    holds the latest state (read it on the main thread from ``progressChanged``);
    ``taskCompleted``/``taskTerminated`` report the end."""

    def __init__(self, connection, request: Optional[dict] = None, *, job_id: Optional[str] = None,
                 files: Optional[LocalFiles] = None, poll: float = 0.5):
        super().__init__(connection, request, job_id, poll)
        self.setDescription(f"{self.description()} (remote)")
        self.files = files or LocalFiles(scene=request["scene"], output=request["output"])

    def _report(self, job: Job, edit: RemoteEdit) -> None:
        self.job_id = edit.job_id   # known once the job is submitted: the dock remembers it then
        self._update(job)

    def follow(self, client: BackendClient) -> Job:  # worker thread: no widgets here
        edit = RemoteEdit(client, self.request, job_id=self.job_id, files=self.files,
                          report=lambda job: self._report(job, edit))
        return edit.run(self.is_canceled, lambda: self.detached, self.poll)
