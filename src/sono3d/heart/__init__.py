"""heart."""
