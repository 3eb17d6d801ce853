"""rs-geo-edit: text-guided generative editing of georeferenced remote-sensing scenes."""

__version__ = "0.1.0"
