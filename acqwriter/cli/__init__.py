"""The command line: ``main`` (the ``acqwriter`` command and its own commands),
``daemon`` (the daemon's ``serve``, ``ctl …`` and ``keys``), ``options`` (the spec
options ``acquire`` and ``ctl configure`` share) and ``progress`` (the progress line).

The outermost layer: it imports the acquisition runner, the daemon's client and
server, and the writer's post-processing; nothing imports it."""
