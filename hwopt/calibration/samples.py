"""Calibration data and batched onnxruntime runs that expose intermediate tensors.

Sample sets are dicts ``input name -> array`` whose first axis counts samples;
each sample has the model's input shape with its batch dim dropped. A model
with a fixed batch of B is fed B samples at a time, a dynamic batch is fed up
to ``batch`` samples at a time (one at a time if the first such batch shows the
graph hard-codes batch 1 after all). ``OrtRunner`` can also return internal tensors
(the rules fit weights on them) by promoting them to graph outputs of a copy.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from hwopt.calibration.inputs import numpy_dtype, real_inputs, sample_shape
from hwopt.calibration.labels import Labels, load_labels
from hwopt.errors import HwoptError

Samples = dict[str, np.ndarray]

# onnxruntime's own log lines (warnings about unused initializers, a failed node's error before the
# exception that says the same) would reach the user's terminal; hwopt reports failures in one line.
ort.set_default_logger_severity(3)

_DEFAULT_BATCH = 16


def random_inputs(model: onnx.ModelProto, count: int, seed: int) -> Samples:
    """``count`` seeded standard-normal samples for every graph input (integers: small non-negatives)."""
    rng = np.random.default_rng(seed)
    samples: Samples = {}
    for value in real_inputs(model):
        shape, _ = sample_shape(value)
        dtype = numpy_dtype(value)
        if np.issubdtype(dtype, np.floating):
            samples[value.name] = rng.standard_normal((count, *shape)).astype(dtype)
        elif dtype == np.bool_:
            samples[value.name] = rng.integers(0, 2, (count, *shape)).astype(dtype)
        else:
            samples[value.name] = rng.integers(0, 4, (count, *shape)).astype(dtype)
    return samples


def sample_count(samples: Samples) -> int:
    return len(next(iter(samples.values()))) if samples else 0


def load_calibration(path: str | Path, model: onnx.ModelProto) -> Samples:
    """Read an .npz of arrays named after the graph inputs, checked against the model."""
    path = Path(path)
    if not path.is_file():
        raise HwoptError(f"{path}: no such calibration file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise HwoptError(f"{path}: a .npy file (one array); calibration data is an .npz with one array per "
                             f"graph input, named after it: np.savez(FILE, **{{input_name: samples}})")
        with archive:
            data = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise HwoptError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:200]})") from None
    expected = {v.name: v for v in real_inputs(model)}
    missing = sorted(set(expected) - set(data))
    if missing:
        raise HwoptError(f"{path}: no array for input {missing[0]!r} (arrays: {', '.join(sorted(data)) or 'none'})")
    counts = set()
    out: Samples = {}
    for name, value in expected.items():
        array = data[name]
        if array.dtype.kind not in "biuf":
            raise HwoptError(f"{path}: array {name!r} holds {array.dtype.name} values; calibration samples are "
                             f"numbers (the model's input is {numpy_dtype(value).name})")
        shape, batch = sample_shape(value)
        if array.shape[1:] == shape:
            pass
        elif batch == 1 and array.shape == (1, *shape):
            pass
        else:
            raise HwoptError(
                f"{path}: array {name!r} has shape {array.shape}, expected (samples, {', '.join(map(str, shape))})"
            )
        out[name] = _checked_cast(array, numpy_dtype(value), f"{path}: array {name!r}")
        counts.add(len(array))
    if len(counts) != 1:
        raise HwoptError(f"{path}: the arrays hold different numbers of samples {sorted(counts)}")
    return out


def _checked_cast(array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``array`` as the model's input dtype; refused when a sample holds NaN/Inf, or a value that becomes
    one (or does not fit) in that dtype: one such sample makes every refit weight NaN."""
    with np.errstate(all="ignore"):
        cast = array.astype(dtype, copy=False)
        per_sample = cast.reshape(len(cast), -1) if len(cast) else cast.reshape(0, 1)
        if np.issubdtype(dtype, np.floating):
            bad = ~np.isfinite(per_sample).all(axis=1)
            if array.dtype.kind == "f":
                bad |= ~np.isfinite(array.reshape(per_sample.shape)).all(axis=1)
            what = "NaN or Inf (or values beyond the range of " + dtype.name + ")"
        else:
            source = array.reshape(per_sample.shape).astype(np.float64)
            bad = (per_sample.astype(np.float64) != source).any(axis=1) | ~np.isfinite(source).all(axis=1)
            what = f"values that are not {dtype.name} numbers"
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise HwoptError(f"{where}: {int(bad.sum())} of {len(cast)} samples hold {what} (the first: sample "
                         f"{first}); remove or fix them")
    return cast


class OrtRunner:
    """Runs a model in onnxruntime (CPU, basic optimizations off) over sample sets in batches."""

    def __init__(
        self,
        model: onnx.ModelProto,
        extra_outputs: list[str] = (),
        batch: int = _DEFAULT_BATCH,
        only_extra: bool = False,
    ) -> None:
        """``only_extra``: return just ``extra_outputs`` and run only the nodes they need."""
        input_names = {v.name for v in real_inputs(model)}
        # A graph input asked for as an "internal" tensor is simply passed through from the feed.
        self.passthrough = [n for n in dict.fromkeys(extra_outputs) if n in input_names]
        internal = [n for n in extra_outputs if n not in input_names]
        model = _pruned_to(model, internal) if only_extra else _with_outputs(model, internal)
        inputs = real_inputs(model)
        fixed = {sample_shape(v)[1] for v in inputs}
        fixed_batch = next(iter(fixed)) if len(fixed) == 1 else None
        self.session = None
        # Whether batches of several samples are known to run; a dynamic batch dim is only a claim.
        self.batches_checked = fixed_batch is not None
        if fixed_batch == 1:
            # Most exports fix batch 1; running samples one by one is several times slower, so try the
            # same graph with a free batch dim and keep it only if it really runs batched.
            self.session = _batched_session(model, inputs)
            if self.session is not None:
                fixed_batch = None
        if self.session is None:
            self.session = _session(model)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batch = fixed_batch if fixed_batch is not None else batch
        self.fixed_batch = fixed_batch is not None

    def iter_batches(
        self, samples: Samples, progress: Callable[[int, int], None] | None = None
    ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """Yield (sample slice, outputs by name) for consecutive batches of ``samples``."""
        total = sample_count(samples)
        if self.fixed_batch and total % self.batch:
            raise HwoptError(f"the model takes batches of {self.batch}: give a multiple of {self.batch} samples")
        start = 0
        while start < total:
            part = slice(start, min(start + self.batch, total))
            feed = {name: np.ascontiguousarray(array[part]) for name, array in samples.items()}
            values = self._run(feed, part.stop - part.start)
            if values is None:
                continue  # the graph cannot run batches after all: the same samples, one at a time
            if progress is not None:
                progress(part.stop, total)
            outputs = dict(zip(self.output_names, values))
            outputs.update({name: feed[name] for name in self.passthrough})
            yield part, outputs
            start = part.stop

    def _run(self, feed: dict[str, np.ndarray], rows: int) -> list | None:
        """Run one batch; None when the first multi-sample batch shows the graph only runs one sample."""
        if self.batches_checked or rows == 1:
            return self.session.run(None, feed)
        # A dynamic batch dim may still meet a Reshape to [1, C] inside (exporters write both).
        self.batches_checked = True
        values = run_batch(self.session, None, feed, rows)
        if values is None:
            self.batch = 1
        return values

    def run_all(self, samples: Samples, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every (or the named) outputs for all samples, concatenated along the sample axis."""
        wanted = names or self.output_names + self.passthrough
        parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for _, outputs in self.iter_batches(samples):
            for name in wanted:
                parts[name].append(outputs[name])
        return {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Full optimization is safe: tensors we ask for are graph outputs, which onnxruntime's fusions keep.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # failures become one line of ours
    from hwopt.io.held_weights import inference_session

    return inference_session(model, options)


def run_batch(session: ort.InferenceSession, names: list[str] | None, feed: dict[str, np.ndarray],
              rows: int) -> list | None:
    """``session``'s outputs for a batch of ``rows`` samples, or None when the graph does not run batched.

    A graph may hard-code batch 1 inside (Reshape to [1, -1], ...): onnxruntime then fails, or the
    outputs lose the batch. The failure is expected, so onnxruntime does not log it.
    """
    options = ort.RunOptions()
    options.log_severity_level = 4
    try:
        values = session.run(names, feed, options)
    except Exception:  # noqa: BLE001 - onnxruntime raises several unrelated types
        return None
    if any(np.ndim(v) == 0 or np.shape(v)[0] != rows for v in values):
        return None
    return values


def _batched_session(model: onnx.ModelProto, inputs: list[onnx.ValueInfoProto]) -> ort.InferenceSession | None:
    """A session of ``model`` with batch dim 'N' on inputs and outputs, if it runs a batch of 2 correctly."""
    free = onnx.ModelProto()
    free.CopyFrom(model)
    del free.graph.value_info[:]
    names = {v.name for v in inputs}
    for value in list(free.graph.input) + list(free.graph.output):
        dims = value.type.tensor_type.shape.dim
        if (value.name in names or value in free.graph.output) and dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    try:
        session = _session(free)
    except Exception:  # noqa: BLE001 - a graph that hard-codes its batch may not even load freed
        return None
    probe = {v.name: np.zeros((2, *sample_shape(v)[0]), numpy_dtype(v)) for v in inputs}
    return session if run_batch(session, None, probe, 2) is not None else None


def _pruned_to(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that outputs exactly ``names`` and keeps only the nodes they depend on."""
    needed = set(names)
    kept: list[onnx.NodeProto] = []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    copy = onnx.ModelProto()
    copy.ir_version = model.ir_version
    copy.opset_import.extend(model.opset_import)
    graph = copy.graph
    graph.name = model.graph.name
    graph.node.extend(reversed(kept))
    graph.initializer.extend(t for t in model.graph.initializer if t.name in needed)
    graph.input.extend(v for v in model.graph.input if v.name in needed or v.name not in
                       {t.name for t in model.graph.initializer})
    graph.value_info.extend(model.graph.value_info)
    present = {o.name for o in model.graph.output}
    graph.output.extend(o for o in model.graph.output if o.name in names)
    return _with_outputs(copy, [n for n in names if n not in present], copy_model=False)


def _with_outputs(model: onnx.ModelProto, names: list[str], copy_model: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the internal tensors ``names``."""
    present = {o.name for o in model.graph.output}
    wanted = [n for n in dict.fromkeys(names) if n not in present]
    if not wanted:
        return model
    if copy_model:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    else:
        copy = model
    known = {v.name: v for v in copy.graph.value_info}
    produced = {out for node in copy.graph.node for out in node.output}
    for name in wanted:
        if name in known:
            copy.graph.output.append(known[name])
        elif name in produced:
            copy.graph.output.append(helper.make_empty_tensor_value_info(name))
        else:
            raise HwoptError(f"internal tensor {name!r} is not in the model")
    return copy


# Random calibration and evaluation samples together may take this much (generated as float64 first).
MAX_RANDOM_BYTES = 4 * 2**30


def _check_random_size(model: onnx.ModelProto, count: int) -> None:
    """--calibration-samples 100000000 would fail deep inside numpy (or be killed): say so first."""
    per_sample = sum(8 * int(np.prod(sample_shape(v)[0], dtype=np.int64)) for v in real_inputs(model))
    if count * per_sample > MAX_RANDOM_BYTES:
        raise HwoptError(f"{count:,} random samples of the inputs need {count * per_sample / 2**30:,.1f} GiB "
                         f"(at most {MAX_RANDOM_BYTES / 2**30:.0f} GiB): lower --calibration-samples / --eval-samples")


GROUP_KEY = "_group"  # an optional array in a calibration .npz: the source (photo, clip) of each sample
DEFAULT_HOLDOUT = 0.25
RANDOM_EVAL = 16  # held-out random samples when no calibration file is given (they judge nothing real)


@dataclass
class CalibrationSplit:
    """Samples to fit on and held-out samples that are never fitted on, and how they were split."""

    fit: Samples
    held_out: Samples
    info: dict[str, Any]
    train: Samples | None = None  # every sample not held out (``fit`` is at most --calibration-samples of them)
    # Class labels of the same samples (``hwopt.calibration.labels``), when the data has them and they were asked for.
    labels: dict[str, Labels] | None = None  # "fit", "held_out", "train"

    @property
    def random(self) -> bool:
        return bool(self.info.get("random"))


def _held_count(total: int, holdout: float) -> int:
    count = round(holdout * total) if holdout < 1 else int(holdout)
    return min(max(count, 1), total - 1)


def split_samples(data: Samples, holdout: float = DEFAULT_HOLDOUT, count: int | None = None,
                  eval_count: int | None = None, groups: np.ndarray | None = None, seed: int = 0,
                  source: str = "", labels: Labels | None = None) -> CalibrationSplit:
    """Hold out ``holdout`` of the samples (a fraction below 1, else a count), fit on at most ``count``
    of the rest. With ``groups`` (one label per sample: the photo a crop came from), whole groups are
    held out (seeded pick), so no source is on both sides; without, the last samples are held out,
    unless the data is ``labels``-ed: then a seeded random pick of samples (labelled sets are often
    sorted by class, and the last quarter would be the last classes)."""
    total = sample_count(data)
    if total < 2:
        raise HwoptError(f"{source or 'calibration data'}: needs at least 2 samples (some are held out)")
    want = _held_count(total, holdout)
    by_sample = groups is None and labels is not None
    if by_sample:
        groups = np.arange(total)
    if groups is not None and len(np.unique(groups)) >= 2:
        names, inverse = np.unique(groups, return_inverse=True)
        order = np.random.default_rng(seed).permutation(len(names))
        # The fewest groups, in the seeded order, that hold at least ``want`` samples (never all of them).
        sizes = np.cumsum(np.bincount(inverse, minlength=len(names))[order])
        taken = min(int(np.searchsorted(sizes, want)) + 1, len(names) - 1)
        held_mask = np.isin(inverse, order[:taken])
        how = (f"by sample, seeded: {taken} of {len(names)} held out (no source groups given: crops or frames of one "
               f"image on both sides would inflate the held-out figures)" if by_sample else
               f"by source: {taken} of {len(names)} groups held out")
    else:
        held_mask = np.zeros(total, dtype=bool)
        held_mask[total - want:] = True
        how = f"the last {want} samples held out" + (" (no source groups given)" if groups is None else "")
    held_idx, fit_idx = np.flatnonzero(held_mask), np.flatnonzero(~held_mask)
    if eval_count is not None:
        held_idx = held_idx[:eval_count]
    if count is not None:
        fit_idx = fit_idx[:count]
    info = {"source": source, "random": False, "total": total, "fit": int(len(fit_idx)),
            "held_out": int(len(held_idx)), "split": how, "holdout": holdout}
    rest = np.flatnonzero(~held_mask)
    split_labels = None
    if labels is not None:
        split_labels = {"fit": labels.take(fit_idx), "held_out": labels.take(held_idx), "train": labels.take(rest)}
        info["labelled"] = True
    return CalibrationSplit({k: v[fit_idx] for k, v in data.items()}, {k: v[held_idx] for k, v in data.items()},
                            info, {k: v[rest] for k, v in data.items()}, split_labels)


def load_groups(path: str | Path, total: int) -> np.ndarray | None:
    """The optional ``_group`` array of a calibration .npz (one label per sample)."""
    with np.load(path, allow_pickle=False) as archive:
        if GROUP_KEY not in archive.files:
            return None
        groups = archive[GROUP_KEY]
    if groups.ndim != 1 or len(groups) != total:
        raise HwoptError(f"{path}: array {GROUP_KEY!r} must hold one label per sample ({total}), "
                         f"got shape {groups.shape}")
    return groups


def check_calibration_source(path: Path | None, preprocess: str | None) -> None:
    """Before any long work: a calibration folder has a readable image, ``preprocess`` is known and used."""
    folder = path is not None and path.is_dir()
    if preprocess is not None and not folder:
        raise HwoptError("--preprocess applies to a --calibration folder of images (an .npz is used as it is)")
    if folder:
        from hwopt.calibration.images import Preprocess, scan_image_folder

        Preprocess.parse(preprocess)
        scan_image_folder(path)


def read_samples(model: onnx.ModelProto, path: str | Path, preprocess: str | None = None,
                 labels: str = "none") -> tuple[Samples, np.ndarray | None, Labels | None]:
    """(samples, their source groups or None, their labels or None) of an .npz or an image folder: a
    folder's groups are its files; an .npz's its ``_group`` array. ``labels``: ``hwopt.calibration.labels``
    mode (``none``: never read)."""
    if Path(path).is_dir():
        from hwopt.calibration.images import load_calibration_folder

        data, groups = load_calibration_folder(path, model, preprocess)
        groups = np.asarray(groups)
    else:
        data = load_calibration(path, model)
        groups = load_groups(path, sample_count(data))
    return data, groups, load_labels(Path(path), model, sample_count(data), groups, labels)


def calibration_split(model: onnx.ModelProto, path: str | Path | None = None, count: int = 64,
                      eval_count: int | None = None, seed: int = 0, preprocess: str | None = None,
                      holdout: float = DEFAULT_HOLDOUT, labels: str = "none") -> CalibrationSplit:
    """Fit and held-out inputs: the user's .npz or image folder split (``split_samples``; a folder by
    file, an .npz by its ``_group`` array when it has one), or seeded random inputs. ``labels``: read the
    data's class labels too (``hwopt.calibration.labels`` modes; default none)."""
    if holdout <= 0:
        raise HwoptError(f"--holdout {holdout}: must be a fraction in (0, 1) or a sample count >= 1")
    if path is None:
        held = eval_count or RANDOM_EVAL
        _check_random_size(model, count + held)
        return CalibrationSplit(random_inputs(model, count, seed), random_inputs(model, held, seed + 1),
                                {"source": "random (standard normal)", "random": True, "total": count + held,
                                 "fit": count, "held_out": held, "split": "seeded random inputs",
                                 "holdout": holdout})
    data, groups, found = read_samples(model, path, preprocess, labels)
    return split_samples(data, holdout, count, eval_count, groups, seed, str(path), found)


def calibration_sets(model: onnx.ModelProto, path: str | Path | None = None, count: int = 64,
                     eval_count: int | None = None, seed: int = 0, preprocess: str | None = None,
                     holdout: float = DEFAULT_HOLDOUT) -> tuple[Samples, Samples]:
    """(fit, held-out) inputs of ``calibration_split``."""
    split = calibration_split(model, path, count, eval_count, seed, preprocess, holdout)
    return split.fit, split.held_out
