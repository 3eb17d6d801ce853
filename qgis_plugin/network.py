"""One blocking HTTP call through QGIS's network stack (QgsNetworkAccessManager), so QGIS's proxy,
SSL settings and exceptions, custom CA certificates, authentication configurations and the
network logger apply to every request the plugin makes.

``send`` blocks its thread until the answer: the plugin calls it only from worker threads
(QgsTask.run, or a Processing algorithm, which QGIS runs in a task of its own). GET, POST and
DELETE are QgsBlockingNetworkRequests; the resumable upload appends with PATCH, which
QgsBlockingNetworkRequest of QGIS 3.22 does not offer, so that one verb runs in a local event loop
over QGIS's manager for the thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from qgis.core import QgsApplication, QgsBlockingNetworkRequest, QgsNetworkAccessManager
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QByteArray, QCoreApplication, QEventLoop, QThread, QTimer, QUrl
from qgis.PyQt.QtNetwork import QNetworkProxy, QNetworkProxyQuery, QNetworkReply, QNetworkRequest

LOOPBACK = ("localhost", "127.0.0.1", "::1")
_main_manager: list = []   # QGIS's manager of the main thread, once seen


@dataclass
class Reply:
    """``status`` is the HTTP status, None when no answer came (``error`` then says why)."""

    status: Optional[int]
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    error: str = ""


def remember_main_manager() -> None:
    """Note the main thread's manager (call on the main thread, e.g. when the plugin loads)."""
    if QThread.currentThread() == QCoreApplication.instance().thread() and not _main_manager:
        _main_manager.append(QgsNetworkAccessManager.instance())


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in LOOPBACK or host.startswith("127.")


def _manager(url: str) -> QgsNetworkAccessManager:
    """This thread's manager, with the proxy QGIS is set to use now. A worker thread's manager
    reads QGIS's proxy settings once, when the pooled thread first uses it; the main thread's
    manager follows Settings > Options > Network, so its proxy and exclusions are taken at each
    call. A backend on this machine's loopback is never asked for through a proxy, which could not
    reach it."""
    manager = QgsNetworkAccessManager.instance()
    main = _main_manager[0] if _main_manager else manager
    no_proxy = list(main.noProxyList())
    if is_loopback(url):
        parts = urlsplit(url)
        no_proxy.append(f"{parts.scheme}://{parts.netloc}/")
    if manager is not main or set(no_proxy) - set(manager.noProxyList()):
        manager.setFallbackProxyAndExcludes(main.fallbackProxy(), list(main.excludeList()), no_proxy)
    return manager


def send(method: str, url: str, data: Optional[bytes] = None, headers: Optional[dict] = None,
         authcfg: str = "", timeout: float = 60.0) -> Reply:
    """``method`` ``url`` with ``data`` and ``headers``; ``authcfg``: the id of a QGIS
    authentication configuration that QGIS applies to the request. GET, POST and DELETE go through
    QgsBlockingNetworkRequest (QGIS's own timeout applies); other verbs wait at most ``timeout``
    seconds without an answer."""
    request = QNetworkRequest(QUrl(url))
    for key, value in (headers or {}).items():
        request.setRawHeader(key.encode(), str(value).encode())
    manager = _manager(url)
    if method not in ("GET", "POST", "DELETE"):
        return _custom(manager, method, request, data, authcfg, timeout)
    blocking = QgsBlockingNetworkRequest()
    blocking.setAuthCfg(authcfg)
    if method == "GET":
        blocking.get(request, True)
    elif method == "POST":
        blocking.post(request, QByteArray(data or b""), True)
    else:
        blocking.deleteResource(request)
    content = blocking.reply()
    status = content.attribute(QNetworkRequest.HttpStatusCodeAttribute)
    if status is None and authcfg and content.error() == QNetworkReply.NoError:   # never sent
        return Reply(None, error=_auth_failure(authcfg))
    if status is None or 0 < content.error() < 200:   # no answer, or the connection broke off in it
        return Reply(None, error=_no_answer(blocking.errorMessage() or content.errorString(), manager, url,
                                            content.error()))
    headers = {bytes(k).decode().lower(): bytes(content.rawHeader(k)).decode() for k in content.rawHeaderList()}
    return Reply(int(status), bytes(content.content()), headers)


def _custom(manager, method: str, request: QNetworkRequest, data: Optional[bytes], authcfg: str,
            timeout: float) -> Reply:
    """A verb QgsBlockingNetworkRequest does not offer, in a local event loop of this thread."""
    request.setAttribute(QNetworkRequest.CacheLoadControlAttribute, QNetworkRequest.AlwaysNetwork)
    auth = QgsApplication.authManager()
    if authcfg:
        applied, request = auth.updateNetworkRequest(request, authcfg)
        if not applied:
            return Reply(None, error=_auth_failure(authcfg))
    reply = manager.sendCustomRequest(request, method.encode(), QByteArray(data or b""))
    try:
        if authcfg and not auth.updateNetworkReply(reply, authcfg):
            reply.abort()
            return Reply(None, error=_auth_failure(authcfg))
        timed_out = _wait(reply, timeout)
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if status is None or 0 < reply.error() < 200:
            error = f"no answer within {timeout:.0f} s" if timed_out else reply.errorString()
            return Reply(None, error=_no_answer(error, manager, request.url().toString(), reply.error()))
        headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in reply.rawHeaderPairs()}
        return Reply(int(status), bytes(reply.readAll()), headers)
    finally:
        sip.delete(reply)   # now, in its thread; not in whichever later event loop of this pooled thread


def _wait(reply: QNetworkReply, timeout: float) -> bool:
    """Run a local event loop until ``reply`` finishes; True when it was aborted for taking longer
    than ``timeout`` seconds."""
    if reply.isFinished():
        return False
    loop, timer, expired = QEventLoop(), QTimer(), []
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: (expired.append(True), reply.abort()))
    reply.finished.connect(loop.quit)
    timer.start(int(timeout * 1000))
    if not reply.isFinished():
        loop.exec_()
    timer.stop()
    return bool(expired)


def _no_answer(error: str, manager: QgsNetworkAccessManager, url: str, code: int) -> str:
    """Why no answer came, naming QGIS's proxy or SSL settings where they are involved."""
    proxy = _proxy_of(manager, QUrl(url))
    if proxy:
        return f"{error}, through QGIS's proxy {proxy}: check it in Settings > Options > Network"
    if code == QNetworkReply.SslHandshakeFailedError:
        return (f"{error}; QGIS's SSL settings apply (Settings > Options > Authentication: SSL server "
                "exceptions, certificate authorities)")
    return error


def _proxy_of(manager: QgsNetworkAccessManager, url: QUrl) -> str:
    """``host:port`` of the proxy QGIS sends ``url`` through ("" when it connects directly)."""
    factory = manager.proxyFactory()
    proxies = factory.queryProxy(QNetworkProxyQuery(url)) if factory is not None else [manager.proxy()]
    used = next((p for p in proxies if p.type() != QNetworkProxy.NoProxy), None)
    return f"{used.hostName()}:{used.port()}" if used is not None and used.hostName() else ""


def _auth_failure(authcfg: str) -> str:
    if authcfg not in QgsApplication.authManager().configIds():
        return (f"QGIS has no authentication configuration {authcfg!r} (removed?): choose or store the "
                "server's credentials in the dock's Backend box")
    return (f"QGIS could not apply the authentication configuration {authcfg!r}: unlock the authentication "
            "database (master password) or check the configuration in Settings > Options > Authentication")
