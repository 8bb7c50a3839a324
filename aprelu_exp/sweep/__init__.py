"""What the sweepers (hydra_plugins: the replicates sweeper, the Optuna search) share: the seeds of
`replicates=N`; and how a killed sweep goes on (`-m resume=<sweep dir>`)."""
