"""The onboarding web app: patients authorize Google Fit access here (Starlette + uvicorn).

Routes keep the original fit-on-fhir paths (``/api/googlefit/authorize|callback|revoke``) with its
defects fixed; see the Onboarding section of the README.
"""
