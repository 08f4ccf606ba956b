"""`compress bench`: measure one ONNX file as `compress run` measures each stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import Debug, JsonOutput, Overrides


def bench(
    model: Path = typer.Argument(..., help="An ONNX file, e.g. OUTDIR/model.onnx."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="The run's config: its report settings and its samples."
    ),
    compare: Path | None = typer.Option(
        None,
        "--compare",
        help="A second ONNX file, timed with MODEL in alternation: its speedup over MODEL per "
        "batch size, with a 95% interval (to check a report's speedup by hand).",
    ),
    overrides: Overrides = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Measure one ONNX file as compress run measures a stage, to check a report's figure.

    Latency (p50/p90/p99 per batch size), size, params and MACs, with the latency settings and
    samples of CONFIG (or the defaults and ones shaped like the inputs), and whether another
    process used the CPU meanwhile. With --compare B, B is timed in alternation with MODEL and
    its speedup over MODEL is given with its 95% interval.
    """
    with reported_errors(debug, library_stdout_hidden=True):
        from compress.job.remeasure import bench_onnx

        measured = bench_onnx(model, config, overrides or (), compare)
    if json_output:
        sys.stdout.write(json.dumps(measured.written(), indent=2) + "\n")
        return
    from compress_cli.render import print_bench, stdout_console

    print_bench(measured, stdout_console())
