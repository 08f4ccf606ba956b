"""Text data tokenized with the model's own tokenizer, once the model is known.

`check_config` reads and checks text with the config (that is what `compress validate` can do
without a model); a run then tokenizes it here, before anything else uses the data, with
`model.tokenizer` when the config names one, else the tokenizer of the model folder being
compressed. A model file (.pt2, TorchScript, ONNX) holds no tokenizer: its text data needs
`model.tokenizer`, and its absence is one line saying so.

A decoder's text is one running text in strided windows (compress.data.text_windows): for a
text-generation folder (or `model.task: text-generation`), and for a model file judged by a
token metric (perplexity, token_agreement), which only such windows can be judged by.
"""

from __future__ import annotations

from pathlib import Path

from compress.config import LoadedConfig
from compress.data import Dataset
from compress.data.text import tokenized
from compress.errors import DataError
from compress.job.context import check_batch_bytes, fit_input_specs
from compress.models import check_model_path
from compress.models.hf_folder import is_model_folder

Checked = tuple[LoadedConfig, list, dict[str, Dataset]]


def with_tokens(checked: Checked, model_path: Path | None, trust_remote_code: bool) -> Checked:
    """The checked config, passes and datasets, its text datasets tokenized; `model_path` is the
    model being compressed (None: `compress bench`, which measures an ONNX file)."""
    from compress.models.hf_tokenizer import load_tokenizer

    config, passes, datasets = checked
    text = [role for role, dataset in datasets.items() if dataset.untokenized]
    decoder = bool(text) and reads_running_text(config, model_path, trust_remote_code)
    _check_token_metric(config, datasets.get("eval"), decoder)
    if not text:
        return checked
    source, named = tokenizer_source(config, model_path, f"data.{text[0]}")
    tokenizer = load_tokenizer(source, trust_remote_code, named)
    tokens = dict(datasets)
    for role in text:
        data_source = getattr(config.config.data, role)
        tokens[role] = tokenized(datasets[role], data_source, tokenizer, named, decoder)
        fit_input_specs(tokens[role], config, role)
    check_batch_bytes(config, tokens)
    return config, passes, tokens


def reads_running_text(config: LoadedConfig, model_path: Path | None, trust: bool) -> bool:
    """Whether text data is a decoder's running text (see the module docstring)."""
    from compress.measure.perplexity import TOKEN_METRICS

    task = config.config.model.task
    if task is not None:
        return task == "text-generation"
    if model_path is not None and is_model_folder(Path(model_path)):
        from compress.models.hf_folder import read_layout
        from compress.models.hf_tasks import infer_task

        layout = read_layout(Path(model_path), trust)
        auto_map = layout.config.get("auto_map") if trust else None
        architectures = layout.config.get("architectures") or []
        where = f"{layout.root.name}/config.json"
        found = infer_task(list(architectures), layout.sentence is not None, where, auto_map)
        return found.role == "decoder"
    return config.config.report.metric in TOKEN_METRICS


def _check_token_metric(config: LoadedConfig, eval_data: Dataset | None, decoder: bool) -> None:
    """perplexity and token_agreement judge a decoder's windows of running text, only."""
    from compress.measure.perplexity import TOKEN_METRICS

    metric = config.config.report.metric
    if metric not in TOKEN_METRICS or eval_data is None or (eval_data.untokenized and decoder):
        return
    what = "is not text" if not eval_data.untokenized else "is text for a model that is no decoder"
    raise DataError(
        f"report.metric: {metric} judges a decoder on running text, but data.eval {what}; give "
        "data.eval a text file and a text-generation model, or use top1, agreement or cosine"
    )


def tokenizer_source(config: LoadedConfig, model_path: Path | None, key: str) -> tuple[Path, str]:
    """(the tokenizer's folder, how the report names it): model.tokenizer, else the model
    folder; DataError saying what to set when there is neither."""
    if config.config.model.tokenizer is not None:
        return config.resolve(config.config.model.tokenizer), "model.tokenizer"
    if model_path is not None and is_model_folder(Path(model_path)):
        return Path(model_path), Path(model_path).name
    if model_path is not None:
        check_model_path(Path(model_path))  # a folder that is no model, a FIFO: said as such
    what = f"{Path(model_path).name} is a model file" if model_path else "bench measures ONNX"
    raise DataError(
        f"{key} is text, tokenized with the model's tokenizer, but {what}, which holds no "
        "tokenizer; set model.tokenizer: PATH (the folder save_pretrained wrote it to)"
    )
