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
