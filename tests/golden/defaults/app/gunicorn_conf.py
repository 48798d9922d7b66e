"""Gunicorn settings: one process with threads per container; scale with replicas instead."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("PYTHON_THREADS", "8"))
worker_class = "gthread"
worker_tmp_dir = "/tmp"  # the root filesystem is read-only
accesslog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
timeout = 30
# On SIGTERM, requests in flight get this long to finish before the worker exits.
graceful_timeout = 20
# No control socket (gunicornc): it would go to $HOME, which does not exist on this read-only
# filesystem; Compose manages the processes.
control_socket_disable = True
