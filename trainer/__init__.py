"""The rank worker: data -> model -> DeepSpeed engine -> timed steps -> one result record.

Run as `python -m trainer --help` under a distributed launcher (torchrun, srun); `bench` does that.
"""
