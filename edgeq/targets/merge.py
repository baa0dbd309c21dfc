"""extends: loading a target with its parents, merging them key by key, checking and building the result."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import TargetFileError
from ..machine import host_value
from ..types import QuantMode
from .model import _FEATURE_ALIASES, AUTO, CPU, CPU_FEATURES, UNKNOWN, Deploy, Quantization, Target
from .schema import (
    _DEPLOY_DEFAULTS,
    _SCHEMA,
    _accepts,
    _check_file,
    _inherited,
    _is_table,
    _Problems,
    _read_toml,
    _suggest,
)
from .search import TargetSearchPath

# --------------------------------------------------------------------------- extends, merging, resolving


@dataclasses.dataclass
class _Merged:
    data: dict[str, Any]
    origin_of: dict[str, Path]  # leaf key path -> the file that set it
    parents: list[Path]  # files merged beneath, nearest first
    extends: str | None  # the parent named in this file


def _leaves(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and _is_table(full):
            yield from _leaves(value, full)
        else:
            yield full, value


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: tables merge key by key, everything else (arrays too) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_merged(path: Path, search: TargetSearchPath, chain: list[tuple[str, Path]]) -> _Merged:
    raw = _read_toml(path)
    _check_file(path, raw)
    name = str(raw.get("name") or path.stem)
    resolved = path.resolve()
    for i, (_, seen) in enumerate(chain):
        if seen == resolved:
            names = [n for n, _ in chain[i:]] + [name]
            first = chain[i][1]
            raise TargetFileError(
                f"{first}: 'extends' makes a cycle: {' -> '.join(names)}",
                hint="a target cannot inherit from itself; remove one of the 'extends' keys",
            )
    chain = chain + [(name, resolved)]
    own = {k: v for k, v in raw.items() if k != "extends"}
    parent_name = raw.get("extends")
    if parent_name is None:
        return _Merged(own, {k: path for k, _ in _leaves(own)}, [], None)

    if parent_name == name:
        # "extends" its own name: the target of that name further down the lookup path (what it overrides).
        found = search.find(parent_name, below=path.parent, exclude=path)
        if found is None:
            raise TargetFileError(
                f"{path}: extends = {parent_name!r} names the target itself, and no other target '{parent_name}' "
                "comes after it in the lookup path",
                hint=f"looked in: {search.describe()}",
            )
    else:
        found = search.find(parent_name)
        if found is None:
            err = search.unknown_target(parent_name)
            raise TargetFileError(f"{path}: extends = {parent_name!r}: {err.message}", hint=err.hint)
    parent = _load_merged(found[0], search, chain)
    inherited = {k: v for k, v in parent.data.items() if _inherited(k)}
    origin_of = {k: p for k, p in parent.origin_of.items() if _inherited(k)}
    origin_of.update({k: path for k, _ in _leaves(own)})
    return _Merged(_deep_merge(inherited, own), origin_of, [found[0]] + parent.parents, parent_name)


def _check_merged(path: Path, merged: _Merged) -> None:
    """Checks that need the whole target: required keys, features against arch, "auto", consistency."""
    data, problems = merged.data, _Problems(path)
    chain = ", ".join(p.name for p in merged.parents)

    def get(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def where(key: str) -> str:
        origin = merged.origin_of.get(key)
        return f" (set in {origin.name})" if origin is not None and origin.resolve() != path.resolve() else ""

    for key, spec in _SCHEMA.items():
        parent_key = key.rsplit(".", 1)[0] if "." in key else None
        if not spec.required or get(key) is not None:
            continue
        if parent_key is not None and not isinstance(get(parent_key), dict):
            continue  # the missing table is the problem reported
        in_parents = f", nor in what it extends ({chain})" if chain and spec.inherited else ""
        if spec.kind == "table":
            problems.add(f"missing required table [{key}]{in_parents}", hint="targets/README.md describes every key")
            continue
        table = f"[{parent_key}]" if parent_key else "the top level"
        problems.add(
            f"missing required key '{key}'{in_parents}",
            hint=f"add `{key.rsplit('.', 1)[-1]} = ...` at {table}; targets/README.md describes every key",
        )
    if problems.items:
        problems.raise_if_any()

    local = get("deploy.transport") == "local"
    autos = [k for k, v in _leaves(data) if v == AUTO and _accepts(k, AUTO)]
    if autos and not local:
        keys = ", ".join(f"{k}{where(k)}" for k in autos)
        problems.add(
            f"{keys}: 'auto' reads this machine, so it is only allowed when deploy.transport = 'local'",
            hint="write the device's real value, or 'unknown' where the schema allows it",
        )

    arch = get("arch")
    features = get("cpu.features")
    if isinstance(features, list) and arch in CPU_FEATURES:
        vocabulary = CPU_FEATURES[arch]
        for feature in features:
            if feature not in vocabulary:
                hint_to = _FEATURE_ALIASES.get(feature) or _suggest(feature, vocabulary)
                message = f"cpu.features{where('cpu.features')}: {feature!r} is not a known {arch} feature."
                if hint_to:
                    message += f" Did you mean {hint_to!r}?" if hint_to in vocabulary else f" Did you mean {hint_to}?"
                problems.add(message, hint=f"{arch} features (Linux /proc/cpuinfo names): {', '.join(vocabulary)}")

    runtimes, versions = get("runtimes"), get("runtime_versions")
    if isinstance(runtimes, list) and isinstance(versions, dict):
        for runtime in versions:
            origin = merged.origin_of.get(f"runtime_versions.{runtime}")
            # a version inherited for a runtime this target dropped is simply unused; one written here is a mistake
            if runtime not in runtimes and origin is not None and origin.resolve() == path.resolve():
                problems.add(
                    f"runtime_versions.{runtime}: {runtime!r} is not among this target's runtimes ({', '.join(runtimes)})",
                    hint=f"add {runtime!r} to runtimes, or remove runtime_versions.{runtime}",
                )

    cores, threads = get("cpu.cores"), get("default_threads")
    if isinstance(cores, int) and isinstance(threads, int) and threads > cores:
        problems.add(
            f"default_threads = {threads}{where('default_threads')} is more than cpu.cores = {cores}{where('cpu.cores')}"
        )

    modes, io_types = get("quantization.modes"), get("quantization.io_types")
    if isinstance(modes, list) and isinstance(io_types, list):
        for mode in modes:
            allowed = [t.value for t in QuantMode(mode).allowed_io_types]
            if not any(t in allowed for t in io_types):
                problems.add(
                    f"quantization: mode {mode!r} needs one of the I/O types {', '.join(allowed)}, "
                    f"and quantization.io_types has none of them",
                    hint=f"add one of {', '.join(allowed)} to quantization.io_types, or remove {mode!r} from quantization.modes",
                )
    problems.raise_if_any()


# --------------------------------------------------------------------------- building the Target


def _build(path: Path, origin: str, merged: _Merged) -> Target:
    data = merged.data
    auto: list[str] = []

    def value(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == AUTO and _accepts(key, AUTO):
            auto.append(key)
            return host_value(key)
        if node == UNKNOWN and _accepts(key, UNKNOWN):
            return None
        return node

    deploy = {k: data.get("deploy", {}).get(k, default) for k, default in _DEPLOY_DEFAULTS.items()}
    runtimes = tuple(value("runtimes"))
    versions = data.get("runtime_versions") or {}
    power = value("power_w")
    return Target(
        name=data["name"],
        description=data["description"],
        arch=value("arch"),
        cpu=CPU(
            model=value("cpu.model"),
            cores=value("cpu.cores"),
            max_clock_mhz=value("cpu.max_clock_mhz"),
            features=tuple(value("cpu.features")),
            soc=value("cpu.soc"),
            isa=value("cpu.isa"),
        ),
        memory_mb=value("memory_mb"),
        power_w=float(power) if power is not None else None,
        os=value("os"),
        python=value("python"),
        runtimes=runtimes,
        runtime_versions={r: versions[r] for r in runtimes if r in versions},  # in the order of preference
        default_threads=value("default_threads"),
        delegates=tuple(value("delegates")),
        quantization=Quantization(
            modes=tuple(value("quantization.modes")),
            io_types=tuple(value("quantization.io_types")),
            per_channel=value("quantization.per_channel"),
            notes=tuple(value("quantization.notes") or ()),
        ),
        deploy=Deploy(transport=value("deploy.transport"), **deploy),
        source=str(path),
        origin=origin,
        extends=merged.extends,
        parents=tuple(str(p) for p in merged.parents),
        auto=tuple(auto),
    )
