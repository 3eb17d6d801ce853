"""A remote server's token in QGIS's authentication database (QgsAuthManager, encrypted with the
user's master password), as an authentication configuration that QGIS applies to each request.

QGIS 3.22 has no API-header method, so the token is kept as the password of a "Basic"
configuration (user ``rs-geo-edit``); the service takes it there as it takes a bearer token.
Organisations can share such a configuration by its id. A token that earlier versions kept in the
settings in plain text is moved here once.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from qgis.core import QgsApplication, QgsAuthMethodConfig

from .network import is_loopback
from .preferences import Preferences

METHOD = "Basic"
USER = "rs-geo-edit"


class CredentialsError(Exception):
    """The authentication database cannot take or give the token; the message says why."""


def _unlocked():
    manager = QgsApplication.authManager()
    if manager.isDisabled():
        raise CredentialsError(f"QGIS's authentication system is disabled: {manager.disabledMessage()}")
    if not manager.setMasterPassword(True):
        raise CredentialsError("QGIS's authentication database is locked: enter its master password "
                               "(Settings > Options > Authentication) to store the server's token")
    return manager


def store_token(url: str, token: str, name: Optional[str] = None) -> str:
    """Store ``token`` for the server at ``url`` as a new authentication configuration; its id."""
    token = token.strip()
    if not token:
        raise CredentialsError("no token to store: paste the server's token (rs-geo-edit serve --print-token)")
    manager = _unlocked()
    config = QgsAuthMethodConfig(METHOD)
    config.setName(name or f"rs-geo-edit {url.strip().rstrip('/')}")
    config.setUri(url.strip())
    config.setConfig("username", USER)
    config.setConfig("password", token)
    stored, config = manager.storeAuthenticationConfig(config)
    if not stored or not config.id():
        raise CredentialsError("QGIS's authentication database did not take the token: see the log's "
                               "Authentication tab")
    return config.id()


def config_name(authcfg: str) -> str:
    return QgsApplication.authManager().availableAuthMethodConfigs().get(authcfg, QgsAuthMethodConfig()).name()


def migrate_plain_token(preferences: Preferences) -> Optional[str]:
    """Move a token that earlier versions kept in the settings into the authentication database,
    once, and remove it from the settings; a remote server's then uses the new configuration. A
    local backend's token is only removed: the backend gives it at each connect. Returns what
    happened, for the message bar (None when there was nothing to move)."""
    token = preferences.plain_token()
    if not token:
        return None
    settings = preferences.backend()
    if not settings.remote and is_loopback(settings.url):
        preferences.forget_plain_token()
        return None
    authcfg = store_token(settings.url, token)
    preferences.save_backend(dataclasses.replace(settings, authcfg=authcfg))
    preferences.forget_plain_token()
    return (f"the token of {settings.url} moved from the plugin's settings into QGIS's authentication database "
            f"(configuration {config_name(authcfg)!r}, id {authcfg})")
