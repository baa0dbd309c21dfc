# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The options every edgeq.fleet module shares: how edgeq reaches the host."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  target:
    description:
      - The edgeq target of the host (C(edgeq targets list)), overriding its C(edgeq_target) variable.
      - Its C([deploy]) table gives the defaults for the user, port, C(remote_dir) and kept versions.
    type: str
  known_hosts:
    description:
      - A known_hosts file read besides C(/etc/ssh/ssh_known_hosts) and C(~/.ssh/known_hosts) of the controller user,
        as C(edgeq --known-hosts). Without it, the host's known_hosts files are those OpenSSH uses for it
        (C(UserKnownHostsFile), C(GlobalKnownHostsFile) of the SSH config).
      - With O(trust_new_hosts=true), new host keys are written to it (else to the user's known_hosts file).
      - Host keys are always verified with edgeq's policy, whatever Ansible's C(host_key_checking) says.
        An unknown host is refused with its fingerprint; a changed key is always refused.
    type: path
  trust_new_hosts:
    description:
      - Add the key of a host never seen before to known_hosts (OpenSSH's C(accept-new)), with a warning
        that shows its fingerprint. A CHANGED key is still refused.
    type: bool
    default: false
  connect_timeout:
    description:
      - Seconds for each step of connecting (TCP, SSH greeting, handshake, authentication).
    type: float
    default: 10.0
  command_timeout:
    description:
      - Seconds a command on the device may run; then it is stopped there.
    type: float
    default: 60.0
  retries:
    description:
      - Extra attempts after a connection error, with backoff from 1 s (never after an authentication,
        host-key or command error), as C(edgeq deploy --retries).
    type: int
    default: 2
notes:
  - This module runs on the controller (an action plugin) and calls edgeq, which connects to the host
    itself over SSH (paramiko). It does not use Ansible's connection, needs no Python module transfer,
    and works with C(gather_facts=false).
  - The host is resolved as C(edgeq -i INVENTORY) resolves it. From Ansible's connection
    (C(ansible_connection) C(ssh), C(paramiko) or C(local)) it takes the address, user, port and private key
    file (C(ansible_host), C(ansible_user), C(ansible_port), C(ansible_ssh_private_key_file), as resolved by the
    connection plugin); then the SSH config for that host, as OpenSSH reads it; then the target's defaults.
    C(ansible_password) is offered if the device asks for a password.
  - C(become) is not used - edgeq works on the device as the login user, as C(edgeq deploy) does.
  - Host variables read as edgeq reads them in inventories - C(edgeq_target), C(edgeq_python)
    (else C(ansible_python_interpreter), else the target's), C(edgeq_remote_dir) (default C(edgeq), under the
    login user's home), C(edgeq_keep_versions).
  - C(ssh_args), C(ssh_common_args) and C(ssh_extra_args) are not read (Ansible's C(host_key_checking) neither);
    a host whose C(ssh_common_args) or C(ssh_extra_args) name a proxy is refused rather than reached directly -
    give the proxy in the SSH config.
  - Failures have C(failed=true), edgeq's one-line message as C(msg), and its C(kind)
    (V(unreachable), V(authentication), V(host-key), V(remote-command), V(model-state), ...) and C(code),
    edgeq's exit code for it.
requirements:
  - edgeq, in the Python environment that runs Ansible on the controller (C(pip install edgeq)); this
    collection must be the one that edgeq builds (C(edgeq ansible build)).
  - On the device, what C(edgeq deploy) needs - a POSIX C(sh), C(head -c), C(readlink), C(df), C(find),
    and C(sha256sum) (or C(shasum), or Python).
"""
