"""The LightningModule and its learning-rate schedule."""
