"""What a person at the terminal sees of a run: the progress display (a bar, or one line per
epoch) and the filters that keep third-party noise out of it."""
