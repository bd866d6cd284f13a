"""What a run leaves behind for people: metric and sample sinks (sinks.py) and the HTML report (report.py)."""
