"""Knowledge distillation on the torch model: the student (the current model, e.g. a pruned one,
or a smaller architecture declared in the YAML) learns to give the teacher's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from compress.config import PassParams
from compress.errors import ConfigError, PassError
from compress.passes.base import (
    PassDetails,
    PassInput,
    PassResult,
    SpeedGuardParams,
    TorchPass,
)
from compress.passes.registry import register
from compress.records import Record
from compress.torch.distillation import (
    Teacher,
    check_module_names,
    distillation_loss,
    example_batch,
    feature_loss,
    feature_shapes,
    hookable_copy,
    load_teacher,
    output_shape,
    projection,
    tapped,
    teacher_targets,
)
from compress.torch.export import TorchJudge, score_torch
from compress.torch.runnable import runnable
from compress.torch.training import TrainParams, TrainResult, first_output, train

if TYPE_CHECKING:
    from compress.measure.evaluate import Judge
    from compress.passes.context import PassContext


class TeacherModel(PassParams):
    path: Path = Field(description="a saved model, relative to the config (any loadable format)")
    arch: str | None = Field(default=None, description="its architecture, for a state_dict")
    arch_args: dict[str, Any] = Field(default_factory=dict)


class StudentModel(PassParams):
    arch: str = Field(description="'file.py:Factory' (relative to the config) or 'pkg.mod:Name'")
    arch_args: dict[str, Any] = Field(default_factory=dict)


class DistillSettings(PassParams):
    """What distillation learns from and how the loss weighs it (training settings follow)."""

    teacher: Path | TeacherModel | None = Field(
        default=None, description="default: the model as loaded, before any pass"
    )
    student: StudentModel | None = Field(
        default=None, description="default: the current model (e.g. the pruned one)"
    )
    temperature: float = Field(default=4.0, gt=0, description="T: softens both outputs")
    alpha: float = Field(
        default=0.9, ge=0, le=1, description="weight of the teacher's outputs vs the labels"
    )
    features: list[tuple[str, str]] = Field(
        default_factory=list,
        description="[teacher module, student module] pairs whose outputs are matched: MSE "
        "relative to the teacher's, through a learned projection where widths differ",
    )
    feature_weight: float = Field(default=1.0, ge=0, description="weight of feature matching")


class DistilledMetric(Record):
    """The student judged during training, against the teacher."""

    name: str
    on: str = Field(description="where it was judged: data.eval, or part of data.train")
    before: float
    after: float
    teacher: float
    recovered: float | None = Field(description="the share of the gap to the teacher closed")
    per_epoch: list[float]
    best_epoch: int


class DistillDetails(PassDetails):
    teacher: str | None = None
    student: str | None = None
    epochs_run: int | None = None
    stopped: str | None = None
    train_seconds: float | None = None
    losses: list[float] = []
    metric: DistilledMetric | None = None


@dataclass
class DistillPlan:
    """What distill's check_model prepared for apply: the loaded teacher, the declared student
    (None: the current model learns), and the judge of its epochs (None without held-out data)."""

    teacher: Teacher
    student: Any
    judge: Judge | None


# teacher, student, loss first
class DistillParams(SpeedGuardParams, TrainParams, DistillSettings):
    pass


@register("distill")
class Distill(TorchPass[DistillParams]):
    """Train the model (or a smaller declared student) on a teacher's outputs: wins back accuracy.

    Sample YAML:
        - type: distill
          epochs: 30
          temperature: 4
          alpha: 0.9
          patience: 8
    """

    fix_if_slower = (
        "declare a smaller or simpler student (student.arch), or set on_slower: revert to keep "
        "the input model"
    )

    Params = DistillParams

    Details = DistillDetails
    reads = ("report.metric", "report.output")  # the best epoch is picked by the report's metric

    @property
    def changes_input_model(self) -> bool:
        return self.params.student is None

    def check(self, config) -> None:
        data = config.config.data
        if data.train is None:
            raise ConfigError(
                f"{self.key} (distill): distillation trains on data.train; add data.train "
                "(labels optional: without them it learns from the teacher alone)"
            )
        if self.params.patience and data.validation is None and data.eval is None:
            raise ConfigError(
                f"{self.key}.patience: early stopping watches the eval metric; add "
                "data.validation (or data.eval), or remove patience"
            )
        held_out = data.validation or data.eval
        top1 = config.config.report.metric == "top1"
        if held_out is not None and top1 and not held_out.has_labels:
            role = "validation" if data.validation else "eval"
            raise ConfigError(
                f"data.{role}: scoring distillation's epochs with top1 needs labels; add "
                f"data.{role}.labels or set report.metric: agreement"
            )

    def check_model(self, model, ctx: PassContext) -> DistillPlan:
        """Load the teacher, build the student, and check they fit before any training."""
        import torch

        p, base_dir = self.params, ctx.base_dir
        teacher, declared = self._load_teacher(ctx), None
        if p.student is not None:
            from compress.models.arch import build_arch

            torch.manual_seed(p.seed)  # the student's initial weights follow the seed
            declared = build_arch(
                p.student.arch, p.student.arch_args, base_dir, f"{self.key}.student"
            ).eval()
        student = declared if declared is not None else model
        batch = example_batch(ctx.datasets["train"])
        want, got = tuple(teacher.logits(batch).shape), output_shape(student, batch)
        if want != got:
            raise ConfigError(
                f"{self.key}: the teacher's output {list(want)} does not match the student's "
                f"{list(got)} on the same batch; distill between models with the same outputs "
                "(same classes)"
            )
        if p.features:
            self._check_features(student, batch, teacher)
        return DistillPlan(teacher, declared, self._make_judge(ctx))

    def model_after(self, module, prepared: DistillPlan | None = None):
        declared = prepared.student if prepared is not None else None
        return declared if declared is not None else module

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        import torch

        plan: DistillPlan = given.prepared
        p, teacher, judge = self.params, plan.teacher, plan.judge
        student = plan.student if plan.student is not None else given.module
        labelled = ctx.datasets["train"].labels is not None
        alpha = p.alpha if labelled else 1.0
        before = score_torch(judge, student) if judge else None
        pairs = [tuple(pair) for pair in p.features]
        batch = example_batch(ctx.datasets["train"])
        torch.manual_seed(p.seed)
        projections = self._projections(student, batch, teacher)

        targets = teacher_targets(teacher, [t for t, _ in pairs], ctx.datasets["train"])
        with tapped(student, [s for _, s in pairs]) as student_out:

            def step_loss(inputs, labels, index):
                logits, teacher_out = targets(inputs, index)
                loss = distillation_loss(
                    first_output(student(*inputs)), logits, labels, p.temperature, alpha
                )
                for i, (t, s) in enumerate(pairs):
                    matched = projections[str(i)](student_out[s])
                    loss = loss + p.feature_weight * feature_loss(matched, teacher_out[t])
                return loss

            scorer = TorchJudge(judge) if judge else None
            result = train(student, step_loss, p, ctx, "distill", projections, scorer)
        student.eval()
        teacher_value = judge.score_outputs(teacher.outputs(judge.inputs)) if judge else None
        details = self._details(result, before, teacher_value, labelled, plan)
        return PassResult(student, details)

    def _load_teacher(self, ctx: PassContext) -> Teacher:
        spec = self.params.teacher
        if spec is None:
            return Teacher(hookable_copy(ctx.loaded_model), "the model as loaded")
        if isinstance(spec, Path):
            spec = TeacherModel(path=spec)
        return load_teacher(spec.path, spec.arch, spec.arch_args, ctx, f"{self.key}.teacher")

    def _check_features(self, student, batch: list, teacher: Teacher) -> None:
        import torch

        key = f"{self.key}.features"
        if teacher.is_onnx:
            raise ConfigError(
                f"{key}: an ONNX teacher has no modules to match; give the teacher as a torch "
                "model or remove features"
            )
        if isinstance(teacher.model, torch.jit.ScriptModule):
            raise ConfigError(
                f"{key}: a TorchScript teacher's modules cannot be hooked; give the teacher as a "
                ".pt2 or a state_dict with arch, or remove features"
            )
        teacher_names = [t for t, _ in self.params.features]
        student_names = [s for _, s in self.params.features]
        check_module_names(teacher.model, teacher_names, "teacher", key)
        check_module_names(student, student_names, "student", key)
        self._projections(student, batch, teacher)  # raises when shapes cannot be matched

    def _projections(self, student, batch: list, teacher: Teacher):
        """One learned projection per feature pair, from the student's width to the teacher's."""
        import torch

        pairs, key = self.params.features, f"{self.key}.features"
        if not pairs:
            return torch.nn.ModuleDict()
        teacher_shapes = feature_shapes(teacher.model, [t for t, _ in pairs], batch, "teacher", key)
        student_shapes = feature_shapes(student, [s for _, s in pairs], batch, "student", key)
        return torch.nn.ModuleDict(
            {
                str(i): projection(s_shape, t_shape, f"{pair[0]} / {pair[1]}", key)
                for i, (pair, s_shape, t_shape) in enumerate(
                    zip(pairs, student_shapes, teacher_shapes, strict=True)
                )
            }
        )

    def _make_judge(self, ctx: PassContext) -> Judge | None:
        """Scores the student every epoch on data.validation (else data.eval) with the report's
        metric; agreement and cosine compare with the model as loaded, as the report does."""
        from compress.measure.evaluate import Judge
        from compress.torch.export import torch_output

        held_out = ctx.validation
        if held_out is None:
            return None
        inputs, output = list(held_out.inputs.values()), ctx.judged_output
        loaded = ctx.loaded_model
        if loaded is None:  # a torch pass runs on the loaded model
            raise PassError(f"{self.key}: no loaded model to compare the student with")
        reference = torch_output(runnable(loaded), inputs, output, ctx.metric)
        return Judge(reference, held_out, ctx.metric, output)

    def _details(
        self, result: TrainResult, before, teacher_value, labelled, plan
    ) -> DistillDetails:
        p, judge = self.params, plan.judge
        student = f"{p.student.arch} {p.student.arch_args}" if p.student else "the current model"
        teacher = plan.teacher.described
        loss = (
            f"alpha {p.alpha:g}, T {p.temperature:g}"
            if labelled
            else f"teacher only (data.train has no labels), T {p.temperature:g}"
        )
        if p.features:
            loss += f", {len(p.features)} feature pair(s)"
        reason = (
            f"distilled {student} from {teacher} ({loss}): {result.epochs_run} epoch(s) in "
            f"{result.seconds:.1f} s, {result.stopped}"
        )
        details = DistillDetails(
            teacher=teacher,
            student=student,
            epochs_run=result.epochs_run,
            stopped=result.stopped,
            train_seconds=result.seconds,
            losses=[round(v, 6) for v in result.losses],
        )
        if judge is not None:
            best = result.best_epoch
            kept = best if result.restored and best is not None else len(result.metrics)
            after = result.metrics[kept - 1]
            gap = teacher_value - before
            recovered = round((after - before) / gap, 4) if gap > 0 else None
            where = judge.dataset.where
            if result.restored:
                reason += f", best epoch {result.best_epoch} kept"
            reason += (
                f"; {judge.metric} on {where} {before:.4f} -> {after:.4f} (teacher "
                f"{teacher_value:.4f}"
                + (f", {recovered:.0%} of the gap recovered)" if recovered is not None else ")")
            )
            if where == "data.eval":
                reason += "; epochs were picked on data.eval, which the report also scores"
            details.metric = DistilledMetric(
                name=judge.metric,
                on=where,
                before=before,
                after=after,
                teacher=teacher_value,
                recovered=recovered,
                per_epoch=result.metrics,
                best_epoch=result.best_epoch,
            )
        details.reason = reason
        return details
