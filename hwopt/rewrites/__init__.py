"""Stage 5, rewrites: the rules by name (one module per rule, one line each here), and applying them.

``base`` is the interface every rule keeps (sites, ``check`` with the reason a site is refused,
``apply``); ``apply`` runs rule steps in order, each verified; ``ruleset`` reads ``--rule`` and rule
files; ``channel_resize`` and ``fitting`` are the channel edits and least-squares refits rules share.
"""

from __future__ import annotations

from hwopt.errors import HwoptError, did_you_mean
from hwopt.rewrites.affine_to_dwconv import AffineToDwconv
from hwopt.rewrites.align_channels import AlignChannels
from hwopt.rewrites.base import Param, RewriteContext, Rule, SiteOutcome
from hwopt.rewrites.depth_multiplier import DepthMultiplier
from hwopt.rewrites.dw_to_dense import DwToDense
from hwopt.rewrites.dw_to_grouped import DwToGrouped
from hwopt.rewrites.fuse_ibn import FuseIBN
from hwopt.rewrites.pad_to_conv import PadToConv
from hwopt.rewrites.prelu_to_dwconv import PReluToDwconv

RULES: dict[str, Rule] = {rule.name: rule for rule in (FuseIBN(), AlignChannels(), DwToDense(), DwToGrouped(),
                                                       DepthMultiplier(), PReluToDwconv(), PadToConv(),
                                                       AffineToDwconv())}


def get_rule(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise HwoptError(f"unknown rule {name!r}{did_you_mean(name, RULES)} (rules: {', '.join(RULES)})") from None


__all__ = ["RULES", "Param", "RewriteContext", "Rule", "SiteOutcome", "get_rule"]
