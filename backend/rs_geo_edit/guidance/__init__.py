"""CLIP text guidance: model loading (RemoteCLIP and open_clip), prompt ensembling, ROI-masked guidance."""
