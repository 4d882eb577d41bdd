"""Phones: SIP messages, transactions, registrar, proxy calls, MWI, the voicemail agent."""
