"""MedTech compatibility: device messages, template generation, template engine and converter."""
