"""HTTP plumbing shared by every client here (Google Fit, Google Health, FHIR, the onboarding app):
one retry schedule (``retry_schedule``), one session factory (``sessions``), the Google OAuth calls
(``google_oauth``)."""
