"""Local stand-ins for the systems Fit on FHIR talks to.

One loopback HTTP server (``fitonfhir sandbox``) serves a Google OAuth + Fit REST v1 emulator that
speaks Google's wire format, and the sandbox FHIR R4 server under ``/fhir``. Tests start it with
:func:`fitonfhir_sandbox.handle.running_sandbox`.
"""
