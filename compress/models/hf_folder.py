"""A model folder as `save_pretrained` (or sentence-transformers) writes it: which files the load
reads, and the checks made on them before transformers sees any.

A folder is a model when it holds config.json (or a sentence-transformers modules.json). Before
transformers is called: config.json is a bounded regular file of JSON; the folder asks for no
code of its own (`auto_map` in config.json or tokenizer_config.json, a module type in
modules.json) unless the user passed --trust-remote-code; the weights are there - one
model.safetensors, a sharded safetensors index and every shard it names, or pytorch_model.bin
(which transformers reads with weights_only=True) - each a regular file inside the folder, and
every safetensors header passes compress.models.safetensors_file. transformers then reads these
files itself, by path (compress.models.hf_load).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import ModelLoadError
from compress.models.hf_provenance import FolderFile
from compress.models.regular_files import read_json, regular_size
from compress.models.safetensors_file import check_file
from compress.models.sentence_modules import SentenceModules, read_sentence_modules

MAX_JSON_BYTES = 16 << 20  # config.json with a large id2label, a shard index of 10,000s names
MAX_TOKENIZER_BYTES = 512 << 20  # tokenizer.json of a 256k vocabulary is ~35 MB
# The weights transformers looks for, in the order it looks (safetensors first).
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What AutoTokenizer reads, where present (vocabularies of the BPE, WordPiece and SentencePiece
# tokenizers transformers ships), and generation_config.json, which a decoder's load reads.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
OTHER_READ = ("generation_config.json",)
REMOTE_CODE_FLAG = "--trust-remote-code"


@dataclass(frozen=True)
class FolderLayout:
    root: Path  # the folder the user named
    model_dir: Path  # where config.json and the weights are (a sentence-transformers module's)
    config: dict[str, Any]  # config.json
    weights: tuple[Path, ...]
    tokenizer: tuple[Path, ...]  # the tokenizer files present (none: the folder has none)
    sentence: SentenceModules | None  # a sentence-transformers folder's modules
    files: tuple[Path, ...]  # every file the load reads, sorted

    @property
    def remote_code(self) -> bool:
        return "auto_map" in self.config

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def is_model_folder(path: Path) -> bool:
    """A folder holding config.json or modules.json: what `compress batch` takes as one model."""
    return path.is_dir() and any((path / n).exists() for n in ("config.json", "modules.json"))


def read_layout(root: Path, trust_remote_code: bool) -> FolderLayout:
    """The folder's files, checked (see the module docstring); ModelLoadError naming the
    problem and the fix."""
    sentence = read_sentence_modules(root) if (root / "modules.json").exists() else None
    model_dir = sentence.transformer_dir if sentence else root
    config_file = model_dir / "config.json"
    if not config_file.exists():
        raise ModelLoadError(_no_config(root))
    config = read_json(config_file, MAX_JSON_BYTES, f"{root.name}/config.json")
    weights = _weights(model_dir, root)
    tokenizer = tuple(p for n in TOKENIZER_FILES if (p := model_dir / n).exists())
    for path in tokenizer:
        regular_size(path, f"the tokenizer of {root.name}")
    tokenizer_config = model_dir / "tokenizer_config.json"
    remote = {config_file: config}
    if tokenizer_config.exists():
        remote[tokenizer_config] = read_json(tokenizer_config, MAX_JSON_BYTES, root.name)
    if not trust_remote_code:
        refuse_remote_code(remote, root)
    extra = tuple(p for n in OTHER_READ if (p := model_dir / n).is_file())
    files = {config_file, *weights, *tokenizer, *extra, *(sentence.files if sentence else ())}
    return FolderLayout(root, model_dir, config, weights, tokenizer, sentence, tuple(sorted(files)))


def _no_config(root: Path) -> str:
    if (root / "adapter_config.json").exists():
        return (
            f"{root} is an adapter (adapter_config.json), not a whole model: merge it into its "
            "base model (peft's merge_and_unload) and save that with save_pretrained"
        )
    return (
        f"{root} is a folder without config.json; a model folder is what save_pretrained "
        "writes (config.json and model.safetensors); give that folder, or a model file"
    )


def _weights(model_dir: Path, root: Path) -> tuple[Path, ...]:
    """The weight files transformers will read, each checked."""
    found = next((model_dir / name for name in WEIGHTS if (model_dir / name).exists()), None)
    if found is None:
        others = [p.name for p in model_dir.glob("*") if p.suffix in (".h5", ".msgpack", ".gguf")]
        hint = (
            f" (it has {', '.join(sorted(others))}, which compress does not read)" if others else ""
        )
        raise ModelLoadError(
            f"{root} has no PyTorch weights{hint}: save_pretrained writes model.safetensors (or "
            "shards with model.safetensors.index.json); save the model again with it"
        )
    if not found.name.endswith(".index.json"):
        _check_weight_file(found, root)
        return (found,)
    index = read_json(found, MAX_JSON_BYTES, f"{root.name}/{found.name}")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"{found}: has no weight_map of tensor names to shard files")
    shards = []
    for name in sorted(set(weight_map.values()), key=str):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ModelLoadError(
                f"{found}: the shard {name!r} is not a file name inside the folder"
            )
        shard = model_dir / name
        if not shard.exists():
            raise ModelLoadError(f"{found}: names the shard {name}, which is missing")
        _check_weight_file(shard, root)
        shards.append(shard)
    return (found, *shards)


def _check_weight_file(path: Path, root: Path) -> None:
    regular_size(path, f"the weights of {root.name}")
    if path.suffix == ".safetensors":
        check_file(path, f"the weights of {root.name}")
    else:  # a torch.save zip: within the archive limits before torch opens it
        from compress.models import detect_format

        detect_format(path)


def refuse_remote_code(configs: dict[Path, dict], root: Path) -> None:
    for path, content in configs.items():
        auto_map = content.get("auto_map")
        if auto_map:
            named = ", ".join(sorted(str(v) for v in _flat(auto_map)))[:200]
            raise ModelLoadError(
                f"{path} asks for code from the folder (auto_map: {named}); compress runs no "
                f"code from a model folder unless you pass {REMOTE_CODE_FLAG}: do so only for "
                "a folder you trust"
            )


def _flat(value) -> list:
    if isinstance(value, dict):
        return [item for v in value.values() for item in _flat(v)]
    if isinstance(value, list | tuple):
        return [item for v in value for item in _flat(v)]
    return [value]


def files_read(path: Path) -> list[tuple[str, Path]]:
    """(name inside the folder, path) of every file loading the model folder (or tokenizer
    folder) `path` reads: what the stage cache key hashes and what a run never overwrites."""
    if is_model_folder(path):
        layout = read_layout(path, trust_remote_code=True)  # lists files, runs nothing
        return [(layout.relative(p), p) for p in layout.files]
    return [(name, path / name) for name in TOKENIZER_FILES if (path / name).exists()]


def folder_hashes(layout: FolderLayout) -> tuple[str, list[FolderFile]]:
    """The sha256 of every file the load reads, and one digest of them all (names included),
    which stands for the folder where a model file's sha256 would."""
    from compress.files import file_sha256

    files = [
        FolderFile(path=layout.relative(p), sha256=file_sha256(p), bytes=p.stat().st_size)
        for p in layout.files
    ]
    digest = hashlib.sha256()
    for item in files:
        digest.update(f"{item.path}\0{item.sha256}\n".encode())
    return digest.hexdigest(), files
