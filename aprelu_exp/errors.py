"""Errors meant for the person at the terminal: one paragraph saying what is wrong and the fix."""


class UserError(Exception):
    """Bad input (config, data, checkpoint). The CLI prints the message alone and exits with 2."""

    exit_code = 2
