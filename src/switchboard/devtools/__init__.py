"""Development tools: a test SMSC for the SMPP provider."""
