"""Reporting beside ``bp_alternatives.compare``: statistics for the table
(``stats``), the figures' style (``style``) and the protocol's figures (``figures``)."""
