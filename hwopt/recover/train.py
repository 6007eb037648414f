"""The recovery recipe: label-free distillation of a rewritten model from its original.

1. Block-wise reconstruction (``regions.rewritten_blocks``): every rewritten
   block learns to map the rewritten model's tensor at its input to the
   original's tensor at its output (relative MSE). All blocks train in one
   pass of the student, each with its input detached, so a block sees what
   the blocks before it currently produce (as the least-squares refit does,
   but with the nonlinearity and the whole block trained jointly). Only the
   rewritten blocks' weights train here: they are the ones that are wrong.
2. End-to-end distillation on the graph outputs (``losses.output_loss``:
   softened KL for class scores, relative MSE otherwise). By default every
   Conv/Gemm weight trains: the layers after a rewritten block can absorb the
   error it leaves, which the block alone cannot remove (its capacity is
   smaller than the original's, or the rewritten graph is narrower). The
   learning rate is small and the data augmented, so the untouched layers
   move little.

Every step feeds a random resized crop (and mirror) of calibration samples
(``augment``): the teacher labels any view, so a few hundred images go far.
The teacher is the original graph in the same interpreter; the held-out
samples, never trained on, are judged with the original's onnxruntime outputs
after every epoch. The learning rate warms up over the first tenth of each phase
and then follows a cosine to zero, measured in steps when the epochs are given
(deterministic on CPU for a seed and thread count) or in seconds when only a
time budget is.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from hwopt.rewrites.apply import check_written_model
from hwopt.calibration.samples import OrtRunner, Samples, sample_count
from hwopt.fidelity.metrics import Fidelity, Metric, choose_metric, measure
from hwopt.calibration.labels import accuracy
from hwopt.recover.augment import SCALE, crop_and_flip, is_image
from hwopt.recover.labels import LABELLED_SCALE, LabelledFigures, TaskLabels, task_loss
from hwopt.recover.losses import output_loss, relative_mse
from hwopt.recover.module import OnnxModule
from hwopt.recover.regions import (RewrittenBlock, block_boundaries, changed_parameters, frontier, rewritten_blocks,
                                   shared_tensors)
from hwopt.recover.writeback import check_against_torch, with_weights
from hwopt.fidelity.verify import Comparison

Progress = Callable[[str, int, int], None]


@dataclass
class RecoverySettings:
    epochs: int | None = None  # both phases together; None: as many as ``seconds`` allows
    seconds: float | None = None  # wall-clock budget for training (None: no limit)
    seed: int = 0
    lr: float = 5e-4  # relative step (``_relative_adam``) end to end; the block phase takes BLOCK_LR_SCALE x
    batch: int = 32
    temperature: float = 2.0
    block_share: float = 0.25  # of the epochs (or seconds) spent on block-wise reconstruction
    train_all: bool = True  # end-to-end trains every Conv/Gemm weight, not only the rewritten ones
    augment: bool = True
    features: float = 1.0  # end to end: weight of the feature loss at the block outputs after the change
    threads: int | None = None  # torch CPU threads (fixed for determinism); None: torch's default
    ema: float = 0.0  # decay of an exponential moving average of the trained weights per step (0: none)

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None:
            raise ValueError("recovery needs epochs or a time budget")


@dataclass
class Epoch:
    phase: str  # "blocks" or "end-to-end"
    epoch: int
    loss: float
    fidelity: float  # held-out task fidelity (``hwopt.fidelity.metrics``: the run's metric)
    seconds: float
    fit: float = float("nan")  # the same on (up to FIT_CHECK) training samples, not augmented: picks the epoch
    # (with labels: their top-1 accuracy against the labels)
    accuracy: float = float("nan")  # with labels: held-out top-1 accuracy against the labels


@dataclass
class RecoveryResult:
    model: onnx.ModelProto
    before: Fidelity  # the rewritten model against the original, held-out samples
    after: Fidelity  # the written model against the original, held-out samples
    check: Comparison  # the written model in onnxruntime against the trained torch module
    blocks: list[RewrittenBlock]
    trained_blocks: int  # parameters trained in the block phase
    trained_all: int  # parameters trained end to end
    history: list[Epoch] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "epochs"  # "epochs" (all done), "budget" (time-planned run), "time" (cut short) or
    # "exact" (the rewritten model already computes the original's outputs: no training)
    resumed_from: int = 0  # epochs restored from a checkpoint
    best_epoch: int = 0  # the epoch whose weights were written (0: none beat the input on the fit samples)
    accuracy: LabelledFigures | None = None  # with labels: held-out accuracy of original, before and after


def _distilled_tensors(model: onnx.ModelProto) -> list[str]:
    """The tensors the end-to-end loss compares: graph outputs, or a final Softmax's input (the logits)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names = []
    for output in model.graph.output:
        node = producers.get(output.name)
        names.append(node.input[0] if node is not None and node.op_type == "Softmax" else output.name)
    return names


def _relative_adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with each tensor's step size proportional to its RMS value: ``lr`` is a relative step.

    Folding BatchNorm into convs leaves weights whose scales differ by orders of magnitude from layer to
    layer; one absolute step size (Adam's ~lr per element) that suits the large ones wrecks the small
    ones (measured: lr 1e-4 took the trained case's fuse-ibn x3 from 59% to 38% top-1 in one epoch).
    """
    groups = []
    for p in params:
        scale = float(p.detach().pow(2).mean().sqrt()) if p.numel() else 0.0
        groups.append({"params": [p], "lr": lr * max(scale, 1e-3), "base_lr": lr * max(scale, 1e-3)})
    return torch.optim.Adam(groups)


def _weights_of_shared(model: onnx.ModelProto, shared: set[str]) -> set[str]:
    """Initializers read only by nodes whose outputs are all shared with the original."""
    upstream, downstream = set(), set()
    for node in model.graph.node:
        (upstream if set(node.output) <= shared else downstream).update(node.input)
    return upstream - downstream


def _fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _plan(settings: RecoverySettings, has_blocks: bool) -> list[tuple[str, int | None, float | None]]:
    """(phase, epochs, seconds) of each phase."""
    share = settings.block_share if has_blocks else 0.0
    phases = []
    if share:
        phases.append(("blocks", None if settings.epochs is None else max(1, round(settings.epochs * share)),
                       None if settings.seconds is None else settings.seconds * share))
    rest_epochs = None if settings.epochs is None else max(1, settings.epochs - (phases[0][1] if phases else 0))
    phases.append(("end-to-end", rest_epochs, None if settings.seconds is None else settings.seconds * (1 - share)))
    return phases


# Measured on the trained case (EfficientNet-Lite0, fuse-ibn x3, held-out photos, 58.6% before): block phase
# at 2e-3 +1.6 points in an epoch, at 3e-2 down to 14%; end to end (all weights, feature losses) at 5e-4
# +3.1 points in two epochs, at 2e-3 down to 48%.
BLOCK_LR_SCALE = 4
PROBE = 4  # samples on which tensors of the same name are compared (exactly shared or not)
# Training samples (not augmented) that pick the epoch written. With 64, one crop is 1.6 points of top-1
# agreement and the pick followed the noise: on the trained case the fit figure moved +-3 points from epoch
# to epoch while the loss fell steadily. 256 costs about a second per epoch in onnxruntime.
FIT_CHECK = 256
WARMUP = 0.1  # of each phase: Adam's first steps are full-size in every coordinate whatever the gradient


def _schedule(fraction: float) -> float:
    """Learning-rate factor: a linear warmup, then a cosine to zero."""
    if fraction < WARMUP:
        return (fraction + 0.01) / (WARMUP + 0.01)
    return 0.5 * (1 + math.cos(math.pi * (fraction - WARMUP) / (1 - WARMUP)))


def _fraction(step: int, total_steps: int | None, spent: float, seconds: float | None) -> float:
    """How far the phase is: in steps when they are planned, in seconds when a budget is (the larger)."""
    parts = [step / total_steps if total_steps else 0.0, spent / seconds if seconds else 0.0]
    return max(parts)


class _Average:
    """An exponential moving average of ``params`` (Polyak averaging): the few hundred steps a CPU budget
    buys are noisy, and the average of the last ones is a better model than the last one."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params, self.decay = params, decay
        self.values = [p.detach().clone() for p in params] if decay else []

    @torch.no_grad()
    def update(self) -> None:
        for p, v in zip(self.params, self.values):
            v.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def applied(self):
        """The averaged values in the parameters inside the block, the live ones after it."""
        if not self.values:
            yield
            return
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            for p, v in zip(self.params, self.values):
                p.copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live):
                    p.copy_(v)


class Recovery:
    """One recovery run: the models, data and state; ``run`` trains and writes the weights back."""

    def __init__(self, original: onnx.ModelProto, rewritten: onnx.ModelProto, train: Samples, heldout: Samples,
                 settings: RecoverySettings, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: Path | None = None,
                 metric: Metric | str = "auto", judge: Callable[[onnx.ModelProto], Fidelity] | None = None,
                 before: Fidelity | None = None, labels: TaskLabels | None = None) -> None:
        """``metric``: the task metric (``hwopt.fidelity.metrics``; ``auto`` picks it from the outputs); ``judge``:
        scores a model on the held-out samples (default: against the original's onnxruntime outputs on
        ``heldout``); ``before``: the rewritten model's figure when the caller has it (not run again);
        ``labels``: class labels of ``train`` and ``heldout`` (``hwopt.recover.labels``): the end-to-end loss
        adds the cross-entropy on them, the epoch is picked by accuracy and held-out accuracy is reported."""
        self.original, self.rewritten, self.settings = original, rewritten, settings
        self.train, self.heldout = train, heldout
        self.progress, self.log, self.checkpoint = progress, log or (lambda line: None), checkpoint
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(settings.seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.student = OnnxModule(rewritten).to(self.device)
        # Up to the first changed node both models compute the same tensors: the teacher computes them
        # once and the student starts from there; weights up there never train (nothing to win back).
        # Probed on a few samples: an exact rewrite (dw0 made dense) changes nodes, not tensors; the student
        # then starts after it (a dense 3x3 conv at 112x112 costs more to train than the rest of a block).
        shared = shared_tensors(original, rewritten, probe={k: v[:PROBE] for k, v in train.items()})
        # An exact rewrite (dw-to-grouped, dw-to-dense, padding) computes the original's outputs already.
        self.exact = all(o.name in shared for o in rewritten.graph.output)
        self.starts = frontier(rewritten, shared)
        self.blocks = [b for b in rewritten_blocks(original, rewritten) if b.output not in shared]
        downstream = [n for n in self.student.keys if n not in _weights_of_shared(rewritten, shared)]
        self.block_params = list(dict.fromkeys(name for b in self.blocks for name in b.params))
        self.all_params = downstream if settings.train_all else changed_parameters(original, rewritten)
        self.distilled = _distilled_tensors(original)
        self.features = block_boundaries(original, rewritten, shared) if settings.features else []
        self.inputs = self.student.input_names
        shapes = {name: tuple(array.shape) for name, array in train.items()}
        self.augmenting = settings.augment and len(self.inputs) == 1 and is_image(shapes[self.inputs[0]])
        self.generator = torch.Generator().manual_seed(settings.seed)
        # The teacher runs in onnxruntime (several times faster than the interpreter's forward on CPU).
        self.teachers: dict[str, OrtRunner] = {}
        self.output_names = [o.name for o in original.graph.output]
        self.fit_check = {k: v[-FIT_CHECK:] for k, v in train.items()}
        self.fit_reference = OrtRunner(original).run_all(self.fit_check, self.output_names)
        if isinstance(metric, str):
            metric = choose_metric({n: v.shape for n, v in self.fit_reference.items()}, metric)
        self.metric, self.before, self.labels = metric, before, labels
        self.fit_labels = labels.train[-FIT_CHECK:] if labels is not None else None
        self.original_accuracy = math.nan
        if judge is None or labels is not None:
            reference = OrtRunner(original).run_all(heldout, self.output_names)
            if labels is not None:
                self.original_accuracy = accuracy(reference[self.output_names[0]], labels.heldout)
        if judge is None:
            def judge(model: onnx.ModelProto) -> Fidelity:
                return measure(reference, OrtRunner(model).run_all(heldout, self.output_names), metric)
        self._judge = judge
        self.key = _fingerprint(original.SerializeToString(), rewritten.SerializeToString(),
                                *(np.ascontiguousarray(v).tobytes() for v in train.values()),
                                repr(sorted(asdict(settings).items())).encode(), metric.name.encode(),
                                *((labels.train.tobytes(), labels.heldout.tobytes(), repr(labels.weight).encode())
                                  if labels is not None else ()))

    # -- one phase -------------------------------------------------------------------------------------
    def _teacher(self, phase: str, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The original's tensors the phase needs (where the student starts, and its targets)."""
        if phase not in self.teachers:
            targets = [b.output for b in self.blocks] if phase == "blocks" else self.distilled + self.features
            self.teachers[phase] = OrtRunner(self.original, list(dict.fromkeys(self.starts + targets)),
                                             batch=self.settings.batch, only_extra=True)
        values = self.teachers[phase].run_all(feeds)
        return {name: torch.from_numpy(value).to(self.device) for name, value in values.items()}

    def _accuracy(self, model: onnx.ModelProto) -> float:
        """Held-out top-1 accuracy against the labels (NaN without labels)."""
        if self.labels is None:
            return math.nan
        scores = OrtRunner(model).run_all(self.heldout, self.output_names[:1])[self.output_names[0]]
        return accuracy(scores, self.labels.heldout)

    def _loss(self, phase: str, feeds: dict[str, np.ndarray], index: torch.Tensor) -> torch.Tensor:
        teacher = self._teacher(phase, feeds)
        starts = {name: teacher[name] for name in self.starts}
        if phase == "blocks":
            wanted = [b.output for b in self.blocks]
            outputs = self.student.run(starts, wanted, detach=[b.input for b in self.blocks])
            return sum(relative_mse(outputs[n], teacher[n]) for n in wanted) / len(wanted)
        outputs = self.student.run(starts, self.distilled + self.features)
        loss = sum(output_loss(outputs[n], teacher[n], self.settings.temperature)
                   for n in self.distilled) / len(self.distilled)
        if self.features:
            # Feature targets at every block output: a dense signal (thousands of values per sample, not
            # one distribution over classes) that keeps the student's features the original's.
            loss = loss + self.settings.features * sum(relative_mse(outputs[n], teacher[n])
                                                       for n in self.features) / len(self.features)
        if self.labels is not None:  # the one classifier output's logits (checked when the labels were read)
            loss = task_loss(loss, outputs[self.distilled[0]], self.labels.batch(index, self.device),
                             self.labels.weight)
        return loss

    def _batches(self) -> list[torch.Tensor]:
        order = torch.randperm(sample_count(self.train), generator=self.generator)
        return list(order.split(self.settings.batch))

    def _feeds(self, index: torch.Tensor) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(array[index.numpy()]) for name, array in self.train.items()}
        if self.augmenting:
            name = self.inputs[0]
            # Labels must stay true of the view: milder crops, no mirror images (``hwopt.recover.labels``).
            scale, mirror = (LABELLED_SCALE, False) if self.labels is not None else (SCALE, True)
            feeds[name] = crop_and_flip(torch.from_numpy(feeds[name]).float(), self.generator, scale, mirror).numpy()
        return feeds

    def _fit_score(self, model: onnx.ModelProto) -> tuple[float, float]:
        """(task fidelity, -rel L2) on the fit-check samples: higher is better, rel L2 breaks ties; with labels,
        (accuracy against them, task fidelity, -rel L2).

        The epoch written is the best on training samples (not on the held-out ones, which only report);
        the last ones: hwopt's refits fit the first --calibration-samples, and would look best on them."""
        outputs = OrtRunner(model).run_all(self.fit_check, self.output_names)
        fid = measure(self.fit_reference, outputs, self.metric)
        score = (fid.value, -fid.rel_l2) if fid.finite else (-math.inf, -math.inf)
        if self.fit_labels is not None:
            score = ((accuracy(outputs[self.output_names[0]], self.fit_labels) if fid.finite else -math.inf), *score)
        return score

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.student.params.items()}

    def run(self) -> RecoveryResult:
        start = time.perf_counter()
        before = self.before if self.before is not None else self._judge(self.rewritten)
        accuracy_before = self._accuracy(self.rewritten)
        if self.exact:
            self.log("recover: the rewritten model computes the original's outputs (an exact rewrite): "
                     "nothing to win back, written as it is")
            check = check_against_torch(self.rewritten, self.student, self.heldout)
            return RecoveryResult(self.rewritten, before, before, check, [], 0, 0, [], time.perf_counter() - start,
                                  "exact", 0, 0, self._figures(accuracy_before, accuracy_before))
        history: list[Epoch] = []
        best = (self._fit_score(self.rewritten), 0, self._weights())
        state = self._restore()
        if state and state.get("best"):
            best = (tuple(state["best"]["score"]), state["best"]["epoch"], state["best"]["params"])
        resumed = len(state["history"]) if state else 0
        history = [Epoch(**e) for e in state["history"]] if state else []
        stopped_by = "epochs" if self.settings.epochs is not None else "budget"
        steps_per_epoch = math.ceil(sample_count(self.train) / self.settings.batch)
        for phase_index, (phase, epochs, seconds) in enumerate(_plan(self.settings, bool(self.blocks))):
            names = self.block_params if phase == "blocks" else self.all_params
            params = [self.student.parameter(n) for n in names]
            for p in self.student.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            optimizer = _relative_adam(params, self.settings.lr * (BLOCK_LR_SCALE if phase == "blocks" else 1))
            done = [e for e in history if e.phase == phase]
            elapsed = sum(e.seconds for e in done)
            if state and state["phase"] == phase:
                optimizer.load_state_dict(state["optimizer"])
                state = None
            total_steps = None if epochs is None else epochs * steps_per_epoch
            step, epoch = len(done) * steps_per_epoch, len(done)
            label = f"recover {phase}"
            average = _Average(params, self.settings.ema)
            while (epochs is None or epoch < epochs) and (seconds is None or elapsed < seconds):
                epoch_start, losses = time.perf_counter(), []
                for index in self._batches():
                    fraction = _fraction(step, total_steps, elapsed + time.perf_counter() - epoch_start, seconds)
                    if fraction >= 1.0:
                        break  # the time budget is spent (a step budget ends with the epoch)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * _schedule(fraction)
                    loss = self._loss(phase, self._feeds(index), index)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    average.update()
                    losses.append(float(loss.detach()))
                    step += 1
                    if self.progress is not None:
                        self.progress(label, min(int(100 * fraction), 99), 100)
                epoch += 1
                elapsed += time.perf_counter() - epoch_start
                with average.applied():  # an epoch's weights are the average's, when there is one
                    current = with_weights(self.rewritten, self.student)
                    score = self._fit_score(current)
                    record = Epoch(phase, epoch, float(np.mean(losses)) if losses else float("nan"),
                                   self._judge(current).value, time.perf_counter() - epoch_start, score[0],
                                   self._accuracy(current))
                    history.append(record)
                    if score >= best[0]:
                        best = (score, len(history), self._weights())
                accuracy_text = "" if self.labels is None else f", held-out accuracy {record.accuracy:.2%}"
                self.log(f"{label} epoch {epoch}{'/' + str(epochs) if epochs else ''}: loss {record.loss:.4g}, "
                         f"fit {record.fit:.2%}, held-out {record.fidelity:.2%}{accuracy_text}, {record.seconds:.1f} s")
                self._save(phase, optimizer, history, best)
            if seconds is not None and elapsed >= seconds and (epochs is None or epoch < epochs):
                stopped_by = "time" if epochs is not None else "budget"
            if self.progress is not None:
                self.progress(label, 100, 100)
        self.student.params.load_state_dict(best[2])
        if best[1] < len(history):
            self.log(f"recover: writing the weights of epoch {best[1]} (best on the fit samples)"
                     if best[1] else "recover: no epoch beat the input weights on the fit samples: keeping them")
        written = with_weights(self.rewritten, self.student)
        check_written_model(self.rewritten, written)
        check = check_against_torch(written, self.student, self.heldout)
        after = self._judge(written)
        if self.checkpoint is not None and self.checkpoint.exists():
            self.checkpoint.unlink()  # the output is written next: nothing left to resume
        return RecoveryResult(written, before, after, check, self.blocks, len(self.block_params), len(self.all_params),
                              history, time.perf_counter() - start, stopped_by, resumed, best[1],
                              self._figures(accuracy_before, self._accuracy(written)))

    def _figures(self, before: float, after: float) -> LabelledFigures | None:
        if self.labels is None:
            return None
        return LabelledFigures(self.original_accuracy, before, after, len(self.labels.heldout))

    # -- checkpoints -----------------------------------------------------------------------------------
    def _save(self, phase: str, optimizer: torch.optim.Optimizer, history: list[Epoch], best: tuple) -> None:
        if self.checkpoint is None:
            return
        payload = {"key": self.key, "phase": phase, "params": self.student.params.state_dict(),
                   "optimizer": optimizer.state_dict(), "generator": self.generator.get_state(),
                   "history": [asdict(e) for e in history],
                   "best": {"score": list(best[0]), "epoch": best[1], "params": best[2]}}
        partial = self.checkpoint.with_name(self.checkpoint.name + ".partial")
        torch.save(payload, partial)
        partial.replace(self.checkpoint)

    def _restore(self) -> dict | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        try:
            state = torch.load(self.checkpoint, weights_only=False)
        except Exception:  # noqa: BLE001 - a damaged checkpoint is ignored, not fatal
            return None
        if state.get("key") != self.key:
            self.log(f"recover: {self.checkpoint} is from another run (models, data or settings differ): starting over")
            return None
        self.student.params.load_state_dict(state["params"])
        self.generator.set_state(state["generator"])
        self.log(f"recover: resuming after {len(state['history'])} epoch(s) from {self.checkpoint}")
        return state


def recover(original: onnx.ModelProto, rewritten: onnx.ModelProto, train: Samples, heldout: Samples,
            settings: RecoverySettings, progress: Progress | None = None, log: Callable[[str], None] | None = None,
            checkpoint: Path | None = None, metric: Metric | str = "auto",
            judge: Callable[[onnx.ModelProto], Fidelity] | None = None,
            before: Fidelity | None = None, labels: TaskLabels | None = None) -> RecoveryResult:
    """Distil ``rewritten`` (hwopt's graph) from ``original`` (its canonical form) on unlabelled ``train``
    samples; judge on ``heldout`` with the task ``metric`` (``hwopt.fidelity.metrics``, as optimize judges).
    With ``labels`` (``hwopt.recover.labels``) the samples are labelled: the task loss trains too, and held-out
    accuracy is reported. Returns the rewritten graph with trained weights, verified."""
    return Recovery(original, rewritten, train, heldout, settings, progress, log, checkpoint, metric, judge,
                    before, labels).run()
