"""What a run checks and says of a causal LM given as a torch.export program (.pt2).

A decoder program (compress.models.program_decoder) is fed as a folder's decoder is: the data's
input_ids and attention_mask, the position ids and an empty cache filled in. It is exported as
it was saved, so passes that change the torch model are refused (ONNX passes all work on its
export). A program that looks like a causal LM without a cache runs over whole sequences as any
program does; the log says that generation is therefore not timed.
"""

from __future__ import annotations

from collections.abc import Callable

from compress.errors import ConfigError
from compress.models import LoadedModel
from compress.passes.base import Pass


def check_program_lm(
    model: LoadedModel, passes: list[Pass], input_names: list[str], log: Callable[[str], None]
) -> None:
    """Refuse (one line) what a decoder program cannot do; log that an LM program has no
    cache."""
    if model.format != "exported_program" or model.model is None:
        return
    from compress.models.decoder import TOKEN_INPUTS
    from compress.models.program_decoder import is_program_decoder, lm_without_cache

    name = model.path.name
    if not is_program_decoder(model.model):
        if lm_without_cache(model.model):
            log(
                f"{name} looks like a causal LM without a key/value cache (input_ids -> [batch, "
                "sequence, vocab]): it runs over whole sequences and its generation is not "
                "timed; export it with its cache to time it (docs/pages/decoders.md)"
            )
        return
    for index, p in enumerate(passes):
        if p.stage == "torch":
            raise ConfigError(
                f"passes[{index}] ({p.name}) changes the torch model, but {name} is a decoder "
                "program, exported with its cache as it was saved; use ONNX passes (quantize.*) "
                "on it, or give the model folder to prune or distill it"
            )
    if list(input_names) != TOKEN_INPUTS:
        raise ConfigError(
            f"{name}: a decoder is fed input_ids and attention_mask (the data gives "
            f"{', '.join(input_names)}); name those two in data.*.inputs"
        )
