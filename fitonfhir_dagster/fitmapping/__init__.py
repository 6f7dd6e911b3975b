"""Google Fit data -> MedTech: device messages from dataset pages, and template generation with our coding.

The generic MedTech engine (``medtech/``) knows nothing of Google Fit; everything Fit-specific is here.
"""
