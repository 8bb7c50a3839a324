"""Evaluation throughput in both validation modes, as the validation loop feeds the batches."""
from __future__ import annotations

import torch

from aprelu_exp.training.speed import rates
from aprelu_exp.training.module import batchnorm_batch_statistics


def eval_fn(module, x, batch: int, article: bool, device, ctx):
    module.to(device).eval()
    batches = list(torch.split(x, batch))

    @torch.no_grad()
    def run():
        with ctx():
            if article:
                with batchnorm_batch_statistics(module.net):
                    for b in batches:
                        module(b)
            else:
                for b in batches:
                    module(b)

    for _ in range(2):  # warm-up (and, compiled, the eval-mode graphs)
        run()
    return run


def eval_rates(module, x, batch: int, article: bool, windows: int, device, ctx) -> tuple[dict, object]:
    run = eval_fn(module, x, batch, article, device, ctx)
    return rates(run, x.shape[0], windows, 1, device), run
