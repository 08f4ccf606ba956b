"""What report.json records of a model folder and of the tokenizer text data went through: the
files the load read with their sha256, what config.json says the model is, and the versions and
settings, so that a report says exactly what it was made from. Records only (no torch or
transformers import), made by compress.models.hf_folder and compress.data.text."""

from __future__ import annotations

from pydantic import Field

from compress.records import Record


class FolderFile(Record):
    path: str = Field(description="relative to the model folder")
    sha256: str
    bytes: int


class ModelFolder(Record):
    """A model folder (save_pretrained, sentence-transformers) as it was loaded."""

    files: list[FolderFile] = Field(description="every file the load read")
    name_or_path: str | None = Field(default=None, description="config.json's _name_or_path")
    architectures: list[str] = Field(default_factory=list)
    model_type: str | None = None
    task: str
    task_from: str = Field(description="'architectures', 'modules.json' or 'model.task'")
    outputs: list[str]
    pooling: str | None = Field(default=None, description="a sentence embedder's pooling")
    transformers_version: str
    remote_code: bool | None = Field(default=None, description="true: run with auto_map code")

    def describe(self) -> str:
        what = ", ".join(self.architectures) or self.model_type or "a model"
        pooling = f" ({self.pooling})" if self.pooling else ""
        return (
            f"{what}, task {self.task}{pooling} from {self.task_from}; {len(self.files)} files "
            f"read (sha256 in report.json); transformers {self.transformers_version}"
        )
