"""Hardware profiles: one YAML per target."""
