"""Training: the distributed training loop and its Keras callbacks."""
