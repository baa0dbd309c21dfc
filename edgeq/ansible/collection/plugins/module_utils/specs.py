# Copyright (c) edgeq contributors
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
# SPDX-License-Identifier: BSD-2-Clause
"""The argument specs of the edgeq.fleet modules: one definition for the action plugins that run them and the module files that document them."""

from __future__ import annotations

CONNECTION_SPEC = dict(
    target=dict(type="str"),
    known_hosts=dict(type="path"),
    trust_new_hosts=dict(type="bool", default=False),
    connect_timeout=dict(type="float", default=10.0),
    command_timeout=dict(type="float", default=60.0),
    retries=dict(type="int", default=2),
)

MODEL_SPEC = dict(
    name=dict(type="str"),
    path=dict(type="path"),
    state=dict(type="str", default="present", choices=["present", "rollback", "absent"]),
    version=dict(type="str"),
    versions=dict(type="list", elements="str"),
    keep=dict(type="int"),
    transfer_timeout=dict(type="float", default=600.0),
    **CONNECTION_SPEC,
)
MODEL_RULES = dict(
    required_if=[
        ("state", "present", ("path",)),
        ("state", "rollback", ("name",)),
        ("state", "absent", ("name",)),
    ],
)

MODEL_INFO_SPEC = dict(name=dict(type="str", required=True), **CONNECTION_SPEC)
MODEL_INFO_RULES = dict()

PROBE_SPEC = dict(
    name=dict(type="str"),
    path=dict(type="path"),
    runs=dict(type="int", default=50),
    min_time=dict(type="float", default=1.0),
    warmup_runs=dict(type="int", default=5),
    warmup_time=dict(type="float", default=0.5),
    threads=dict(type="int"),
    runtime=dict(type="str", choices=["ai-edge-litert", "tflite-runtime", "tensorflow"]),
    timeout=dict(type="float", default=300.0),
    transfer_timeout=dict(type="float", default=600.0),
    **CONNECTION_SPEC,
)
PROBE_RULES = dict(
    mutually_exclusive=[("name", "path")],
    required_one_of=[("name", "path")],
)
