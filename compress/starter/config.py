"""`compress init`: a commented starter config for a saved model, with what the model tells.

An ONNX graph or a torch.export program gives its inputs' names, shapes and dtypes: the starter
declares them in `model.inputs` and validates and runs as written (on ones shaped like the
inputs, so size and latency are real and the metric waits for data). TorchScript records names
but not shapes, and a state_dict neither: their starter points `data.eval` at a placeholder
file, so `compress validate` names what to fill in before anything can run. A model folder's
starter is compress.starter.folder's.
"""

from __future__ import annotations

from pathlib import Path

from compress.models import detect_format
from compress.starter.data import CALIBRATION_LIMIT, StarterData, flow, relative_to, starter_data
from compress.starter.facts import KINDS, ModelFacts, inspect_model

RUNNABLE = ("onnx", "exported_program", "torchscript", "hf_folder")  # starters that run as written
PLACEHOLDER_DATA = "eval.npz"
PLACEHOLDER_CALIBRATION = "calib.npz"


def starter_config(
    model_path: Path,
    data_path: Path | None = None,
    config_dir: Path = Path(),
    trust_remote_code: bool = False,
    tokenizer_path: Path | None = None,
) -> str:
    """The commented YAML for `model_path`; with `data_path`, its data sections use that data
    (paths written relative to `config_dir`, where the config will be). A model folder's own
    code runs only with `trust_remote_code`. `tokenizer_path`: the folder of a .pt2 decoder's
    tokenizer, which reads text given as data."""
    name = Path(model_path).name
    if Path(model_path).is_dir():
        from compress.starter.folder import folder_data, folder_facts, folder_starter

        _unused_tokenizer(tokenizer_path, "a model folder's own tokenizer is used; leave it out")
        found = folder_facts(Path(model_path), trust_remote_code)
        given = folder_data(found, Path(data_path), config_dir) if data_path else None
        return _text(name, "hf_folder", folder_starter(found, given))
    facts = inspect_model(Path(model_path))
    text_file = Path(data_path) if data_path and Path(data_path).suffix.lower() == ".txt" else None
    if not facts.decoder:
        why = f"{name} is not a language model with a cache"
        _unused_tokenizer(
            tokenizer_path, f"only a .pt2 language model takes one ({why}); leave it out"
        )
    elif text_file is None:
        _unused_tokenizer(tokenizer_path, "it reads text given to --data: add --data TEXT.txt")
    else:
        from compress.starter.decoder import program_decoder_text, program_text

        if tokenizer_path is None:
            raise program_text(text_file, name)
        text = program_decoder_text(
            text_file, config_dir, Path(tokenizer_path), facts.positions, trust_remote_code
        )
        tokenizer = relative_to(Path(tokenizer_path), config_dir)
        return _text(name, facts.format, _program_decoder_text(facts, text, tokenizer))
    data = None
    if data_path is not None:
        data = starter_data(Path(data_path), config_dir, facts.input_names, facts.inputs)
    if facts.decoder:
        return _text(name, facts.format, _program_decoder(facts, data))
    lines = [
        *_model_section(facts),
        *(_given_data(data) if data else _data_section(facts)),
        *_passes_section(facts),
        *_export_report_gates(facts, labelled=bool(data and data.labelled)),
    ]
    return _text(name, facts.format, lines)


def _program_decoder(facts: ModelFacts, data: StarterData | None) -> list[str]:
    """A .pt2 decoder's starter: as a folder's decoder (4-bit weights, generation timed within
    its positions), with no pass that changes the torch model (it is exported as saved)."""
    from compress.starter.decoder import decoder_passes, decoder_report, program_text_note

    return [
        *(["model: {}  # fed token ids and a mask, of any length"] if data else []),
        *(
            _given_data(data)
            if data
            else [*_model_section(facts), *program_text_note(facts.positions)]
        ),
        "passes:",
        *_makeup(facts),
        *decoder_passes(),
        *decoder_report(
            None,
            facts.positions,
            needs="model.tokenizer and text in data.eval",
            metric="agreement  # token ids have no labels: the float model's top-1 per token"
            if data
            else "",
        ),  # fmt: skip
    ]


def _program_decoder_text(facts: ModelFacts, text: StarterData, tokenizer: str) -> list[str]:
    """A .pt2 decoder's starter judged by perplexity on `text`, read with the tokenizer saved in
    the folder `tokenizer` (relative to the config)."""
    from compress.starter.decoder import decoder_passes, decoder_report, text_data

    return [
        "model:  # reads data.eval's text with this tokenizer (relative to this file)",
        f"  tokenizer: {flow(tokenizer)}",
        *text_data(text),
        "passes:",
        *_makeup(facts),
        *decoder_passes(),
        *decoder_report(text, facts.positions),
    ]


def _makeup(facts: ModelFacts) -> list[str]:
    return [f"  # read from the model: {facts.makeup.describe()}"] if facts.makeup else []


def _unused_tokenizer(tokenizer_path: Path | None, problem: str) -> None:
    """Refuse --tokenizer where nothing would read it, rather than drop it unsaid."""
    if tokenizer_path is not None:
        from compress.errors import InputError

        raise InputError(f"--tokenizer: {problem}")


def _text(name: str, fmt: str, lines: list[str]) -> str:
    """The starter: a header naming the model and the commands, then `lines`."""
    header = [
        f"# compress recipe for {name} ({KINDS[fmt]}), written by `compress init`.",
        f"# Check: compress validate THIS.yaml   Run: compress run {name} -c THIS.yaml -o out/",
        "# Every key: `compress schema` (JSON Schema for editors); pass parameters: `compress "
        "passes`.",
        "version: 1",
    ]
    return "\n".join(header + lines) + "\n"


def _model_section(facts: ModelFacts) -> list[str]:
    lines = ["model:"]
    if facts.format in ("state_dict", "safetensors"):
        lines += [
            "  # TODO: a state_dict holds weights only: name the code that builds the model",
            "  arch: arch.py:Model  # a file relative to this one, or package.module:Factory",
            "  arch_args: {}",
        ]
    if facts.format == "pickled_module":
        lines.append(
            "  # a whole pickled module: run with --trust-pickle (unpickling runs its code)"
        )
    if facts.inputs:
        lines.append(
            "  # read from the model (the first dim is the batch); used when no data is set"
        )
        lines.append("  inputs:")
        lines += [f"    - {flow(spec)}" for spec in facts.inputs]
    if lines == ["model:"]:
        return ["model: {}"]
    return lines


def _given_data(data: StarterData) -> list[str]:
    unlabelled = {k: v for k, v in data.source.items() if k != "labels"}
    calibration = unlabelled | {"limit": CALIBRATION_LIMIT}
    return [
        "data:  # from `compress init --data`; paths are relative to this file",
        f"  calibration: {flow(calibration)}",
        f"  eval: {flow(data.source)}",
    ]


def _data_section(facts: ModelFacts) -> list[str]:
    names = flow(facts.input_names or ["x"])
    calibration = (
        f"{{path: {PLACEHOLDER_CALIBRATION}, inputs: {names}, limit: {CALIBRATION_LIMIT}}}"
    )
    if facts.convolutional:
        lines = [
            f"# TODO: static int8 calibrates on real samples: put a few hundred in "
            f"{PLACEHOLDER_CALIBRATION}",
            f"# (keys {names}), or point at yours (an .npz, a .csv or an image folder);",
            "# `compress init MODEL --data PATH` writes these sections for you.",
            "data:",
            f"  calibration: {calibration}  # TODO: real samples",
        ]
        if not facts.inputs:
            lines.append(f"  eval: {{path: {PLACEHOLDER_DATA}, inputs: {names}}}  # TODO")
        return lines
    if facts.inputs:
        return [
            "# Real samples make the report complete: accuracy on data.eval, calibration for",
            "# static int8. .npz files whose keys are the inputs, relative to this file",
            "# (`compress init MODEL --data PATH` writes these sections for you):",
            "# data:",
            f"#   calibration: {calibration}",
            f"#   eval: {{path: eval.npz, inputs: {names}, labels: y}}",
        ]
    what = "shapes" if facts.input_names else "inputs"
    keys = "its keys" if not facts.input_names else f"keys {names}"
    return [
        f"# TODO: the model's {what} cannot be read from {KINDS[facts.format]}: put real samples",
        f"# in {PLACEHOLDER_DATA} ({keys}, in the order the model takes them), or point at yours.",
        "data:",
        f"  eval: {{path: {PLACEHOLDER_DATA}, inputs: {names}}}  # add labels: y for top1",
        f"  # calibration: {calibration}  # for quantize.static",
    ]


def _passes_section(facts: ModelFacts) -> list[str]:
    makeup = [f"  # read from the model: {facts.makeup.describe()}"] if facts.makeup else []
    if facts.convolutional:
        lines = [
            "passes:",
            *makeup,
            "  # a convolutional model: static int8 quantizes the convolutions (smaller and",
            "  # faster) and needs data.calibration. Without data:",
            "  # quantize.fp16 halves the size at float accuracy; quantize.dynamic would leave",
            "  # the convolutions in float (little gain on this model).",
            "  - type: quantize.static",
            "    per_channel: true",
        ]
    else:
        lines = [
            "passes:",
            *makeup,
            "  # int8 weights, activations quantized at run time: needs no data",
            "  - type: quantize.dynamic",
            "  # with data.calibration, static int8 (usually faster on convolutions):",
            "  # - type: quantize.static",
            "  #   per_channel: true",
        ]
    if facts.torch_stage:
        lines += [
            "  # structural pruning (a torch-stage pass: list it before the ONNX passes);",
            "  # with data.train it fine-tunes afterwards:",
            "  # - type: prune.channels",
            "  #   amount: 0.5",
        ]
    return lines


def _export_report_gates(facts: ModelFacts, labelled: bool) -> list[str]:
    batches = [facts.fixed_batch] if facts.fixed_batch else [32, 1]
    dynamic = "false" if facts.fixed_batch and facts.format == "exported_program" else "true"
    metric = (
        "top1  # the labels in data.eval"
        if labelled
        else ("agreement  # with top-1 labels in data.eval: top1")
    )
    return [
        f"export: {{opset: 18, dynamic_batch: {dynamic}}}",
        "report:",
        f"  batch_sizes: {flow(batches)}  # the first is the one speedup and gates use",
        "  threads: 1",
        f"  metric: {metric}",
        "gates:  # a gate that fails makes the run exit 3",
        f"  min_size_ratio: {_size_gate(facts)}  # int8 weights are 4x smaller; float parts stay",
        "  # max_accuracy_drop: 0.01  # needs data.eval; int8 then keeps the costliest nodes in",
        "  # float until the drop is within it",
    ]


def _size_gate(facts: ModelFacts) -> float:
    """A size ratio the proposed pass meets: static int8 quantizes every convolution and
    matrix product; dynamic int8 leaves Gemm (and convolutions) in float."""
    return 3 if facts.convolutional else 2


def check_starter_runs(
    model_path: Path, text: str, config_dir: Path, data_path: Path, trust_remote_code: bool = False
) -> None:
    """Load the starter and its data the way `compress run` would (the model runs on two
    samples), so data that does not fit the model is refused before the config is written.
    A state_dict's or pickled module's starter cannot run yet: there the data is only read."""
    import shutil
    import tempfile

    from compress.errors import InputError
    from compress.job.preflight import check_config, prepare

    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", prefix=".compress-init-", dir=config_dir, delete=False
    ) as handle:
        handle.write(text)
    try:
        if detect_format(Path(model_path)) in RUNNABLE:
            job = prepare(
                Path(model_path), Path(handle.name), False, lambda message: None,
                trust_remote_code=trust_remote_code,
            )  # fmt: skip
            shutil.rmtree(job.context.workdir, ignore_errors=True)
        else:  # its arch is still a TODO (or it needs --trust-pickle): the data is read only
            check_config(Path(handle.name), archs=False)
    except InputError as e:
        raise type(e)(f"--data {data_path}: {e}") from None
    finally:
        Path(handle.name).unlink(missing_ok=True)
