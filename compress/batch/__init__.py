"""Batch: compress every model under a directory, one worker process per model.

discover   which files are models, and the override YAMLs of each
overrides  a model's config: the shared YAML deep-merged with its overrides
job        one model's job: its worker process, its timeout, its result row
executors  where jobs run: local worker threads, or Ray tasks
summary    summary.json / .csv / .md and the batch's exit code
runner     the batch itself: plan, resume, run, record (done.json), summarize
launch     starts a worker that dies with its parent (no orphans after a kill)
warm       the warm server's client: jobs forked from a process that imported torch once
server     the warm server itself (`python -m compress.batch.server`) and its forked jobs

Kept free of heavy imports: the batch's own process never imports torch, and
`python -m compress.batch.launch` starts once per model where there is no warm server.
"""
