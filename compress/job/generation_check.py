"""report.generation fits the model before any work is done: it times a decoder with a
key/value cache, and the prompt and the tokens generated after it must fit the model's
positions (a longer sequence reads past its position table). Each refusal is one line, also
where every torch stage comes from the stage cache (read off the cached baseline's graph)."""

from __future__ import annotations

from pathlib import Path

from compress.config import GenerationSection
from compress.errors import ConfigError
from compress.models import LoadedModel

PROGRAM_FIX = (
    "a causal LM's .pt2 is timed when its program takes the cache: export it as "
    "forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present) "
    "(docs/pages/decoders.md), or give its model folder; else remove report.generation"
)


def check_generation(wanted: GenerationSection | None, model: LoadedModel) -> None:
    """Refuse, in one line, generation timing (`wanted`: report.generation) the model cannot
    give."""
    if wanted is None:
        return
    if model.is_onnx:
        from compress.measure.decoder_feeds import is_decoder_proto

        cached = is_decoder_proto(model.model)
    else:
        from compress.models.program_decoder import is_cached_decoder

        cached = is_cached_decoder(model.model)
    fit_generation(wanted, model.path.name, model.format, cached, model.positions)


def check_cached_generation(
    wanted: GenerationSection | None, name: str, fmt: str, baseline: Path, positions: int | None
) -> None:
    """check_generation for a model not loaded: its cached baseline ONNX file tells."""
    if wanted is None:
        return
    from compress.measure.decoder_feeds import is_decoder_file

    fit_generation(wanted, name, fmt, is_decoder_file(baseline), positions)


def fit_generation(
    wanted: GenerationSection, name: str, fmt: str, cached: bool, positions: int | None
) -> None:
    """The refusals, for model `name` of format `fmt`: no cache, or too few positions."""
    if not cached:
        fix = PROGRAM_FIX if fmt == "exported_program" else "remove report.generation"
        raise ConfigError(
            f"report.generation: {name} takes no key/value cache, and generation is timed over "
            f"one (a text-generation model folder exports with it); {fix}"
        )
    total = wanted.prompt_tokens + wanted.new_tokens
    if positions is not None and total > positions:
        raise ConfigError(
            f"report.generation: a {wanted.prompt_tokens}-token prompt and {wanted.new_tokens} "
            f"new tokens take {total} positions, more than the {positions} {name} has; lower "
            "prompt_tokens or new_tokens"
        )
