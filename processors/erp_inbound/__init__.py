"""Inbound to the ERP: inbound messages and command statuses on ``wa.erp.inbound``, mark-as-read."""
