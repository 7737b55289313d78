"""The rank worker: data -> model -> a backend trains, measured -> one result record.

Run as `python -m trainer --help` under a distributed launcher (torchrun, srun); `bench` does that.
"""

import time as _time

STARTED_AT = _time.time()  # first import in a rank process: the start-up clock (metrics.Phases) begins here
