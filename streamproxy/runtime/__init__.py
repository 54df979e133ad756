"""Running the service: settings, the server and its connections, worker
processes, logs, metrics, retention."""
