"""User-facing errors: the CLI prints their message on one line and exits 2."""


class HwoptError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""


class RuleNotApplicable(HwoptError):
    """A rule's check failed at a site (the message says why)."""


class VerificationError(HwoptError):
    """An exact rewrite did not reproduce the original outputs within tolerance."""
