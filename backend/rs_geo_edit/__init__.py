"""rs-geo-edit: text-guided generative editing of georeferenced remote-sensing scenes.

The library call is :func:`edit_scene`::

    from rs_geo_edit import edit_scene
    edit_scene("scene.tif", "rois.geojson", "scene_edited.tif", {"prompt": "dense forest", "seed": 7})

It is loaded on first use, so ``import rs_geo_edit`` stays light (no rasterio, no torch).
"""

__version__ = "0.1.0"
__all__ = ["edit_scene"]


def __getattr__(name: str):
    if name == "edit_scene":
        from .api import edit_scene

        return edit_scene
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
