# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the edgeq.fleet action plugins share: the host as edgeq's device, edgeq's connection options, the run.

The plugins run on the controller and hand the work to edgeq (``edgeq.ansible.tasks``);
Ansible's own connection to the host is never opened.
"""

from __future__ import annotations

import re
import typing as t

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

try:
    from edgeq.ansible import tasks as edgeq_tasks
    from edgeq.errors import EdgeqError
except ImportError as exc:  # the plugins need edgeq in the Python that runs Ansible
    edgeq_tasks = None
    EdgeqError = Exception
    EDGEQ_IMPORT_ERROR = exc
else:
    EDGEQ_IMPORT_ERROR = None

API_VERSION = 1  # of edgeq.ansible.tasks, which this collection calls
_PROXY_RE = re.compile(r"Proxy(Jump|Command)|(^|\s)-J", re.IGNORECASE)


class EdgeqAction(ActionBase):
    """An edgeq.fleet module: the task's arguments validated by Ansible, the work done by edgeq."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    ARGUMENT_SPEC: t.ClassVar[dict] = {}  # the module's, from module_utils/specs.py
    ARGUMENT_RULES: t.ClassVar[dict] = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC, **self.ARGUMENT_RULES)[1]
        except AnsibleActionFail as error:  # name the module as the task does, not by the plugin's Python path
            error.message = error.message.replace(f"({self._load_name})", f"({self.module_name})")
            raise
        if edgeq_tasks is None:
            raise AnsibleActionFail(
                f"{self.module_name} needs the edgeq Python package on the controller, in the Python that runs "
                f"Ansible ({EDGEQ_IMPORT_ERROR}); install it there (pip install edgeq)"
            )
        self._edgeq_warnings = []
        try:
            edgeq_tasks.check_api(API_VERSION)
            self.check_arguments(args)
            result.update(self.run_edgeq(args, task_vars or {}))
        except EdgeqError as error:
            result.update(edgeq_tasks.failure(error))
        warnings = list(result.pop("warnings", None) or []) + self._edgeq_warnings
        if warnings:
            result["warnings"] = warnings
        return result

    # the plugins' part
    def check_arguments(self, args):
        """Checks the argument spec cannot express; raise AnsibleActionFail."""

    def run_edgeq(self, args, task_vars):
        raise NotImplementedError

    # shared
    @property
    def module_name(self):
        return self._task.resolved_action or self._task.action

    def fail_argument(self, message):
        raise AnsibleActionFail(f"{self.module_name}: {message}")

    def require_positive(self, args, *names):
        for name in names:
            value = args.get(name)
            if value is not None and not value > 0:
                self.fail_argument(f"{name} must be greater than 0, got {value}")

    def local_path(self, path):
        """A controller path: a relative one is looked up as the copy module's src is, else left as given."""
        if path is None or path.startswith("/"):
            return path
        try:
            return self._find_needle("files", path)
        except AnsibleError:  # not found there: edgeq says "no such file" for the path as given
            return path

    def edgeq_device(self, args, task_vars):
        """The host as edgeq's device, from what Ansible resolved: the connection plugin's options first."""
        connection = self._connection
        kind = getattr(connection, "transport", None) or str(connection._load_name).rpartition(".")[2]
        for option in ("ssh_common_args", "ssh_extra_args"):
            value = self._connection_option(option)
            if value and _PROXY_RE.search(str(value)):
                raise AnsibleActionFail(
                    f"{self.module_name}: {option} names a proxy ({value}); edgeq does not read {option} and would "
                    "connect directly: give the proxy in the SSH config, which edgeq reads as ssh does"
                )
        delegated = self._task.delegate_to
        host_vars = task_vars.get("ansible_delegated_vars", {}).get(delegated, {}) if delegated else task_vars
        name = delegated or task_vars.get("inventory_hostname") or "localhost"
        variables = {}
        for key in edgeq_tasks.HOST_VARS:
            if key in host_vars:
                variables[key] = self._templar.template(host_vars[key])
        host = edgeq_tasks.AnsibleHost(
            name=str(name),
            connection=str(kind),
            address=self._connection_option("host", "remote_addr"),
            user=self._connection_option("remote_user"),
            port=self._connection_option("port"),
            key_file=self._connection_option("private_key_file"),
            variables=variables,
        )
        return edgeq_tasks.resolve_host(
            host, target=args.get("target"), known_hosts=args.get("known_hosts"), warn=self._edgeq_warnings.append
        )

    def edgeq_options(self, args):
        """edgeq's connection options for this task: its host-key policy, timeouts, Ansible's password if any."""
        return edgeq_tasks.connect_options(
            known_hosts=args.get("known_hosts"),
            trust_new_hosts=args.get("trust_new_hosts", False),
            connect_timeout_s=args.get("connect_timeout"),
            command_timeout_s=args.get("command_timeout"),
            transfer_timeout_s=args.get("transfer_timeout"),
            password=self._connection_option("password"),
            host_key_added=self._host_key_added,
        )

    def _host_key_added(self, host, key, path):
        self._edgeq_warnings.append(f"trusted the new host key of {host} ({key}), added to {path}")

    def _connection_option(self, *names):
        """The first of ``names`` the connection plugin has, as Ansible set it for this host (None if unset)."""
        for name in names:
            try:
                value = self._connection.get_option(name)
            except KeyError:
                continue
            if value is not None and value != "":
                return value
        return None
