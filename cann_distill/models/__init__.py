"""timm models, checkpoints, feature taps and connectors."""
