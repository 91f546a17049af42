"""What a run writes and reads: checkpoints, metrics (jsonl, CSV,
TensorBoard), statistics with CIs, learning curves.
"""
