"""Training-free patch machinery: a coherent nearest-neighbour field of the window's real patches
(``match.py``), the coarse-to-fine fill of the ``patch`` engine (``fill.py``), and the SinDDM
sampler's fine-scale stage that makes its clean estimate of real patches (``stage.py``)."""
