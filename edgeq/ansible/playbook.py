"""A ready playbook for a staged rollout with the ``edgeq.fleet`` collection: canary batch, failure budget, health check, rollback.

The playbook deploys the model (``edgeq.fleet.model``: verified on the
device, switched atomically), probes the active version on the device as a
health check (``edgeq.fleet.probe``: it ran, it is the new version, its p50
is within the latency budget), and in ``rescue:`` rolls a host whose check
failed back to the version it had before, then fails that host so the play
reports it. ``serial`` runs a canary batch first, then the rest;
``max_fail_percentage`` stops the rollout when a batch fails beyond it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

from .. import __version__
from ..errors import EdgeqError
from ..files import atomic_write_bytes

__all__ = ["Rollout", "parse_canary", "render_playbook", "rollout", "write_playbook"]

_CANARY_RE = re.compile(r"^\s*(\d+)\s*(%?)\s*$")
_HOSTS_RE = re.compile(r"^[^\s{}]+$")


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What the playbook does; :func:`rollout` checks the values and the model."""

    model: str  # absolute path on the controller (the collection's plugins run there)
    name: str  # the model's name on the devices
    hosts: str = "all"
    canary: int | str = 1  # hosts in the first batch, or a percentage ("10%")
    max_fail_percent: int = 0
    max_latency_ms: float | None = None  # p50 budget of the health check; a host may set edgeq_max_latency_ms
    probe_runs: int = 50
    probe_min_time_s: float = 1.0
    known_hosts: str | None = None  # the modules' known_hosts option (module_defaults), as edgeq --known-hosts


def parse_canary(value: int | str) -> int | str:
    """``N`` (hosts, at least 1) or ``P%`` (1-100): the first batch of ``serial``."""
    match = _CANARY_RE.match(str(value))
    if not match:
        raise EdgeqError(
            f"canary {value!r} is neither a number of hosts nor a percentage", hint="e.g. --canary 2 or --canary 10%"
        )
    number, percent = int(match.group(1)), bool(match.group(2))
    if percent and not 1 <= number <= 100:
        raise EdgeqError(f"canary {value!r}: a percentage is 1% to 100%")
    if not percent and number < 1:
        raise EdgeqError(f"canary {value!r}: the canary batch needs at least 1 host")
    return f"{number}%" if percent else number


def rollout(
    model: str | os.PathLike[str],
    *,
    name: str | None = None,
    hosts: str = "all",
    canary: int | str = 1,
    max_fail_percent: int = 0,
    max_latency_ms: float | None = None,
    probe_runs: int = 50,
    probe_min_time_s: float = 1.0,
    known_hosts: str | os.PathLike[str] | None = None,
) -> Rollout:
    """A checked :class:`Rollout`: the model must be a TFLite file, the name safe, the numbers in range."""
    from ..deploy import prepare_model

    path = Path(model).expanduser().resolve()
    prepared = prepare_model(path, name)  # a TFLite file, and a safe name (the file's stem by default)
    known = str(Path(known_hosts).expanduser().resolve()) if known_hosts is not None else None
    for file in (str(path), known):
        if file is not None and ("{{" in file or "{%" in file):
            raise EdgeqError(f"{file}: Ansible would read this path as a template", hint="rename or move it")
    if not _HOSTS_RE.match(hosts):
        raise EdgeqError(f"hosts {hosts!r} is not an Ansible host pattern")
    if not 0 <= max_fail_percent <= 100:
        raise EdgeqError(f"max-fail {max_fail_percent} is not a percentage (0-100)")
    if max_latency_ms is not None and not (math.isfinite(max_latency_ms) and max_latency_ms > 0):
        raise EdgeqError(f"max-latency-ms {max_latency_ms} must be a positive number of milliseconds")
    if probe_runs < 1 or not probe_min_time_s >= 0:
        raise EdgeqError("the health check needs at least 1 probe run and a non-negative minimum time")
    return Rollout(
        model=str(path),
        name=prepared.name,
        hosts=hosts,
        canary=parse_canary(canary),
        max_fail_percent=max_fail_percent,
        max_latency_ms=max_latency_ms,
        probe_runs=probe_runs,
        probe_min_time_s=probe_min_time_s,
        known_hosts=known,
    )


def write_playbook(plan: Rollout, out: str | os.PathLike[str]) -> Path:
    """Write the playbook of ``plan`` to ``out`` (atomically); its path."""
    path = Path(out)
    atomic_write_bytes(path, render_playbook(plan).encode("utf-8"))
    return path


def _q(value: object) -> str:
    """A YAML scalar for ``value`` (JSON is YAML; strings are double-quoted)."""
    return json.dumps(value)


def render_playbook(plan: Rollout) -> str:
    """The playbook's text (YAML)."""
    budget = "none" if plan.max_latency_ms is None else repr(float(plan.max_latency_ms))
    latency_rule = (
        f"(edgeq_max_latency_ms | default({budget})) is none"
        f" or edgeq_health.probe.latency.p50_ms <= (edgeq_max_latency_ms | default({budget}) | float)"
    )
    canary = _q(plan.canary)
    shown_budget = "none" if plan.max_latency_ms is None else f"{plan.max_latency_ms:g} ms"
    defaults = (
        f"  module_defaults:\n    group/edgeq.fleet.fleet:\n      known_hosts: {_q(plan.known_hosts)}\n"
        if plan.known_hosts
        else ""
    )
    return f"""\
# Staged rollout of model {plan.name!r} to the hosts {plan.hosts!r}, written by edgeq {__version__}.
#
#   ansible-playbook -i INVENTORY THIS.yml [--limit PATTERN] [--check]
#
# Needs the edgeq.fleet collection (edgeq ansible build; ansible-galaxy collection install edgeq-fleet-*.tar.gz)
# and edgeq in the Python that runs Ansible: the modules run on this machine, the controller, and reach
# each device over SSH with edgeq (host keys from known_hosts, never accepted silently).
#
# Batches: {plan.canary} host(s) first (the canary), then the rest; the rollout stops when more than
# {plan.max_fail_percent}% of a batch fails. In each batch, per host: deploy (uploaded, sha256-checked on the
# device, switched atomically), then a health check: edgeq's probe on the ACTIVE version (its file checked
# against its sha256 first) must run and measure the new version, with a p50 within the latency budget
# ({shown_budget}; a host or group may set its own with edgeq_max_latency_ms). A host that fails is rolled
# back to the version it had and reported failed; the others keep the new version.
- name: {_q(f"Roll out {plan.name}")}
  hosts: {_q(plan.hosts)}
  gather_facts: false
  serial:
    - {canary}
    - "100%"
  max_fail_percentage: {plan.max_fail_percent}
{defaults}  vars:
    edgeq_rollout_model: {_q(plan.model)}
    edgeq_rollout_name: {_q(plan.name)}
  tasks:
    - name: Deploy and check the health of the model; roll back this host if either fails
      block:
        - name: Deploy the model (upload, sha256 on the device, atomic switch)
          edgeq.fleet.model:
            path: "{{{{ edgeq_rollout_model }}}}"
            name: "{{{{ edgeq_rollout_name }}}}"
            state: present
          register: edgeq_deploy

        - name: Health check - probe the active version on the device
          edgeq.fleet.probe:
            name: "{{{{ edgeq_rollout_name }}}}"
            runs: {plan.probe_runs}
            min_time: {plan.probe_min_time_s!r}
          register: edgeq_health
          when: not ansible_check_mode

        - name: Health check - the new version runs within the latency budget
          ansible.builtin.assert:
            that:
              - edgeq_health.probe.version == edgeq_deploy.version
              - {_q(latency_rule)}
            fail_msg: >-
              health check failed: version {{{{ edgeq_health.probe.version }}}} (deployed {{{{ edgeq_deploy.version }}}}),
              p50 {{{{ edgeq_health.probe.latency.p50_ms }}}} ms, budget {{{{ edgeq_max_latency_ms | default({budget}) }}}} ms
            quiet: true
          when: not ansible_check_mode

      rescue:
        - name: Roll back this host to the version it had before
          edgeq.fleet.model:
            name: "{{{{ edgeq_rollout_name }}}}"
            state: rollback
            version: "{{{{ edgeq_deploy.previous }}}}"
          register: edgeq_rollback
          when: edgeq_deploy is changed and edgeq_deploy.previous is not none

        - name: Report this host as failed
          ansible.builtin.fail:
            msg: >-
              {{{{ edgeq_rollout_name }}}}: {{{{ ansible_failed_result.msg | default('failed') }}}};
              {{% if edgeq_rollback is not skipped %}}rolled back to {{{{ edgeq_rollback.version }}}}
              {{%- elif edgeq_deploy is failed %}}the deploy did not switch: the version active before is still active
              {{%- elif edgeq_deploy is not changed %}}that version was already active before this run: not rolled back
              {{%- else %}}no earlier version to roll back to: {{{{ edgeq_deploy.version }}}} stays active{{% endif %}}
"""
