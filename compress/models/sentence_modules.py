"""A sentence-transformers folder's modules, read from its files (the pooling is computed in
torch by compress.models.sentence_pooling; this module imports no torch, so that a run planned
from the stage cache, which never loads the model, does not import it either).

sentence-transformers saves a model as a list of modules in `modules.json`: the transformer
(whose `path` is the folder itself, or `0_Transformer` in older saves), a Pooling module with
its settings in `<path>/config.json`, and often a Normalize module. The sentence embedding is
the pooled token embeddings, L2-normalized when Normalize is listed. compress reads those files
as their format documents (the embedding is computed by compress.models.sentence_pooling), so a
sentence embedder needs no sentence-transformers installed and runs no code named by the folder.
A module type it cannot compute (Dense, a custom one) is refused by name rather than left out
silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import ModelLoadError
from compress.models.regular_files import read_json

MAX_JSON_BYTES = 1 << 20
MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# the legacy boolean keys of 1_Pooling/config.json, in the order the modes are concatenated
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
KNOWN = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class SentenceModules:
    """What modules.json and the Pooling module's config say."""

    transformer_dir: Path  # the folder holding config.json and the weights
    modes: tuple[str, ...]  # pooling modes, concatenated in this order
    normalize: bool
    files: tuple[Path, ...]  # the files read here (for the report and the stage cache)
    max_seq_length: int | None = None  # sentence_bert_config.json's, the tokenizer's default

    def describe(self) -> str:
        return "+".join(self.modes) + " pooling" + (", normalized" if self.normalize else "")


def read_sentence_modules(root: Path) -> SentenceModules:
    """The modules of the sentence-transformers folder `root` (it holds modules.json)."""
    where = f"{root.name}/modules.json"
    modules = read_json(root / "modules.json", MAX_JSON_BYTES, where, list)
    types = {}
    for entry in modules:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ModelLoadError(f"{where}: every module needs a `type` string")
        kind = entry["type"].rsplit(".", 1)[-1]
        if not entry["type"].startswith("sentence_transformers.") or kind not in KNOWN:
            raise ModelLoadError(
                f"{where}: the module {entry['type']!r} is one compress does not compute (it "
                f"computes {', '.join(KNOWN)}); set model.task: feature-extraction to export "
                "the transformer's token embeddings instead"
            )
        if kind in types:
            raise ModelLoadError(f"{where}: lists {kind} twice")
        types[kind] = _inside(root, entry.get("path", ""), where)
    if "Transformer" not in types or "Pooling" not in types:
        raise ModelLoadError(f"{where}: needs a Transformer and a Pooling module")
    if list(types) != [k for k in KNOWN if k in types]:
        raise ModelLoadError(f"{where}: the modules must come in the order {', '.join(KNOWN)}")
    pooling_file = types["Pooling"] / "config.json"
    pooling = read_json(pooling_file, MAX_JSON_BYTES, f"{root.name}/{pooling_file.parent.name}")
    files = [root / "modules.json", pooling_file]
    length, length_file = _max_seq_length(root)
    files += [length_file] if length_file else []
    return SentenceModules(
        types["Transformer"], _modes(pooling, pooling_file), "Normalize" in types,
        tuple(files), length,
    )  # fmt: skip


def _inside(root: Path, relative, where: str) -> Path:
    """A module's folder: a plain relative path inside `root` (no `..`, not absolute)."""
    if not isinstance(relative, str) or relative.startswith(("/", "\\")) or ".." in relative:
        raise ModelLoadError(f"{where}: the module path {relative!r} leaves the folder")
    return root / relative if relative else root


def _modes(config: dict, path: Path) -> tuple[str, ...]:
    """Pooling modes from `pooling_mode` (a name or a list), else from the legacy flags."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(name for key, name in LEGACY_KEYS.items() if config.get(key) is True)
        modes = modes or ("mean",)  # what sentence-transformers does with no flag set
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else ()
    if not modes or any(m not in MODES for m in modes):
        raise ModelLoadError(f"{path}: pooling_mode {mode!r} is not one of {', '.join(MODES)}")
    return modes


def _max_seq_length(root: Path) -> tuple[int | None, Path | None]:
    path = root / "sentence_bert_config.json"
    if not path.is_file():
        return None, None
    value = read_json(path, MAX_JSON_BYTES, f"{root.name}/sentence_bert_config.json")
    length = value.get("max_seq_length")
    return (length if isinstance(length, int) and length > 0 else None), path
