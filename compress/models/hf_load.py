"""Build a model folder's model with transformers, from the folder alone.

After compress.models.hf_folder has checked the files: the config is read with AutoConfig, the
task decided (compress.models.hf_tasks), and the task's Auto class builds the model from the
folder with `local_files_only` (nothing is downloaded), in float32, without the folder's own code
unless the user trusts it. transformers' loading report (weights missing from the folder, weights
it has that the model does not, weights of the wrong shape) becomes one error line: a model that
silently ran with random weights in place of missing ones would compress garbage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from compress.config import ModelSection
from compress.errors import ModelLoadError, first_line
from compress.models.hf_folder import FolderLayout, folder_hashes
from compress.models.hf_provenance import ModelFolder
from compress.models.hf_tasks import Task, infer_task, task_named
from compress.models.safetensors_file import INSTALL_HF


def transformers_module(what: str):
    """transformers, or one line saying how to install it (it is an optional extra)."""
    try:
        import transformers
    except ImportError:
        raise ModelLoadError(
            f"{what}: a model folder is loaded with transformers, which is not installed: "
            f"{INSTALL_HF}"
        ) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars and log lines off while it works (compress logs its own
    progress); as they were afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_folder(
    layout: FolderLayout, section: ModelSection, input_names: list[str] | None, trust: bool
):
    """(the FolderModule, what the report records of the folder); `input_names`: the arrays the
    data feeds, in order (default: the tokenizer's, else the model's main input and mask)."""
    import torch

    from compress.models.hf_module import FolderModule, accepted_inputs
    from compress.models.sentence_pooling import SentencePooling

    where = layout.root.name
    transformers = transformers_module(str(layout.root))
    with quiet_transformers():
        config = _config(transformers, layout, trust)
        task, task_from = _task(config, layout, section, trust)
        auto = getattr(transformers, task.auto_class)
        try:
            model, info = auto.from_pretrained(
                str(layout.model_dir), config=config, local_files_only=True,
                trust_remote_code=trust, dtype=torch.float32, output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported by name in the loading info, below
            )  # fmt: skip
        except Exception as e:
            raise ModelLoadError(_load_failure(e, layout, task)) from None
    _check_loading(info, where, overridden=section.task is not None)
    model.eval()
    names = input_names or _default_inputs(layout, model, trust)
    takes = accepted_inputs(model)
    unknown = [n for n in names if n not in takes]
    if unknown:
        raise ModelLoadError(
            f"{where}: {type(model).__name__} takes no input {unknown[0]!r} (the data's inputs "
            f"are {', '.join(names)}; it takes {', '.join(t for t in takes if t != 'kwargs')})"
        )
    sentence = layout.sentence if task.pooled else None
    pooling = SentencePooling(sentence.modes, sentence.normalize) if sentence else None
    module: FolderModule
    if task.name == "text-generation":  # exported with its key/value cache
        from compress.models.decoder import decoder_module

        module = decoder_module(model, names, where)
    else:
        module = FolderModule(model, names, task.outputs, pooling).eval()
    digest, files = folder_hashes(layout)
    record = ModelFolder(
        files=files,
        name_or_path=layout.config.get("_name_or_path") or None,
        architectures=list(config.architectures or []),
        model_type=getattr(config, "model_type", None),
        task=task.name,
        task_from=task_from,
        outputs=list(task.outputs),
        pooling=sentence.describe() if sentence else None,
        transformers_version=transformers.__version__,
        remote_code=layout.remote_code or None,
    )
    return module, record, digest


def _config(transformers, layout: FolderLayout, trust: bool):
    try:
        return transformers.AutoConfig.from_pretrained(
            str(layout.model_dir), local_files_only=True, trust_remote_code=trust
        )
    except Exception as e:
        model_type = layout.config.get("model_type")
        if isinstance(model_type, str) and model_type not in _known_types(transformers):
            raise ModelLoadError(
                f"{layout.root.name}/config.json: model_type {model_type!r} is not one "
                f"transformers {transformers.__version__} knows; upgrade transformers, or pass "
                "--trust-remote-code if the folder brings its own code and you trust it"
            ) from None
        raise ModelLoadError(
            f"{layout.root.name}/config.json: transformers cannot read it ({first_line(e, 200)})"
        ) from None


def _known_types(transformers) -> set[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return set(CONFIG_MAPPING_NAMES)


def _task(config, layout: FolderLayout, section: ModelSection, trust: bool) -> tuple[Task, str]:
    if section.task:
        task = task_named(section.task)
        if task.pooled and layout.sentence is None:
            raise ModelLoadError(
                f"model.task: sentence-embedding needs a sentence-transformers folder "
                f"(modules.json and 1_Pooling/config.json), which {layout.root.name} is not; "
                "use feature-extraction"
            )
        return task, "model.task"
    auto_map = getattr(config, "auto_map", None) if trust else None
    where = f"{layout.root.name}/config.json"
    found = infer_task(
        list(config.architectures or []), layout.sentence is not None, where, auto_map
    )
    return found, "modules.json" if found.pooled else "architectures"


def _load_failure(error: Exception, layout: FolderLayout, task: Task) -> str:
    text = " ".join(str(error).split())
    if "Unrecognized configuration class" in text:
        return (
            f"{layout.root.name}: transformers builds no {task.name} model for model_type "
            f"{layout.config.get('model_type')!r} ({task.auto_class}); set model.task to a "
            "task this architecture has"
        )
    return f"{layout.root.name}: transformers cannot load the model ({text[:300]})"


def _check_loading(info: dict, where: str, overridden: bool) -> None:
    """Weights the model needs that the folder lacks, of the wrong shape, or (for the folder's
    own task) that it has but the model does not use: one line naming the first few."""
    problems = []
    kinds = [("missing", "missing_keys"), ("of the wrong shape", "mismatched_keys")]
    if not overridden:  # another head than the folder's drops its weights, by the user's choice
        kinds.append(("unused", "unexpected_keys"))
    for label, key in kinds:
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    problems += [first_line(Exception(m), 200) for m in info.get("error_msgs") or ()]
    if problems:
        raise ModelLoadError(
            f"{where}: the weights do not fit config.json ({'; '.join(problems)}); the folder "
            "is incomplete or its config.json belongs to another model"
        )


def _default_inputs(layout: FolderLayout, model, trust: bool) -> list[str]:
    """The tokenizer's inputs that the model takes, else its main input and the mask."""
    from compress.models.hf_module import accepted_inputs

    takes = accepted_inputs(model)
    if layout.tokenizer:
        from compress.models.hf_tokenizer import load_tokenizer

        names = load_tokenizer(layout.root, trust, str(layout.root)).input_names
        return [n for n in names if n in takes]
    main = getattr(model, "main_input_name", "input_ids")
    return [main] + (
        ["attention_mask"] if main == "input_ids" and "attention_mask" in takes else []
    )
