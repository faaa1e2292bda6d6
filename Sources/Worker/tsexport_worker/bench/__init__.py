"""The bench op: latency, peak memory and the HTML report."""
