"""`compress sweep`: run a grid of variants of one recipe (each a set of `--set` overrides),
sharing the stages they have in common through the stage cache, and choose the best variant
that passes the gates, with the Pareto front of accuracy against latency and against size.

grid: the variants from `--vary`, checked before any work; pareto: the fronts and the choice;
runner: the runs (worker processes, locally or on Ray, as `compress batch` runs models), resume,
and the outputs; render: sweep.md and sweep.html.
"""
