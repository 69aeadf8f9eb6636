"""Load operators: the generic engine in ``load.py``, thin vendor adapters beside it."""
