"""The domain's exceptions and warnings.

Every error carries a message a user can act on: what is wrong, with which file, and the fix.
A message names options neutrally, by their option name between backticks (`` `max_side` ``);
each entry point words them its way with :meth:`RsGeoEditError.render` (the CLI as
``--max-side``, the service as ``options.max_side``), and ``str(error)`` gives the bare name.
"""

import re
from typing import Callable, Optional

_OPTION = re.compile(r"`([a-z][a-z0-9_]*)`")


class RsGeoEditError(Exception):
    """Base class: an input or state problem the user can fix."""

    exit_code = 2

    @property
    def option(self) -> Optional[str]:
        """The first option the message names, if any."""
        found = _OPTION.search(self._template())
        return found.group(1) if found else None

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each option name given by ``name_of(option_name)``."""
        return _OPTION.sub(lambda m: name_of(m.group(1)), self._template())

    def _template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.render(lambda name: name)


class SceneError(RsGeoEditError):
    """The scene raster is missing, unreadable, or unusable (no CRS, all nodata, ...)."""


class AOIError(RsGeoEditError):
    """The AOI vector file is missing, unreadable, has no usable polygons, or misses the scene."""


class AOIOutsideScene(AOIError):
    """No ROI of the AOI intersects the scene (in a batch: that scene is skipped, not failed)."""


class OutputError(RsGeoEditError):
    """The output path cannot be written (exists, equals an input, directory not writable)."""


class IncompatibleOptions(RsGeoEditError):
    """Options that contradict each other or are out of range."""


class WeightsNotFound(RsGeoEditError):
    """Pretrained weights are needed but cannot be found locally or downloaded."""


class JobCancelled(RsGeoEditError):
    """Raised from a progress callback to stop an edit; nothing is written."""

    exit_code = 130


class AOIWarning(UserWarning):
    """A feature was repaired or skipped."""


class ReducedResolutionWarning(UserWarning):
    """A window is larger than the maximum side and is edited at reduced resolution."""


class CacheWarning(UserWarning):
    """A cache entry was damaged and discarded (the model is trained again), or the cache could
    not be used."""
