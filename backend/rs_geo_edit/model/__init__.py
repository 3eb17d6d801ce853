"""SinDDM: a single-image, multi-scale denoising diffusion model trained on one scene window.

One idea per module: ``pyramid`` builds the scales (and resizes masks to them), ``net`` is the
fully convolutional denoiser, ``schedule`` the noise schedule and each scale's start,
``training`` the training batch and loss, ``trainer`` the training loop (optimiser, EMA,
precision, checkpoints, resume), ``cache`` the content-keyed model cache, ``tiling`` the net run
on overlapping tiles, ``rows`` the row-band memory tools, and ``sampler`` the :class:`Sampler`
with its stages (keep the original, rewrite the clean estimate). This layer never imports
``config``, ``guidance`` or ``editors``: ``editors/`` adapts it to the pipeline and maps modes
to stages.
"""
