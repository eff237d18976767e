"""reid-daemon: per-camera tracking and cross-camera person re-identification."""

__version__ = "0.1.0"
