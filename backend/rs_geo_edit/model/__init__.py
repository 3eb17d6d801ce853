"""SinDDM: a single-image, multi-scale denoising diffusion model trained on one scene window.

``pyramid`` builds the scales (and resizes masks to them), ``net`` is the fully convolutional
denoiser, ``diffusion`` holds the schedules, the training batch and loss and the sampler (with
hooks on the predicted clean image and a mask that keeps the original), ``trainer`` the
training loop with its optimiser, EMA, precision, generator, checkpoints and resume, and
``checkpoint`` the content-keyed model cache. This layer never imports ``config``, ``guidance``
or ``editors``: ``editors/sinddm.py`` adapts it to the pipeline and maps modes to hooks.
"""
