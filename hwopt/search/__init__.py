"""The search over rewrite variants: space, scoring, strategies, objective, report."""
