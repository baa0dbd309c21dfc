#!/usr/bin/python
# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: model
short_description: Deploy, roll back or remove a TFLite model on an edge device, as edgeq does
version_added: 0.1.0
description:
  - Deploys a C(.tflite) model from the controller to the host with edgeq's device protocol - uploaded under a
    temporary name, its sha256 computed on the device and compared, flushed to disk, renamed into its version
    folder, and only then switched to as the active version, atomically. The last O(keep) versions are kept.
  - The device side is edgeq's own (C(edgeq deploy)) - the same scripts, on-device layout
    (C(<remote_dir>/models/<name>/current), one folder per version named by the first 12 hex digits of its
    sha256, C(manifest.json)) and history. A model deployed by this module shows in C(edgeq status), and
    C(edgeq rollback) rolls it back; this module rolls back what C(edgeq deploy) deployed.
  - O(state=rollback) switches back to the version active before the current one, or to O(version), after
    checking its sha256. O(state=absent) removes the model, or only O(versions) (never the active one).
  - Idempotent - a version already active and intact reports C(changed=false) and sends nothing.
  - The module runs on the controller (an action plugin); see the notes.
author:
  - edgeq contributors (!UNKNOWN)
extends_documentation_fragment:
  - edgeq.fleet.connection
attributes:
  check_mode:
    support: full
    description: Reads the model's state on the device and reports what would change; changes nothing.
  diff_mode:
    support: partial
    description: Shows the active version before and after.
  platform:
    support: full
    description: Runs on the controller and reaches the host with edgeq over SSH (or locally with C(ansible_connection=local)).
    platforms: posix
options:
  name:
    description:
      - The model's name on the device - 1 to 64 letters, digits, C(.), C(_) or C(-), starting with a letter or digit.
      - Required unless O(state=present), where it defaults to the file name of O(path) without C(.tflite).
    type: str
  path:
    description:
      - The C(.tflite) file on the controller. Required with O(state=present).
      - A relative path is looked up as the C(copy) module's C(src) is (the role's or the playbook's C(files/)
        folder, then the playbook's folder).
    type: path
  state:
    description:
      - V(present) deploys O(path) and makes it the active version.
      - V(rollback) switches back to the version active before the current one, or to O(version).
      - V(absent) removes the whole model, or only O(versions).
    type: str
    choices: [present, rollback, absent]
    default: present
  version:
    description:
      - With O(state=rollback), the version to switch to - a unique prefix of 4 to 12 hex digits.
    type: str
  versions:
    description:
      - With O(state=absent), remove only these versions (unique prefixes); the active one is never removed.
    type: list
    elements: str
  keep:
    description:
      - With O(state=present), the versions kept on the device, the active one included.
      - Default - the host's C(edgeq_keep_versions), else its target's C(keep_versions), else 3.
    type: int
  transfer_timeout:
    description:
      - Seconds one upload may take.
    type: float
    default: 600.0
seealso:
  - module: edgeq.fleet.model_info
  - module: edgeq.fleet.probe
"""

EXAMPLES = r"""
- name: Deploy a model (a no-op when that version is already active)
  edgeq.fleet.model:
    path: build/digits_int8.tflite
    name: digits
    known_hosts: ~/.ssh/edge_known_hosts

- name: Roll back to the version active before
  edgeq.fleet.model:
    name: digits
    state: rollback

- name: Roll back to a given version
  edgeq.fleet.model:
    name: digits
    state: rollback
    version: 3f2a9c0d

- name: Remove two old versions
  edgeq.fleet.model:
    name: digits
    state: absent
    versions: [3f2a9c0d1b7e, 77aa01c2]
"""

RETURN = r"""
status:
  description:
    - What edgeq did on the device - V(ok) (deployed, switched or removed) or V(unchanged) (already so).
  returned: success
  type: str
  sample: ok
name:
  description: The model's name on the device.
  returned: success
  type: str
  sample: digits
version:
  description:
    - The active version afterwards (the first 12 hex digits of its sha256); null when no version is active.
  returned: success
  type: str
  sample: 3f2a9c0d1b7e
previous:
  description: The version that was active before; null when there was none.
  returned: success
  type: str
  sample: 77aa01c2e9d0
bytes_sent:
  description: Bytes uploaded (0 when the version was already on the device, and in check mode).
  returned: success
  type: int
  sample: 45928
bytes_to_send:
  description: In check mode, the bytes a real run would upload.
  returned: success and in check mode
  type: int
  sample: 45928
removed:
  description: Versions removed (pruned beyond O(keep), or removed with O(state=absent)).
  returned: success
  type: list
  elements: str
  sample: [0b1c2d3e4f50]
device:
  description: Where edgeq connected - C(user@address:port), or C(local).
  returned: always
  type: str
  sample: pi@10.0.0.7:22
attempts:
  description: Connection attempts (more than 1 after retried connection errors).
  returned: when the host was contacted
  type: int
  sample: 1
seconds:
  description: Time spent on the host.
  returned: when the host was contacted
  type: float
  sample: 0.41
kind:
  description:
    - On failure, what failed, as edgeq's C(--json) names it - V(unreachable), V(authentication), V(host-key),
      V(remote-command), V(command-timeout), V(model-state), V(model), V(error), ...
  returned: failure
  type: str
  sample: host-key
code:
  description: On failure, edgeq's exit code for it (7 unreachable, 8 authentication, 9 host key, 10 remote command, 1 model state, ...).
  returned: failure
  type: int
  sample: 9
hint:
  description: On failure, what to do about it, when edgeq knows.
  returned: failure, when there is one
  type: str
  sample: "check it, then re-run with trust_new_hosts: true"
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible requires
from ansible_collections.edgeq.fleet.plugins.module_utils.specs import MODEL_RULES, MODEL_SPEC  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=MODEL_SPEC, supports_check_mode=True, **MODEL_RULES)
    module.fail_json(msg="edgeq.fleet.model runs on the controller through its action plugin, not on the host")


if __name__ == "__main__":
    main()
