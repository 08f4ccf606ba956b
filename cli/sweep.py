"""`compress sweep`: a grid of variants of one recipe, sharing their common stages through the
stage cache; the best variant that passes the gates, and the Pareto fronts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import (
    CacheDir,
    Debug,
    Executor,
    JsonOutput,
    NoCache,
    Quiet,
    RayAddress,
    TrustPickle,
)


def sweep(
    model: Path = typer.Argument(..., help="Saved model: TorchScript, .pt2, state_dict or ONNX."),
    config: Path = typer.Option(..., "--config", "-c", help="The YAML recipe the variants vary."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: variants/ and the best."),
    vary: list[str] = typer.Option(
        ...,
        "--vary",
        metavar="KEY=V1,V2,...",
        help="A config key and its values, as --set takes them: --vary passes[0].amount=0.3,0.5 "
        "(repeatable: the grid of every combination).",
    ),
    objective: str = typer.Option(
        "latency",
        "--objective",
        help="Which variant passing the gates is best: latency (ties within 3% by size), size, "
        "or accuracy.",
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", help="Variants at once; each gets cores/N threads."
    ),
    executor: Executor = "local",
    ray_address: RayAddress = None,
    resume: bool = typer.Option(
        False, "--resume", help="Keep the variants a killed sweep finished; run the rest."
    ),
    force: bool = typer.Option(False, "--force", help="Redo every variant in a non-empty OUT."),
    timeout_per_variant: float = typer.Option(
        None, "--timeout-per-variant", help="Stop a variant's run after this many seconds."
    ),
    max_variants: int = typer.Option(
        100, "--max-variants", help="Refuse a grid of more variants than this (each is a run)."
    ),
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    trust_pickle: TrustPickle = False,
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Run every combination of the --vary values; keep the best variant that passes the gates.

    Writes OUT/variants/<name>/ (each a `compress run` output), OUT/sweep.json, sweep.md and
    sweep.html (the Pareto fronts of accuracy against latency and against size), and copies the
    best variant's model.onnx and reports to OUT. Exit 0 with a best variant, 3 when none passes
    its gates, 1 when every variant failed, 2 for bad input (checked before any work).
    """
    with reported_errors(debug):
        from compress_cli.batch import BarProgress

        from compress.sweep.runner import SweepOptions, check_sweep, run_sweep

        options = SweepOptions(
            model=model,
            config=config,
            out_dir=out,
            vary=list(vary),
            jobs=jobs,
            executor=executor,
            ray_address=ray_address,
            objective=objective,
            resume=resume,
            force=force,
            timeout=timeout_per_variant,
            cache_dir=cache_dir,
            no_cache=no_cache,
            trust_pickle=trust_pickle,
            debug=debug,
            max_variants=max_variants,
        )
        variants = check_sweep(options)
        with BarProgress(quiet, _named) as progress:
            summary = run_sweep(options, variants, progress)
    if json_output:
        sys.stdout.write(json.dumps(summary.written(), indent=2) + "\n")
    else:
        from compress.sweep.render import best_line

        typer.echo(best_line(summary).replace("**", ""))
        typer.echo(f"written: {out}/sweep.json, sweep.md, sweep.html")
    if summary.exit_code:
        failed = sum(row.status not in ("ok",) for row in summary.variants)
        stderr.print(
            f"error: no variant passed (see {out / 'sweep.md'}); {failed} of "
            f"{len(summary.variants)} did not pass",
            markup=False,
        )
        raise typer.Exit(summary.exit_code)


def _named(row) -> str:
    """`v03 (passes[0].amount=0.5, passes[1].per_channel=true)`."""
    return f"{row.name} ({', '.join(f'{k}={v}' for k, v in row.settings.items())})"
