"""Training: state, the pure step, checkpoints, metrics and the trainer loop."""
