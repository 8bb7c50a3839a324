"""The project's own Lightning loggers (the `logger` group's other entries are Lightning's)."""
