"""User-facing errors (the CLI prints their message on one line and exits 2) and warnings (one line on
stderr, the command goes on)."""

import warnings


class HwoptError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""


class RuleNotApplicable(HwoptError):
    """A rule's check failed at a site (the message says why)."""


class VerificationError(HwoptError):
    """An exact rewrite did not reproduce the original outputs within tolerance."""


class HwoptWarning(UserWarning):
    """Something the user should know that does not stop the command; shown as ``hwopt: warning: ...``."""


def warn(message: str) -> None:
    warnings.warn(message, HwoptWarning, stacklevel=2)


def did_you_mean(name: str, choices) -> str:
    """``": did you mean fuse-ibn?"`` for a near miss of one of ``choices`` (a typo), else ``""``."""
    import difflib

    near = difflib.get_close_matches(name, list(choices), n=1)
    return f": did you mean {near[0]}?" if near else ""
