"""paramiko's start-up import of ``invoke``, deferred until something uses it.

Imported first by the package's ``__init__`` (Python runs a package's
``__init__`` before any of its modules), so that it runs before any module
of the package imports paramiko.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types


class _DeferredInvoke(types.ModuleType):
    """Stands in for ``invoke`` until something uses it; then the real module is imported.

    paramiko.config imports invoke at start-up only to run ``Match exec``
    lines of an ssh config; importing it costs ~45 ms (it pulls in asyncio,
    unittest.mock and a YAML parser), a tenth of a whole ``edgeq deploy`` on
    a LAN. importlib.util.LazyLoader cannot do this on Python 3.11 (the
    import statement reads ``__spec__`` and so loads the module).
    """

    _lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        with self._lock:
            if sys.modules.get("invoke") is self:
                del sys.modules["invoke"]
            real = importlib.import_module("invoke")
        return getattr(real, name)


def defer_invoke() -> None:
    """Put the stand-in in ``sys.modules``, unless invoke or paramiko's config module is already imported."""
    if "invoke" not in sys.modules and "paramiko.config" not in sys.modules and importlib.util.find_spec("invoke"):
        sys.modules["invoke"] = _DeferredInvoke("invoke")


defer_invoke()
