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


def _completion_query(args: list[str]) -> bool:
    return any(a in ("-sc", "--shell-completion") for a in args) and any(a.startswith("query") for a in args)


def completion_fails_quietly(entry):
    """A TAB completion query (`-sc query=bash`, what the shell's completion function runs) on a
    line that does not parse (an unclosed bracket, an unknown flag) offers nothing: no message and
    no traceback in the middle of the user's prompt, exit 0."""
    import functools
    import io

    @functools.wraps(entry)
    def run(*args, **kwargs):
        if not _completion_query(sys.argv[1:]):
            return entry(*args, **kwargs)
        saved, sys.stderr = sys.stderr, io.StringIO()
        try:
            return entry(*args, **kwargs)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise SystemExit(0) from None
            raise
        except Exception:
            raise SystemExit(0) from None
        finally:
            sys.stderr = saved

    return run
