"""CIFAR-10 on disk, the article's augmentation, and the batch loaders that feed Lightning."""
