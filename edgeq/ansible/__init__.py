"""edgeq's side of Ansible: the ``edgeq.fleet`` collection's sources, its build, a rollout playbook, and what its plugins call.

The collection (``collection/``, shipped as package data) has three modules,
``edgeq.fleet.model``, ``edgeq.fleet.model_info`` and ``edgeq.fleet.probe``.
Each is an ACTION plugin: it runs on the controller, in the Python that runs
Ansible, and calls edgeq's own library (:mod:`edgeq.ansible.tasks`) over
edgeq's own connection. There is one implementation of the device side and of
its policy: a model deployed by Ansible is one deployed by ``edgeq deploy``,
and either tool can check it or roll it back.

Licences: edgeq (Apache-2.0) never imports ansible-core (GPL-3.0); it runs
``ansible-galaxy`` as a program. The collection's plugins import ansible, as
every collection's do, and are GPL-3.0-or-later (``galaxy.yml``).

Modules, one concern each:

* ``build``: the collection's sources and :func:`build_collection` (``edgeq ansible build``);
* ``playbook``: :func:`write_playbook`, a staged rollout (``edgeq ansible playbook``);
* ``tasks``: one Ansible task on one host in edgeq's terms (imported by the plugins, not here).
"""

from __future__ import annotations

from .build import COLLECTION, build_collection, collection_source, collection_tarball_name
from .playbook import Rollout, render_playbook, rollout, write_playbook

__all__ = [
    "COLLECTION",
    "Rollout",
    "build_collection",
    "collection_source",
    "collection_tarball_name",
    "render_playbook",
    "rollout",
    "write_playbook",
]
