"""aprelu-exp's Optuna sweeper for Hydra (`hydra/sweeper=optuna`), on current Optuna (4.x, 5.x).

Hydra looks for plugins only in the `hydra_plugins` namespace package, so the sweeper class and its
configs live here; the search itself is in aprelu_exp.search. Importing this package must stay cheap:
Hydra imports every plugin at each start, searching or not."""
