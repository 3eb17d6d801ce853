"""Plugin settings (QgsSettings under rs_geo_edit/) and the choices offered to users."""

from __future__ import annotations

from qgis.core import QgsSettings

SETTINGS = "rs_geo_edit"
MODES = ("text", "regenerate", "copy")
PRESETS = ("fast", "paper")


def setting(key: str, default=""):
    return QgsSettings().value(f"{SETTINGS}/{key}", default)


def set_setting(key: str, value) -> None:
    QgsSettings().setValue(f"{SETTINGS}/{key}", value)


def flag(key: str, default: bool = False) -> bool:
    return setting(key, "true" if default else "false") in (True, "true")
