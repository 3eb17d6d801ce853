"""SinDDM: a single-image, multi-scale denoising diffusion model trained on one scene window.

``pyramid`` builds the scales, ``net`` is the fully convolutional denoiser, ``diffusion`` holds
the schedules, the training loop and the sampler, ``checkpoint`` the cache and resumable
checkpoints, and ``editor`` adapts it all to the pipeline's editor protocol.
"""
