"""Site protocols shipped with medrecon (YAML, schema in :mod:`medrecon.protocol`).

Use one by name: ``medrecon protocols show ct-sparse-tv``; list them with
``medrecon protocols list``.
"""
