# Copyright (c) edgeq contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""edgeq.fleet.model_info: a model's state on the device, read with edgeq (see the module's documentation)."""

from __future__ import annotations

from ansible_collections.edgeq.fleet.plugins.module_utils.specs import MODEL_INFO_RULES, MODEL_INFO_SPEC
from ansible_collections.edgeq.fleet.plugins.plugin_utils.edgeq_action import EdgeqAction, edgeq_tasks


class ActionModule(EdgeqAction):
    ARGUMENT_SPEC = MODEL_INFO_SPEC
    ARGUMENT_RULES = MODEL_INFO_RULES

    def check_arguments(self, args):
        if not 0 <= args["retries"] <= 10:
            self.fail_argument(f"retries must be 0 to 10, got {args['retries']}")
        self.require_positive(args, "connect_timeout", "command_timeout")

    def run_edgeq(self, args, task_vars):
        name = args["name"]
        device = self.edgeq_device(args, task_vars)
        return edgeq_tasks.run_on_host(
            device,
            lambda conn, dev: edgeq_tasks.model_info(conn, dev, name),
            options=self.edgeq_options(args),
            retries=args["retries"],
        )
