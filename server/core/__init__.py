"""The shared base: configuration, metrics, logging."""
