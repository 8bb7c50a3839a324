"""Third-party messages a user of this tool cannot act on, filtered at start-up. Warnings that
call for an action (a data subset smaller than the logging interval, say) stay."""
from __future__ import annotations

import logging
import warnings

# (logger name, message fragment)
QUIET_LOGS = (
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),   # CPU machines, on torch.compile
    ("pytorch_lightning.utilities.rank_zero", "litlogger"),      # an advertisement
    ("lightning.pytorch.utilities.rank_zero", "litlogger"),
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",       # Lightning vs torch's pytree, not ours
)


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    for name, fragment in QUIET_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessages(fragment))
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
