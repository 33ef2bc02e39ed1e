"""Building blocks shared by encoders and fusions: transformer blocks, positions, masking."""
