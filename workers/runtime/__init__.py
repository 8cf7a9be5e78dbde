"""The running part of each worker: its tasks, their supervision, and a graceful stop (wired by
:mod:`workers.bootstrap`, started by :mod:`workers.entrypoints`)."""
