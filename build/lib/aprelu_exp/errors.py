"""Errors meant for the person at the terminal: one paragraph saying what is wrong and the fix."""
import sys


class UserError(Exception):
    """Bad input (config, data, checkpoint). The CLI prints the message alone and exits with 2."""

    exit_code = 2
    prefix = "error"


def run_command(command) -> int:
    """Run a command-line tool's action: a UserError becomes its one-paragraph message on stderr
    and exit status 2, never a traceback."""
    try:
        command()
    except UserError as exc:
        print(f"{exc.prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
