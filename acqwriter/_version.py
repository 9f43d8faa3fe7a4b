"""The package version: the single source of truth (pyproject reads it from here)."""

__version__ = "0.1.0"
