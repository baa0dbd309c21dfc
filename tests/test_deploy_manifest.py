"""``edgeq.deploy.manifest``: the manifest as data (no device needed)."""

from __future__ import annotations

import json

from edgeq.deploy.manifest import (
    HISTORY_LIMIT,
    known_sha256,
    manifest_entry,
    manifest_history,
    manifest_line,
    manifest_versions,
    new_manifest,
    parse_manifest,
    version_infos,
    versions_to_prune,
)
from edgeq.deploy.model import ModelFile

A, B, C, D, E = (letter * 12 for letter in "abcde")


def test_versions_to_prune_by_last_activation():
    manifest = {"history": [{"version": v} for v in (A, B, C, A)]}
    on_device = (A, B, C, D)
    assert versions_to_prune(manifest, on_device, E, 3) == [B, D]
    assert versions_to_prune(manifest, on_device, A, 1) == [C, B, D]


def test_a_damaged_manifest_is_read_as_far_as_it_can_be_trusted():
    assert parse_manifest(b"{not json") is None
    assert parse_manifest(b"\xff\xfe") is None
    assert parse_manifest(b"[1, 2]") == {}
    damaged = {"versions": {A: {"sha256": "f" * 64}, B: "junk"}, "history": [{"version": A}, {"no": 1}, "junk"]}
    assert manifest_versions(damaged) == {A: {"sha256": "f" * 64}}
    assert manifest_history(damaged) == [{"version": A}]
    assert manifest_versions({"versions": []}) == {} and manifest_history({"history": {}}) == []
    assert known_sha256(damaged, A) == "f" * 64
    assert known_sha256({"versions": {A: {"sha256": "not a hash"}}}, A) is None and known_sha256(damaged, C) is None


def test_the_next_manifest_records_the_switch_and_drops_what_is_pruned():
    model = ModelFile(path="/models/digits_int8.tflite", name="digits", sha256="c" * 64, size_bytes=1234)
    entry = manifest_entry(model)
    assert entry["sha256"] == "c" * 64 and entry["size_bytes"] == 1234 and entry["source"] == "digits_int8.tflite"
    before = {"versions": {A: {"sha256": "a" * 64}, B: {"sha256": "b" * 64}}, "history": [{"version": A}], "x": 1}
    event = {"at": entry["deployed_at"], "action": "deploy", "version": C, "previous": A}
    after = new_manifest("digits", before, current=C, event=event, add=entry, drop=[B])
    assert after == {
        "format": 1,
        "model": "digits",
        "current": C,
        "updated_at": entry["deployed_at"],
        "versions": {A: {"sha256": "a" * 64}, C: entry},
        "history": [{"version": A}, event],
    }
    assert B in before["versions"]  # the manifest read is not changed
    line = manifest_line(after)
    assert "\n" not in line and line.isascii() and json.loads(line) == after


def test_the_history_keeps_the_last_events():
    manifest = {"history": [{"version": A, "n": i} for i in range(HISTORY_LIMIT)]}
    after = new_manifest("m", manifest, current=B, event={"at": "now", "version": B})
    assert (
        len(after["history"]) == HISTORY_LIMIT
        and after["history"][0]["n"] == 1
        and after["history"][-1]["version"] == B
    )


def test_version_infos_newest_first_with_what_was_recorded():
    manifest = {
        "versions": {
            A: {"deployed_at": "2030-01-01T00:00:00Z", "size_bytes": 10},
            B: {"deployed_at": "2030-02-01T00:00:00Z"},
        }
    }
    infos = version_infos(manifest, (A, B, C), B)
    assert [(i.version, i.active) for i in infos] == [(B, True), (A, False), (C, False)]
    assert infos[1].size_bytes == 10 and infos[2].deployed_at is None
