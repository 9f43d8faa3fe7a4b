"""The command line: ``main`` (the ``acqwriter`` command), ``options`` (options shared
with the daemon's ``ctl`` commands) and ``progress`` (the progress line)."""
