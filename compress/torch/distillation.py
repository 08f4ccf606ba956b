"""What knowledge distillation is made of: a frozen teacher (a torch model, or an ONNX file run
in ONNX Runtime), forward hooks that tap named modules' outputs for feature matching, learned
projections where the student's features are narrower or wider, and the loss

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)
    + feature_weight * sum of MSE(projection(student feature), teacher feature) / mean(teacher^2)
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import ConfigError
from compress.torch.runnable import runnable
from compress.torch.training import first_output

if TYPE_CHECKING:
    import torch

CACHE_LIMIT_BYTES = 512 * 2**20  # teacher outputs kept for the whole train set up to this size
CACHE_BATCH = 256


class Teacher:
    """A frozen model that gives logits for a batch: a torch callable, or an ONNX file."""

    def __init__(self, model, described: str, onnx_path: Path | None = None):
        self.model, self.described, self.onnx_path = model, described, onnx_path
        self._session = None
        if onnx_path is not None:
            from compress.measure.runtime import open_session

            self._session = open_session(onnx_path, threads=1)

    @property
    def is_onnx(self) -> bool:
        return self._session is not None

    def logits(self, batch: list):
        """Its first output for a batch of tensors, with no gradient."""
        import torch

        if self._session is not None:
            from compress.measure.runtime import feeds

            arrays = [t.numpy() for t in batch]
            return torch.from_numpy(self._session.run(None, feeds(self._session, arrays))[0])
        with torch.no_grad():
            return first_output(self.model(*batch))

    def targets(self, batch: list, names: list[str]) -> tuple:
        """Its logits for a batch, and the outputs of the named modules (feature matching)."""
        if not names:
            return self.logits(batch), {}
        with tapped(self.model, names) as features:
            logits = self.logits(batch)
        return logits, dict(features)

    def outputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Its first output on whole arrays (to score the teacher)."""
        from compress.measure.evaluate import onnx_output
        from compress.torch.export import torch_output

        if self.onnx_path is not None:
            return onnx_output(self.onnx_path, inputs, 0)
        return torch_output(self.model, inputs, 0)


def hookable_copy(loaded):
    """A copy of a loaded torch model that training the student cannot change, whose layers run
    as modules (a .pt2's are relifted) so that forward hooks see them."""
    import copy
    import warnings

    from compress.models.program_decoder import is_program_decoder
    from compress.torch.editable import relift

    module = runnable(loaded)
    if loaded.format == "exported_program" and not is_program_decoder(module):
        module = relift(module)
    with warnings.catch_warnings():  # torch deprecates a pytree class that the copy touches
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module).eval()


def load_teacher(path: Path, arch: str | None, arch_args: dict, ctx, key: str) -> Teacher:
    """A teacher from a file in any format the loader takes (`key` names it in messages)."""
    from compress.config import ModelSection
    from compress.models import load_model

    section = ModelSection(arch=arch, arch_args=arch_args)
    loaded = load_model(
        (ctx.base_dir / path).resolve(), section, ctx.base_dir, ctx.trust_pickle, key,
        trust_remote_code=ctx.trust_remote_code, inputs=ctx.input_names,
    )  # fmt: skip
    if loaded.is_onnx:
        return Teacher(None, path.name, onnx_path=loaded.path)
    return Teacher(hookable_copy(loaded), path.name)


def teacher_targets(teacher: Teacher, names: list[str], dataset) -> Callable:
    """(batch, sample indices) -> the teacher's (logits, features) for that batch. Without
    augmentation the same samples come back every epoch, so the teacher runs once over the train
    set, unless its outputs would take more than CACHE_LIMIT_BYTES to keep."""
    import torch

    live = lambda batch, index: teacher.targets(batch, names)  # noqa: E731
    if dataset.augment is not None:
        return live
    logits, features = teacher.targets(example_batch(dataset), names)
    per_sample = sum(t[0].numel() * t.element_size() for t in [logits, *features.values()])
    if per_sample * len(dataset) > CACHE_LIMIT_BYTES:
        return live
    chunks = [
        teacher.targets([torch.from_numpy(a) for a in arrays], names)
        for arrays in dataset.batches(CACHE_BATCH)
    ]
    all_logits = torch.cat([logits for logits, _ in chunks])
    all_features = {n: torch.cat([features[n] for _, features in chunks]) for n in names}
    return lambda batch, index: (all_logits[index], {n: f[index] for n, f in all_features.items()})


def check_module_names(model, names: list[str], whose: str, key: str) -> None:
    """ConfigError naming the closest modules when `model` lacks one of `names`."""
    known = [n for n, _ in model.named_modules() if n]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
            hint = f"close names: {', '.join(close)}" if close else "no module has a close name"
            raise ConfigError(f"{key}: the {whose} has no module {name!r}; {hint}")


@contextlib.contextmanager
def tapped(model, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, the latest output of each named module, by name (forward hooks)."""
    outputs: dict[str, torch.Tensor] = {}
    if not names:
        yield outputs
        return
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda module, args, out, name=name: outputs.__setitem__(name, first_output(out))
        )
        for name in names
    ]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def feature_width_dim(shape: tuple) -> int:
    """Where a feature's width is: channels of [N, C, H, W], the last axis of [N, D] / [N, S, D]."""
    return 1 if len(shape) == 4 else len(shape) - 1


def projection(student_shape: tuple, teacher_shape: tuple, pair: str, key: str):
    """A learned map from the student's feature to the teacher's width (identity when equal)."""
    import torch

    if student_shape == teacher_shape:
        return torch.nn.Identity()
    dim = feature_width_dim(teacher_shape)
    other = [d for i, d in enumerate(teacher_shape) if i != dim]
    if len(student_shape) != len(teacher_shape) or other != [
        d for i, d in enumerate(student_shape) if i != dim
    ]:
        raise ConfigError(
            f"{key}: features {pair} have shapes {list(student_shape)} (student) and "
            f"{list(teacher_shape)} (teacher), which differ beyond their width; pair modules "
            "whose outputs differ only in channels or hidden size"
        )
    narrow, wide = student_shape[dim], teacher_shape[dim]
    if len(teacher_shape) == 4:
        return torch.nn.Conv2d(narrow, wide, kernel_size=1, bias=False)
    return torch.nn.Linear(narrow, wide, bias=False)


def feature_shapes(model, names: list[str], batch: list, whose: str, key: str) -> list[tuple]:
    """The output shape of each named module on `batch`; ConfigError when one is never called."""
    import torch

    with tapped(model, names) as outputs, torch.no_grad():
        model(*batch)
    silent = [n for n in names if n not in outputs]
    if silent:
        raise ConfigError(
            f"{key}: the {whose}'s module {silent[0]!r} is not called in its forward pass, so it "
            "has no output to match; name a module that runs (a layer, not a container)"
        )
    return [tuple(outputs[n].shape) for n in names]


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * CE(labels)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(
        F.log_softmax(_classes_last(student_logits) / t, dim=-1),
        F.log_softmax(_classes_last(teacher_logits) / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if labels is None or alpha == 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def feature_loss(student_feature, teacher_feature):
    """MSE relative to the teacher feature's mean square: 1 for a student that outputs zeros,
    whatever the feature's scale, so one `feature_weight` fits any pair of modules."""
    import torch.nn.functional as F

    scale = teacher_feature.pow(2).mean().clamp(min=1e-12)
    return F.mse_loss(student_feature, teacher_feature) / scale


def _classes_last(logits):
    """[N, C] as it is; [N, C, ...] as [N * ..., C] (classes on axis 1, as cross-entropy has it)."""
    return logits if logits.dim() == 2 else logits.movedim(1, -1).reshape(-1, logits.shape[1])


def example_batch(dataset, count: int = 2) -> list:
    """The first samples of a dataset as tensors."""
    import torch

    return [torch.from_numpy(a) for a in dataset.take(count)]


def output_shape(model, batch: list) -> tuple:
    """The shape of a torch callable's first output on `batch`."""
    from compress.torch.export import torch_outputs

    return tuple(torch_outputs(model, [t.numpy() for t in batch])[0].shape)
