"""The thin Dagster layer, loaded by ``load_from_defs_folder``: one small module per kind.

Asset bodies call the plain step functions of ``pipeline/``; configuration reaches them only through the
resources of ``resources.py``; nothing here reads the environment at import time.
"""
