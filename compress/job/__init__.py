"""One run: preflight checks, the shared context, the pipeline, the speed guard, safe output."""
