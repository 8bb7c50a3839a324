"""`python -m aprelu_exp.bench`: speed figures of a config, fp32 and bf16 side by side.

One module per figure: `timing` (timed windows, interleaved contenders), `training` (training
steps of the contenders), `evaluation` (both validation modes), `epoch` (a real Lightning epoch),
`floor` (the epoch time the convolutions alone take), `table` (the printed table); `__main__` runs
them in one process and writes the JSON.
"""
