"""Baselines the product is measured against (SPEC section 9)."""
