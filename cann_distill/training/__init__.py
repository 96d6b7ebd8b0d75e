"""The training loop and its live progress log."""
