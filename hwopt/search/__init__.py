"""Stage 8, search: the variants of a model (space, descriptor edits), their scores, budgets and
fidelity predictions, the strategies that explore them, and ``optimize``, which writes the chosen one."""
