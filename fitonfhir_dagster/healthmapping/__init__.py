"""Google Health data points -> MedTech device messages, and the MedTech templates that convert them."""
