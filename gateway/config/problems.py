"""Every mistake in one run: parsing goes on past a wrong key, collecting each `ConfigError`.

Usage:

    problems = Problems()
    port = problems.take(check_port, raw, default=1883)   # a ConfigError is kept, the default used
    problems.add(ConfigError(key, problem, fix))
    problems.raise_any()                                  # one error as itself, several as ConfigErrors

Granularity: each section key, each rule, each resource and each zone edge is
checked on its own, so a file with four mistakes in four places reports four
errors. Within one rule or resource, the first mistake is reported (the rest of
that table is read only once it parses).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from gateway.errors import ConfigError


def read_toml(path: str | os.PathLike, fix: str = "check the path given with --config") -> dict:
    """A TOML file's table; an unreadable file or bad syntax is a ConfigError naming the file,
    with `fix` for a path that cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}", fix) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}", "fix the syntax at the line shown") from None


class ConfigErrors(ConfigError):
    """Several configuration errors; `errors` lists each (key, problem, fix)."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.key, first.problem, first.fix)
        self.args = (f"{len(self.errors)} errors:\n" + "\n".join(f"  {e}" for e in self.errors),)

    def __str__(self) -> str:
        return self.args[0]


class Problems:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        if isinstance(error, ConfigErrors):
            self.errors.extend(error.errors)
        else:
            self.errors.append(error)

    def take(self, fn, *args, default=None):
        """fn(*args), or `default` after recording the ConfigError it raised."""
        try:
            return fn(*args)
        except ConfigError as exc:
            self.add(exc)
            return default

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)
