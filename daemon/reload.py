"""What a configuration reload (SIGHUP) may change while the service runs, and what not.

A new configuration is compared with the running one key by key. Keys listed as reloadable
take their new values; any other change is reported as needing a restart and the running value
stays, so a half-applied configuration never exists: what runs is the old one with exactly the
reloadable keys replaced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .config import ConfigError

M = TypeVar("M", bound=BaseModel)
_LOGGER = logging.getLogger(__name__)

#: The status line's note after a reload whose file did not validate.
FAILED_NOTE = "last reload failed (see the log), running configuration kept"


@dataclass(frozen=True)
class Reload(Generic[M]):
    config: M  # the running one with the reloadable changes applied
    applied: tuple[str, ...]  # dotted keys that changed and took effect
    needs_restart: tuple[str, ...]  # dotted keys that changed but wait for a restart

    def summary(self) -> str:
        parts = []
        if self.applied:
            parts.append("applied " + ", ".join(self.applied))
        if self.needs_restart:
            parts.append("needs a restart: " + ", ".join(self.needs_restart))
        return "; ".join(parts) or "no changes"

    @property
    def note(self) -> str:
        """For the status line: what waits for a restart, if anything."""
        return "restart to apply " + ", ".join(self.needs_restart) if self.needs_restart else ""


async def reload_from(load: Callable[[], M] | None, running: M,
                      reloadable: Iterable[str]) -> Reload[M] | None:
    """Read the configuration again (off the event loop) and plan its reload; None, logged,
    when there is no file or it does not validate: the running configuration stays whole."""
    try:
        if load is None:
            raise ConfigError("started without a configuration file: nothing to reload")
        new = await asyncio.to_thread(load)
    except ConfigError as e:
        _LOGGER.error("configuration not reloaded, the running one stays: %s", e)
        return None
    result = plan_reload(running, new, reloadable)
    _LOGGER.info("configuration reloaded: %s", result.summary())
    if result.needs_restart:
        _LOGGER.warning("these changes take effect at the next restart: %s",
                        ", ".join(result.needs_restart))
    return result


def changed_keys(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ; nested sections are compared field by field."""
    changed: list[str] = []
    for name in type(old).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        key = f"{prefix}{name}"
        if isinstance(a, BaseModel) and type(a) is type(b):
            changed += changed_keys(a, b, key + ".")
        elif a != b:
            changed.append(key)
    return changed


def plan_reload(old: M, new: M, reloadable: Iterable[str]) -> Reload[M]:
    """The running configuration with the reloadable changes of ``new`` applied."""
    allowed = tuple(reloadable)
    applied, restart = [], []
    config = old
    for key in changed_keys(old, new):
        if any(key == a or key.startswith(a + ".") for a in allowed):  # a section: all of it
            config = _replace(config, key.split("."), _get(new, key.split(".")))
            applied.append(key)
        else:
            restart.append(key)
    return Reload(config, tuple(applied), tuple(restart))


def _get(model: BaseModel, path: list[str]) -> Any:
    value: Any = model
    for part in path:
        value = getattr(value, part)
    return value


def _replace(model: M, path: list[str], value: Any) -> M:
    # model_copy keeps frozen models frozen; the value comes from a validated model.
    head, *rest = path
    if rest:
        value = _replace(getattr(model, head), rest, value)
    return model.model_copy(update={head: value})
