"""Candidates on the accuracy/latency curve and the budget search: the fastest model within an accuracy budget.

:func:`prepare` loads the model, makes its float ``.tflite`` once and
calibrates once; :func:`search` builds variants from the stored statistics
(full int8, int16x8, int4 weights, dynamic, float16, and int8 with the
fewest layers kept in float or int16 that meets the budget), loads and runs
every one, and scores it on the SEARCH split. The reported figures come from
a REPORT split that neither the calibrator nor the search saw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import ImageOptions, load_labelled, load_samples, split_samples
from .errors import CalibrationDataError, ConversionError, EdgeqError
from .litert import ModelRunner, captured_native_output, describe_model
from .metrics import compare_outputs, is_classifier_output
from .quantize import FloatGraph, Layer
from .recipe import Override, Precision
from .types import Fidelity, QuantMode, TensorSpec

if TYPE_CHECKING:
    import os
    from pathlib import Path

    from .connection import Connection
    from .deploy import ModelFile
    from .devices import Device
    from .doctor import Checks
    from .fleet import Connector, FleetEvents, FleetOptions, FleetResult, ProgressCallback
    from .probe import ProbeOptions, ProbeResult
    from .targets import Target
    from .types import ConversionReport

__all__ = [
    "Budget",
    "BudgetNotMet",
    "Candidate",
    "Prepared",
    "Score",
    "SearchResult",
    "TuneData",
    "TuneOptions",
    "layer_ranking",
    "pareto_front",
    "prepare",
    "search",
]

Say = Callable[[str], None]

# the plain variants tried besides int8 with layers kept in higher precision
BASE_MODES = (
    QuantMode.INT8,
    QuantMode.W4A8,
    QuantMode.INT16X8,
    QuantMode.INT4_WEIGHT,
    QuantMode.DYNAMIC,
    QuantMode.FLOAT16,
)


class BudgetNotMet(EdgeqError):
    """No candidate is within the accuracy budget (the best one found is reported)."""

    exit_code = 13
    kind = "budget-not-met"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Exactly one criterion: labelled accuracy drop, top-1 agreement with float, or SQNR."""

    max_drop_points: float | None = None
    min_agreement_pct: float | None = None
    min_sqnr_db: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.max_drop_points, self.min_agreement_pct, self.min_sqnr_db) if v is not None]
        if len(given) != 1:
            raise ConversionError("give exactly one budget: --max-drop (with --eval), --min-agreement or --min-sqnr")
        if self.max_drop_points is not None and not (0.0 <= self.max_drop_points <= 100.0):
            raise ConversionError(
                f"--max-drop {self.max_drop_points}: a drop in accuracy points must be between 0 and 100"
            )
        if self.min_agreement_pct is not None and not (0.0 < self.min_agreement_pct <= 100.0):
            raise ConversionError(
                f"--min-agreement {self.min_agreement_pct}: a percentage must be above 0 and at most 100"
            )
        if self.min_sqnr_db is not None and not (-20.0 <= self.min_sqnr_db <= 200.0):
            raise ConversionError(f"--min-sqnr {self.min_sqnr_db}: an SQNR floor must be between -20 and 200 dB")

    @property
    def kind(self) -> str:
        if self.max_drop_points is not None:
            return "accuracy"
        return "agreement" if self.min_agreement_pct is not None else "sqnr"

    def describe(self) -> str:
        if self.max_drop_points is not None:
            return f"accuracy drop <= {self.max_drop_points:g} points"
        if self.min_agreement_pct is not None:
            return f"top-1 agreement with float >= {self.min_agreement_pct:g} %"
        return f"SQNR >= {self.min_sqnr_db:g} dB"


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    budget: Budget
    calibration_samples: int = 200
    seed: int = 0
    image_options: ImageOptions = ImageOptions()
    per_channel: bool = True
    max_candidates: int = 40  # end-to-end evaluations in the layer search
    ranking_samples: int = 32  # samples that rank layers by their quantization error
    modes: tuple[QuantMode, ...] = BASE_MODES


@dataclasses.dataclass(frozen=True)
class Score:
    """One candidate on one split: the budget's measure and the others we have."""

    samples: int
    accuracy: float | None = None  # fraction
    drop_points: float | None = None
    agreement_pct: float | None = None
    sqnr_db: float | None = None

    def loss(self, kind: str) -> float:
        """Smaller is better, whatever the budget's kind."""
        if kind == "accuracy":
            return self.drop_points if self.drop_points is not None else math.inf
        if kind == "agreement":
            return 100.0 - self.agreement_pct if self.agreement_pct is not None else math.inf
        return -self.sqnr_db if self.sqnr_db is not None else math.inf

    def meets(self, budget: Budget) -> bool:
        if budget.max_drop_points is not None:
            return self.drop_points is not None and self.drop_points <= budget.max_drop_points + 1e-9
        if budget.min_agreement_pct is not None:
            return self.agreement_pct is not None and self.agreement_pct >= budget.min_agreement_pct - 1e-9
        return self.sqnr_db is not None and self.sqnr_db >= (budget.min_sqnr_db or 0.0)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One variant: how it was made, its size, whether it ran, its score on the search split."""

    name: str
    mode: QuantMode
    overrides: tuple[Override, ...]
    kept: tuple[str, ...]  # layers at higher precision than the mode's (names)
    kept_precision: str | None  # float | int16
    size_bytes: int
    step: str  # how the search came to it: base, ranking k=N, prune, block, op type, bisection
    score: Score | None
    meets_budget: bool
    error: str | None = None  # did not load/run, or the target's runtime cannot run it
    weights: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    float_ops: tuple[str, ...] = ()

    @property
    def ran(self) -> bool:
        return self.error is None and self.score is not None

    def precision_summary(self) -> str:
        if not self.kept:
            return self.mode.value
        return f"{self.mode.value}, {len(self.kept)} layer(s) {self.kept_precision}"


@dataclasses.dataclass(frozen=True)
class TuneData:
    """The three disjoint parts of the user's data."""

    calibration: dict[str, np.ndarray]
    search: dict[str, np.ndarray]
    report: dict[str, np.ndarray]
    search_labels: np.ndarray | None
    report_labels: np.ndarray | None
    calibration_source: str
    labelled_source: str | None


@dataclasses.dataclass
class Prepared:
    """The float graph, its calibration statistics and the data, ready to build and score candidates."""

    graph: FloatGraph
    statistics: dict[str, Any]
    data: TuneData
    options: TuneOptions
    float_search: dict[str, np.ndarray]
    float_search_score: Score
    model: str

    @property
    def head(self) -> str | None:
        heads = [name for name, arr in self.float_search.items() if is_classifier_output(arr)]
        return heads[0] if len(heads) == 1 else None


@dataclasses.dataclass(frozen=True)
class LayerError:
    """A layer's output under full int8 against float: RMSE in units of the int8 tensor's scale."""

    layer: str
    op: str
    index: int
    rmse_over_scale: float  # inf when undefined (non-finite values or no scale)
    undefined: bool


@dataclasses.dataclass(frozen=True)
class SearchResult:
    candidates: tuple[Candidate, ...]
    ranking: tuple[LayerError, ...]
    best: Candidate | None  # smallest within budget (no device), or None
    float_score: Score
    budget: Budget
    evaluations: int
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- data


def split_data(
    calibration: str,
    eval_data: str | None,
    specs: Sequence[TensorSpec],
    options: TuneOptions,
) -> TuneData:
    """Calibration samples; labelled data (or the calibration hold-out) split 50/50 into search and report parts."""
    samples = load_samples(calibration, specs, options.image_options)
    split = split_samples(samples, options.calibration_samples, options.seed)
    rng = np.random.default_rng(options.seed + 1)
    if eval_data is not None:
        inputs, labels = load_labelled(eval_data, specs)
        n = len(labels)
        if n < 4:
            raise CalibrationDataError(
                f"{eval_data}: {n} labelled samples; tune needs at least 4 (half guide the search, half give the figures)"
            )
        order = rng.permutation(n)
        search_idx, report_idx = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
        return TuneData(
            calibration=split.calibration,
            search={k: v[search_idx] for k, v in inputs.items()},
            report={k: v[report_idx] for k, v in inputs.items()},
            search_labels=labels[search_idx],
            report_labels=labels[report_idx],
            calibration_source=str(calibration),
            labelled_source=str(eval_data),
        )
    held = split.holdout
    n = len(next(iter(held.values())))
    if n < 4:
        raise CalibrationDataError(
            f"{calibration}: only {n} samples are held out from calibration; tune needs at least 4 to split into search and report parts",
            hint="give more samples, or lower --calib-samples",
        )
    order = rng.permutation(n)
    search_idx, report_idx = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
    return TuneData(
        calibration=split.calibration,
        search={k: v[search_idx] for k, v in held.items()},
        report={k: v[report_idx] for k, v in held.items()},
        search_labels=None,
        report_labels=None,
        calibration_source=str(calibration),
        labelled_source=None,
    )


def score_outputs(
    float_out: Mapping[str, np.ndarray],
    quant_out: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    head: str | None,
) -> Score:
    fidelity = compare_outputs(float_out, quant_out)
    n = fidelity.samples
    agreement = None
    sqnr = min((o.sqnr_db for o in fidelity.outputs), default=None)
    if head is not None:
        top1 = next(o.top1_agreement for o in fidelity.outputs if o.name == head)
        agreement = None if top1 is None else top1 * 100.0
    acc = drop = None
    if labels is not None and head is not None:
        float_acc = float(np.mean(float_out[head].argmax(axis=1) == labels))
        acc = float(np.mean(quant_out[head].argmax(axis=1) == labels))
        drop = round((float_acc - acc) * 100.0, 4)
    return Score(samples=n, accuracy=acc, drop_points=drop, agreement_pct=agreement, sqnr_db=sqnr)


def fidelity_of(float_out: Mapping[str, np.ndarray], quant_out: Mapping[str, np.ndarray]) -> Fidelity:
    return compare_outputs(float_out, quant_out)


# --------------------------------------------------------------------------- preparation


def prepare(graph: FloatGraph, data: TuneData, options: TuneOptions, model: str, say: Say | None = None) -> Prepared:
    """Calibrate once and run the float model on the search split."""
    say = say or (lambda _m: None)
    if options.budget.kind == "accuracy" and data.search_labels is None:
        raise CalibrationDataError("--max-drop needs labelled data (--eval DATA with 'y')")
    say(f"calibrating once on {len(next(iter(data.calibration.values())))} samples")
    statistics = graph.calibrate(data.calibration)
    with captured_native_output():
        float_out = ModelRunner(graph.model).run(data.search)
    heads = [name for name, arr in float_out.items() if is_classifier_output(arr)]
    head = heads[0] if len(heads) == 1 else None
    if options.budget.kind in ("accuracy", "agreement") and head is None:
        raise CalibrationDataError(
            f"--{'max-drop' if options.budget.kind == 'accuracy' else 'min-agreement'} needs a model with exactly one classifier output (N, C); this one has {len(heads)}",
            hint="use --min-sqnr DB for other models",
        )
    float_score = score_outputs(float_out, float_out, data.search_labels, head)
    return Prepared(
        graph=graph,
        statistics=statistics,
        data=data,
        options=options,
        float_search=float_out,
        float_search_score=float_score,
        model=model,
    )


# --------------------------------------------------------------------------- per-layer error


def layer_ranking(prep: Prepared, int8_model: bytes) -> tuple[LayerError, ...]:
    """Layers of the float graph by the error full int8 puts on their outputs (RMSE/scale), worst first.

    The measure of TensorFlow's QuantizationDebugger (``rmse/scale``; ~0.29 is
    ideal rounding). A layer whose error cannot be measured (non-finite values,
    zero scale) is "undefined" and ranked first: it is the most suspicious.
    """
    data = prep.data.search
    n = min(prep.options.ranking_samples, len(next(iter(data.values()))))
    sums: dict[str, list[float]] = {}
    scales: dict[str, float] = {}
    undefined: set[str] = set()
    by_output = {}
    for layer in prep.graph.layers:
        if layer.output_names:
            by_output[layer.output_names[0]] = layer
    with captured_native_output():
        # every intermediate tensor kept readable: each one's value (dequantized) by name, per sample
        float_runner = ModelRunner(prep.graph.model, preserve_all_tensors=True)
        int8_runner = ModelRunner(int8_model, preserve_all_tensors=True)
        for i in range(n):
            float_runner.invoke(data, i)
            ref = float_runner.tensor_values()
            int8_runner.invoke(data, i)
            got = int8_runner.tensor_values()
            for name in by_output:
                if name not in ref or name not in got:
                    continue
                value, scale = got[name]
                if scale is None:
                    continue  # not quantized in the int8 model (kept float): nothing to rank
                expected = ref[name][0]
                if expected.shape != value.shape:
                    continue
                if scale == 0 or not np.all(np.isfinite(expected)):
                    undefined.add(name)
                    continue
                sums.setdefault(name, []).append(float(np.mean((expected.astype(np.float64) - value) ** 2)))
                scales[name] = scale
    ranking = []
    for name, layer in by_output.items():
        if name in undefined:
            ranking.append(LayerError(layer.name, layer.op, layer.index, math.inf, True))
        elif name in sums:
            rmse = math.sqrt(float(np.mean(sums[name])))
            ranking.append(LayerError(layer.name, layer.op, layer.index, rmse / scales[name], False))
    ranking.sort(key=lambda e: (not e.undefined, -e.rmse_over_scale))
    return tuple(ranking)


# --------------------------------------------------------------------------- candidates


class _Builder:
    """Builds, runs and scores candidates; remembers every one it made."""

    def __init__(self, prep: Prepared, say: Say, accept: Callable[[bytes], str | None] | None):
        self.prep = prep
        self.say = say
        self.accept = accept  # the target's runtime check: None when it can run the model, else the reason
        self.candidates: list[Candidate] = []
        self.seen: dict[tuple[Any, ...], Candidate] = {}
        self.models: dict[str, bytes] = {}

    def build(
        self,
        name: str,
        mode: QuantMode,
        kept: Sequence[Layer] = (),
        precision: Precision | None = None,
        step: str = "base",
    ) -> Candidate:
        key = (mode, tuple(sorted(layer.index for layer in kept)), precision)
        if key in self.seen:
            return self.seen[key]
        overrides = (
            tuple(Override(precision=precision, layer=layer.exact_pattern) for layer in kept) if precision else ()
        )
        self.say(f"candidate {len(self.candidates) + 1}: {name}")
        budget = self.prep.options.budget
        error = None
        score = None
        model = b""
        weights: dict[str, dict[str, int]] = {}
        float_ops: tuple[str, ...] = ()
        try:
            model = self.prep.graph.quantize(mode, self.prep.statistics, overrides, self.prep.options.per_channel)
            from .quantize import weight_census

            weights = weight_census(model)
            if self.accept is not None:
                error = self.accept(model)
            if error is None:
                # a converter that accepts a variant is no proof that the runtime runs it: load it and run it
                with captured_native_output():
                    float_ops = describe_model(model).float_ops
                    out = ModelRunner(model).run(self.prep.data.search)
                score = score_outputs(self.prep.float_search, out, self.prep.data.search_labels, self.prep.head)
        except EdgeqError as exc:
            error = exc.message
        except (RuntimeError, ValueError) as exc:  # the interpreter's own failures: the variant does not run
            error = f"does not run in the host interpreter: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        candidate = Candidate(
            name=name,
            mode=mode,
            overrides=overrides,
            kept=tuple(layer.name for layer in kept),
            kept_precision=precision.value if precision else None,
            size_bytes=len(model),
            step=step,
            score=score,
            meets_budget=score is not None and score.meets(budget),
            error=error,
            weights=weights,
            float_ops=float_ops,
        )
        self.seen[key] = candidate
        self.candidates.append(candidate)
        if model:
            self.models[candidate.name] = model
        return candidate


def _kept_name(mode: QuantMode, layers: Sequence[Layer], precision: Precision) -> str:
    if len(layers) == 1:
        return f"{mode.value} + {layers[0].op}#{layers[0].index} {precision.value}"
    return f"{mode.value} + {len(layers)} layers {precision.value} ({', '.join(f'#{layer.index}' for layer in sorted(layers, key=lambda x: x.index))})"


def search(
    prep: Prepared, say: Say | None = None, accept: Callable[[bytes], str | None] | None = None
) -> tuple[SearchResult, dict[str, bytes]]:
    """Build every candidate, find the fewest layers to keep that meet the budget, return all with their bytes."""
    say = say or (lambda _m: None)
    options = prep.options
    budget = options.budget
    builder = _Builder(prep, say, accept)
    notes: list[str] = []
    for mode in options.modes:
        builder.build(mode.value, mode)
    int8 = next((c for c in builder.candidates if c.mode is QuantMode.INT8 and not c.kept), None)
    if int8 is not None and int8.ran:
        _check_something_quantized(builder.models[int8.name])
    ranking: tuple[LayerError, ...] = ()
    quantized_within = [c for c in builder.candidates if c.meets_budget and c.mode in (QuantMode.INT8, QuantMode.W4A8)]
    if int8 is not None and int8.ran and not quantized_within:
        say("ranking layers by their int8 error")
        ranking = layer_ranking(prep, builder.models[int8.name])
        limit = len(builder.candidates) + options.max_candidates
        _mixed_search(prep, builder, ranking, limit, notes, say)
    elif int8 is not None and not int8.ran:
        notes.append(f"full int8 could not be made or run ({int8.error}): no layer search")
    elif quantized_within:
        notes.append("full integer quantization already meets the budget: no layer needs to stay in higher precision")
    within = [c for c in builder.candidates if c.meets_budget]
    best = (
        min(within, key=lambda c: (c.size_bytes, c.score.loss(budget.kind) if c.score else math.inf))
        if within
        else None
    )
    result = SearchResult(
        candidates=tuple(builder.candidates),
        ranking=ranking,
        best=best,
        float_score=prep.float_search_score,
        budget=budget,
        evaluations=len(builder.candidates),
        notes=tuple(notes),
    )
    return result, builder.models


def _check_something_quantized(int8_model: bytes) -> None:
    """A model whose every op stays float under int8 has nothing for any candidate to quantize: say so."""
    with captured_native_output():
        summary = describe_model(int8_model)
    compute = {op for op in summary.op_counts if op not in ("QUANTIZE", "DEQUANTIZE", "SHAPE")}
    if compute and compute <= set(summary.float_ops):
        raise ConversionError(
            f"no op of this model can be quantized: {', '.join(sorted(compute))} have no integer kernel in litert-quantizer",
            hint="such a model gains nothing from edgeq tune; keep it in float32 (or float16 weights: edgeq convert --mode float16)",
        )


def _mixed_search(
    prep: Prepared, builder: _Builder, ranking: Sequence[LayerError], limit: int, notes: list[str], say: Say
) -> None:
    """int8 with the smallest set of layers kept in float (then int16) that meets the budget.

    1. grow k over the ranking (1, 2, 3, 4, 6, 8, ...) until int8 with the top-k layers in float meets the budget;
    2. if the ranking's layers never do: widen (each top layer with the ops next to it; all ops of a
       top layer's type; bisection over the graph in execution order);
    3. prune the set that met it: drop each layer whose removal still meets the budget;
    4. try the same layers in int16 instead of float (smaller and integer-only where int16 kernels exist).
    """
    by_index = {layer.index: layer for layer in prep.graph.layers}
    ranked = [by_index[e.index] for e in ranking if not by_index[e.index].data_movement]
    mode = QuantMode.INT8
    found: list[Layer] | None = None

    def room() -> bool:
        return len(builder.candidates) < limit

    def meets(layers: Sequence[Layer], step: str, precision: Precision = Precision.FLOAT) -> bool:
        kept = _with_data_movement(layers, prep.graph.layers)
        return builder.build(_kept_name(mode, kept, precision), mode, kept, precision, step).meets_budget

    k = 1
    while k <= len(ranked) and room():
        if meets(ranked[:k], f"ranking k={k}"):
            found = ranked[:k]
            break
        k = k + 1 if k < 4 else int(k * 1.5)
    if found is None and ranked and room():
        notes.append(
            "the ranking's top layers did not recover the accuracy: the search widened to blocks, op types and bisection"
        )
        found = _widen(prep, builder, ranked, meets, room)
    if found is None:
        notes.append("no set of layers kept in float met the budget within the search's limit")
        return
    say(f"pruning {len(found)} layer(s)")
    rank = {e.index: n for n, e in enumerate(ranking)}
    # least suspicious first: a layer the ranking put low (or never ranked) is the likeliest to be unneeded
    for layer in sorted(found, key=lambda x: rank.get(x.index, len(rank)), reverse=True):
        if len(found) == 1 or not room():
            break
        trial = [x for x in found if x.index != layer.index]
        if meets(trial, "prune"):
            found = trial
    if room():
        meets(found, "int16 instead of float", Precision.INT16)


def _with_data_movement(layers: Sequence[Layer], graph: Sequence[Layer]) -> list[Layer]:
    """``layers`` and the data-movement ops (TRANSPOSE, RESHAPE, ...) chained to them.

    Such ops share one scale with their input in int8: left in int8 next to a
    float layer, they re-quantize the very range the float layer was kept for
    (a masked attention's -1e9 flows through TRANSPOSE and SELECT_V2 alike).
    """
    producers = {t: layer for layer in graph for t in layer.outputs}
    consumers: dict[int, list[Layer]] = {}
    for layer in graph:
        for t in layer.inputs:
            consumers.setdefault(t, []).append(layer)
    kept = {layer.index: layer for layer in layers}
    frontier = list(layers)
    while frontier:
        layer = frontier.pop()
        near = [producers[t] for t in layer.inputs if t in producers]
        near += [c for t in layer.outputs for c in consumers.get(t, ())]
        for other in near:
            if other.data_movement and other.index not in kept:
                kept[other.index] = other
                frontier.append(other)
    return sorted(kept.values(), key=lambda x: x.index)


def _widen(
    prep: Prepared, builder: _Builder, ranked: Sequence[Layer], meets: Callable[..., bool], room: Callable[[], bool]
) -> list[Layer] | None:
    layers = list(prep.graph.layers)
    producers = {t: layer for layer in layers for t in layer.outputs}
    consumers: dict[int, list[Layer]] = {}
    for layer in layers:
        for t in layer.inputs:
            consumers.setdefault(t, []).append(layer)
    # blocks: a layer with the ops that feed it and read it (a bad range is re-quantized next door)
    for layer in ranked[:3]:
        block = {layer.index: layer}
        for t in layer.outputs:
            for c in consumers.get(t, ()):
                block[c.index] = c
        for t in layer.inputs:
            if (p := producers.get(t)) is not None:
                block[p.index] = p
        if room() and meets(sorted(block.values(), key=lambda x: x.index), f"block around #{layer.index}"):
            return sorted(block.values(), key=lambda x: x.index)
    # op types: every op of a top layer's type
    for op in dict.fromkeys(layer.op for layer in ranked[:5]):
        group = [layer for layer in layers if layer.op == op]
        if room() and meets(group, f"all {op}"):
            return group
    # bisection over the graph in execution order: the smallest contiguous range that still meets the budget
    compute = [layer for layer in layers if not layer.data_movement]
    lo, hi = 0, len(compute)
    if not room() or not meets(compute[lo:hi], "bisection: every layer"):
        return None
    while hi - lo > 1 and room():
        mid = (lo + hi) // 2
        if meets(compute[lo:mid], f"bisection {lo}..{mid}"):
            hi = mid
        elif room() and meets(compute[mid:hi], f"bisection {mid}..{hi}"):
            lo = mid
        else:
            break
    return compute[lo:hi]


def pareto_front(candidates: Iterable[Candidate], kind: str) -> tuple[Candidate, ...]:
    """Candidates that ran and that no other beats on both accuracy loss and size."""
    ran = [c for c in candidates if c.ran]
    front = []
    for c in ran:
        assert c.score is not None
        dominated = any(
            o is not c
            and o.score is not None
            and o.score.loss(kind) <= c.score.loss(kind)
            and o.size_bytes <= c.size_bytes
            and (o.score.loss(kind) < c.score.loss(kind) or o.size_bytes < c.size_bytes)
            for o in ran
        )
        if not dominated:
            front.append(c)
    return tuple(sorted(front, key=lambda c: c.size_bytes))


# --------------------------------------------------------------------------- on the devices


@dataclasses.dataclass(frozen=True)
class Latency:
    """One candidate's pooled latency on one device, with the p50's bootstrap interval."""

    candidate: str
    p50_ms: float
    ci_low_ms: float
    ci_high_ms: float
    runs: int
    runtime: str
    runtime_version: str | None
    threads: int
    energy_mj: float | None = None  # ESTIMATE: p50 x the target's typical active power


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    device: str
    target: str | None
    status: str  # ok | failed | unreachable | skipped
    reason: str | None = None
    code: int = 0  # a failure's exit code and kind (edgeq.errors)
    kind: str | None = None
    latencies: tuple[Latency, ...] = ()
    chosen: str | None = None  # the fastest candidate within the budget on this device
    power_w: float | None = None


def probe_candidates(
    conn: Connection,
    device: Device,
    models: Mapping[str, ModelFile],
    probe_options: ProbeOptions,
    *,
    target: Target | None = None,
    rounds: int = 2,
    within: Sequence[str] = (),
    say: Say | None = None,
) -> DeviceChoice:
    """Deploy every model ({candidate: ModelFile}) to one device, probe them alternately (A B C A B C ...), pool, choose."""
    from .bench import DeviceProber, deploy_for_probe, pool
    from .stats import median_interval

    say = say or (lambda _m: None)
    name = device.name
    for label, model in models.items():
        say(f"{name}: deploying {label} ({model.size_bytes} bytes)")
        deploy_for_probe(conn, device, model)
    prober = DeviceProber(conn, device, probe_options, target=target)
    results: dict[str, list[ProbeResult]] = {label: [] for label in models}
    for r in range(rounds):
        for label, model in models.items():
            say(f"{name}: round {r + 1}/{rounds}, {label}")
            results[label].append(prober.probe(model))
    power = target.power_w if target else None
    latencies = []
    for label, model in models.items():
        run = pool(label, model, results[label])
        p50, low, high = median_interval(run.latencies_ms)
        latencies.append(
            Latency(
                candidate=label,
                p50_ms=p50,
                ci_low_ms=low,
                ci_high_ms=high,
                runs=len(run.latencies_ms),
                runtime=run.runtime,
                runtime_version=run.runtime_version,
                threads=run.threads,
                energy_mj=p50 * power if power else None,  # ms x W = mJ
            )
        )
    eligible = [lat for lat in latencies if lat.candidate in within]
    chosen = min(eligible, key=lambda lat: lat.p50_ms).candidate if eligible else None
    return DeviceChoice(
        device=name,
        target=target.name if target else None,
        status="ok",
        latencies=tuple(latencies),
        chosen=chosen,
        power_w=power,
    )


# --------------------------------------------------------------------------- the whole run


@dataclasses.dataclass(frozen=True)
class TuneReport:
    """Everything ``edgeq tune`` learned; written as OUT/<stem>_tune.json."""

    model: str
    budget: str
    budget_kind: str
    samples: Mapping[str, int]  # calibration / search / report
    float_search: Score
    candidates: tuple[Candidate, ...]
    front: tuple[str, ...]
    ranking: tuple[LayerError, ...]
    evaluations: int
    report_split: Mapping[str, Score]  # candidate -> its figures on data neither the calibrator nor the search saw
    chosen: Mapping[str, Any] | None  # {"candidate", "path", "recipe"} or {"per_device": {device: {...}}}
    best_found: str | None  # the closest candidate when nothing met the budget
    devices: tuple[DeviceChoice, ...]
    latency_measured: bool
    target: str | None
    notes: tuple[str, ...]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        from .types import to_jsonable

        return to_jsonable(self)


def probe_set(result: SearchResult, kind: str, limit: int = 6) -> tuple[Candidate, ...]:
    """What goes to the devices: the accuracy/size front's candidates within the budget (smallest first), and full int8."""
    front = [c for c in pareto_front(result.candidates, kind) if c.meets_budget]
    chosen = front[:limit]
    int8 = next((c for c in result.candidates if c.mode is QuantMode.INT8 and not c.kept and c.ran), None)
    if int8 is not None and int8 not in chosen:
        chosen.append(int8)
    return tuple(chosen)


def report_scores(prep: Prepared, models: Mapping[str, bytes], names: Iterable[str]) -> dict[str, Score]:
    """Figures on the REPORT split (never seen by the calibrator or the search) for ``names``."""
    with captured_native_output():
        float_out = ModelRunner(prep.graph.model).run(prep.data.report)
        scores = {"float32": score_outputs(float_out, float_out, prep.data.report_labels, prep.head)}
        for name in dict.fromkeys(names):
            if name in models:
                out = ModelRunner(models[name]).run(prep.data.report)
                scores[name] = score_outputs(float_out, out, prep.data.report_labels, prep.head)
    return scores


def _acceptor(targets: Sequence[Target]) -> Callable[[bytes], str | None] | None:
    """None when there is no target to satisfy; else a check: None if every target can run the model, or why not."""
    if not targets:
        return None
    from .kernels import target_reasons

    def accept(model: bytes) -> str | None:
        for target in targets:
            reasons = target_reasons(model, target)
            if reasons:
                more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
                return f"{target.name}: {reasons[0]}{more}"
        return None

    return accept


def _conversion_report(
    prep: Prepared,
    name: str,
    candidate: Candidate,
    model: bytes,
    out_path: Path,
    versions: Mapping[str, str],
    target: str | None,
) -> ConversionReport:
    """The chosen model's report, with fidelity and accuracy on the REPORT split."""
    from . import __version__
    from .metrics import accuracy
    from .types import ConversionReport, IOType

    with captured_native_output():
        summary = describe_model(model)
        float_runner, quant_runner = ModelRunner(prep.graph.model), ModelRunner(model)
        float_out, quant_out = float_runner.run(prep.data.report), quant_runner.run(prep.data.report)
    fidelity = compare_outputs(float_out, quant_out)
    acc = None
    if prep.data.report_labels is not None and prep.head is not None:
        acc = accuracy(prep.data.report_labels, float_out[prep.head], quant_out[prep.head])
    dtypes = {t.dtype for t in summary.inputs}
    io = next(iter(dtypes)) if len(dtypes) == 1 else "float32"
    return ConversionReport(
        model=prep.model,
        output=str(out_path),
        mode=candidate.mode,
        io_type=IOType(io) if io in {t.value for t in IOType} else IOType.FLOAT32,
        target=target,
        float_size_bytes=len(prep.graph.model),
        quantized_size_bytes=len(model),
        size_ratio=round(len(model) / len(prep.graph.model), 4),
        calibration_samples=len(next(iter(prep.data.calibration.values()))),
        holdout_samples=fidelity.samples,
        summary=dataclasses.replace(summary, path=str(out_path)),
        fidelity=fidelity,
        accuracy=acc,
        warnings=(
            f"chosen by edgeq tune as {name}; figures on the report split (never seen by the calibrator or the search)",
        ),
        edgeq_version=__version__,
        converter_version=", ".join(f"{k} {v}" for k, v in versions.items() if k != "edgeq"),
        engine="litert-quantizer",
        overrides=tuple(o.describe() for o in candidate.overrides),
        weights={op: dict(counts) for op, counts in candidate.weights.items()},
    )


def run_tune(
    model: str,
    calibration: str,
    eval_data: str | None,
    options: TuneOptions,
    out_dir: str | os.PathLike[str],
    *,
    target: Target | None = None,
    devices: Sequence[Device] = (),
    device_targets: Callable[[str | None], Target | None] | None = None,
    connect: Connector | None = None,
    fleet_options: FleetOptions | None = None,
    events: FleetEvents | None = None,
    probe_options: ProbeOptions | None = None,
    rounds: int = 2,
    say: Say | None = None,
    checks: Checks | None = None,
) -> tuple[TuneReport, dict[str, Any], FleetResult[DeviceChoice] | None]:
    """The whole of ``edgeq tune``: returns (report, written files, fleet result or None).

    Nothing is written before the model, the data and the budget are checked;
    the output folder is created only when there is something to write.
    """
    import time
    from pathlib import Path

    from .convert import converter_for, open_source, rename_inputs, run_converter, tool_versions, write_outputs
    from .recipe import CalibrationSettings, Engine, Recipe
    from .types import IOType

    started = time.monotonic()
    say = say or (lambda _m: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: exists and is not a folder")
    say(f"loading {model}")
    source = open_source(model)
    if isinstance(source, FloatGraph):
        graph = source
        specs = graph.inputs
        tensorflow = False
    else:
        specs = source.input_specs()
        tensorflow = True
    data = split_data(calibration, eval_data, specs, options)  # bad data fails here, before any conversion
    if options.budget.kind == "accuracy" and data.search_labels is None:
        raise CalibrationDataError("--max-drop needs labelled data: give --eval DATA (a .npz with 'y')")
    if not isinstance(source, FloatGraph):
        say("converting to a float32 .tflite (the one conversion)")
        log: list[str] = []
        graph = FloatGraph(
            run_converter(converter_for(source, QuantMode.FLOAT32, IOType.FLOAT32, None, True), log), source=str(model)
        )
        data = dataclasses.replace(
            data,
            calibration=rename_inputs(data.calibration, graph),
            search=rename_inputs(data.search, graph),
            report=rename_inputs(data.report, graph),
        )
    targets = [
        t for t in ([target] + [device_targets(d.target) if device_targets else None for d in devices]) if t is not None
    ]
    targets = list({t.name: t for t in targets}.values())
    prep = prepare(graph, data, options, str(model), say)
    result, models = search(prep, say, _acceptor(targets))
    if targets and not any(c.ran for c in result.candidates):
        reasons = "; ".join(dict.fromkeys(c.error or "" for c in result.candidates))
        raise ConversionError(f"no candidate can run on {', '.join(t.name for t in targets)}: {reasons}")
    if not any(c.ran for c in result.candidates):
        raise ConversionError(
            "no candidate could be made and run: " + "; ".join(dict.fromkeys(c.error or "" for c in result.candidates))
        )
    kind = options.budget.kind
    front = pareto_front(result.candidates, kind)
    within = [c for c in result.candidates if c.meets_budget]
    by_name = {c.name: c for c in result.candidates}

    choices: list[DeviceChoice] = []
    fleet = None
    to_probe = probe_set(result, kind) if devices else ()
    stem = Path(model).stem if Path(model).suffix else Path(model).name
    if devices and within:
        from .deploy import prepare_model
        from .fleet import FleetOptions, run_fleet
        from .probe import ProbeOptions

        staging = out_dir / ".probe"
        out_dir.mkdir(parents=True, exist_ok=True)
        staging.mkdir(exist_ok=True)
        files = {}
        for i, c in enumerate(to_probe):
            path = staging / f"c{i}.tflite"
            path.write_bytes(models[c.name])
            files[c.name] = prepare_model(path, name=f"tune-{stem}-c{i}"[:64])
        names_within = [c.name for c in to_probe if c.meets_budget]

        if connect is None:
            raise ValueError("run_tune: devices need a connect function")
        timing = probe_options or ProbeOptions()

        if checks is not None:  # the candidates' own kernels were matched to the targets by the search
            from .doctor import ModelNeeds

            checks = dataclasses.replace(
                checks, needs=tuple(ModelNeeds.of_size(f.path, f.size_bytes) for f in files.values())
            )

        def operation(conn: Connection, device: Device, _progress: ProgressCallback) -> DeviceChoice:
            dev_target = device_targets(device.target) if device_targets else None
            if checks is not None:
                checks.run(conn, device, "tune", dev_target)
            return probe_candidates(
                conn, device, files, timing, target=dev_target, rounds=rounds, within=names_within, say=say
            )

        fleet = run_fleet(
            devices, operation, connect=connect, options=fleet_options or FleetOptions(), events=events, action="tune"
        )
        for device, outcome in zip(devices, fleet.results):
            if outcome.value is not None:
                choices.append(outcome.value)
            else:
                choices.append(
                    DeviceChoice(
                        device=device.name,
                        target=device.target,
                        status=outcome.status.value,
                        reason=outcome.reason,
                        code=outcome.code,
                        kind=outcome.kind,
                    )
                )
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()

    chosen_names: dict[str, str] = {}  # device (or "" without devices) -> candidate
    if devices:
        for choice in choices:
            if choice.chosen:
                chosen_names[choice.device] = choice.chosen
    elif result.best is not None:
        chosen_names[""] = result.best.name
    best_found = None
    notes = list(result.notes)
    if not within:
        losses = [(c.name, c.score.loss(kind)) for c in result.candidates if c.ran and c.score is not None]
        best_found = min(losses, key=lambda pair: pair[1])[0] if losses else None
    if not devices:
        notes.append("latency was not measured (no device): the SMALLEST candidate within the budget was chosen")
    if len(set(chosen_names.values())) > 1:
        notes.append(
            "the devices chose different candidates: " + ", ".join(f"{d}: {c}" for d, c in chosen_names.items())
        )

    reported = report_scores(
        prep,
        models,
        [*chosen_names.values(), *(["int8"] if "int8" in models else []), *([best_found] if best_found else [])],
    )
    versions = tool_versions(Engine.LITERT_QUANTIZER, tensorflow=tensorflow)
    written: dict[str, Any] = {}
    chosen: dict[str, Any] | None = None
    target_name = target.name if target is not None else None
    if chosen_names:
        out_dir.mkdir(parents=True, exist_ok=True)
        per_device: dict[str, Any] = {}
        files_by_candidate: dict[str, dict[str, str]] = {}
        distinct = list(dict.fromkeys(chosen_names.values()))
        for n, name in enumerate(distinct):
            candidate = by_name[name]
            suffix = "" if len(distinct) == 1 else f"_{n + 1}"
            path = out_dir / f"{stem}_tuned{suffix}.tflite"
            recipe = Recipe(
                mode=candidate.mode,
                engine=Engine.LITERT_QUANTIZER,
                overrides=candidate.overrides,
                per_channel=options.per_channel,
                calibration=CalibrationSettings(
                    samples=options.calibration_samples,
                    seed=options.seed,
                    pixel_range=options.image_options.pixel_range,
                    mean=options.image_options.mean,
                    std=options.image_options.std,
                ),
                versions=versions,
            )
            write_outputs(
                path,
                models[name],
                _conversion_report(prep, name, candidate, models[name], path, versions, target_name),
                recipe,
            )
            files_by_candidate[name] = {
                "candidate": name,
                "path": str(path),
                "recipe": str(path.with_suffix(".recipe.json")),
                "report": str(path.with_suffix(".json")),
            }
            written[name] = path
        if devices:
            per_device = {device: files_by_candidate[name] for device, name in chosen_names.items()}
            chosen = dict(files_by_candidate[distinct[0]]) if len(distinct) == 1 else {}
            chosen["per_device"] = per_device
        else:
            chosen = files_by_candidate[distinct[0]]
    report = TuneReport(
        model=str(model),
        budget=options.budget.describe(),
        budget_kind=kind,
        samples={
            "calibration": len(next(iter(data.calibration.values()))),
            "search": len(next(iter(data.search.values()))),
            "report": len(next(iter(data.report.values()))),
        },
        float_search=result.float_score,
        candidates=result.candidates,
        front=tuple(c.name for c in front),
        ranking=result.ranking[:20],
        evaluations=result.evaluations,
        report_split=reported,
        chosen=chosen,
        best_found=best_found,
        devices=tuple(choices),
        latency_measured=bool(devices),
        target=target_name,
        notes=tuple(notes),
        wall_s=round(time.monotonic() - started, 3),
    )
    return report, written, fleet
