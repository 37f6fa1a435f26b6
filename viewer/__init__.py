"""A local EEG viewer with the model's answers, and the HTTP API under it (serve.py starts it).

app.py: the FastAPI routes; files.py: which files may be served and uploads; jobs.py: the
bounded queue and the one worker; analysis.py: the one place that calls `inference/`;
static/: the page (no CDN: everything it loads is served by the app).
"""
from viewer.app import ViewerConfig, create_app

__all__ = ["ViewerConfig", "create_app"]
