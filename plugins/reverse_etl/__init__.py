"""Reverse ETL on Airflow: warehouse deltas, checked, delivered to marketing platforms.

The engine (extract, validate, ledger, rate limit, load) knows no vendor; each vendor adds a hook and thin
load operators under ``hooks/`` and ``operators/``.
"""
