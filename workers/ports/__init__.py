"""The ports: what the service layer needs of the world outside, as Protocols and plain types."""
