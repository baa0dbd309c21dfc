"""The TFLite runtimes edgeq knows: their names, import modules and distributions (the one list).

Standard library only, so that anything (the CLI's option choices included) may
import it without cost. Two copies must stay standalone because they run on
the device without edgeq: the probe program (``edgeq/probe/device.py``) and the
facts script (``edgeq/remote/detect.sh``); tests/test_runtimes.py checks that
they agree with this list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["RUNTIMES", "RUNTIME_INFO", "Runtime"]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One TFLite runtime family: how targets name it, where its Interpreter is, what pip calls it."""

    name: str  # as targets, reports and ``--runtime`` spell it: the main distribution's name
    interpreter_module: str  # the module that defines ``Interpreter``
    distributions: tuple[str, ...]  # names it may be installed under, the main one first

    @property
    def package(self) -> str:
        """The top-level import package (``ai_edge_litert``): finding it costs nothing, importing it may."""
        return self.interpreter_module.partition(".")[0]


RUNTIME_INFO: Mapping[str, Runtime] = {
    rt.name: rt
    for rt in (
        Runtime("ai-edge-litert", "ai_edge_litert.interpreter", ("ai-edge-litert", "ai_edge_litert")),
        Runtime("tflite-runtime", "tflite_runtime.interpreter", ("tflite-runtime", "tflite_runtime")),
        # tf.lite.Interpreter; the package tensorflow.lite itself has none
        Runtime(
            "tensorflow",
            "tensorflow.lite.python.interpreter",
            ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tf-nightly"),
        ),
    )
}
"""The runtimes by name, in order of preference (LiteRT first)."""

RUNTIMES: tuple[str, ...] = tuple(RUNTIME_INFO)
"""The runtime names, in order of preference: the vocabulary of targets' ``runtimes`` and of ``--runtime``."""
