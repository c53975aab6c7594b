"""The pipeline, internal (the stable surface is `astrotransfer.api`): one sub-package per
stage (training, inference, evaluation, analysis, distributed) over the shared `models`,
`data` and `runs` modules. Nothing here imports the CLI, the plugins or the API."""
