"""Which head a model folder is built with, and which of its outputs compress exports: its task.

Inferred the way Optimum's `main_export(task="auto")` does, from transformers' own tables: the
class that config.json's `architectures` names is looked up in the model table of each task's
Auto class (the classes AutoModelForSequenceClassification builds, AutoModelForCausalLM's, ...),
never in a table of architectures kept here, so a model transformers knows needs nothing new in
compress. A sentence-transformers folder is a sentence embedder. `model.task` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compress.config import TASKS as TASK_NAMES
from compress.errors import ModelLoadError

Role = Literal["encoder", "classifier", "decoder"]


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # the transformers Auto class that builds the model
    table: str  # transformers' table of the classes that Auto class builds
    outputs: tuple[str, ...]  # the fields of the model's output that are exported
    role: Role  # what `compress init` proposes for it

    @property
    def pooled(self) -> bool:
        return self.name == "sentence-embedding"


_BASE = ("AutoModel", "MODEL_MAPPING_NAMES")
# In the order a class is looked up: a head's table before the base models' table.
TASKS = (
    Task("text-classification", "AutoModelForSequenceClassification",
         "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", ("logits",), "classifier"),
    Task("token-classification", "AutoModelForTokenClassification",
         "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", ("logits",), "classifier"),
    Task("image-classification", "AutoModelForImageClassification",
         "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", ("logits",), "classifier"),
    Task("question-answering", "AutoModelForQuestionAnswering",
         "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", ("start_logits", "end_logits"), "encoder"),
    Task("text-generation", "AutoModelForCausalLM",
         "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", ("logits",), "decoder"),
    Task("fill-mask", "AutoModelForMaskedLM",
         "MODEL_FOR_MASKED_LM_MAPPING_NAMES", ("logits",), "encoder"),
    Task("feature-extraction", *_BASE, ("last_hidden_state",), "encoder"),
    Task("sentence-embedding", *_BASE, ("sentence_embedding",), "encoder"),
)  # fmt: skip
BY_NAME = {task.name: task for task in TASKS}
assert set(BY_NAME) == set(TASK_NAMES), "compress.config.TASKS and these tasks must agree"


def task_named(name: str) -> Task:
    return BY_NAME[name]


def infer_task(
    architectures: list[str],
    sentence_folder: bool,
    where: str,
    auto_map: dict[str, Any] | None = None,
) -> Task:
    """The task of a folder whose config.json names `architectures` (`where` names it); with
    remote code (trusted), the Auto class its `auto_map` builds that class with."""
    if sentence_folder:
        return BY_NAME["sentence-embedding"]
    if not architectures:  # an old save without `architectures`: the base model
        return BY_NAME["feature-extraction"]
    from transformers.models.auto import modeling_auto

    architecture = architectures[0]
    for auto_class, target in (auto_map or {}).items():
        if isinstance(target, str) and target.rsplit(".", 1)[-1] == architecture:
            found = next((t for t in TASKS if t.auto_class == auto_class), None)
            if found is not None:
                return found
    for task in TASKS:
        if task.pooled:
            continue
        classes = getattr(modeling_auto, task.table, {}).values()
        if any(architecture == c or architecture in c for c in classes if c):
            return task
    import transformers

    if hasattr(transformers, architecture):
        raise ModelLoadError(
            f"{where}: cannot tell which task {architecture} is for; set model.task to one of "
            f"{', '.join(TASK_NAMES)}"
        )
    raise ModelLoadError(
        f"{where}: architecture {architecture} is not one transformers {transformers.__version__} "
        "knows; upgrade transformers, or pass --trust-remote-code if the folder brings its own "
        "code (auto_map) and you trust it"
    )
