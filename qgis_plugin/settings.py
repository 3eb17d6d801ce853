"""Where the plugin's settings live in QGIS (QgsSettings under rs_geo_edit/), QGIS's proxy for
the backend, and the choices offered to users."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote, urlsplit

from qgis.core import QgsNetworkAccessManager, QgsSettings
from qgis.PyQt.QtNetwork import QNetworkProxy

from .client import BackendClient

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


def proxy_for(url: str) -> Optional[str]:
    """The HTTP proxy that QGIS is set to use for ``url`` (Settings > Options > Network) as
    ``http://[user:password@]host:port``, so that a remote backend is reached the way QGIS reaches
    the web. None where QGIS would connect directly or the proxy is not an HTTP one (the
    environment's proxy variables then apply): no proxy set, a loopback host (a local backend),
    or a URL starting with an entry of QGIS's exclude or no-proxy lists."""
    host = (urlsplit(url.strip()).hostname or "").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        return None
    manager = QgsNetworkAccessManager.instance()
    proxy = manager.fallbackProxy()
    if proxy.type() not in (QNetworkProxy.HttpProxy, QNetworkProxy.HttpCachingProxy) or not proxy.hostName():
        return None
    bypass = [entry.strip() for entry in list(manager.excludeList()) + list(manager.noProxyList()) if entry.strip()]
    if any(url.strip().startswith(entry) for entry in bypass):
        return None
    auth = ""
    if proxy.user():
        password = f":{quote(proxy.password(), safe='')}" if proxy.password() else ""
        auth = f"{quote(proxy.user(), safe='')}{password}@"
    return f"http://{auth}{proxy.hostName()}:{proxy.port()}"


def backend_client(url: str, token: str, timeout: float = 10.0) -> BackendClient:
    """The client of the backend at ``url``, through QGIS's proxy where QGIS would use one."""
    return BackendClient(url, token, timeout, proxy=proxy_for(url))
