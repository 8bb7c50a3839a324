"""Where a study lives: an sqlite file beside the runs by default, any SQLAlchemy URL (a database
server several machines reach), or Optuna's journal file on a shared filesystem (`journal:PATH`)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import RELATIVE_NOTE, recorded_path, shared_path, write_json_atomic

DEFAULT_FILE = "optuna.db"
JOURNAL_PREFIX = "journal:"
# Another app's search without a storage (sweep/app.py): the study lives in the sweeper's memory, as
# under Hydra's own Optuna sweeper, and nothing is written beside that app's files.
IN_MEMORY = "in-memory"
SEARCH_FILE = "search.json"  # in a sweep directory: which study (and storage) its trials belong to
_URL_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def default_storage(run_root: str | Path) -> str:
    return f"sqlite:///{(Path(run_root) / DEFAULT_FILE).resolve()}"


def normalise(storage: str | None, run_root: str | Path | None, relative_to: str | Path | None = None) -> str:
    """The storage string jobs and later commands can use from any working directory; none given:
    the sqlite file under run_root, or, for an app without a run_root, IN_MEMORY. A relative file
    path is read from the working directory, or from `relative_to` (a record's storage, stated
    relative to run_root: `--run-root DIR`)."""
    if storage in (None, ""):
        return IN_MEMORY if run_root is None else default_storage(run_root)
    storage = str(storage)
    base = Path(relative_to) if relative_to is not None else Path()
    if storage.startswith(JOURNAL_PREFIX):
        path = storage[len(JOURNAL_PREFIX):]
        if not path:
            raise UserError("storage=journal: needs a file path, e.g. journal:/shared/studies/aprelu.log")
        return JOURNAL_PREFIX + str((base / Path(path).expanduser()).resolve())
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if "://" not in storage or scheme not in _URL_SCHEMES:
        raise UserError(
            f"storage={storage!r} is neither an SQLAlchemy URL (sqlite:///path/optuna.db, "
            f"postgresql://user@host/db, mysql://...) nor journal:PATH (Optuna's journal file, for a "
            f"shared filesystem). Leave it null for {DEFAULT_FILE} under run_root.")
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        relative = storage[len("sqlite:///"):]
        if relative and relative != ":memory:":
            return f"sqlite:///{(base / relative).resolve()}"
    return storage


def _file_of(storage: str) -> Path | None:
    if storage.startswith(JOURNAL_PREFIX):
        return Path(storage[len(JOURNAL_PREFIX):])
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        return Path(storage[len("sqlite:///"):])
    return None


def recorded_storage(storage: str) -> tuple[str, str]:
    """The storage as a record or a report states it, so that it leads back to the study, and a
    note to write after it: a file inside the project relative to its root, the note saying so
    (`sqlite:///runs/optuna.db`, ` (relative to the project root)`), a file elsewhere by its
    absolute URL (`sqlite:////scratch/x/runs/optuna.db`), a server URL without its password."""
    if storage == IN_MEMORY:
        return "memory (not stored)", ""
    path = _file_of(storage)
    if path is not None:
        shown = recorded_path(path)
        prefix = JOURNAL_PREFIX if storage.startswith(JOURNAL_PREFIX) else "sqlite:///"
        return prefix + shown, "" if Path(shown).is_absolute() else f" ({RELATIVE_NOTE})"
    try:
        # deferred: comes with optuna, loaded only where a study is read
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True), ""
    except Exception:
        return storage.split("@")[-1], ""


def shared_storage(storage: str, run_root: str | Path) -> tuple[str, str]:
    """The storage as a committed record states it (records promote), and its note: a file by its
    path inside the project, or under run_root (`sqlite:///optuna.db (relative to run_root)`, read
    back with `--run-root DIR`), or by its name alone elsewhere (runs/rundir.py shared_path); a
    server URL without its password."""
    path = _file_of(storage)
    if path is None:
        return recorded_storage(storage)
    shown, note = shared_path(path, run_root)
    return (JOURNAL_PREFIX if storage.startswith(JOURNAL_PREFIX) else "sqlite:///") + shown, note


def open_storage(storage: str, create: bool = True, heartbeat: dict | None = None) -> Any:
    """An Optuna storage object for a normalised storage string; with create=False a storage file
    that does not exist is refused (the commands that only read a study). heartbeat (the sweeper's:
    heartbeat_interval, grace_period, failed_trial_callback) lets a database storage fail the trials
    of a sweeper that died (search/heartbeat.py)."""
    # deferred: optuna loads only where a study is read
    import optuna

    if storage == IN_MEMORY:
        return optuna.storages.InMemoryStorage()
    path = _file_of(storage)
    if not create and path is not None and not path.is_file():
        raise UserError(f"no study storage at {path}: run a search first (python -m aprelu_exp "
                        f"search=record_16_neighbourhood, or -m hydra/sweeper=optuna ...), or give the "
                        f"storage it used with --storage (sqlite:///PATH, journal:PATH or a database URL).")
    if storage.startswith(JOURNAL_PREFIX):
        # deferred: optuna loads only where a study is read
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # Optuna logs every storage upgrade check at INFO; a run's output is not the place.
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if not storage.startswith("sqlite"):
        check_server(storage)
    return _rdb_storage(storage, heartbeat or {})


def check_server(url: str) -> None:
    """A database server that refuses the connection or the login is said in one paragraph, naming
    the URL without its password, before anything of a search is written."""
    # deferred: comes with optuna, loaded only where a study is read
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    shown, _ = recorded_storage(url)
    try:
        engine = create_engine(url)
    except ModuleNotFoundError as exc:
        raise UserError(f"storage {shown} needs the database driver {exc.name}, which is not installed: "
                        f"pip install -e \".[search]\" (psycopg for postgresql://).") from None
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig).split()).rstrip(".?")
        raise UserError(f"the study storage {shown} cannot be used: {reason}. Check that the database "
                        f"server runs and accepts connections from this machine, and the user and "
                        f"password in the URL (not shown here); or leave hydra.sweeper.storage null "
                        f"for {DEFAULT_FILE} under run_root. Nothing was started.") from None
    finally:
        engine.dispose()


def _rdb_storage(url: str, heartbeat: dict, attempts: int = 8):
    """RDBStorage, retried: sweepers started together on a new database race to create its
    tables and schema version, and the loser fails with IntegrityError or OperationalError
    (seen with two sweepers on one fresh sqlite file). Once one has created them, a retry simply
    opens the storage."""
    # deferred: optuna loads only where a study is read

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **heartbeat)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def load_study(study_name: str, storage: str):
    # deferred: optuna loads only where a study is read
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage, create=False))
    except KeyError:
        names = study_names(storage)
        raise UserError(f"no study named {study_name!r} in {storage}"
                        + (f"; it holds: {', '.join(names)}." if names else " (it holds no study).")) from None


def study_names(storage: str) -> list[str]:
    # deferred: optuna loads only where a study is read
    import optuna

    return sorted(s.study_name for s in optuna.get_all_study_summaries(open_storage(storage, create=False)))


def write_search_ref(sweep_dir: Path, study_name: str, storage: str, extra: dict | None = None) -> None:
    write_json_atomic(Path(sweep_dir) / SEARCH_FILE, {"study": study_name, "storage": storage, **(extra or {})})


def read_search_ref(sweep_dir: Path) -> dict | None:
    path = Path(sweep_dir) / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
