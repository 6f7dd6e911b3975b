"""The source seam: one interface for "a user's data for a window of UTC days", Google Fit and Google Health.

The archive, the conversion and the FHIR writes see only what a :class:`~.seam.Source` returns: one archive
document per user-day and the device messages built from it. Which source a day comes from is the users
row's business (``stores.users.source_for_day``: a Fit user who moved to Health keeps Fit before the cut-over).
"""

from .registry import source_named
from .seam import Source, SourceError, UserMustAct

__all__ = ["Source", "SourceError", "UserMustAct", "source_named"]
