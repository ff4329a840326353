"""Pure domain: stages, models, gates, events and errors. Imports only the stdlib and transitions."""
