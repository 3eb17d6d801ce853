"""rs-geo-edit QGIS plugin: outline regions over a raster, say what should be there, and let a
local rs-geo-edit service edit them. Pure PyQGIS: it never imports torch or the backend."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import RsGeoEditPlugin

    return RsGeoEditPlugin(iface)
