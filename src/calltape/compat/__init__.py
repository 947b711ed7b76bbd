"""Facades with the names and result shapes of the systems calltape unites, so
that code written against them runs with only its import line changed.

>>> from calltape.compat import reanimator      # was: import monitoringpy.reanimator
>>> from calltape.compat import diagnose        # was: import diagnose
>>> from calltape.compat import callmonitor     # was: import callmonitor

The facades hold names and shapes only: the recording, reading and replay are
calltape's own.
"""
