"""Where the project's configs live and how every tool composes them: the same tree, resolvers and
overrides as `aprelu-exp`, with Hydra's composition errors said in one paragraph that names the key
and the closest keys that exist; the records (conf/experiment/*.yaml) by name."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aprelu_exp import config_schema  # noqa: F401  (registers the typed schemas)
from aprelu_exp.errors import UserError
from aprelu_exp.parts import closest
from aprelu_exp.runs.rundir import unique_suffix
from aprelu_exp.settings import flatten

# In a checkout a link to the repository's conf/; in an installed wheel the configs themselves.
CONF_DIR = Path(__file__).parent / "conf"
PACKAGE_HEADER = re.compile(r"#\s*@package\s+(\S+)")
# A user's own config folder (the records commands' --config-dir, as the main command's): searched
# before the package's, so its records and parts compose, and new records are written there.
_user_config_dir: Path | None = None


def use_config_dir(path: str | Path | None) -> None:
    global _user_config_dir
    if path is None:
        _user_config_dir = None
        return
    path = Path(path).resolve()
    if not path.is_dir():
        raise UserError(f"--config-dir {path}: no such folder. Give the folder that holds your own "
                        f"configs (experiment/<record>.yaml, optim/<name>.yaml, ...).")
    _user_config_dir = path


def user_config_dir() -> Path | None:
    return _user_config_dir


def config_dir_args() -> list[str]:
    """The main command's arguments that search the same user folder."""
    return [f"--config-dir={_user_config_dir}"] if _user_config_dir else []


def writable_conf_dir() -> Path:
    """Where a new record is written: the user's folder when one is given, else the package's."""
    return _user_config_dir or CONF_DIR


def check_conf_dir() -> Path:
    if not (CONF_DIR / "config.yaml").is_file():
        raise UserError(f"the configs are not where aprelu-exp looks for them ({CONF_DIR}/config.yaml is "
                        f"missing): the install is broken. Reinstall the package (`pip install .` or "
                        f"`bash scripts/setup.sh` in a checkout, whose aprelu_exp/conf links to conf/).")
    return CONF_DIR


def register_resolvers() -> None:
    """`${uid:}` in run directory names (one value per process, see runs.rundir.unique_suffix)."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", unique_suffix, use_cache=True)


def compose_config(overrides: list[str] | tuple[str, ...] = (), hydra_config: bool = False) -> DictConfig:
    """The composed root config for these overrides, as the main command would build it (with its
    `hydra` node where hydra_config)."""
    register_resolvers()
    overrides = [str(o) for o in overrides]
    try:
        if GlobalHydra.instance().is_initialized():
            # Inside a running Hydra app (a sweep callback): it already searches this conf dir.
            return compose("config", overrides=overrides, return_hydra_config=hydra_config)
        searched = [f"hydra.searchpath=[file://{_user_config_dir}]"] if _user_config_dir else []
        with initialize_config_dir(config_dir=str(check_conf_dir()), version_base="1.3"):
            return compose("config", overrides=searched + overrides, return_hydra_config=hydra_config)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(explain(exc, overrides)) from None


def record_names() -> list[str]:
    dirs = [d for d in (_user_config_dir, CONF_DIR) if d is not None]
    return sorted({p.stem for d in dirs for p in (d / "experiment").glob("*.yaml")})


def record_file(name: str) -> Path:
    """The file a record is read from and its evidence written to (the user's folder first, as Hydra
    searches it)."""
    for d in (_user_config_dir, CONF_DIR):
        if d is not None and (d / "experiment" / f"{name}.yaml").is_file():
            return d / "experiment" / f"{name}.yaml"
    raise UserError(f"No record named {name!r}; known records: {', '.join(record_names())}.")


def compose_record(name: str, overrides: list[str] | tuple[str, ...] | None = None) -> DictConfig:
    if name not in record_names():
        raise UserError(f"No record named {name!r}; known records: {', '.join(record_names())}. "
                        f"A record is a file conf/experiment/<name>.yaml (or experiment/<name>.yaml in "
                        f"the folder given with --config-dir).")
    return compose_config([f"experiment={name}", *(overrides or [])])


# -- what a composition error means -----------------------------------------------------------------
def _yaml(path: Path):
    """A config file's raw content (PyYAML: OmegaConf.load of every file costs a second here)."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def default_options(conf: Path = CONF_DIR) -> dict[str, str]:
    """The option each group takes when the command line names none (the defaults lists)."""
    chosen: dict[str, str] = {}
    for path, group in ((conf / "config.yaml", ""), *((p, p.parent.name) for p in conf.glob("*/*.yaml"))):
        for entry in (_yaml(path) or {}).get("defaults") or []:
            if isinstance(entry, dict):
                for key, option in entry.items():
                    key = str(key)
                    if not key.startswith(("override", "/")) and option is not None:
                        chosen.setdefault(f"{group}/{key}" if group and group != key else key, str(option))
    return chosen


def option_keys(conf_dirs: list[Path] | None = None) -> dict[str, str | None]:
    """Every key a config file sets, as a dotted key of the composed config, mapped to the option
    that brings it where that is not a default (`logger.mlflow.tracking_uri` -> `logger=mlflow`)."""
    found: dict[str, str | None] = {}
    defaults = default_options()
    for conf in conf_dirs or [CONF_DIR]:
        for path in sorted(Path(conf).rglob("*.yaml")):
            group = path.parent.relative_to(conf).as_posix()
            if group == "hydra" or group.startswith("hydra/"):
                continue
            header = PACKAGE_HEADER.search(path.read_text().split("\n", 1)[0])
            package = header.group(1) if header else group.replace("/", ".")
            prefix = "" if package in ("_global_", ".") else package
            data = _yaml(path)
            if not isinstance(data, dict):
                continue
            data.pop("defaults", None)
            brings = None if group == "." or defaults.get(group) == path.stem else f"{group}={path.stem}"
            for key in flatten(data, prefix if group != "." else "", index_lists=False):
                if found.get(key, "?") is not None:
                    found[key] = brings
    return found


def _key_of(exc: BaseException, message: str) -> str | None:
    for pattern in (r"Could not override '([^']+)'", r"Could not append to config\. An item is already at '([^']+)'"):
        m = re.search(pattern, message)
        if m:
            return m.group(1)
    full_key = getattr(exc.__cause__, "full_key", None) or getattr(exc, "full_key", None)
    return str(full_key) if full_key else None


def _unknown_key(key: str, overrides: list[str]) -> str:
    known = option_keys()
    near = closest(key, [k for k in known if not k.startswith("hydra.")])
    said = [f"{k} (with {known[k]})" if known[k] else k for k in near]
    hint = f" Did you mean {' or '.join(said)}?" if said else ""
    return (f"{key} is not a key of this config.{hint} `aprelu-exp --cfg job` lists every key with its value "
            f"(a key that some option brings in needs that option too); `+{key}=...` would add a key no part "
            f"takes, which a run refuses.")


def explain(exc: BaseException, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """One paragraph for a Hydra or OmegaConf composition error: what is wrong, with the key, the
    closest existing keys or the group's options, and the fix."""
    message = " ".join(str(exc).split())
    cause = exc.__cause__
    cause_text = " ".join(str(cause).split()) if cause else ""
    if isinstance(exc, MissingConfigException) or "Could not find '" in message:
        m = re.search(r"Could not (?:find|load) '([^']+)'", str(exc))
        wanted = m.group(1) if m else "?"
        group, _, option = wanted.rpartition("/")
        options = re.findall(r"^\t(\S+)$", str(exc), flags=re.M)
        if group and options:
            return (f"{group}={option} is not an option of the config group {group}; its options are "
                    f"{', '.join(options)} (`aprelu-exp --help` lists every group; your own options go in a "
                    f"folder added with --config-dir).")
        return f"{message} (`aprelu-exp --help` lists the config groups and their options)."
    if isinstance(exc, OverrideParseException):
        return (f"an override does not parse: {message} Write key=value, group=option or +key=value, and "
                f"quote values with spaces or brackets.")
    key = _key_of(exc, message)
    text = f"{message} {cause_text}"
    if key and ("not in struct" in text or "ConfigKeyError" in text or "Key '" in text and "not" in text):
        return _unknown_key(key, list(overrides))
    if key and ("could not be converted" in text or "ValidationError" in type(cause).__name__ + type(exc).__name__):
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), "?")
        expected = re.search(r"converted to (\w+)", text)
        return (f"{key}={value}: the value has the wrong type"
                f"{'; ' + key + ' takes ' + expected.group(1).lower() if expected else ''} ({cause_text or message}).")
    return (f"{message}{' (' + cause_text + ')' if cause_text and cause_text not in message else ''}. "
            f"`aprelu-exp --help` lists the config groups and their options, `aprelu-exp --cfg job` every key "
            f"with its value.")
