"""`python -m aprelu_exp.bench`: speed figures of a config, fp32 and bf16 side by side.

One module per figure (timed windows and training steps are training/speed.py's, shared with
perf=fast's probe): `training` (the contenders), `evaluation` (both validation modes), `epoch` (a real Lightning epoch),
`floor` (the epoch time the convolutions alone take), `table` (the printed table); `__main__` runs
them in one process and writes the JSON.
"""
