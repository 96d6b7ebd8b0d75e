"""Errors, the registry, safe YAML, the recipe schema: no torch, imported by every layer."""
