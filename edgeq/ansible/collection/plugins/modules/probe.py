#!/usr/bin/python
# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: probe
short_description: Measure a TFLite model's latency on an edge device with edgeq's probe; the figures as facts
version_added: 0.1.0
description:
  - Runs edgeq's probe program (the one C(edgeq probe) runs) on the host with the device's Python and the first
    TFLite runtime installed there in the target's order of preference, and returns its figures - load and
    first-inference times, latency min, mean, p50, p90, p99 and max over the timed runs, threads, XNNPACK, peak
    memory, CPU temperature and clock, throttling - in RV(probe) and as the fact C(edgeq_probe).
  - With O(name), it probes the ACTIVE version of a model deployed by edgeq (C(edgeq deploy) or
    M(edgeq.fleet.model)), after checking its file against its sha256; a model that is absent, inactive or
    damaged fails. This is the health check after a deploy.
  - With O(path), it probes a C(.tflite) file of the controller, uploaded (verified) under the name
    C(probe-<file stem>), as C(edgeq probe) does; deployed models are never switched.
  - The module runs on the controller (an action plugin); see the notes.
author:
  - edgeq contributors (!UNKNOWN)
extends_documentation_fragment:
  - edgeq.fleet.connection
attributes:
  check_mode:
    support: partial
    description: Can run in check mode.
    details:
      - With O(name) it runs in check mode too (it changes nothing on the device).
      - With O(path) it is skipped in check mode (it would upload the model).
  diff_mode:
    support: none
    description: Reports no diff.
  platform:
    support: full
    description: Runs on the controller and reaches the host with edgeq over SSH (or locally with C(ansible_connection=local)).
    platforms: posix
options:
  name:
    description: Probe the active version of this deployed model. Exactly one of O(name) and O(path).
    type: str
  path:
    description:
      - Probe this C(.tflite) file of the controller (uploaded as C(probe-<file stem>)). Exactly one of O(name)
        and O(path). A relative path is looked up as the C(copy) module's C(src) is.
    type: path
  runs:
    description: At least this many timed runs.
    type: int
    default: 50
  min_time:
    description: Timed runs for at least this many seconds.
    type: float
    default: 1.0
  warmup_runs:
    description: At least this many warm-up runs.
    type: int
    default: 5
  warmup_time:
    description: Warm-up for at least this many seconds.
    type: float
    default: 0.5
  threads:
    description: Interpreter threads (default - the target's C(default_threads), else the runtime's default).
    type: int
  runtime:
    description: Use this TFLite runtime (default - the first installed, in the target's order of preference).
    type: str
    choices: [ai-edge-litert, tflite-runtime, tensorflow]
  timeout:
    description: Seconds the probe may run on the device; then it is stopped there.
    type: float
    default: 300.0
  transfer_timeout:
    description: With O(path), seconds the upload may take.
    type: float
    default: 600.0
seealso:
  - module: edgeq.fleet.model
"""

EXAMPLES = r"""
- name: Health check of the active version
  edgeq.fleet.probe:
    name: digits
    runs: 50
  register: health

- name: Within the latency budget
  ansible.builtin.assert:
    that: health.probe.latency.p50_ms < 5

- name: Probe a model file before deploying it
  edgeq.fleet.probe:
    path: build/candidate_int8.tflite
    runtime: tflite-runtime
    threads: 2
"""

RETURN = r"""
probe:
  description: What the probe measured (also set as the fact C(edgeq_probe)). Times are in milliseconds.
  returned: success
  type: dict
  contains:
    name:
      description: The model's name on the device (C(probe-<stem>) with O(path)).
      type: str
      sample: digits
    version:
      description: The version probed.
      type: str
      sample: 3f2a9c0d1b7e
    path:
      description: The model file on the device.
      type: str
      sample: ./edgeq/models/digits/3f2a9c0d1b7e/model.tflite
    runtime:
      description: The TFLite runtime used.
      type: str
      sample: ai-edge-litert
    runtime_version:
      description: Its version.
      type: str
      sample: 2.3.0
    threads:
      description: Interpreter threads.
      type: int
      sample: 4
    xnnpack:
      description: Whether XNNPACK ran (part of) the graph.
      type: bool
      sample: true
    latency:
      description: The timed runs - C(count), C(min_ms), C(mean_ms), C(std_ms), C(p50_ms), C(p90_ms), C(p99_ms), C(max_ms).
      type: dict
      sample: {"count": 50, "min_ms": 1.1, "mean_ms": 1.2, "std_ms": 0.05, "p50_ms": 1.2, "p90_ms": 1.3, "p99_ms": 1.4, "max_ms": 1.5}
    load_ms:
      description: Model load time.
      type: float
    allocate_ms:
      description: Tensor allocation time.
      type: float
    first_inference_ms:
      description: The first inference.
      type: float
    warmup_runs:
      description: Warm-up runs done.
      type: int
    peak_rss_mb:
      description: The probe process's peak memory.
      type: float
    throttled:
      description: Whether the device throttled (firmware bits, 80 C or more, clock below 90 % of its maximum).
      type: bool
    throttle_reason:
      description: Why it counts as throttled.
      type: str
    thermal_before:
      description: CPU temperature, clock, maximum clock and throttle bits before the runs (null where unknown).
      type: dict
    thermal_after:
      description: The same after the runs.
      type: dict
    python:
      description: The device's Python version.
      type: str
    numpy:
      description: The device's numpy version.
      type: str
    machine:
      description: The device's machine type.
      type: str
      sample: aarch64
    cpu_count:
      description: The device's CPU count.
      type: int
    input_source:
      description: What the inputs were (V(random)).
      type: str
    delegate_partitions:
      description: Partitions of the graph run by the delegate.
      type: int
    device:
      description: The host's name.
      type: str
device:
  description: Where edgeq connected - C(user@address:port), or C(local).
  returned: always
  type: str
  sample: pi@10.0.0.7:22
kind:
  description:
    - On failure, what failed, as edgeq names it (V(model-state) - the model is absent, inactive or damaged;
      V(no-runtime), V(remote-command), V(probe-output), V(unreachable), ...).
  returned: failure
  type: str
  sample: model-state
code:
  description: On failure, edgeq's exit code for it.
  returned: failure
  type: int
  sample: 1
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible requires
from ansible_collections.edgeq.fleet.plugins.module_utils.specs import PROBE_RULES, PROBE_SPEC  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=PROBE_SPEC, supports_check_mode=True, **PROBE_RULES)
    module.fail_json(msg="edgeq.fleet.probe runs on the controller through its action plugin, not on the host")


if __name__ == "__main__":
    main()
