"""The `tunesmith data …` tooling: check, scrub, split, convert, show (and their helpers:
token estimates, duplicate keys, PII patterns). The training path (readers, formats, render, pack,
collate) lives one level up and never imports from here."""
