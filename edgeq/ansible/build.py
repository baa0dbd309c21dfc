"""The ``edgeq.fleet`` collection's sources (package data) and the tarball that ``ansible-galaxy collection install`` takes.

The sources live in ``collection/`` beside this file. :func:`build_collection`
copies them, sets the collection's version to edgeq's (the plugins call this
edgeq's API, so the two go together), adds the GPL text the collection is
licensed under, and runs ``ansible-galaxy collection build`` on the copy, as
a program: edgeq never imports ansible-core.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

from .. import __version__
from ..errors import EdgeqError

__all__ = ["COLLECTION", "build_collection", "collection_source", "collection_tarball_name", "find_ansible_program"]

COLLECTION = "edgeq.fleet"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "output")  # output: ansible-test's results
_BUILD_TIMEOUT_S = 300.0


def collection_source() -> Path:
    """The folder that holds the collection's sources (``galaxy.yml``, ``plugins/``, ...)."""
    source = resources.files(__name__.rpartition(".")[0]).joinpath("collection")
    path = Path(str(source))
    if not (path / "galaxy.yml").is_file():
        raise EdgeqError(f"the edgeq.fleet collection's sources are missing from this edgeq installation ({path})")
    return path


def collection_tarball_name(version: str = __version__) -> str:
    """What ``ansible-galaxy collection build`` names the tarball: ``edgeq-fleet-<version>.tar.gz``."""
    return f"{COLLECTION.replace('.', '-')}-{version}.tar.gz"


def find_ansible_program(name: str) -> str:
    """``ansible-galaxy`` (or another ansible program) of the Python that runs edgeq, else the one on PATH.

    The same environment first: the collection's plugins import edgeq, so the
    Ansible that runs them must be the one installed beside it.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise EdgeqError(
        f"{name} not found (beside {sys.executable}, nor on PATH)",
        hint="install ansible-core in the Python environment of edgeq (pip install 'ansible-core>=2.19')",
    )


def build_collection(out_dir: str | os.PathLike[str], *, ansible_galaxy: str | None = None) -> Path:
    """Build the ``edgeq.fleet`` collection into ``out_dir``; the path of its ``.tar.gz``.

    An existing tarball of the same version is replaced.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    program = ansible_galaxy or find_ansible_program("ansible-galaxy")
    with tempfile.TemporaryDirectory(prefix="edgeq-collection-") as scratch:
        tree = Path(scratch) / "ansible_collections" / "edgeq" / "fleet"
        stage_collection(tree)
        try:
            done = subprocess.run(
                [program, "collection", "build", str(tree), "--output-path", str(out.resolve()), "--force"],
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT_S,
                cwd=scratch,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EdgeqError(f"could not run {program}: {exc}") from exc
    tarball = out / collection_tarball_name()
    if done.returncode != 0 or not tarball.is_file():
        detail = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}")[-600:]
        raise EdgeqError(f"ansible-galaxy collection build failed: {detail}")
    return tarball


def stage_collection(tree: str | os.PathLike[str]) -> Path:
    """Copy the collection's sources to ``tree`` as they are built: edgeq's version, the licence text. ``tree``."""
    tree = Path(tree)
    shutil.copytree(collection_source(), tree, ignore=_IGNORED)
    galaxy = tree / "galaxy.yml"
    text = galaxy.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^version: .*$", f"version: {__version__}", text)
    if count != 1:
        raise EdgeqError(f"{galaxy}: no single 'version:' line to set")
    galaxy.write_text(text, encoding="utf-8")
    licence = _gpl_text()
    if licence is not None:
        (tree / "COPYING").write_text(licence, encoding="utf-8")
    return tree


def _gpl_text() -> str | None:
    """The GPL-3.0 text, from ansible-core's own distribution (the collection's plugins extend ansible-core)."""
    try:
        files = metadata.distribution("ansible-core").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "COPYING":
            try:
                return file.read_text(encoding="utf-8")
            except OSError:
                return None
    return None
