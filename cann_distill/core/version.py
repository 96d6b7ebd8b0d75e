"""The package version: a leaf module, so caches can record it without importing the package."""

__version__ = "0.1.0"
