"""GPU kernels for SAM's encoder attention; each with a pure-PyTorch reference beside it."""
