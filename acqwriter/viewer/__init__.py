"""Windows on datasets, in a process of their own: ``acqwriter view`` and ``ctl view``.

``follow`` reads an image as its files say now (the committed extent, no lock, no
write), with what a viewer needs to show it as the writer meant; ``window`` shows it in
ndv inside a Qt window. ndv and Qt are the ``view`` extra: nothing else imports them.
"""
