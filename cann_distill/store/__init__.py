"""The run directory, its manifest, and verified caches keyed by what produced them."""
