"""aprelu-exp: the APReLU tuning records as Hydra configs, trained by PyTorch Lightning.

The packages form layers; a module imports only from its own package or from a layer below
(tests/test_layers.py checks every import, module-level and function-level):

    errors, metrics             UserError and the commands' way of failing; the metric names
    parts, settings             every part built one way (a `_target_` node checked against its
                                constructor's signature, then instantiated); which config keys are
                                settings (what a run trains), flattened and compared
    model, data                 the APReLU ResNet; CIFAR-10, its checks and the Keras augmentation
    runs                        a run directory: its files and states, atomic writes, metrics.csv
                                (writer and reader), checkpoints, lock, stop requests, resume, the
                                run's life (lifecycle); the one reader of run directories (reader)
    training, console           the Lightning module, the schedules, the perf policy, and the objects
                                a run trains with, built from its config; what the terminal shows
                                (the first screen, progress, the line a stopped command ends with)
                                and the third-party noise kept from it
    config_schema, overrides,   the project's own typed keys; command-line overrides that contradict
    sweep, loggers              each other; the sweepers' replicates and a sweep's resume; the
                                project's own Lightning logger (MLflow)
    compose                     the conf/ tree, composing it, the records by name, composition errors
    search                      Optuna: storage, space, the study, the ask-launch-tell loop, the
                                job's trial reporter (a configured callback)
    report                      reports of runs, sweeps and studies; evidence; the article's numbers;
                                the confusion-matrix figure; runs as pandas DataFrames (frames:
                                runs_frame, metrics_frame, which this package exposes lazily)
    records                     the lineage, promotion and confirmation of records
    train, cli_help             the composition root; the --help text
    job                         one job of the main command: train, and how a run ends
    bench, evaluate, __main__   command-line entry points (each package's __main__ is its own); the
                                main command defers `job` so that help and completion need no torch

A function-level import is kept only to defer a heavy dependency that the importing command may not
need (optuna, matplotlib, mlflow, scikit-learn; torch where a run directory is only read), with a
comment saying so.
"""

LAYERS = (
    ("aprelu_exp.errors", "aprelu_exp.metrics"),
    ("aprelu_exp.parts", "aprelu_exp.settings"),
    ("aprelu_exp.model", "aprelu_exp.data"),
    ("aprelu_exp.runs",),
    ("aprelu_exp.training", "aprelu_exp.console"),
    ("aprelu_exp.config_schema", "aprelu_exp.overrides", "aprelu_exp.sweep", "aprelu_exp.loggers"),
    ("aprelu_exp.compose",),
    ("aprelu_exp.search",),
    ("aprelu_exp.report",),
    ("aprelu_exp.records",),
    ("aprelu_exp.train", "aprelu_exp.cli_help"),
    ("aprelu_exp.job",),
    ("aprelu_exp.bench", "aprelu_exp.evaluate", "aprelu_exp.__main__"),
)

# The Python API for notebooks, loaded on first use: `import aprelu_exp` (and so the commands' --help)
# stays free of pandas and torch.
LAZY = {"runs_frame": "aprelu_exp.report.frames", "metrics_frame": "aprelu_exp.report.frames"}
__all__ = ["LAYERS", *LAZY]


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'aprelu_exp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *LAZY])
