"""Search around a record with Optuna: the space (Hydra's override grammar), the study storage, the
trial side of pruning, the study's report and the promotion of a trial to a record.

The Hydra sweeper that drives a search lives in hydra_plugins/aprelu_optuna_sweeper (Hydra finds
sweepers only in that namespace); it keeps to asking, launching and telling, and calls in here."""
