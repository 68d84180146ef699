"""The SDK on its own: its pure core, both clients over httpx.MockTransport, its wheel."""
