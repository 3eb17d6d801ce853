"""Where the plugin's settings live in QGIS (QgsSettings under rs_geo_edit/), and the choices
offered to users. Secrets are not kept here: a remote server's token lives in QGIS's
authentication database (``credentials.py``), and only its configuration id is a setting."""

from __future__ import annotations

from qgis.core import QgsSettings

SETTINGS = "rs_geo_edit"
MODES = ("text", "regenerate", "copy")
PRESETS = ("fast", "paper")


class QgsSettingsStore:
    """The store of ``preferences.Preferences`` and ``remote_jobs.RemoteJobs`` in QGIS: QgsSettings
    under ``rs_geo_edit/``, read afresh each time so every plugin instance sees the same values."""

    def value(self, key: str, default=""):
        return QgsSettings().value(f"{SETTINGS}/{key}", default)

    def setValue(self, key: str, value) -> None:  # noqa: N802 (QgsSettings's name)
        QgsSettings().setValue(f"{SETTINGS}/{key}", value)

    def remove(self, key: str) -> None:
        QgsSettings().remove(f"{SETTINGS}/{key}")
