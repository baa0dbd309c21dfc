# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""edgeq.fleet.model: deploy, roll back or remove a model with edgeq's deployer (see the module's documentation)."""

from __future__ import annotations

from ansible_collections.edgeq.fleet.plugins.module_utils.specs import MODEL_RULES, MODEL_SPEC
from ansible_collections.edgeq.fleet.plugins.plugin_utils.edgeq_action import EdgeqAction, edgeq_tasks


class ActionModule(EdgeqAction):
    ARGUMENT_SPEC = MODEL_SPEC
    ARGUMENT_RULES = MODEL_RULES

    def check_arguments(self, args):
        state = args["state"]
        for option, wanted in (
            ("path", "present"),
            ("keep", "present"),
            ("version", "rollback"),
            ("versions", "absent"),
        ):
            if args.get(option) not in (None, []) and state != wanted:
                self.fail_argument(f"{option} is used with state={wanted} only (state is {state})")
        if args.get("keep") is not None and args["keep"] < 1:
            self.fail_argument(f"keep must be at least 1, got {args['keep']}")
        if not 0 <= args["retries"] <= 10:
            self.fail_argument(f"retries must be 0 to 10, got {args['retries']}")
        self.require_positive(args, "connect_timeout", "command_timeout", "transfer_timeout")

    def run_edgeq(self, args, task_vars):
        state = args["state"]
        check = bool(self._task.check_mode)
        model = None
        if state == "present":  # the file is checked and hashed before any connection
            model = edgeq_tasks.prepare(self.local_path(args["path"]), args.get("name"))
        name = model.name if model is not None else args["name"]
        device = self.edgeq_device(args, task_vars)

        def operation(conn, dev):
            if model is not None:
                return edgeq_tasks.model_present(conn, dev, model, keep=args.get("keep"), check=check)
            if state == "rollback":
                return edgeq_tasks.model_rollback(conn, dev, name, to=args.get("version"), check=check)
            return edgeq_tasks.model_absent(conn, dev, name, versions=args.get("versions") or (), check=check)

        result = edgeq_tasks.run_on_host(device, operation, options=self.edgeq_options(args), retries=args["retries"])
        if self._task.diff and result.get("changed"):
            after = "absent" if state == "absent" and not args.get("versions") else result.get("version")
            result["diff"] = {
                "before_header": f"{name} on {result.get('device')}",
                "after_header": f"{name} on {result.get('device')}",
                "before": f"active version: {result.get('previous')}\n",
                "after": f"active version: {after}\n",
            }
        return result
