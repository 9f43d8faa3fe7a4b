"""What an acquisition asks of a camera and the writer (``spec``): the outer layer
that devices, the daemon and the CLI share."""
