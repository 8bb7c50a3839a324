"""The APReLU ResNet of the article and the activations it is compared with."""
from aprelu_exp.model.activations import ACTIVATIONS, APReLU, APReLUShared, DyReLUB
from aprelu_exp.model.resnet import (
    APReLUResNet,
    NetworkConfigError,
    Stage,
    decayed_parameters,
)

__all__ = [
    "ACTIVATIONS", "APReLU", "APReLUShared", "DyReLUB", "APReLUResNet", "NetworkConfigError",
    "Stage", "decayed_parameters",
]
