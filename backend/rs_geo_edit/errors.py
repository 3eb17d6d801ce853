"""The domain's exceptions and warnings.

Every error carries a message a user can act on: what is wrong, with which file, and the fix.
The CLI prints ``str(error)`` on one line and exits non-zero; the service returns it as JSON.
"""


class RsGeoEditError(Exception):
    """Base class: an input or state problem the user can fix."""

    exit_code = 2


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
