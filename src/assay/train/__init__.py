"""Training: one readable loop with mixed precision, seeding, early stopping and energy accounting."""

from assay.train.energy import EnergyMeter, EnergyReading
from assay.train.loop import Distillation, TrainConfig, TrainResult, train

__all__ = ["Distillation", "EnergyMeter", "EnergyReading", "TrainConfig", "TrainResult", "train"]
