"""Reading regions of interest (ROIs) from vector files, in the scene's CRS.

Formats: GeoJSON, GeoPackage (with layer choice), Shapefile, FlatGeobuf, anything GDAL/OGR reads
through pyogrio. A GeoJSON without a ``crs`` member is EPSG:4326 (RFC 7946); any other file
without a CRS is refused, since guessing it would silently edit the wrong place.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from ..errors import AOIError, AOIOutsideScene, AOIWarning

POLYGONAL = ("Polygon", "MultiPolygon")
CAPTION_FIELD = "caption"   # a feature's description of what its ROI should show (training pairs)


@dataclass
class ROI:
    """One region of interest: a (multi)polygon in scene CRS map units."""

    geometry: BaseGeometry
    prompt: Optional[str]
    feature: int                     # 0-based index of the feature in the AOI layer
    role: str = "target"             # "target" (edited) or "source" (copy-mode content)
    caption: Optional[str] = None    # the feature's CAPTION_FIELD attribute, if any


@dataclass
class AOI:
    """The ROIs of one AOI file that fall on the scene, plus what was skipped and why."""

    path: str
    layer: Optional[str]
    source_crs: str
    rois: list[ROI]
    skipped: list[str] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)

    @property
    def targets(self) -> list[ROI]:
        return [r for r in self.rois if r.role != "source"]

    @property
    def sources(self) -> list[ROI]:
        return [r for r in self.rois if r.role == "source"]


def _polygonal_part(geom: BaseGeometry) -> Optional[BaseGeometry]:
    """The polygonal part of a geometry (make_valid may return collections), or None."""
    from shapely.geometry import MultiPolygon

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in POLYGONAL:
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = []
        for part in geom.geoms:
            sub = _polygonal_part(part)
            if sub is not None:
                polys.extend(sub.geoms if sub.geom_type == "MultiPolygon" else [sub])
        if polys:
            return polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return None


def list_layers(path: str | Path) -> list[str]:
    """Names of the vector layers in a file."""
    import pyogrio

    return [str(name) for name, _ in pyogrio.list_layers(str(path))]


def read_aoi(path: str | Path, scene_crs, footprint: Polygon, *, layer: Optional[str] = None,
             prompt_field: str = "prompt", role_field: str = "role",
             default_prompt: Optional[str] = None) -> AOI:
    """Read ROI polygons from ``path``, reprojected to ``scene_crs`` and clipped to ``footprint``.

    ``scene_crs`` is anything pyproj accepts (a rasterio CRS works); ``footprint`` is the scene's
    outline in scene CRS map units. Raises :class:`AOIError` for unusable files; emits
    :class:`AOIWarning` for repaired and skipped features.
    """
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise AOIError(f"AOI file {str(path)!r} does not exist: check the path")
    if path.is_file() and path.stat().st_size == 0:
        raise AOIError(f"AOI file {str(path)!r} is empty: export the ROI layer again")
    try:
        layers = list_layers(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise AOIError(f"AOI file {str(path)!r} is not a readable vector file ({_first_line(exc)}): "
                       "use GeoJSON, GeoPackage, Shapefile or FlatGeobuf") from None
    if not layers:
        raise AOIError(f"AOI file {str(path)!r} has no vector layer")
    if layer is None and len(layers) > 1:
        raise AOIError(f"AOI file {str(path)!r} has {len(layers)} layers ({', '.join(layers)}): "
                       "choose one with `layer`")
    if layer is not None and layer not in layers:
        raise AOIError(f"AOI file {str(path)!r} has no layer {layer!r}; its layers are: {', '.join(layers)}")
    layer = layer or layers[0]
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise AOIError(f"cannot read AOI file {str(path)!r} layer {layer!r}: {_first_line(exc)}") from None

    if gdf.crs is None:
        driver = pyogrio.read_info(str(path), layer=layer).get("driver", "")
        if driver in ("GeoJSON", "GeoJSONSeq"):
            gdf = gdf.set_crs("EPSG:4326")
        else:
            raise AOIError(f"AOI file {str(path)!r} has no CRS: assign one (QGIS: Layer > Set CRS, "
                           "or ogr2ogr -a_srs EPSG:XXXX) or save it as GeoJSON in EPSG:4326")
    return _aoi_of(gdf, str(path), layer, scene_crs, footprint, prompt_field=prompt_field, role_field=role_field,
                   default_prompt=default_prompt)


def read_features(features: list[dict], crs, scene_crs, footprint: Polygon, *, name: str,
                  prompt_field: str = "prompt", role_field: str = "role",
                  default_prompt: Optional[str] = None) -> AOI:
    """The ROIs of GeoJSON ``features`` whose coordinates are in ``crs``, read as :func:`read_aoi`
    reads a file (reprojected, repaired, clipped to ``footprint``), without a file between: an
    inline AOI keeps its coordinates bit for bit. ``name`` stands for the file in messages."""
    import geopandas as gpd

    return _aoi_of(gpd.GeoDataFrame.from_features(features, crs=crs), name, None, scene_crs, footprint,
                   prompt_field=prompt_field, role_field=role_field, default_prompt=default_prompt)


def _text(row, name: str, columns) -> Optional[str]:
    """The attribute ``name`` of a feature as stripped text; None where it is absent or blank."""
    value = getattr(row, name, None) if name in columns else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _aoi_of(gdf, name: str, layer: Optional[str], scene_crs, footprint: Polygon, *, prompt_field: str,
            role_field: str, default_prompt: Optional[str]) -> AOI:
    """The ROIs of the features of ``gdf`` (a GeoDataFrame with a CRS) read from ``name``."""
    from pyproj import CRS

    source_crs = gdf.crs.to_string()
    if len(gdf) == 0:
        raise AOIError(f"AOI file {name!r} has no features: draw at least one polygon")

    target_crs = CRS.from_user_input(scene_crs.to_wkt() if hasattr(scene_crs, "to_wkt") else scene_crs)
    try:
        gdf = gdf.to_crs(target_crs)
    except Exception as exc:
        raise AOIError(f"cannot reproject AOI {name!r} from {source_crs} to the scene CRS: "
                       f"{_first_line(exc)}") from None

    rois: list[ROI] = []
    skipped: list[str] = []
    repaired: list[int] = []
    non_polygons = 0
    columns = set(gdf.columns)
    for idx, (geom, row) in enumerate(zip(gdf.geometry, gdf.itertuples(index=False))):
        if geom is None or geom.is_empty:
            skipped.append(f"feature {idx}: empty geometry")
            continue
        if geom.geom_type not in POLYGONAL and geom.geom_type != "GeometryCollection":
            non_polygons += 1
            skipped.append(f"feature {idx}: {geom.geom_type} is not a polygon")
            continue
        if not geom.is_valid:
            from shapely.validation import explain_validity, make_valid

            reason = explain_validity(geom)
            geom = make_valid(geom)
            repaired.append(idx)
            warnings.warn(f"AOI feature {idx} was invalid ({reason}) and has been repaired", AOIWarning,
                          stacklevel=3)
        poly = _polygonal_part(geom)
        if poly is None or poly.area <= 0:
            skipped.append(f"feature {idx}: no polygon area")
            continue
        clipped = poly.intersection(footprint)
        clipped = _polygonal_part(clipped)
        if clipped is None or clipped.area <= 0:
            skipped.append(f"feature {idx}: outside the scene")
            continue
        prompt = _text(row, prompt_field, columns) or default_prompt
        role = "source" if (_text(row, role_field, columns) or "").lower() == "source" else "target"
        rois.append(ROI(geometry=clipped, prompt=prompt, feature=idx, role=role,
                        caption=_text(row, CAPTION_FIELD, columns)))

    for note in skipped:
        warnings.warn(f"AOI {Path(name).name}: skipped {note}", AOIWarning, stacklevel=3)
    if not rois:
        if non_polygons and non_polygons == len(gdf):
            raise AOIError(f"AOI file {name!r} holds only points or lines: ROIs must be polygons "
                           "(buffer them first, e.g. QGIS Vector > Geoprocessing > Buffer)")
        raise AOIOutsideScene(f"no ROI of {name!r} intersects the scene ({len(skipped)} feature(s) skipped): "
                       "check that the AOI covers the scene and that its CRS is right")
    if not any(r.role != "source" for r in rois):
        raise AOIError(f"AOI file {name!r} has only role=source features: add at least one target ROI")
    return AOI(path=name, layer=layer, source_crs=source_crs, rois=rois, skipped=skipped, repaired=repaired)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
