"""Every part a run trains with is a config node with a `_target_`: the network, the data module, the
augmentation, the optimizer and the schedule (`_partial_`), the loggers, the callbacks and the trainer.
The constructor's signature is the one declaration of a part's settings: its YAML file gives the
defaults, and `check_node` holds a node against the signature before anything is built, so a key no
constructor takes (`+model.foo=3`), a value of the wrong type or a `_target_` that names nothing is
refused naming the key, the part and the closest keys that exist. A run's config.yaml therefore holds
only keys that reached a constructor."""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterable

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from aprelu_exp.errors import UserError

# Hydra's instantiate keys: they steer the build and reach no constructor.
INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def locate(target: str, where: str) -> Callable:
    """The class or function a `_target_` names, or a UserError saying that it names nothing."""
    parts = str(target).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        if callable(obj):
            return obj
        break
    raise UserError(f"{where}._target_={target} names no importable class or function. Give its dotted "
                    f"path, e.g. torch.optim.AdamW, or choose an option of the group (`aprelu-exp --help`).")


def parameters(target: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """(named parameters a node can set, whether the target also takes **kwargs)."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True
    named = {n: p for n, p in sig.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    return named, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _hints(target: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        return {}  # annotations that do not evaluate here: the constructor checks its own values


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def value_fits(value: Any, hint: Any) -> bool:
    """Whether a config value can be what an annotation asks for (only the types a YAML file can
    hold are judged; any other annotation is left to the constructor)."""
    if hint is Any or value is None and hint is type(None):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, h) for h in typing.get_args(hint))
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, (dict, DictConfig))
    return True


def closest(key: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates nearest to a misspelled key: same last segment first, then by spelling."""
    candidates = list(dict.fromkeys(candidates))
    tail = key.rsplit(".", 1)[-1]
    same_tail = [c for c in candidates if c.rsplit(".", 1)[-1] == tail and c != key]
    spelled = difflib.get_close_matches(key, candidates, n=n, cutoff=0.6)
    tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
    by_tail = [tails[t] for t in difflib.get_close_matches(tail, list(tails), n=n, cutoff=0.7)]
    return list(dict.fromkeys(same_tail + spelled + by_tail))[:n]


def check_node(where: str, node: DictConfig, given: Iterable[str] = ()) -> Callable:
    """Hold a part's node against its target's signature; return the target. ``given`` names the
    arguments the code passes itself (the network to the module, the optimizer to a schedule)."""
    target = locate(node["_target_"], where)
    named, takes_any = parameters(target)
    given = set(given)
    hints = _hints(target)
    for key in node:
        if key in INSTANTIATE_KEYS:
            continue
        if key not in named and not takes_any:
            near = closest(str(key), [k for k in named if k not in given])
            hint = f" Did you mean {' or '.join(f'{where}.{k}' for k in near)}?" if near else ""
            raise UserError(f"{where}.{key} is not a setting of {node['_target_']} ({where}); its settings are "
                            f"{', '.join(k for k in named if k not in given) or 'none'}.{hint} A key that "
                            f"no constructor takes would be recorded in config.yaml without training "
                            f"anything, so it is refused.")
        if OmegaConf.is_missing(node, key):
            raise UserError(f"{where}.{key} has no value (???); give one, e.g. {where}.{key}=...")
        value = node[key]
        if key in hints and not value_fits(value, hints[key]):
            raise UserError(f"{where}.{key}={value!r} is a {type(value).__name__}; {node['_target_']} expects "
                            f"{_type_name(hints[key])} there.")
    missing = [n for n, p in named.items() if p.default is p.empty and n not in node and n not in given]
    if missing and not OmegaConf.select(node, "_partial_", default=False):
        raise UserError(f"{where} ({node['_target_']}) needs {', '.join(f'{where}.{m}' for m in missing)}; "
                        f"add {'them' if len(missing) > 1 else 'it'} to the config.")
    return target


def build(where: str, node: DictConfig, **given) -> Any:
    """Check a part's node, then build it with Hydra's instantiate, ``given`` passed as they are
    (instantiate would turn an object into a config node). A `_partial_` node builds a partial.
    A target's own UserError comes through; a ValueError or TypeError becomes one naming the part."""
    check_node(where, node, given)
    try:
        factory = instantiate(node, _partial_=True)
        return functools.partial(factory, **given) if node.get("_partial_") else factory(**given)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"{where} ({node['_target_']}) could not be built: {cause or exc}. Check its keys "
                        f"with `aprelu-exp --cfg job --package {where}`.") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"{where} ({node['_target_']}): {exc}") from None


def build_entries(group: str, node: DictConfig | None, **given) -> list:
    """Every entry of a list-like group (logger, callbacks) that names a `_target_`, each built."""
    return [build(f"{group}.{name}", spec, **given) for name, spec in (node or {}).items()
            if isinstance(spec, DictConfig) and "_target_" in spec]
