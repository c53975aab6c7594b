"""The hooks a plugin may implement.

Every hook is a `register_*(register)` call (the simonw/llm pattern): the plugin calls
`register(obj)` once per thing it contributes. Built-in plugins use the same hooks, so the
kernel has no special path for its own surveys, backbones, adapters or trainers.
"""
import pluggy

hookspec = pluggy.HookspecMarker("astrotransfer")
hookimpl = pluggy.HookimplMarker("astrotransfer")


@hookspec
def register_surveys(register):
    """Register survey adapters: `register(survey)` with an `astrotransfer.survey.Survey`."""


@hookspec
def register_backbones(register):
    """Register backbone providers: `register(provider)` with an
    `astrotransfer.backbone.BackboneProvider`.

    A provider builds networks by name and may also offer offline pretrained weights.
    """


@hookspec
def register_adapters(register):
    """Register domain-adaptation methods: `register(adapter)` with an
    `astrotransfer.adapter.Adapter` subclass."""


@hookspec
def register_trainers(register):
    """Register training loops: `register(trainer)` with an `astrotransfer.trainer.Trainer`
    (a `name`, a `description` and `fit(ctx: TrainContext)`)."""


@hookspec
def register_selectors(register):
    """Register active-learning selection strategies: `register(selector)` with an
    `astrotransfer.selector.Selector` (a `name`, a `description` and `select(pool, n, rng)`)."""


@hookspec
def register_commands(app):
    """Add CLI commands: `app` is the root typer.Typer."""
