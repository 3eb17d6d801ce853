"""The plugin's one error type for the backend. Qt-free."""

from __future__ import annotations

from typing import Optional


class BackendError(Exception):
    """The backend is down or cannot be reached (``status`` None) or answered with an error (its
    HTTP ``status``); the message names the cause and what to do."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status
