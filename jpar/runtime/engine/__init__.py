"""Engine processes: the task loop, actor processes, and the samples the dashboard shows."""
