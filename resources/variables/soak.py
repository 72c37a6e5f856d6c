"""Soak run: the original plans' durations (minutes, not seconds).

Combine with a target: ``robot -V resources/variables/soak.py suites/`` (the built-in mock) or
``robot -V resources/variables/staging.py -V resources/variables/soak.py suites/``. Variables
given on the command line override the suites' own short defaults. Suite 3 then takes about
25 minutes; the memory scenario alone sends 6 million messages.

Everything here is a duration or a rate from docs/original-plans.md; thresholds are unchanged.
"""

# Suite 1, rapid message succession: 2 s between bursts, as planned (30 s of bursts).
BURST_PAUSE = "2 s"

# Suite 3, high-volume throughput.
RATE_STEP_DURATION = "30 s"  # each of 100 ... 10,000 msg/s for 30 s
FLOOD_RATE = 1000  # 10,000 messages at 1,000 msg/s
ORDER_DURATION = "10 s"  # 10 connections x 1,000 messages at 100 msg/s
DROP_DURATION = "30 s"
PARTITION_AT = "10 s"  # the partitions of the drops and recovery runs: 10 s in, for 2 s
PARTITION_DURATION = "2 s"
BASELINE_DURATION = "10 s"
LATENCY_RATE = 5000
LATENCY_DURATION = "300 s"  # 5 minutes at 5,000 msg/s
CONNECTION_DURATION = "30 s"
MEMORY_RATE = 10000
MEMORY_DURATION = "600 s"  # 10 minutes at 10,000 msg/s
MEMORY_RECOVERY_TIMEOUT = "60 s"
WARM_UP = "1000/s for 30 s"
RAMP = "1000..5000/s for 60 s"
SUSTAINED = "7500/s for 120 s"
PEAK = "10000/s for 60 s"
COOL_DOWN = "2000/s for 30 s"
