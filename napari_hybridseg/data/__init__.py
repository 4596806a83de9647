"""From annotations to tensors: preprocessing, targets, the patch sampler and the one tiler."""
