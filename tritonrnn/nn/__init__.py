"""Drop-in modules (SPEC §1.5)."""
