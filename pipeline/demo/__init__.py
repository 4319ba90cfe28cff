"""A first run without internet: LNQ-like phantom series (``phantoms``), their cohort (``cohort``),
a toy HU-window model (``model``) and all three written for ``lnq demo`` (``inputs``).

Modules are imported by name: torch (the model) and highdicom (the SEGs) load only when asked for.
"""
