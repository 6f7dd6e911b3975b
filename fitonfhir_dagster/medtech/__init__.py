"""The generic MedTech-compatible engine: templates, expressions, measurements, converter, identities.

Nothing here knows Google Fit; the Fit mapping (device messages, template generation) is ``fitmapping/``.
"""
