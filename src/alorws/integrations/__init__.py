"""Integrations with other libraries, each behind its own extra (``alorws[backtrader]``).

Importing this package loads none of them; import the module you need
(:mod:`alorws.integrations.backtrader`).
"""
