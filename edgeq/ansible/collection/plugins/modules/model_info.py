#!/usr/bin/python
# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: model_info
short_description: The active version of a model on an edge device, its history and the integrity of its file
version_added: 0.1.0
description:
  - Reads what the host has of a model deployed by edgeq (C(edgeq deploy) or M(edgeq.fleet.model)) - the active
    version, whether its file still matches the sha256 recorded when it was deployed, the versions kept and the
    history of deploys and rollbacks from C(manifest.json).
  - Read-only - takes no lock and writes nothing on the device. An absent, inactive or damaged model is
    reported (RV(exists), RV(intact)), not a failure; assert on it.
  - The module runs on the controller (an action plugin); see the notes.
author:
  - edgeq contributors (!UNKNOWN)
extends_documentation_fragment:
  - edgeq.fleet.connection
attributes:
  check_mode:
    support: full
    description: Runs in check mode too (it changes nothing).
  diff_mode:
    support: none
    description: Reports no diff.
  platform:
    support: full
    description: Runs on the controller and reaches the host with edgeq over SSH (or locally with C(ansible_connection=local)).
    platforms: posix
options:
  name:
    description: The model's name on the device.
    type: str
    required: true
seealso:
  - module: edgeq.fleet.model
"""

EXAMPLES = r"""
- name: Read the state of the model
  edgeq.fleet.model_info:
    name: digits
  register: digits

- name: The active file is the one deployed
  ansible.builtin.assert:
    that:
      - digits.exists
      - digits.intact
"""

RETURN = r"""
name:
  description: The model's name.
  returned: success
  type: str
  sample: digits
exists:
  description: Whether the device has a model of that name.
  returned: success
  type: bool
  sample: true
path:
  description: The model's folder on the device (relative paths are under the login user's home).
  returned: success
  type: str
  sample: ./edgeq/models/digits
version:
  description: The active version; null when the model is absent or no version is active.
  returned: success
  type: str
  sample: 3f2a9c0d1b7e
intact:
  description:
    - Whether the active version's file matches its sha256 (computed on the device); null when no version is active.
  returned: success
  type: bool
  sample: true
detail:
  description: Why the active file is not intact.
  returned: when the model exists
  type: str
  sample: null
versions:
  description: The versions on the device, the most recently deployed first.
  returned: when the model exists
  type: list
  elements: dict
  contains:
    version:
      description: The version (the first 12 hex digits of its sha256).
      type: str
    sha256:
      description: Its full sha256, as recorded when it was deployed.
      type: str
    size_bytes:
      description: Its size.
      type: int
    deployed_at:
      description: When it was deployed (UTC, ISO 8601).
      type: str
    source:
      description: The file name it was deployed from.
      type: str
    active:
      description: Whether it is the active version.
      type: bool
history:
  description:
    - The switches recorded in C(manifest.json), oldest first (the last 100) - each with C(at), C(action)
      (deploy, rollback, remove), C(version) and C(previous) (or C(removed)).
  returned: when the model exists
  type: list
  elements: dict
  sample: [{"at": "2030-01-01T00:00:00Z", "action": "deploy", "version": "3f2a9c0d1b7e", "previous": null}]
free_bytes:
  description: Free space in the model folder's file system, when the device could tell.
  returned: when the model exists
  type: int
  sample: 1073741824
device:
  description: Where edgeq connected - C(user@address:port), or C(local).
  returned: always
  type: str
  sample: pi@10.0.0.7:22
kind:
  description: On failure, what failed, as edgeq names it (V(unreachable), V(host-key), V(remote-command), ...).
  returned: failure
  type: str
  sample: unreachable
code:
  description: On failure, edgeq's exit code for it.
  returned: failure
  type: int
  sample: 7
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible requires
from ansible_collections.edgeq.fleet.plugins.module_utils.specs import MODEL_INFO_RULES, MODEL_INFO_SPEC  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=MODEL_INFO_SPEC, supports_check_mode=True, **MODEL_INFO_RULES)
    module.fail_json(msg="edgeq.fleet.model_info runs on the controller through its action plugin, not on the host")


if __name__ == "__main__":
    main()
