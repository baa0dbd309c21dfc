# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""edgeq.fleet.probe: edgeq's probe on the device, its figures as facts (see the module's documentation)."""

from __future__ import annotations

from ansible_collections.edgeq.fleet.plugins.module_utils.specs import PROBE_RULES, PROBE_SPEC
from ansible_collections.edgeq.fleet.plugins.plugin_utils.edgeq_action import EdgeqAction, edgeq_tasks


class ActionModule(EdgeqAction):
    ARGUMENT_SPEC = PROBE_SPEC
    ARGUMENT_RULES = PROBE_RULES

    def check_arguments(self, args):
        for option in ("runs", "threads"):
            if args.get(option) is not None and args[option] < 1:
                self.fail_argument(f"{option} must be at least 1, got {args[option]}")
        for option in ("min_time", "warmup_time"):
            if args[option] < 0:
                self.fail_argument(f"{option} must not be negative, got {args[option]}")
        if args["warmup_runs"] < 0:
            self.fail_argument(f"warmup_runs must not be negative, got {args['warmup_runs']}")
        if not 0 <= args["retries"] <= 10:
            self.fail_argument(f"retries must be 0 to 10, got {args['retries']}")
        self.require_positive(args, "timeout", "connect_timeout", "command_timeout", "transfer_timeout")

    def run_edgeq(self, args, task_vars):
        if args.get("path") and self._task.check_mode:
            return {"skipped": True, "changed": False, "msg": "check mode: probing a model file uploads it; not run"}
        device = self.edgeq_device(args, task_vars)
        target = edgeq_tasks.target_of(device)  # a bad target fails here, before any connection
        options = edgeq_tasks.probe_options(
            runs=args["runs"],
            min_time_s=args["min_time"],
            warmup_runs=args["warmup_runs"],
            warmup_time_s=args["warmup_time"],
            runtime=args.get("runtime"),
            timeout_s=args["timeout"],
        )
        threads = args.get("threads")
        if args.get("path"):
            model = edgeq_tasks.prepare_probe(self.local_path(args["path"]))

            def operation(conn, dev):
                return edgeq_tasks.probe_file(conn, dev, model, options, target=target, threads=threads)

        else:

            def operation(conn, dev):
                return edgeq_tasks.probe_active(conn, dev, args["name"], options, target=target, threads=threads)

        return edgeq_tasks.run_on_host(device, operation, options=self.edgeq_options(args), retries=args["retries"])
