"""Training engine: one loop for every task, checkpoints and resume, DDP, hyper-parameter search."""
