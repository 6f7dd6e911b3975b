"""Conversion errors named after MedTech's exceptions, so dead letters read familiar to MedTech users."""

from __future__ import annotations


class ConversionError(Exception):
    """A per-message, per-match or per-group failure; ``reason`` is the MedTech exception name."""

    reason = "ConversionError"

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class InvalidDataFormatException(ConversionError):  # noqa: N818 (MedTech name)
    reason = "InvalidDataFormatException"


class IncompatibleDataException(ConversionError):  # noqa: N818
    reason = "IncompatibleDataException"


class TemplateExpressionException(ConversionError):  # noqa: N818
    reason = "TemplateExpressionException"


class TemplateNotFoundException(ConversionError):  # noqa: N818
    reason = "TemplateNotFoundException"


class FhirResourceNotFoundException(ConversionError):  # noqa: N818
    reason = "FhirResourceNotFoundException"


class ResourceIdentityNotDefinedException(ConversionError):  # noqa: N818
    reason = "ResourceIdentityNotDefinedException"


class MultipleResourceFoundException(ConversionError):  # noqa: N818
    reason = "MultipleResourceFoundException"


class InvalidQuantityFhirValueException(ConversionError):  # noqa: N818
    reason = "InvalidQuantityFhirValueException"


class CorrelationIdNotDefinedException(ConversionError):  # noqa: N818
    reason = "CorrelationIdNotDefinedException"


class NotSupportedException(ConversionError):  # noqa: N818
    reason = "NotSupportedException"


class InvalidTemplateException(ValueError):  # noqa: N818
    """A device or FHIR mapping MedTech would reject; the message names the template and line."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line
