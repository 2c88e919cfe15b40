"""Judging a run: trajectory metrics against ground truth (``metrics``: ATE, RPE, scale drift) and
top-view plots (``plotting``). May import: ``loger_core.io`` only.
"""
