"""The development SMSC subprocess, as tests use it."""

from switchboard.devtools.smsc_process import SmscProcess as Smsc

__all__ = ["Smsc"]
