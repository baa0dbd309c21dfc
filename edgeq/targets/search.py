"""Where targets live: the lookup order of names, from an explicit path to the bundled files."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import InternalError, TargetFileError

# --------------------------------------------------------------------------- where targets live


def bundled_targets_dir() -> Path:
    """The folder of targets shipped with edgeq: inside the installed package, or ``targets/`` of a source checkout."""
    package = Path(__file__).resolve().parent.parent  # edgeq/
    installed = package / "_bundled_targets"  # wheel layout: pyproject maps edgeq._bundled_targets onto targets/
    if installed.is_dir():
        return installed
    checkout = package.parent / "targets"  # source checkout or editable install
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    raise InternalError(
        f"edgeq's bundled targets are missing (looked in {installed} and {checkout}): a broken installation"
    )


def user_targets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/edgeq/targets``, or ``~/.config/edgeq/targets`` when it is unset or not absolute."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "edgeq" / "targets"


def is_target_path(value: str | os.PathLike) -> bool:
    """True when ``value`` names a file rather than a target: it ends in .toml or contains a path separator."""
    if isinstance(value, os.PathLike):
        return True
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return value.endswith(".toml") or any(s in value for s in seps)


@dataclasses.dataclass(frozen=True)
class SearchDir:
    """One folder of the lookup path."""

    path: Path
    origin: str  # "targets-dir" | "env" | "user" | "bundled"

    def file_for(self, name: str) -> Path | None:
        candidate = self.path / f"{name}.toml"
        return candidate if candidate.is_file() else None

    def stems(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.toml") if p.is_file())


@dataclasses.dataclass(frozen=True)
class TargetSearchPath:
    """The folders a target name is looked up in, first match first."""

    dirs: tuple[SearchDir, ...]

    @classmethod
    def default(
        cls,
        targets_dir: str | os.PathLike | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TargetSearchPath:
        """``--targets-dir``, then ``EDGEQ_TARGETS_PATH``, then the user config folder, then the bundled targets.

        A folder given explicitly (``--targets-dir`` or in ``EDGEQ_TARGETS_PATH``)
        must exist; the user config folder is skipped while it does not.
        """
        env = os.environ if environ is None else environ
        dirs: list[SearchDir] = []
        if targets_dir is not None:
            path = Path(targets_dir).expanduser()
            if not path.is_dir():
                raise TargetFileError(f"--targets-dir {targets_dir}: no such directory")
            dirs.append(SearchDir(path, "targets-dir"))
        for entry in env.get("EDGEQ_TARGETS_PATH", "").split(os.pathsep):
            if not entry.strip():
                continue
            path = Path(entry).expanduser()
            if not path.is_dir():
                raise TargetFileError(
                    f"EDGEQ_TARGETS_PATH: {entry}: no such directory",
                    hint=f"fix or unset EDGEQ_TARGETS_PATH (folders separated by '{os.pathsep}')",
                )
            dirs.append(SearchDir(path, "env"))
        dirs.append(SearchDir(user_targets_dir(env), "user"))
        dirs.append(SearchDir(bundled_targets_dir(), "bundled"))
        unique: list[SearchDir] = []
        seen: set[Path] = set()
        for d in dirs:
            key = d.path.resolve()
            if key not in seen:
                seen.add(key)
                unique.append(d)
        return cls(tuple(unique))

    def find(self, name: str, *, below: Path | None = None, exclude: Path | None = None) -> tuple[Path, str] | None:
        """The first file for ``name``: ``(path, origin)``.

        ``below``: only folders after that one (how a target extends the one
        it overrides). ``exclude``: never this file.
        """
        dirs = list(self.dirs)
        if below is not None:
            resolved = [d.path.resolve() for d in dirs]
            below_r = below.resolve()
            if below_r in resolved:
                dirs = dirs[resolved.index(below_r) + 1 :]
        excluded = exclude.resolve() if exclude is not None else None
        for d in dirs:
            found = d.file_for(name)
            if found is not None and found.resolve() != excluded:
                return found, d.origin
        return None

    def entries(self) -> dict[str, tuple[Path, str]]:
        """Every target name visible, mapped to the file that wins: ``{name: (path, origin)}``."""
        result: dict[str, tuple[Path, str]] = {}
        for d in self.dirs:
            for stem in d.stems():
                result.setdefault(stem, (d.path / f"{stem}.toml", d.origin))
        return dict(sorted(result.items()))

    def describe(self) -> str:
        """The folders, in order, for messages: ``--targets-dir /x, user /home/u/.config/edgeq/targets (absent), ...``."""
        labels = {"targets-dir": "--targets-dir", "env": "EDGEQ_TARGETS_PATH", "user": "user", "bundled": "bundled"}
        parts = []
        for d in self.dirs:
            absent = "" if d.path.is_dir() else " (absent)"
            parts.append(f"{labels.get(d.origin, d.origin)} {d.path}{absent}")
        return ", ".join(parts)

    def unknown_target(self, name: str, context: str = "") -> TargetFileError:
        """The error for a name found nowhere, with the closest known name."""
        names = list(self.entries())
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
        message = f"{context}unknown target '{name}'."
        if close:
            message += f" Did you mean '{close[0]}'?"
        return TargetFileError(message, hint=f"looked in: {self.describe()}; `edgeq targets list` shows them all")
