"""Scene I/O: opening with clear errors, windowed reads, validity masks, normalisation to
[-1, 1] and back, and writing the edited scene as a streamed, atomic copy of the source.

Writing keeps what ``src.profile`` alone would drop: band descriptions, dataset and band tags,
colour interpretation, scales/offsets, units, colour maps and internal masks. A source with lossy
compression (JPEG, WebP, LERC, JPEG-XL) is written losslessly (deflate) so that untouched pixels
stay identical to what the source decodes to.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from rasterio.windows import Window

from ..errors import IncompatibleOptions, OutputError, SceneError
from ..files import atomic_path, remove_stale_temporaries, temporary_path
from ..progress import StageReporter

LOSSY_COMPRESSION = {"jpeg", "webp", "lerc", "lerc_deflate", "lerc_zstd", "jxl"}
SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
# GDAL's block cache while a scene is open for editing. rasterio takes an integer GDAL_CACHEMAX in
# bytes. A window is read once, so cached blocks are never read again; GDAL's default (5 % of RAM)
# kept a copy of every block of the window read last, and its decoded blocks on top of the array
# while reading: 0.19 GB more at the read of a 5120 px window, 0.09 GB held through its edit.
READ_CACHE_BYTES = 16 * 2 ** 20
# GDAL options for every write: no PAM side files (.aux.xml), masks stored inside the TIFF, and a
# block cache of 256 bytes, i.e. none: each block is written once.
WRITE_ENV = {"GDAL_PAM_ENABLED": "NO", "GDAL_TIFF_INTERNAL_MASK": "YES", "GDAL_CACHEMAX": 256}


# ----------------------------------------------------------------------------------------- input

@contextlib.contextmanager
def open_scene(path: str | os.PathLike) -> Iterator["rasterio.io.DatasetReader"]:  # noqa: F821
    """Open a scene for reading, turning GDAL's errors into one-line :class:`SceneError` s; while
    it is open, GDAL's block cache is held to ``READ_CACHE_BYTES``."""
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.exists():
        raise SceneError(f"scene {str(path)!r} does not exist: check the path")
    if path.is_dir():
        raise SceneError(f"scene {str(path)!r} is a directory: give a GeoTIFF file")
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise SceneError(f"scene {str(path)!r} is not a readable raster ({_first_line(exc)}): "
                         "give a GeoTIFF or another GDAL raster") from None
    with src, gdal_env(GDAL_CACHEMAX=READ_CACHE_BYTES):
        if src.crs is None:
            raise SceneError(f"scene {str(path)!r} has no CRS: assign one "
                             "(gdal_edit.py -a_srs EPSG:XXXX) before editing")
        if src.dtypes[0] not in SUPPORTED_DTYPES:
            raise SceneError(f"scene {str(path)!r} has data type {src.dtypes[0]}, which is not supported: "
                             f"convert it to one of {', '.join(sorted(SUPPORTED_DTYPES))}")
        yield src


@contextlib.contextmanager
def gdal_env(**options) -> Iterator[None]:
    """``rasterio.Env(**options)`` that also gives the process its own GDAL block cache size back
    on exit: the cache size is global to the process, and rasterio does not restore it."""
    import rasterio
    from rasterio.env import get_gdal_config, set_gdal_config

    previous = get_gdal_config("GDAL_CACHEMAX")
    try:
        with rasterio.Env(**options):
            yield
    finally:
        if previous is not None:
            set_gdal_config("GDAL_CACHEMAX", int(previous))


def footprint(src):
    """The scene outline as a polygon in scene CRS map units (correct for rotated transforms)."""
    return grid_footprint(src.transform, src.width, src.height)


def grid_footprint(transform, width: int, height: int):
    """The outline of a ``width`` x ``height`` pixel grid placed by ``transform`` (an Affine)."""
    from shapely.geometry import Polygon

    t, w, h = transform, width, height
    return Polygon([t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)])


def alpha_band(src) -> Optional[int]:
    """1-based index of the alpha band, or None."""
    from rasterio.enums import ColorInterp

    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return None


def data_bands(src) -> list[int]:
    """1-based indexes of the bands the model edits (every band but alpha)."""
    alpha = alpha_band(src)
    return [i for i in range(1, src.count + 1) if i != alpha]


def rgb_positions(src, rgb_bands: Optional[Sequence[int]] = None) -> list[int]:
    """Positions (0-based, into :func:`data_bands`, so into a window's pixel array) of the bands
    an RGB model sees.

    The one convention: ``rgb_bands`` (the option, ``EditConfig.rgb_bands``, provenance) are
    1-based band numbers as GDAL counts them, e.g. (3, 2, 1); 0-based indexes into an array are
    called positions (``rgb``). Without ``rgb_bands``: the bands whose colour interpretation is
    red, green, blue; else the first three data bands; a scene with fewer than three bands shows
    its first band as grey.
    """
    from rasterio.enums import ColorInterp

    bands = data_bands(src)
    if rgb_bands is not None:
        positions = []
        for b in rgb_bands:
            if b not in bands:
                raise IncompatibleOptions(f"`rgb_bands`: band {b} is not a data band of the scene "
                                          f"(data bands: {', '.join(map(str, bands))})")
            positions.append(bands.index(b))
        return positions
    interp = {ci: i for i, ci in zip(range(1, src.count + 1), src.colorinterp)}
    wanted = [interp.get(ColorInterp.red), interp.get(ColorInterp.green), interp.get(ColorInterp.blue)]
    if all(b in bands for b in wanted):
        return [bands.index(b) for b in wanted]
    if len(bands) >= 3:
        return [0, 1, 2]
    return [0, 0, 0]


def read_window(src, window: Window, bands: Optional[Sequence[int]] = None) -> np.ndarray:
    """Pixels of ``window`` as (bands, rows, cols) in the source dtype."""
    return src.read(list(bands or data_bands(src)), window=window)


def validity_mask(src, window: Window, pixels: Optional[np.ndarray] = None) -> np.ndarray:
    """True where a pixel holds data: GDAL's dataset mask (nodata in every band, alpha, internal
    mask) combined with NaN/inf in any band of a floating-point scene."""
    valid = src.dataset_mask(window=window) > 0
    if np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
        pixels = read_window(src, window) if pixels is None else pixels
        valid &= np.all(np.isfinite(pixels), axis=0)
    return valid


@dataclass
class Normaliser:
    """Per-band linear map of source values [lo, hi] to [-1, 1], with an exact inverse.

    uint8 uses the full 0..255 range (colours keep their look); other types use the range of the
    valid pixels of the window. The inverse rounds and clips to the dtype, so
    ``inverse(forward(x, np.float64)) == x`` bit for bit for every supported dtype.
    """

    lo: np.ndarray
    hi: np.ndarray
    dtype: str

    @classmethod
    def fit(cls, pixels: np.ndarray, valid: np.ndarray) -> "Normaliser":
        dtype = str(pixels.dtype)
        bands = pixels.shape[0]
        if dtype == "uint8":
            lo, hi = np.zeros(bands), np.full(bands, 255.0)
        else:
            lo, hi = np.zeros(bands), np.ones(bands)
            for b in range(bands):
                values = pixels[b][valid]
                if values.size:
                    lo[b], hi[b] = float(values.min()), float(values.max())
            hi = np.where(hi > lo, hi, lo + 1.0)
        return cls(lo=lo, hi=hi, dtype=dtype)

    def forward(self, pixels: np.ndarray, dtype=np.float32, band: Optional[int] = None) -> np.ndarray:
        """(bands, rows, cols) pixels in [-1, 1]; with ``band``, one (rows, cols) band of them.
        Computed in float64 a band at a time, so a large window costs one float64 band on top
        of the result, not the whole window in float64."""
        if band is not None:
            x = pixels.astype(np.float64)
            x = (x - self.lo[band]) / (self.hi[band] - self.lo[band]) * 2.0 - 1.0
            return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0, copy=False).astype(dtype)
        out = np.empty(pixels.shape, dtype=dtype)
        for b in range(pixels.shape[0]):
            out[b] = self.forward(pixels[b], dtype, band=b)
        return out

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Normalised values back to the source dtype (rounded and clipped for integers), a band
        at a time as :meth:`forward`."""
        dtype = np.dtype(self.dtype)
        out = np.empty(values.shape, dtype=dtype)
        for b in range(values.shape[0]):
            x = (values[b].astype(np.float64) + 1.0) / 2.0 * (self.hi[b] - self.lo[b]) + self.lo[b]
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                x = np.clip(np.rint(x, out=x), info.min, info.max, out=x)
            out[b] = x
        return out

    def as_dict(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "dtype": self.dtype}


def avoid_nodata(pixels: np.ndarray, changed: np.ndarray, nodata) -> np.ndarray:
    """Nudge edited pixels that came out equal to nodata in every band, so that an edit never
    turns valid pixels into holes. Works in place on ``pixels`` (bands, rows, cols)."""
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return pixels
    hit = changed & np.all(pixels == np.asarray(nodata, dtype=pixels.dtype), axis=0)
    if hit.any():
        band0 = pixels[0]
        if np.issubdtype(pixels.dtype, np.integer):
            info = np.iinfo(pixels.dtype)
            band0[hit] = nodata + 1 if nodata < info.max else nodata - 1
        else:
            band0[hit] = np.nextafter(np.asarray(nodata, pixels.dtype), np.asarray(np.inf, pixels.dtype))
    return pixels


# ---------------------------------------------------------------------------------------- output

@dataclass
class Patch:
    """Replacement pixels for one window: ``pixels`` (data bands, rows, cols) in the source dtype
    are written where ``changed`` is True; everything else is copied from the source."""

    window: Window
    pixels: np.ndarray
    changed: np.ndarray


def check_output_path(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], overwrite: bool,
                      role: str = "output") -> Path:
    """Validate an output path before any work: not an input, not existing unless ``overwrite``,
    in a directory that exists (or can be created) and is writable. ``role`` names the file in
    the messages ("output", "provenance", "preview", ...)."""
    out = Path(output).expanduser()
    resolved = out.resolve()
    for item in inputs:
        if item is not None and Path(item).expanduser().resolve() == resolved:
            raise OutputError(f"{role} {str(out)!r} is also an input: choose another `output`")
    if out.is_dir():
        raise OutputError(f"{role} {str(out)!r} is a directory: give a file name such as {str(out / 'edited.tif')!r}")
    if out.exists() and not overwrite:
        raise OutputError(f"{role} {str(out)!r} already exists: set `overwrite` or choose another `output`")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output directory {str(parent)!r} is not writable ({exc.strerror or exc}): "
                          "choose another `output`") from None
    return out


def remove_partials(output: str | os.PathLike) -> None:
    """Temporary files left beside ``output`` by an attempt that was killed (its clean-up never
    ran); called before an output is written again. A run still writing keeps its files."""
    remove_stale_temporaries(output)


def output_profile(src, compress: Optional[str] = None, tiled: bool = False) -> dict:
    """The creation profile of the edited copy: the source's, made lossless where it was lossy."""
    profile = dict(src.profile)
    profile["driver"] = "GTiff"
    src_compress = (profile.get("compress") or "none").lower()
    structure = src.tags(ns="IMAGE_STRUCTURE")
    floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
    if compress is not None:
        profile["compress"] = compress
        if compress.lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3 if floating else 2
    elif src_compress in LOSSY_COMPRESSION:
        profile["compress"] = "deflate"
        profile["predictor"] = 3 if floating else 2
    elif structure.get("PREDICTOR"):
        profile["predictor"] = int(structure["PREDICTOR"])
    if str(profile.get("compress", "none")).lower() != "jpeg" and str(profile.get("photometric", "")).lower() == "ycbcr":
        profile.pop("photometric")
    for key in ("jpeg_quality", "quality"):
        profile.pop(key, None)
    if tiled and not src.profile.get("tiled"):
        profile.update(tiled=True, blockxsize=512, blockysize=512)
    profile["BIGTIFF"] = "IF_SAFER"
    return profile


def _has_internal_mask(src) -> bool:
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags and MaskFlags.nodata not in flags


def copy_metadata(src, dst) -> None:
    """Copy what ``src.profile`` does not carry: tags, descriptions, colour interpretation,
    scales/offsets, units and the colour map."""
    dst.update_tags(**src.tags())
    for i in range(1, src.count + 1):
        band_tags = src.tags(i)
        if band_tags:
            dst.update_tags(i, **band_tags)
        if src.descriptions[i - 1]:
            dst.set_band_description(i, src.descriptions[i - 1])
    dst.colorinterp = src.colorinterp
    if any(s != 1.0 for s in src.scales):
        dst.scales = src.scales
    if any(o != 0.0 for o in src.offsets):
        dst.offsets = src.offsets
    if any(src.units):
        dst.units = src.units
    with contextlib.suppress(ValueError):
        dst.write_colormap(1, src.colormap(1))


def _block_windows(dst) -> Iterator[Window]:
    """Windows covering the output in write order: its tiles, or groups of strips of ~8 MiB."""
    if dst.profile.get("tiled"):
        for _, window in dst.block_windows(1):
            yield window
        return
    bytes_per_row = dst.width * dst.count * np.dtype(dst.dtypes[0]).itemsize
    block_rows = dst.block_shapes[0][0]
    rows = max(block_rows, (8 << 20) // max(1, bytes_per_row) // block_rows * block_rows)
    for row in range(0, dst.height, rows):
        yield Window(0, row, dst.width, min(rows, dst.height - row))


def write_edited(source: str | os.PathLike, output: str | os.PathLike, patches: Sequence[Patch], *,
                 compress: Optional[str] = None, cog: bool = False,
                 progress: Optional[StageReporter] = None) -> dict:
    """Write ``output`` as a copy of ``source`` with ``patches`` applied, block by block.

    Memory holds one output block plus the patches, whatever the scene size. The file is written
    to a temporary path beside ``output`` and renamed at the end. Returns a summary dict.
    """
    import rasterio
    from rasterio.windows import intersection, WindowError

    output = Path(output)
    with gdal_env(**WRITE_ENV), rasterio.open(source) as src:
        bands = data_bands(src)
        mask_copy = _has_internal_mask(src)
        profile = output_profile(src, compress=compress, tiled=cog)
        overview_factors = src.overviews(1) if not cog else []
        with contextlib.ExitStack() as stack:
            final = stack.enter_context(atomic_path(output))
            tmp = final if not cog else stack.enter_context(temporary_path(output, "stage"))
            with rasterio.open(tmp, "w", **profile) as dst:
                copy_metadata(src, dst)
                blocks = list(_block_windows(dst))
                for n, block in enumerate(blocks):
                    data = src.read(window=block)
                    for patch in patches:
                        try:
                            inter = intersection(block, patch.window)
                        except WindowError:
                            continue
                        r0 = int(inter.row_off - block.row_off)
                        c0 = int(inter.col_off - block.col_off)
                        pr = int(inter.row_off - patch.window.row_off)
                        pc = int(inter.col_off - patch.window.col_off)
                        h, w = int(inter.height), int(inter.width)
                        changed = patch.changed[pr:pr + h, pc:pc + w]
                        for k, band in enumerate(bands):
                            target = data[band - 1, r0:r0 + h, c0:c0 + w]
                            np.copyto(target, patch.pixels[k, pr:pr + h, pc:pc + w], where=changed)
                    dst.write(data, window=block)
                    if mask_copy:
                        dst.write_mask(src.read_masks(1, window=block), window=block)
                    if progress is not None:
                        progress(n + 1, len(blocks), "writing blocks")
                if overview_factors:
                    from rasterio.enums import Resampling

                    dst.build_overviews(overview_factors, Resampling.average)
            if cog:
                _translate_cog(tmp, final, profile)
    return {"path": str(output), "compress": profile.get("compress"), "cog": cog,
            "internal_mask": mask_copy, "overviews": overview_factors}


def write_chip(src, window: Window, path: str | os.PathLike) -> Path:
    """Write ``window`` of the open scene ``src`` as a GeoTIFF of its own at ``path``: every band
    (alpha included), the source dtype, nodata, internal mask and metadata, the window's transform,
    lossless where the source is lossy. ``path`` should be a temporary path (the caller renames)."""
    import rasterio

    profile = output_profile(src)
    for key in ("tiled", "blockxsize", "blockysize", "BIGTIFF"):
        profile.pop(key, None)
    profile.update(width=int(window.width), height=int(window.height), transform=src.window_transform(window))
    with gdal_env(**WRITE_ENV), rasterio.open(path, "w", **profile) as dst:
        copy_metadata(src, dst)
        dst.write(src.read(window=window))
        if _has_internal_mask(src):
            dst.write_mask(src.read_masks(1, window=window))
    return Path(path)


def changed_part(src, patch: Patch) -> Optional[Patch]:
    """The smallest part of ``patch`` that holds every pixel differing, bit for bit, from the open
    raster ``src`` (the patch's pixels where it changes them, the source's elsewhere); None when
    no pixel differs. It is all a client needs to rebuild the edit of a window it sent."""
    before = read_window(src, patch.window)
    after = before.copy()
    np.copyto(after, patch.pixels, where=patch.changed[None])
    unsigned = f"u{before.dtype.itemsize}"  # bits, so a NaN that stays NaN is no change
    changed = np.any(before.view(unsigned) != after.view(unsigned), axis=0)
    if not changed.any():
        return None
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    window = Window(int(patch.window.col_off) + c0, int(patch.window.row_off) + r0, c1 - c0, r1 - r0)
    return Patch(window, np.ascontiguousarray(after[:, r0:r1, c0:c1]), np.ones((r1 - r0, c1 - c0), bool))


def write_pixels(path: str | os.PathLike, pixels: np.ndarray, crs, transform) -> Path:
    """``pixels`` (bands, rows, cols) as a GeoTIFF of their own at ``path``, placed by ``crs`` and
    ``transform`` (an Affine): lossless (deflate with a predictor), no nodata, no side files;
    written under a temporary name and renamed."""
    import rasterio

    floating = np.issubdtype(pixels.dtype, np.floating)
    profile = {"driver": "GTiff", "width": pixels.shape[2], "height": pixels.shape[1], "count": pixels.shape[0],
               "dtype": str(pixels.dtype), "crs": crs, "transform": transform, "compress": "deflate",
               "predictor": 3 if floating else 2}
    with atomic_path(path) as tmp, gdal_env(**WRITE_ENV), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(pixels)
    return Path(path)


def _translate_cog(staged: Path, final: Path, profile: dict) -> None:
    """Turn a staged GeoTIFF into a Cloud-Optimized GeoTIFF with overviews (GDAL's COG driver)."""
    import rasterio.shutil

    options = {"compress": profile.get("compress") or "deflate", "blocksize": 512,
               "overviews": "IGNORE_EXISTING", "resampling": "average"}
    if profile.get("predictor"):
        options["predictor"] = "YES"
    rasterio.shutil.copy(staged, final, driver="COG", **options)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
