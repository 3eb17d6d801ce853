"""Training-free patch machinery: a bank of the window's real patches (nearest real patches of a
query, folded back so the grain stays), the coarse-to-fine fill of the ``patch`` engine, and the
SinDDM sampler's fine-scale stage that makes its clean estimate of real patches."""
