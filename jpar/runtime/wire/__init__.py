"""What travels between processes: typed messages, values as bytes, and the ZeroMQ transport."""
