"""Run directories: status, metrics rows, atomic checkpoints and summaries."""
