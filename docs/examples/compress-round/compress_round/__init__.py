"""compress-round: the weights.round pass for compress (see compress_round.rounding)."""
