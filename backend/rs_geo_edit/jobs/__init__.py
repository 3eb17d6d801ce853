"""Local job service: a SQLite job store, worker processes and the FastAPI app (``rs-geo-edit serve``)."""
