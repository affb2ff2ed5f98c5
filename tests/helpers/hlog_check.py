"""Reads udpkit's interval logs with HdrHistogram's Python implementation (the
`hdrhistogram` package, module `hdrh`: not udpkit's code), adds every interval of every
file into one histogram, and prints its count and percentiles (nanoseconds) as JSON."""

import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

HIGHEST = 3600 * 10**9

total = HdrHistogram(1, HIGHEST, 3)
intervals = 0
for path in sys.argv[1:]:
    reader = HistogramLogReader(path, HdrHistogram(1, HIGHEST, 3))
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        intervals += 1
        total.add(h)
print(json.dumps({
    "intervals": intervals,
    "count": total.get_total_count(),
    "min": total.get_min_value(),
    "max": total.get_max_value(),
    "p50": total.get_value_at_percentile(50),
    "p90": total.get_value_at_percentile(90),
    "p99": total.get_value_at_percentile(99),
    "p999": total.get_value_at_percentile(99.9),
}))
