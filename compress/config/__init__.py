"""The YAML config: pydantic models (unknown keys rejected) and a loader whose errors name the
key and the line, e.g. `passes[0].per_channel: Input should be a valid boolean (line 12)`.

The config knows no pass: each entry of `passes` is validated by the `Params` of the pass its
`type` names, looked up in a catalogue the caller hands in (compress.passes.recipe gives the
registry's), so the schema sits below the passes that extend it. `PassParams` is the base of
every pass's Params."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from compress.config.limits import MAX_BATCH_BYTES, MAX_BATCH_SIZE, MAX_IMAGE_SIDE, MAX_THREADS
from compress.config.overrides import (
    Loc,
    Override,
    apply_overrides,
    dotted_key,
    parse_override,
    source_of,
)
from compress.config.yaml_input import load_yaml, read_config_text
from compress.errors import ConfigError


class Strict(BaseModel):
    # NaN and infinity are never meant in a config (`.nan` or `1e+400` in YAML), and comparisons
    # with them pass every bound silently.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PassParams(Strict):
    """Parameters of a pass; unknown keys are rejected (the base of every pass's Params)."""


# What a config's `passes` are checked against: a pass type's (canonical name, Params class);
# KeyError, with a suggestion, for a type there is no pass of.
PassCatalogue = Callable[[str], tuple[str, type[PassParams]]]


class InputSpec(Strict):
    name: str
    shape: list[int | str] = Field(min_length=1, max_length=8)
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] = "float32"

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: list[int | str]) -> list[int | str]:
        if any(isinstance(d, int) and d < 1 for d in shape):
            raise ValueError(f"{shape}: a fixed dimension is at least 1 (name a dynamic one)")
        return shape

    @property
    def sample_bytes(self) -> int:
        """One sample's bytes (named dims count as 1, as in the samples made from the spec)."""
        size = np.dtype(self.dtype).itemsize
        for dim in self.shape[1:]:
            size *= dim if isinstance(dim, int) else 1
        return size

    @model_validator(mode="after")
    def _sample_fits(self) -> InputSpec:
        if self.sample_bytes > MAX_BATCH_BYTES:
            raise ValueError(
                f"one sample of shape {self.shape} is {self.sample_bytes / 1e9:.1f} GB, over the "
                f"limit of {MAX_BATCH_BYTES / 1e9:.1f} GB; check the shape"
            )
        return self


# What a model folder is built for (the head and the outputs exported); compress.models.hf_tasks
# says how each is built. Optimum's task names, and sentence-transformers' pooled embedding.
TASKS = (
    "text-classification",
    "token-classification",
    "image-classification",
    "question-answering",
    "text-generation",
    "fill-mask",
    "feature-extraction",
    "sentence-embedding",
)


class ModelSection(Strict):
    arch: str | None = None  # "path/to/file.py:Factory" or "package.module:Factory"
    arch_args: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputSpec] | None = None
    task: Literal[TASKS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="a model folder: the head built and the outputs exported (default: "
        "inferred from config.json's architectures, as Optimum's task=auto does)",
    )
    tokenizer: Path | None = Field(
        default=None,
        description="the tokenizer text data is tokenized with: a folder (save_pretrained) or "
        "a tokenizer.json, relative to this file (default: the model folder's own)",
    )


class ImageSpec(Strict):
    """How a folder of images becomes an input tensor [N, channels, height, width]."""

    size: tuple[
        Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)],
        Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)],
    ] = Field(description="[height, width] every image is resized to")
    channels: Literal[1, 3] = Field(default=3, description="1: grayscale, 3: RGB")
    mean: list[float] = Field(
        default=[0.0], min_length=1, description="subtracted per channel from pixels scaled to 0..1"
    )
    std: list[float] = Field(default=[1.0], min_length=1, description="then divided per channel")

    @model_validator(mode="after")
    def _per_channel(self) -> ImageSpec:
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, self.channels):
                raise ValueError(f"{key} needs 1 or {self.channels} values (one per channel)")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class Augment(Strict):
    """Light, label-preserving changes to train images, drawn anew for every batch."""

    hflip: bool = Field(default=False, description="flip left-right with probability 0.5")
    vflip: bool = Field(default=False, description="flip upside down with probability 0.5")
    crop_padding: int = Field(
        default=0, ge=0, description="pad by this many pixels, then crop the original size"
    )


TEXT_SUFFIXES = (".txt", ".jsonl")


class DataSource(Strict):
    path: Path
    format: Literal["npz", "csv", "images", "text"] | None = Field(
        default=None,
        description="default: a folder is images, *.txt and *.jsonl are text, *.csv is csv "
        "(text when `text` names a column), else npz",
    )
    inputs: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the arrays in the model's input order (npz keys; csv and images: the one "
        "input's name; text: the tokenizer's arrays to feed, default all it makes)",
    )
    labels: str | None = None
    text: str | None = Field(
        default=None, description="jsonl / csv: the field holding the text (jsonl default: text)"
    )
    text_pair: str | None = Field(
        default=None, description="jsonl / csv: the field holding each example's second text"
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="text: tokens per example (default: a sentence-transformers folder's "
        "max_seq_length, else the most the model takes)",
    )
    padding: Literal["longest", "max_length"] | None = Field(
        default=None,
        description="text: pad every example to the longest one (default) or to max_length",
    )
    truncation: bool | None = Field(
        default=None, description="text: cut examples longer than max_length (default true)"
    )
    stride: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="text for a decoder, read as one running text cut into windows of "
        "max_length tokens: tokens between the starts of two windows (default: max_length / 2 "
        "for data.eval, each token scored once with the overlap as its context; else max_length)",
    )
    columns: list[str] | None = Field(
        default=None, min_length=1, description="csv: feature columns (default: all but labels)"
    )
    image: ImageSpec | None = None
    classes: list[str] | None = Field(
        default=None, min_length=1, description="label order for class names (default: sorted)"
    )
    augment: Augment | None = None
    limit: int | None = Field(default=None, gt=0)

    @property
    def kind(self) -> str:
        if self.format:
            return self.format
        suffix = self.path.suffix.lower()
        if suffix in TEXT_SUFFIXES or (suffix == ".csv" and self.text is not None):
            return "text"
        if suffix == ".csv":
            return "csv"
        return "npz" if suffix else "images"

    @property
    def input_names(self) -> list[str]:
        """The arrays named in `inputs` (a text source that leaves them to its tokenizer: none)."""
        return list(self.inputs or [])

    @property
    def has_labels(self) -> bool:
        """Labels named in the config, or the class folders of images."""
        return bool(self.labels) or self.kind == "images"

    @model_validator(mode="after")
    def _fits_format(self) -> DataSource:
        kind = self.kind
        if kind != "text" and self.inputs is None:
            raise ValueError("inputs: name the model's inputs the data feeds, in order")
        if kind not in ("npz", "text") and len(self.inputs or ()) != 1:
            raise ValueError(f"{kind} data feeds one model input: give inputs one name")
        self._fits_text(kind)
        if kind == "images" and self.image is None:
            guessed = "" if self.format else " (it has no .npz or .csv suffix and no format)"
            raise ValueError(
                f"{self.path} is read as a folder of images{guessed}, which needs `image: "
                "{size: [height, width], channels: 1 or 3}`; for a data file give format: npz "
                "or csv"
            )
        if kind == "images" and self.labels:
            raise ValueError("images are labelled by their class folder; remove labels")
        for key, allowed in (("image", "images"), ("columns", "csv")):
            if getattr(self, key) is not None and kind != allowed:
                raise ValueError(f"{key} is for {allowed} data, but this source is {kind}")
        if self.classes is not None and kind == "npz":
            raise ValueError("classes names csv labels or image folders; npz labels are numbers")
        return self

    def _fits_text(self, kind: str) -> None:
        """Text settings only on text; a .txt holds one example per line and nothing else."""
        if kind != "text":
            for key in ("text", "text_pair", "max_length", "padding", "truncation", "stride"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for text data (.txt, .jsonl, or a .csv with text)")
            return
        if self.path.suffix.lower() == ".txt":
            for key in ("text", "text_pair", "labels"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key}: a .txt file holds one example per line and nothing else; use a "
                        ".jsonl or .csv file for fields"
                    )
        elif self.text is None and self.path.suffix.lower() != ".jsonl":
            raise ValueError("text: name the field that holds the text")
        if self.padding == "max_length" and self.max_length is None:
            raise ValueError("padding: max_length needs max_length")


class DataSection(Strict):
    calibration: DataSource | None = None
    eval: DataSource | None = None
    train: DataSource | None = None
    validation: DataSource | None = Field(
        default=None,
        description="held-out data that training passes pick their best epoch on "
        "(default: data.eval, which the report then scores with a selection bias)",
    )

    @field_validator("calibration", "eval", "validation")
    @classmethod
    def _augment_train_only(cls, source: DataSource | None) -> DataSource | None:
        if source is not None and source.augment is not None:
            raise ValueError("only data.train is augmented; remove augment")
        return source


class ExportSection(Strict):
    opset: int = Field(default=18, ge=18, le=23)
    dynamic_batch: bool = True
    parity_atol: float = Field(default=1e-4, gt=0)


PROMPT_TOKENS, NEW_TOKENS = 128, 64  # report.generation's defaults


class GenerationSection(Strict):
    """A decoder's generation, timed: a prefill over the prompt, then one token at a time."""

    prompt_tokens: int = Field(
        default=PROMPT_TOKENS, ge=1, le=1_000_000, description="tokens prefilled"
    )
    new_tokens: int = Field(
        default=NEW_TOKENS,
        ge=2,
        le=100_000,
        description="tokens generated, greedily, over the cache",
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]] = Field(
        default=[1], min_length=1, description="prompts generated for at once"
    )
    min_rounds: int = Field(
        default=5,
        ge=2,
        le=10_000,
        description="generations per stage, interleaved; more until decode steps settle within "
        "stable_within or max_seconds (per batch size) have passed",
    )
    peak_memory: bool = Field(
        default=True,
        description="measure each stage's peak memory (RSS) in a process of its own",
    )

    @classmethod
    def within(cls, positions: int | None) -> GenerationSection:
        """The defaults, fitted to a model of `positions` (None: unknown): at most a quarter of
        them generated (at least 2), the prompt the rest, so the sequence reads no position the
        model lacks."""
        new = NEW_TOKENS if positions is None else max(2, min(NEW_TOKENS, positions // 4))
        prompt = PROMPT_TOKENS if positions is None else max(1, min(PROMPT_TOKENS, positions - new))
        return cls(prompt_tokens=prompt, new_tokens=new)


class ReportSection(Strict):
    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]] = Field(
        default=[32, 1], min_length=1
    )
    threads: int = Field(default=1, ge=1, le=MAX_THREADS)
    # Run the timing on `threads` fixed cores (CPU affinity, where the OS allows): steadier
    # figures on a machine whose scheduler moves threads between cores.
    pin_threads: bool = False
    metric: Literal["top1", "agreement", "cosine", "perplexity", "token_agreement"] = Field(
        default="top1",
        description="what data.eval judges: top1 (needs labels), agreement (top-1 agreement "
        "with the baseline), cosine (to the baseline's outputs); a decoder: perplexity of the "
        "text (lower is better: a budget is its relative increase, 0.03 = 3% higher) or "
        "token_agreement (greedy next-token agreement with the baseline)",
    )
    # The model output the metric judges, by name (`logits`) or index; the first when unset.
    output: Annotated[int, Field(ge=0)] | str | None = None
    warmup_runs: int = Field(default=10, ge=0, le=100_000)
    min_runs: int = Field(default=100, ge=5, le=1_000_000)
    min_seconds: float = Field(default=0.5, ge=0, le=3600)
    # Past the minimum, rounds go on until each p50 is known within +-stable_within, or until
    # max_seconds (per batch size, all stages together) have passed.
    stable_within: float = Field(default=0.01, gt=0, lt=1)
    max_seconds: float = Field(default=5.0, ge=0, le=3600)
    generation: GenerationSection | None = Field(
        default=None,
        description="a decoder: time greedy generation over its key/value cache (prefill ms, "
        "decode ms per token, tokens per second, peak memory per stage)",
    )


class GatesSection(Strict):
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    min_speedup: float | None = Field(default=None, gt=0)
    min_size_ratio: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    min_tokens_per_second: float | None = Field(
        default=None,
        gt=0,
        description="the final stage's decode tokens per second at report.generation's first "
        "batch size",
    )
    min_decode_speedup: float | None = Field(
        default=None,
        gt=0,
        description="the final stage's decode speedup over the baseline (report.generation)",
    )


class PassSpec(Strict):
    type: str
    params: PassParams


class Config(Strict):
    version: Literal[1]
    # Seeds Python's, numpy's and torch's generators when a run starts (a pass's own `seed`
    # still wins for that pass); written in the report's environment.
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # numpy's generators take 32 bits
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    passes: list[dict[str, Any]] = Field(default_factory=list)
    export: ExportSection = Field(default_factory=ExportSection)
    report: ReportSection = Field(default_factory=ReportSection)
    gates: GatesSection = Field(default_factory=GatesSection)

    @model_validator(mode="after")
    def _generation_gates(self) -> Config:
        for key in ("min_tokens_per_second", "min_decode_speedup"):
            if getattr(self.gates, key) is not None and self.report.generation is None:
                raise ValueError(
                    f"gates.{key} reads the generation timing; add report.generation (e.g. "
                    "{prompt_tokens: 128, new_tokens: 64})"
                )
        return self


class LoadedConfig:
    """A validated config plus where it came from (paths in it are relative to its file);
    `overrides` are the `--set KEY=VALUE` texts applied on top of the file."""

    def __init__(
        self,
        config: Config,
        passes: list[PassSpec],
        path: Path,
        text: str,
        overrides: tuple[str, ...] = (),
    ):
        self.config = config
        self.passes = passes
        self.path = path
        self.text = text
        self.overrides = overrides

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: Path | str) -> Path:
        return (self.base_dir / relative).resolve()


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:  # an unknown key: point at the key itself
                child = next((k for k, _ in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _locator(root: yaml.Node | None, overrides: list[Override]) -> Callable[[Loc], str]:
    """Where the value at a key came from, for messages: ` (from --set K=V)` or ` (line N)`."""

    def locate(loc: Loc) -> str:
        override = source_of(loc, overrides)
        if override is not None:
            return f" (from {override.named})"
        line = _line_of(root, loc)
        return f" (line {line})" if line else ""

    return locate


def _format_errors(
    err: ValidationError, locate: Callable[[Loc], str], prefix: Loc = ()
) -> list[str]:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(p for p in e["loc"] if not str(p).startswith("function-"))
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif e["type"] == "value_error":  # our validators' own words, without pydantic's prefix
            msg = str(e["ctx"]["error"])
        else:
            msg = e["msg"]
        lines.append(f"{dotted_key(loc) or '(top level)'}: {msg}{locate(loc)}")
    return lines


def _validate_passes(
    raw: list[dict[str, Any]], locate: Callable[[Loc], str], catalogue: PassCatalogue
) -> list[PassSpec]:
    specs, problems = [], []
    for i, entry in enumerate(raw):
        where = ("passes", i)
        if "type" not in entry:
            problems.append(f"passes[{i}]: missing `type`{locate(where)}")
            continue
        params = {k: v for k, v in entry.items() if k != "type"}
        try:
            name, params_type = catalogue(str(entry["type"]))
            specs.append(PassSpec(type=name, params=params_type.model_validate(params)))
        except KeyError as e:
            problems.append(f"passes[{i}].type: {e.args[0]}{locate((*where, 'type'))}")
        except ValidationError as e:
            problems.extend(_format_errors(e, locate, where))
    if problems:
        raise ConfigError("; ".join(problems))
    return specs


def load_config(
    path: Path | str, catalogue: PassCatalogue, overrides: Sequence[str | Override] = ()
) -> LoadedConfig:
    """Read and validate a YAML config as a whole, with `--set KEY=VALUE` `overrides` applied
    first and its passes checked against `catalogue`; ConfigError names every problem found."""
    path = Path(path)
    return parse_config(read_config_text(path), path, catalogue, overrides)


def parse_config(
    text: str, path: Path, catalogue: PassCatalogue, overrides: Sequence[str | Override] = ()
) -> LoadedConfig:
    """Validate config `text` as if read from `path` (its folder anchors relative paths)."""
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    root, raw = load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping with `version: 1` at the top")
    apply_overrides(raw, parsed)
    locate = _locator(root, parsed)
    problems: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        problems += _format_errors(e, locate)
    raw_passes = raw.get("passes")
    passes: list[PassSpec] = []
    if isinstance(raw_passes, list) and all(isinstance(p, dict) for p in raw_passes):
        try:
            passes = _validate_passes(raw_passes, locate, catalogue)
        except ConfigError as e:
            problems.append(str(e))
    if problems or config is None:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return LoadedConfig(config, passes, path.resolve(), text, tuple(o.text for o in parsed))
