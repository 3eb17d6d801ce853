"""Evaluation metrics: seam visibility, fidelity outside ROIs, patch statistics."""

from .seams import boundary_step, outside_fidelity, seam_gradient_ratio
from .swd import patch_swd

__all__ = ["boundary_step", "outside_fidelity", "patch_swd", "seam_gradient_ratio"]
